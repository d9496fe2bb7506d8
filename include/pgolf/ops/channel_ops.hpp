// Element-wise work with per-channel parameters: residual mixing, scaled residual adds, per-head
// gains, ReLU². Parameter gradients are reductions over rows; they are summed per fixed chunk of
// rows and the chunk partials are added in order, so they do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "pgolf/core/parallel.hpp"

namespace pgolf::cpu {

inline constexpr std::int64_t kChannelGrain = 256;  // rows per partial sum

// dst[0..width) += Σ_rows contrib(row, acc) where contrib adds its row's terms into acc[width].
template <class T, class Contrib>
void reduce_rows_into(T* dst, int width, std::int64_t n, Contrib&& contrib) {
  const std::int64_t n_chunks = (n + kChannelGrain - 1) / kChannelGrain;
  std::vector<double> parts(static_cast<std::size_t>(n_chunks) * width, 0.0);
  parallel_for(0, n_chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      double* acc = parts.data() + c * width;
      for (std::int64_t r = c * kChannelGrain; r < std::min(n, (c + 1) * kChannelGrain); ++r) contrib(r, acc);
    }
  });
  for (std::int64_t c = 0; c < n_chunks; ++c) {
    for (int i = 0; i < width; ++i) dst[i] += static_cast<T>(parts[c * width + i]);
  }
}

// out = mix[0] ⊙ x + mix[1] ⊙ x0   (the reference's resid_mix, mix shaped (2, D))
template <int D, class T>
void resid_mix_forward(T* out, const T* x, const T* x0, const T* mix, std::int64_t n) {
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < D; ++i) out[r * D + i] = mix[i] * x[r * D + i] + mix[D + i] * x0[r * D + i];
    }
  });
}

// dx = mix[0] ⊙ dout (written, may alias dout); dx0 += mix[1] ⊙ dout; dmix += Σ rows.
template <int D, class T>
void resid_mix_backward(T* dx, T* dx0, T* dmix, const T* dout, const T* x, const T* x0, const T* mix, std::int64_t n) {
  reduce_rows_into(dmix, 2 * D, n, [&](std::int64_t r, double* acc) {
    for (int i = 0; i < D; ++i) {
      acc[i] += static_cast<double>(dout[r * D + i]) * x[r * D + i];
      acc[D + i] += static_cast<double>(dout[r * D + i]) * x0[r * D + i];
    }
  });
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < D; ++i) {
        const T g = dout[r * D + i];
        dx0[r * D + i] += mix[D + i] * g;
        dx[r * D + i] = mix[i] * g;
      }
    }
  });
}

// out = x + scale ⊙ a   (attn_scale / mlp_scale residual branches, U-Net skip_weights)
template <int D, class T>
void scaled_add_forward(T* out, const T* x, const T* a, const T* scale, std::int64_t n) {
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < D; ++i) out[r * D + i] = x[r * D + i] + scale[i] * a[r * D + i];
    }
  });
}

// For out = x + s ⊙ a: da (+)= s ⊙ dout; dscale += Σ dout ⊙ a. (dx = dout needs no work.)
template <int D, class T>
void scaled_add_backward(T* da, T* dscale, const T* dout, const T* a, const T* scale, std::int64_t n, bool accumulate) {
  reduce_rows_into(dscale, D, n, [&](std::int64_t r, double* acc) {
    for (int i = 0; i < D; ++i) acc[i] += static_cast<double>(dout[r * D + i]) * a[r * D + i];
  });
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < D; ++i) {
        const T v = scale[i] * dout[r * D + i];
        da[r * D + i] = accumulate ? da[r * D + i] + v : v;
      }
    }
  });
}

// x[n, H, Hd] *= gain[h]   (the reference's per-head q_gain), in place.
template <int Heads, int HeadDim, class T>
void head_gain_forward(T* x, const T* gain, std::int64_t n) {
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int h = 0; h < Heads; ++h) {
        for (int i = 0; i < HeadDim; ++i) x[(r * Heads + h) * HeadDim + i] *= gain[h];
      }
    }
  });
}

// For y = gain[h] · x: dgain += Σ dy ⊙ x; dy becomes dx = gain[h] · dy in place.
template <int Heads, int HeadDim, class T>
void head_gain_backward(T* dy_to_dx, T* dgain, const T* x, const T* gain, std::int64_t n) {
  reduce_rows_into(dgain, Heads, n, [&](std::int64_t r, double* acc) {
    for (int h = 0; h < Heads; ++h) {
      double s = 0;
      for (int i = 0; i < HeadDim; ++i) s += static_cast<double>(dy_to_dx[(r * Heads + h) * HeadDim + i]) * x[(r * Heads + h) * HeadDim + i];
      acc[h] += s;
    }
  });
  head_gain_forward<Heads, HeadDim>(dy_to_dx, gain, n);
}

// y = relu(u)²
template <class T>
void relu2_forward(T* y, const T* u, std::int64_t count) {
  parallel_for(0, count, 1 << 14, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      const T r = u[i] > T(0) ? u[i] : T(0);
      y[i] = r * r;
    }
  });
}

// du = dy · 2·relu(u)   (may run in place: du == dy)
template <class T>
void relu2_backward(T* du, const T* dy, const T* u, std::int64_t count) {
  parallel_for(0, count, 1 << 14, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) du[i] = u[i] > T(0) ? dy[i] * T(2) * u[i] : T(0);
  });
}

}  // namespace pgolf::cpu
