// Logit softcap followed by cross-entropy, the reference's head:
//   z' = c · tanh(z / c);   loss_n = logsumexp(z'_n) − z'_n[y_n];   loss = mean_n loss_n
// computed in float64 accumulators per row (the reference computes F.cross_entropy on fp32
// logits). The backward writes dz in place over the raw logits.
#pragma once

#include <cmath>
#include <cstdint>

#include "pgolf/core/error.hpp"
#include "pgolf/core/parallel.hpp"

namespace pgolf::cpu {

// z: raw logits (n, V). Writes loss[n] and lse[n] (logsumexp of the capped logits).
template <int V, class T>
void softcap_cross_entropy_forward(T* loss, T* lse, const T* z, const std::int32_t* targets, std::int64_t n, T cap) {
  parallel_for(0, n, 16, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int32_t y = targets[r];
      PGOLF_CHECK(y >= 0 && y < V, "target id " << y << " at position " << r << " is outside the vocabulary [0, " << V << ")");
      const T* zr = z + r * V;
      double m = -INFINITY;
      for (int i = 0; i < V; ++i) m = std::max(m, static_cast<double>(cap * std::tanh(zr[i] / cap)));
      double s = 0;
      for (int i = 0; i < V; ++i) s += std::exp(static_cast<double>(cap * std::tanh(zr[i] / cap)) - m);
      const double l = m + std::log(s);
      lse[r] = static_cast<T>(l);
      loss[r] = static_cast<T>(l - static_cast<double>(cap * std::tanh(zr[y] / cap)));
    }
  });
}

// dz[n, V] = dloss[n] · (softmax(z') − onehot(y)) · (1 − tanh²(z/c)); dz may alias z.
template <int V, class T>
void softcap_cross_entropy_backward(T* dz, const T* z, const T* lse, const std::int32_t* targets, const T* dloss,
                                    std::int64_t n, T cap) {
  parallel_for(0, n, 16, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const T* zr = z + r * V;
      T* out = dz + r * V;
      const T g = dloss[r];
      const double l = lse[r];
      for (int i = 0; i < V; ++i) {
        const T t = std::tanh(zr[i] / cap);
        const T prob = static_cast<T>(std::exp(static_cast<double>(cap * t) - l));
        const T dcapped = g * (prob - (i == targets[r] ? T(1) : T(0)));
        out[i] = dcapped * (T(1) - t * t);
      }
    }
  });
}

}  // namespace pgolf::cpu
