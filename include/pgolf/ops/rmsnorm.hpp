// Weightless RMSNorm over the last dimension: y = x / sqrt(mean(x²) + eps).
//
// eps follows the reference: F.rms_norm(x, (d,)) with eps=None uses the float32 machine epsilon
// for float32, bfloat16 and float16 inputs alike (torch/_decomp/decompositions.py::_fused_rms_norm:
// the computation is upcast to float32 and eps = finfo(float32).eps). pgolf keeps that value at
// every precision, including double gradient checks, so the checks test the same function.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "pgolf/core/parallel.hpp"

namespace pgolf::cpu {

inline constexpr double kRmsNormEps = std::numeric_limits<float>::epsilon();

inline constexpr std::int64_t kRowGrain = 64;  // rows per parallel chunk for row-wise ops

// y[n, D] = rms_norm(x[n, D]); rstd[n] = 1 / sqrt(mean(x²) + eps) is kept for the backward pass.
template <int D, class T>
void rmsnorm_forward(T* y, T* rstd, const T* x, std::int64_t n) {
  parallel_for(0, n, kRowGrain, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * D;
      double ss = 0;
      for (int i = 0; i < D; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const T s = static_cast<T>(1.0 / std::sqrt(ss / D + kRmsNormEps));
      rstd[r] = s;
      T* yr = y + r * D;
      for (int i = 0; i < D; ++i) yr[i] = xr[i] * s;
    }
  });
}

// dx[n, D] (+)= ∂/∂x of Σ dy·y:  dx = s·dy − s³/D · x · Σ(dy·x).  May run in place (dx == dy).
template <int D, class T>
void rmsnorm_backward(T* dx, const T* dy, const T* x, const T* rstd, std::int64_t n, bool accumulate) {
  parallel_for(0, n, kRowGrain, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * D;
      const T* gr = dy + r * D;
      double dot = 0;
      for (int i = 0; i < D; ++i) dot += static_cast<double>(gr[i]) * xr[i];
      const T s = rstd[r];
      const T c = static_cast<T>(dot * s * s * s / D);
      T* out = dx + r * D;
      for (int i = 0; i < D; ++i) {
        const T v = s * gr[i] - c * xr[i];
        out[i] = accumulate ? out[i] + v : v;
      }
    }
  });
}

}  // namespace pgolf::cpu
