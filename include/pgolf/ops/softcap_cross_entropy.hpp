// Logit softcap followed by cross-entropy, the reference's head:
//   z' = c · tanh(z / c);   loss_n = logsumexp(z'_n) − z'_n[y_n];   loss = mean_n loss_n
// The forward replaces the raw logits by the capped ones in place (tanh is evaluated once per
// logit); the backward needs only z', because d z'/d z = 1 − tanh² = 1 − (z'/c)². Row sums are
// accumulated in float64 (the reference computes F.cross_entropy on float32 logits).
#pragma once

#include <cmath>
#include <cstdint>

#include "pgolf/core/error.hpp"
#include "pgolf/core/parallel.hpp"

namespace pgolf::cpu {

// logits: raw z (n, V) in, capped z' out. Writes loss[n] and lse[n] (logsumexp of z').
template <int V, class T>
void softcap_cross_entropy_forward(T* loss, T* lse, T* logits, const std::int32_t* targets, std::int64_t n, T cap) {
  parallel_for(0, n, 16, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int32_t y = targets[r];
      PGOLF_CHECK(y >= 0 && y < V, "target id " << y << " at position " << r << " is outside the vocabulary [0, " << V << ")");
      T* zr = logits + r * V;
      T m = -INFINITY;
      for (int i = 0; i < V; ++i) {
        zr[i] = cap * std::tanh(zr[i] / cap);
        m = std::max(m, zr[i]);
      }
      double s = 0;
      for (int i = 0; i < V; ++i) s += static_cast<double>(std::exp(zr[i] - m));
      const double l = static_cast<double>(m) + std::log(s);
      lse[r] = static_cast<T>(l);
      loss[r] = static_cast<T>(l - static_cast<double>(zr[y]));
    }
  });
}

// dz[n, V] = dloss[n] · (softmax(z') − onehot(y)) · (1 − (z'/c)²) from the capped logits z';
// dz may alias them.
template <int V, class T>
void softcap_cross_entropy_backward(T* dz, const T* capped, const T* lse, const std::int32_t* targets, const T* dloss,
                                    std::int64_t n, T cap) {
  parallel_for(0, n, 16, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const T* zr = capped + r * V;
      T* out = dz + r * V;
      const T g = dloss[r], l = lse[r];
      const std::int32_t y = targets[r];
      for (int i = 0; i < V; ++i) {
        const T t = zr[i] / cap;
        const T prob = std::exp(zr[i] - l);
        out[i] = g * (prob - (i == y ? T(1) : T(0))) * (T(1) - t * t);
      }
    }
  });
}

}  // namespace pgolf::cpu
