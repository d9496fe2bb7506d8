// Tensor views with compile-time model dimensions and run-time batch/sequence extents, and the
// aligned host buffers that back them.
//
//   HostBuffer<float> buf(n_tokens * 512);
//   View<float, Extents<dyn, 512>> x(buf.data(), n_tokens);   // (N, 512): N at run time
//   x(i, j) = 1.0f;
//
// Static extents are part of the type, so handing a (N, 256) view to a function that takes
// (N, 512) does not compile; dynamic extents are checked when the view is made.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <type_traits>

#include "pgolf/core/error.hpp"
#include "pgolf/core/platform.hpp"

namespace pgolf {

inline constexpr int dyn = -1;  // an extent known only at run time

template <int... E>
struct Extents {
  static_assert(((E == dyn || E > 0) && ...), "a static extent must be positive (or dyn)");
  static constexpr int rank = sizeof...(E);
  static constexpr std::array<int, rank> static_extents{E...};
  static constexpr int num_dynamic = ((E == dyn ? 1 : 0) + ... + 0);
  static constexpr bool is_static = num_dynamic == 0;
  // Product of the static extents (the elements per unit of the dynamic ones).
  static constexpr std::int64_t static_product = ((E == dyn ? std::int64_t{1} : std::int64_t{E}) * ... * 1);
};

template <class T, class Ext>
class View {
 public:
  using element_type = T;
  using extents_type = Ext;
  static constexpr int rank = Ext::rank;

  View() = default;

  // One run-time size per `dyn` extent, in order.
  template <class... Dyn>
    requires(sizeof...(Dyn) == Ext::num_dynamic && (std::is_integral_v<Dyn> && ...))
  PGOLF_HD explicit View(T* data, Dyn... dynamic) : data_(data) {
    const std::int64_t dyn_values[] = {static_cast<std::int64_t>(dynamic)..., 0};
    int k = 0;
    for (int i = 0; i < rank; ++i) {
      extents_[i] = Ext::static_extents[i] == dyn ? dyn_values[k++] : Ext::static_extents[i];
    }
  }

  // A view over a span whose size must equal the product of the extents.
  template <class... Dyn>
  static View over(std::span<T> s, Dyn... dynamic) {
    View v(s.data(), dynamic...);
    for (int i = 0; i < rank; ++i) PGOLF_CHECK_GE(v.extents_[i], 0, "tensor extent " << i);
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(s.size()), v.size(), "view over a buffer: buffer size vs product of extents");
    return v;
  }

  PGOLF_HD T* data() const { return data_; }
  PGOLF_HD std::int64_t extent(int i) const { return extents_[i]; }
  PGOLF_HD std::int64_t size() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= extents_[i];
    return n;
  }
  PGOLF_HD std::int64_t stride(int i) const {
    std::int64_t s = 1;
    for (int j = rank - 1; j > i; --j) s *= extents_[j];
    return s;
  }

  template <class... I>
    requires(sizeof...(I) == rank)
  PGOLF_HD T& operator()(I... idx) const {
    const std::int64_t ii[] = {static_cast<std::int64_t>(idx)...};
    std::int64_t off = 0;
    for (int i = 0; i < rank; ++i) off = off * extents_[i] + ii[i];
    return data_[off];
  }

  std::span<T> span() const { return {data_, static_cast<std::size_t>(size())}; }
  operator View<const T, Ext>() const  // NOLINT(google-explicit-constructor): const view of a view
    requires(!std::is_const_v<T>)
  {
    View<const T, Ext> v;
    v.data_ = data_;
    v.extents_ = extents_;
    return v;
  }

 private:
  template <class, class>
  friend class View;
  T* data_ = nullptr;
  std::array<std::int64_t, rank> extents_{};
};

// 64-byte aligned host memory (one cache line; also the widest SIMD load), zero-initialised.
inline constexpr std::size_t kHostAlignment = 64;

template <class T>
class HostBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "HostBuffer holds trivially copyable elements only");

 public:
  HostBuffer() = default;
  explicit HostBuffer(std::size_t n) { resize(n); }
  HostBuffer(const HostBuffer& o) : HostBuffer(o.size_) {
    if (size_) std::memcpy(data_.get(), o.data_.get(), size_ * sizeof(T));
  }
  HostBuffer& operator=(const HostBuffer& o) {
    if (this != &o) {
      if (size_ != o.size_) resize(o.size_);
      if (size_) std::memcpy(data_.get(), o.data_.get(), size_ * sizeof(T));
    }
    return *this;
  }
  HostBuffer(HostBuffer&&) noexcept = default;
  HostBuffer& operator=(HostBuffer&&) noexcept = default;

  // Reallocates (contents become zero) unless the size is unchanged.
  void resize(std::size_t n) {
    if (n == size_ && data_) return;
    data_.reset();
    size_ = n;
    if (n == 0) return;
    void* p = ::operator new(n * sizeof(T), std::align_val_t{kHostAlignment});
    std::memset(p, 0, n * sizeof(T));
    data_.reset(static_cast<T*>(p));
  }
  void zero() {
    if (size_) std::memset(data_.get(), 0, size_ * sizeof(T));
  }

  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  std::span<T> span() { return {data(), size_}; }
  std::span<const T> span() const { return {data(), size_}; }
  T* begin() { return data(); }
  T* end() { return data() + size_; }
  const T* begin() const { return data(); }
  const T* end() const { return data() + size_; }

 private:
  struct AlignedDelete {
    void operator()(T* p) const { ::operator delete(p, std::align_val_t{kHostAlignment}); }
  };
  std::unique_ptr<T[], AlignedDelete> data_;
  std::size_t size_ = 0;
};

}  // namespace pgolf
