// Logit softcap followed by cross-entropy, the reference's head:
//   z' = c · tanh(z / c);   loss_n = logsumexp(z'_n) − z'_n[y_n];   loss = mean_n loss_n
// The forward replaces the raw logits by the capped ones in place (tanh is evaluated once per
// logit); the backward needs only z', because d z'/d z = 1 − tanh² = 1 − (z'/c)². Row sums are
// accumulated in float64 (the reference computes F.cross_entropy on float32 logits).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "pgolf/core/error.hpp"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/core/parallel.hpp"

namespace pgolf::cpu {

namespace softcap_detail {

// Caps each raw logit with soft_cap(z) in place, then loss[n] and lse[n] with float64 row sums.
template <int V, class T, class SoftCap>
void forward_rows(T* loss, T* lse, T* logits, const std::int32_t* targets, std::int64_t n, SoftCap soft_cap) {
  parallel_for(0, n, 16, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const std::int32_t y = targets[r];
      PGOLF_CHECK(y >= 0 && y < V, "target id " << y << " at position " << r << " is outside the vocabulary [0, " << V << ")");
      T* zr = logits + r * V;
      T m = -INFINITY;
      for (int i = 0; i < V; ++i) {
        zr[i] = soft_cap(zr[i]);
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

}  // namespace softcap_detail

// logits: raw z (n, V) in, capped z' out. Writes loss[n] and lse[n] (logsumexp of z').
template <int V, class T>
void softcap_cross_entropy_forward(T* loss, T* lse, T* logits, const std::int32_t* targets, std::int64_t n, T cap) {
  softcap_detail::forward_rows<V>(loss, lse, logits, targets, n, [cap](T z) { return cap * std::tanh(z / cap); });
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

// ---------------------------------------------------------------------------------------------
// The reference's head as eager autocast rounds it, emulated on the CPU. train_gpt.py computes
//   logits = c · tanh(z / c);   F.cross_entropy(logits.float(), targets)
// on the head GEMM's bf16 output z, so z / c, tanh and c · tanh are bf16 tensor ops: eager PyTorch
// evaluates each in fp32 and rounds its result to bf16 (dividing by the Python scalar c is a
// multiplication by its fp32 reciprocal on CUDA: div_true_kernel_cuda). Autograd rounds in the
// same places going back: the fp32 cross-entropy gradient is cast to bf16 (the .float()), then
// multiplied by c, by 1 − tanh² (tanh_backward, from the bf16 tanh output) and by 1/c, each
// product rounded to bf16. The script itself runs under torch.compile, whose fused kernels skip
// some of these roundings (Inductor's emulate_precision_casts is off by default; which ones
// depends on the fusion: docs/reference-parity.md), so this is the most-rounded variant of the
// reference, not its exact bits. pgolf's CUDA kernel keeps z/c, tanh and c·tanh in fp32 (the
// formulas above on bf16 z, one bf16 rounding of dz); bench/softcap_rounding.cpp measures how far
// apart the two are on a trained model. test_golden checks this emulation against PyTorch's eager
// bf16 ops on the CPU.
// ---------------------------------------------------------------------------------------------

struct AutocastSoftcap {
  float th;      // bf16(tanh(bf16(z · (1/c))))
  float capped;  // bf16(c · th): the logit the reference's cross-entropy sees
};

inline AutocastSoftcap autocast_softcap(float z, float cap) {
  const float inv_cap = 1.0f / cap;
  const float th = round_to_bf16(std::tanh(round_to_bf16(z * inv_cap)));
  return {th, round_to_bf16(cap * th)};
}

// logits: raw bf16 z (n, V) in, the reference's bf16 z' out; loss[n] and lse[n] as the fp32
// cross-entropy gives them (row sums in float64, like the fp32 oracle above).
template <int V>
void softcap_cross_entropy_forward_autocast(float* loss, float* lse, float* logits, const std::int32_t* targets, std::int64_t n,
                                            float cap) {
  softcap_detail::forward_rows<V>(loss, lse, logits, targets, n, [cap](float z) { return autocast_softcap(z, cap).capped; });
}

// dz[n, V] (bf16 values) = the reference's autograd gradient of Σ dloss[n] · loss_n with respect to
// the raw z, from the raw z (to recompute the bf16 tanh), the capped z' and lse of the forward.
// dz may alias z.
template <int V>
void softcap_cross_entropy_backward_autocast(float* dz, const float* z, const float* capped, const float* lse,
                                             const std::int32_t* targets, const float* dloss, std::int64_t n, float cap) {
  const float inv_cap = 1.0f / cap;
  parallel_for(0, n, 16, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* zr = z + r * V;
      const float* cr = capped + r * V;
      float* out = dz + r * V;
      const float g = dloss[r], l = lse[r];
      const std::int32_t y = targets[r];
      for (int i = 0; i < V; ++i) {
        const float th = autocast_softcap(zr[i], cap).th;
        const float d_capped = round_to_bf16(g * (std::exp(cr[i] - l) - (i == y ? 1.0f : 0.0f)));  // .float() backward
        const float d_th = round_to_bf16(d_capped * cap);                                            // c · tanh
        const float d_t = round_to_bf16(d_th * (1.0f - th * th));                                    // tanh_backward
        out[i] = round_to_bf16(d_t * inv_cap);                                                       // z / c
      }
    }
  });
}

}  // namespace pgolf::cpu
