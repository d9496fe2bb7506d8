// CUDA runtime helpers: checked calls, device discovery that works without a driver, and device
// buffers that report sizes when an allocation fails.
#pragma once

#if !defined(__CUDACC__)
#error "pgolf/core/cuda_runtime.cuh is for CUDA translation units (compile with nvcc)"
#endif

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pgolf/core/error.hpp"

namespace pgolf::cuda {

namespace detail {
[[noreturn]] inline void raise_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  ::pgolf::detail::raise("CUDA", std::string(expr) + " failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")",
                         file, line);
}
}  // namespace detail

#define PGOLF_CUDA_CHECK(expr)                                                                            \
  do {                                                                                                    \
    const cudaError_t pgolf_err_ = (expr);                                                                \
    if (pgolf_err_ != cudaSuccess) ::pgolf::cuda::detail::raise_cuda(pgolf_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// The number of usable GPUs; 0 when there is no device or no driver (cudaGetDeviceCount leaves
// its argument untouched on error, and a missing driver is an error, not zero devices).
inline int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

inline std::string device_description(int device = 0) {
  cudaDeviceProp p{};
  PGOLF_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.totalGlobalMem >> 20) + " MiB, " + std::to_string(p.multiProcessorCount) + " SMs)";
}

// cudaMalloc with a message that names what was being allocated and how much memory was free.
inline void* device_alloc(std::size_t bytes, const char* what) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    std::size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    PGOLF_FAIL("GPU out of memory: allocating " << (bytes >> 20) << " MiB for " << what << " failed ("
                                                << cudaGetErrorString(err) << "); " << (free_b >> 20) << " MiB free of "
                                                << (total_b >> 20) << " MiB. Reduce TRAIN_BATCH_TOKENS or raise GRAD_ACCUM_STEPS");
  }
  return p;
}

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(std::size_t n, const char* what) : n_(n) { p_ = static_cast<T*>(device_alloc(n * sizeof(T), what)); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  T* data() { return p_; }
  const T* data() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

  void upload(std::span<const T> host, cudaStream_t stream = nullptr) {
    PGOLF_CHECK_EQ(host.size(), n_, "upload to a device buffer");
    PGOLF_CUDA_CHECK(cudaMemcpyAsync(p_, host.data(), bytes(), cudaMemcpyHostToDevice, stream));
  }
  void download(std::span<T> host, cudaStream_t stream = nullptr) const {
    PGOLF_CHECK_EQ(host.size(), n_, "download from a device buffer");
    PGOLF_CUDA_CHECK(cudaMemcpyAsync(host.data(), p_, bytes(), cudaMemcpyDeviceToHost, stream));
    PGOLF_CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  std::vector<T> to_host(cudaStream_t stream = nullptr) const {
    std::vector<T> h(n_);
    download(h, stream);
    return h;
  }
  void zero(cudaStream_t stream = nullptr) {
    if (n_) PGOLF_CUDA_CHECK(cudaMemsetAsync(p_, 0, bytes(), stream));
  }

 private:
  void release() {
    if (p_) (void)cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

// Page-locked host memory (cudaMallocHost): a cudaMemcpyAsync from it returns at once and overlaps
// with queued work, where a copy from pageable memory may wait for the stream first. Grown in place
// by reserve() (the old contents are dropped); neither copied nor moved.
template <class T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() {
    if (p_) (void)cudaFreeHost(p_);
  }

  // At least n elements; reallocates (without keeping the contents) when smaller.
  void reserve(std::size_t n, const char* what) {
    if (n <= n_) return;
    if (p_) (void)cudaFreeHost(p_);
    p_ = nullptr;
    n_ = 0;
    void* p = nullptr;
    const cudaError_t err = cudaMallocHost(&p, n * sizeof(T));
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      PGOLF_FAIL("page-locked host allocation of " << ((n * sizeof(T)) >> 10) << " KiB for " << what
                                                   << " failed: " << cudaGetErrorString(err));
    }
    p_ = static_cast<T*>(p);
    n_ = n;
  }
  T* data() { return p_; }
  std::size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

// Owns a CUDA stream that does not synchronise with the legacy default stream.
class CudaStream {
 public:
  CudaStream() { PGOLF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  ~CudaStream() {
    if (stream_) (void)cudaStreamDestroy(stream_);
  }
  cudaStream_t get() const { return stream_; }
  void synchronize() const { PGOLF_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

 private:
  cudaStream_t stream_ = nullptr;
};

// Owns a CUDA event without timing (a fence between the host and a stream).
class CudaEvent {
 public:
  CudaEvent() { PGOLF_CUDA_CHECK(cudaEventCreateWithFlags(&e_, cudaEventDisableTiming)); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  ~CudaEvent() {
    if (e_) (void)cudaEventDestroy(e_);
  }
  void record(cudaStream_t stream) { PGOLF_CUDA_CHECK(cudaEventRecord(e_, stream)); }
  void wait_on_host() const { PGOLF_CUDA_CHECK(cudaEventSynchronize(e_)); }

 private:
  cudaEvent_t e_ = nullptr;
};

// One device allocation carved into many tensors, so that a model allocates its memory once, up
// front, and an out-of-memory error names the whole request. Used in two passes over the same
// sequence of take() calls: the first (before allocate()) only measures and returns null pointers,
// the second hands out the real ones:
//   DeviceArena arena;
//   auto carve = [&] { x = arena.take<float>(n * D); y = arena.take<nv_bf16>(n * F); };
//   carve(); arena.allocate("activations"); carve();
class DeviceArena {
 public:
  static constexpr std::size_t kAlignment = 256;  // cuBLASLt's and cudaMalloc's alignment

  template <class T>
  T* take(std::int64_t count) {
    offset_ = (offset_ + kAlignment - 1) / kAlignment * kAlignment;
    T* p = base_ ? reinterpret_cast<T*>(base_ + offset_) : nullptr;
    offset_ += static_cast<std::size_t>(count) * sizeof(T);
    if (base_) PGOLF_CHECK_LE(offset_, buffer_.bytes(), "device arena: the second pass takes more than the first measured");
    return p;
  }
  // Allocates what the first pass measured; the next pass hands out pointers into it.
  void allocate(const char* what) {
    buffer_ = DeviceBuffer<std::uint8_t>(offset_, what);
    base_ = buffer_.data();
    offset_ = 0;
  }
  void release() {
    buffer_ = DeviceBuffer<std::uint8_t>();
    base_ = nullptr;
    offset_ = 0;
  }
  std::size_t bytes() const { return buffer_.bytes(); }

 private:
  DeviceBuffer<std::uint8_t> buffer_;
  std::uint8_t* base_ = nullptr;
  std::size_t offset_ = 0;
};

template <class T>
DeviceBuffer<T> to_device(std::span<const T> host, const char* what) {
  DeviceBuffer<T> d(host.size(), what);
  d.upload(host);
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

}  // namespace pgolf::cuda
