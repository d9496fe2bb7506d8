// Rotary position embedding with the reference's half-split pairing.
//
// For a head vector x with rotary dims r (the reference rotates all of head_dim), x1 = x[:r/2],
// x2 = x[r/2:r]:  rope(x) = [x1·cos + x2·sin, −x1·sin + x2·cos]  with  θ_j(t) = t · base^(−2j/r).
// The tables are computed as the reference does (float32: inv_freq = 1 / base^(arange(0,r,2)/r),
// freqs = outer(t, inv_freq), then cos/sin); in double for double-precision gradient checks.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "pgolf/core/parallel.hpp"

namespace pgolf::cpu {

template <class T>
struct RopeTables {
  int rotary_dims = 0;
  int seq_len = 0;
  std::vector<T> cos, sin;  // (seq_len, rotary_dims / 2)

  RopeTables() = default;
  RopeTables(int seq, int rdims, double base) : rotary_dims(rdims), seq_len(seq) {
    const int half = rdims / 2;
    cos.resize(static_cast<std::size_t>(seq) * half);
    sin.resize(cos.size());
    for (int j = 0; j < half; ++j) {
      // Same operation order and precision as torch: float32 pow, reciprocal, product, cos/sin.
      const T exponent = static_cast<T>(2 * j) / static_cast<T>(rdims);
      const T inv_freq = T(1) / std::pow(static_cast<T>(base), exponent);
      for (int t = 0; t < seq; ++t) {
        const T angle = static_cast<T>(t) * inv_freq;
        cos[static_cast<std::size_t>(t) * half + j] = std::cos(angle);
        sin[static_cast<std::size_t>(t) * half + j] = std::sin(angle);
      }
    }
  }
};

namespace rope_detail {
// Rotates every head by +θ (forward) or −θ (backward: the rotation's transpose is its inverse).
template <int HeadDim, int RotaryDims, class T>
void rotate(T* x, const RopeTables<T>& tab, std::int64_t batch, std::int64_t seq, int heads, bool inverse) {
  static_assert(RotaryDims % 2 == 0 && RotaryDims <= HeadDim, "rotary dims must be even and at most head_dim");
  constexpr int half = RotaryDims / 2;
  const T sign = inverse ? T(-1) : T(1);
  parallel_for(0, batch * seq, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int64_t t = r % seq;
      const T* c = tab.cos.data() + t * half;
      const T* s = tab.sin.data() + t * half;
      for (int h = 0; h < heads; ++h) {
        T* v = x + (r * heads + h) * HeadDim;
        for (int j = 0; j < half; ++j) {
          const T a = v[j], b = v[j + half], sn = sign * s[j];
          v[j] = a * c[j] + b * sn;
          v[j + half] = -a * sn + b * c[j];
        }
      }
    }
  });
}
}  // namespace rope_detail

// In place on x laid out (batch, seq, heads, HeadDim); dims [RotaryDims, HeadDim) pass through.
template <int HeadDim, int RotaryDims, class T>
void rope_forward(T* x, const RopeTables<T>& tab, std::int64_t batch, std::int64_t seq, int heads) {
  rope_detail::rotate<HeadDim, RotaryDims>(x, tab, batch, seq, heads, false);
}

// The gradient of rope_forward, in place: rotation by −θ.
template <int HeadDim, int RotaryDims, class T>
void rope_backward(T* dx, const RopeTables<T>& tab, std::int64_t batch, std::int64_t seq, int heads) {
  rope_detail::rotate<HeadDim, RotaryDims>(dx, tab, batch, seq, heads, true);
}

}  // namespace pgolf::cpu
