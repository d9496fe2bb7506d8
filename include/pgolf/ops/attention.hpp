// Causal scaled-dot-product attention with grouped KV heads (the reference's
// F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=...)).
//
// Layouts follow the projections' outputs, so no transposes are needed:
//   q, y : (B, T, H,    Hd)    k, v : (B, T, Hkv, Hd)    lse : (B, H, T)
// Query head h reads KV head h / (H / Hkv); scores are scaled by 1/sqrt(Hd).
//
// The work is done in blocks of kAttnBlock query rows as small GEMMs (S = Q·Kᵀ over the causal
// prefix only, P = softmax(S), Y = P·V), the flash-attention structure without its on-chip
// tiling: the forward keeps lse = log Σ_j exp(s_j) per query row and the backward recomputes P
// from it, so no T×T matrix outlives a block.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "pgolf/core/parallel.hpp"
#include "pgolf/ops/gemm.hpp"

namespace pgolf::cpu {

inline constexpr std::int64_t kAttnBlock = 64;  // query rows per block

template <int Heads, int KvHeads, int HeadDim, class T>
void attention_forward(T* y, T* lse, const T* q, const T* k, const T* v, std::int64_t batch, std::int64_t seq) {
  static_assert(Heads % KvHeads == 0, "query heads must be a multiple of KV heads");
  constexpr int group = Heads / KvHeads;
  constexpr std::int64_t ldq = std::int64_t{Heads} * HeadDim, ldk = std::int64_t{KvHeads} * HeadDim;
  const T scale = T(1) / std::sqrt(static_cast<T>(HeadDim));
  const std::int64_t blocks = (seq + kAttnBlock - 1) / kAttnBlock;
  // One task per (batch, head, query block); the GEMMs inside run on the task's thread.
  parallel_for(0, batch * Heads * blocks, 1, [&](std::int64_t t0, std::int64_t t1) {
    std::vector<T> s(static_cast<std::size_t>(kAttnBlock * seq));
    for (std::int64_t task = t0; task < t1; ++task) {
      const std::int64_t b = task / (Heads * blocks);
      const int h = static_cast<int>((task / blocks) % Heads);
      const int kh = h / group;
      const std::int64_t i0 = (task % blocks) * kAttnBlock, i1 = std::min(seq, i0 + kAttnBlock);
      const std::int64_t rows = i1 - i0, cols = i1;  // keys 0 .. i1-1 cover the causal prefix
      const T* qb = q + (b * seq + i0) * ldq + h * HeadDim;
      const T* kb = k + b * seq * ldk + kh * HeadDim;
      const T* vb = v + b * seq * ldk + kh * HeadDim;
      gemm(Trans::no, Trans::yes, rows, cols, HeadDim, qb, ldq, kb, ldk, s.data(), cols, false);  // S = Q Kᵀ
      for (std::int64_t r = 0; r < rows; ++r) {
        T* sr = s.data() + r * cols;
        const std::int64_t last = i0 + r;  // keys j <= i only
        T m = -INFINITY;
        for (std::int64_t j = 0; j <= last; ++j) {
          sr[j] *= scale;
          m = std::max(m, sr[j]);
        }
        T denom = 0;
        for (std::int64_t j = 0; j <= last; ++j) {
          sr[j] = std::exp(sr[j] - m);
          denom += sr[j];
        }
        const T inv = T(1) / denom;
        for (std::int64_t j = 0; j <= last; ++j) sr[j] *= inv;
        for (std::int64_t j = last + 1; j < cols; ++j) sr[j] = T(0);
        lse[(b * Heads + h) * seq + i0 + r] = m + std::log(denom);
      }
      gemm(Trans::no, Trans::no, rows, HeadDim, cols, s.data(), cols, vb, ldk, y + (b * seq + i0) * ldq + h * HeadDim, ldq,
           false);  // Y = P V
    }
  });
}

// dq, dk and dv are written (not accumulated). One task per (batch, KV head) owns that head's
// dk/dv, so the sums over query heads and positions run in a fixed order.
template <int Heads, int KvHeads, int HeadDim, class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dy, const T* y, const T* lse, const T* q, const T* k, const T* v,
                        std::int64_t batch, std::int64_t seq) {
  constexpr int group = Heads / KvHeads;
  constexpr std::int64_t ldq = std::int64_t{Heads} * HeadDim, ldk = std::int64_t{KvHeads} * HeadDim;
  const T scale = T(1) / std::sqrt(static_cast<T>(HeadDim));
  const std::int64_t blocks = (seq + kAttnBlock - 1) / kAttnBlock;
  parallel_for(0, batch * KvHeads, 1, [&](std::int64_t t0, std::int64_t t1) {
    std::vector<T> p(static_cast<std::size_t>(kAttnBlock * seq)), dp(p.size());
    for (std::int64_t task = t0; task < t1; ++task) {
      const std::int64_t b = task / KvHeads;
      const int kh = static_cast<int>(task % KvHeads);
      const T* kb = k + b * seq * ldk + kh * HeadDim;
      const T* vb = v + b * seq * ldk + kh * HeadDim;
      T* dkb = dk + b * seq * ldk + kh * HeadDim;
      T* dvb = dv + b * seq * ldk + kh * HeadDim;
      for (std::int64_t j = 0; j < seq; ++j) {
        std::fill_n(dkb + j * ldk, HeadDim, T(0));
        std::fill_n(dvb + j * ldk, HeadDim, T(0));
      }
      for (int h = kh * group; h < (kh + 1) * group; ++h) {
        for (std::int64_t blk = 0; blk < blocks; ++blk) {
          const std::int64_t i0 = blk * kAttnBlock, i1 = std::min(seq, i0 + kAttnBlock);
          const std::int64_t rows = i1 - i0, cols = i1;
          const std::int64_t qoff = (b * seq + i0) * ldq + h * HeadDim;
          gemm(Trans::no, Trans::yes, rows, cols, HeadDim, q + qoff, ldq, kb, ldk, p.data(), cols, false);     // S
          gemm(Trans::no, Trans::yes, rows, cols, HeadDim, dy + qoff, ldq, vb, ldk, dp.data(), cols, false);   // dP = dY Vᵀ
          for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t i = i0 + r;
            const T l = lse[(b * Heads + h) * seq + i];
            T delta = 0;  // Σ_d dy·y = Σ_j p_j dp_j
            for (int d = 0; d < HeadDim; ++d) delta += dy[qoff + r * ldq + d] * y[qoff + r * ldq + d];
            T* pr = p.data() + r * cols;
            T* gr = dp.data() + r * cols;
            for (std::int64_t j = 0; j < cols; ++j) {
              if (j <= i) {
                pr[j] = std::exp(pr[j] * scale - l);
                gr[j] = pr[j] * (gr[j] - delta) * scale;  // dS, including the score scale
              } else {
                pr[j] = T(0);
                gr[j] = T(0);
              }
            }
          }
          gemm(Trans::no, Trans::no, rows, HeadDim, cols, dp.data(), cols, kb, ldk, dq + qoff, ldq, false);  // dQ = dS K
          gemm(Trans::yes, Trans::no, cols, HeadDim, rows, dp.data(), cols, q + qoff, ldq, dkb, ldk, true);  // dK += dSᵀ Q
          gemm(Trans::yes, Trans::no, cols, HeadDim, rows, p.data(), cols, dy + qoff, ldq, dvb, ldk, true);  // dV += Pᵀ dY
        }
      }
    }
  });
}

}  // namespace pgolf::cpu
