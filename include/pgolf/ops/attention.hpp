// Causal scaled-dot-product attention with grouped KV heads (the reference's
// F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=...)).
//
// Layouts follow the projections' outputs, so no transposes are needed:
//   q, y : (B, T, H,    Hd)    k, v : (B, T, Hkv, Hd)    lse : (B, H, T)
// Query head h reads KV head h / (H / Hkv); scores are scaled by 1/sqrt(Hd).
// The forward keeps lse = log Σ_j exp(s_j) per query row; the backward recomputes the
// probabilities from it (the flash-attention recipe), so no T×T matrix is stored.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "pgolf/core/parallel.hpp"

namespace pgolf::cpu {

template <int Heads, int KvHeads, int HeadDim, class T>
void attention_forward(T* y, T* lse, const T* q, const T* k, const T* v, std::int64_t batch, std::int64_t seq) {
  static_assert(Heads % KvHeads == 0, "query heads must be a multiple of KV heads");
  constexpr int group = Heads / KvHeads;
  const T scale = T(1) / std::sqrt(static_cast<T>(HeadDim));
  // One task per (batch, query head, block of query rows).
  constexpr std::int64_t kRowsPerTask = 64;
  const std::int64_t row_blocks = (seq + kRowsPerTask - 1) / kRowsPerTask;
  parallel_for(0, batch * Heads * row_blocks, 1, [&](std::int64_t t0, std::int64_t t1) {
    std::vector<T> scores(static_cast<std::size_t>(seq));
    for (std::int64_t task = t0; task < t1; ++task) {
      const std::int64_t b = task / (Heads * row_blocks);
      const int h = static_cast<int>((task / row_blocks) % Heads);
      const int kh = h / group;
      const std::int64_t i_begin = (task % row_blocks) * kRowsPerTask;
      const std::int64_t i_end = std::min(seq, i_begin + kRowsPerTask);
      for (std::int64_t i = i_begin; i < i_end; ++i) {
        const T* qi = q + ((b * seq + i) * Heads + h) * HeadDim;
        T m = -INFINITY;
        for (std::int64_t j = 0; j <= i; ++j) {
          const T* kj = k + ((b * seq + j) * KvHeads + kh) * HeadDim;
          T s = 0;
          for (int d = 0; d < HeadDim; ++d) s += qi[d] * kj[d];
          s *= scale;
          scores[j] = s;
          m = std::max(m, s);
        }
        T denom = 0;
        for (std::int64_t j = 0; j <= i; ++j) {
          scores[j] = std::exp(scores[j] - m);
          denom += scores[j];
        }
        T* yi = y + ((b * seq + i) * Heads + h) * HeadDim;
        T acc[HeadDim] = {};
        for (std::int64_t j = 0; j <= i; ++j) {
          const T* vj = v + ((b * seq + j) * KvHeads + kh) * HeadDim;
          const T p = scores[j];
          for (int d = 0; d < HeadDim; ++d) acc[d] += p * vj[d];
        }
        const T inv = T(1) / denom;
        for (int d = 0; d < HeadDim; ++d) yi[d] = acc[d] * inv;
        lse[(b * Heads + h) * seq + i] = m + std::log(denom);
      }
    }
  });
}

// dq is written; dk and dv are written (not accumulated). One task per (batch, KV head) owns that
// head's dk/dv rows, so the sums over query heads and positions run in a fixed order.
template <int Heads, int KvHeads, int HeadDim, class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dy, const T* y, const T* lse, const T* q, const T* k, const T* v,
                        std::int64_t batch, std::int64_t seq) {
  constexpr int group = Heads / KvHeads;
  const T scale = T(1) / std::sqrt(static_cast<T>(HeadDim));
  parallel_for(0, batch * KvHeads, 1, [&](std::int64_t t0, std::int64_t t1) {
    std::vector<T> p(static_cast<std::size_t>(seq)), dp(static_cast<std::size_t>(seq));
    for (std::int64_t task = t0; task < t1; ++task) {
      const std::int64_t b = task / KvHeads;
      const int kh = static_cast<int>(task % KvHeads);
      for (std::int64_t j = 0; j < seq; ++j) {
        std::fill_n(dk + ((b * seq + j) * KvHeads + kh) * HeadDim, HeadDim, T(0));
        std::fill_n(dv + ((b * seq + j) * KvHeads + kh) * HeadDim, HeadDim, T(0));
      }
      for (int h = kh * group; h < (kh + 1) * group; ++h) {
        for (std::int64_t i = 0; i < seq; ++i) {
          const std::int64_t qrow = ((b * seq + i) * Heads + h) * HeadDim;
          const T* qi = q + qrow;
          const T* dyi = dy + qrow;
          const T* yi = y + qrow;
          const T l = lse[(b * Heads + h) * seq + i];
          T delta = 0;  // Σ_d dy·y = Σ_j p_j dp_j
          for (int d = 0; d < HeadDim; ++d) delta += dyi[d] * yi[d];
          for (std::int64_t j = 0; j <= i; ++j) {
            const T* kj = k + ((b * seq + j) * KvHeads + kh) * HeadDim;
            const T* vj = v + ((b * seq + j) * KvHeads + kh) * HeadDim;
            T s = 0, g = 0;
            for (int d = 0; d < HeadDim; ++d) {
              s += qi[d] * kj[d];
              g += dyi[d] * vj[d];
            }
            p[j] = std::exp(s * scale - l);
            dp[j] = g;
          }
          T dqi[HeadDim] = {};
          for (std::int64_t j = 0; j <= i; ++j) {
            const T ds = p[j] * (dp[j] - delta) * scale;
            const T* kj = k + ((b * seq + j) * KvHeads + kh) * HeadDim;
            T* dkj = dk + ((b * seq + j) * KvHeads + kh) * HeadDim;
            T* dvj = dv + ((b * seq + j) * KvHeads + kh) * HeadDim;
            for (int d = 0; d < HeadDim; ++d) {
              dqi[d] += ds * kj[d];
              dkj[d] += ds * qi[d];
              dvj[d] += p[j] * dyi[d];
            }
          }
          std::copy_n(dqi, HeadDim, dq + qrow);
        }
      }
    }
  });
}

}  // namespace pgolf::cpu
