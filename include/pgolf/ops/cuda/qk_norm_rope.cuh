// The attention block's per-head preprocessing of q and k, fused into one pass over qkv:
//
//   q[n, h, :] = gain[h] · rope(rms_norm(q_raw[n, h, :]))      k[n, g, :] = rope(rms_norm(k_raw[n, g, :]))
//
// rms_norm is the weightless per-head RMSNorm (eps = cpu::kRmsNormEps), rope the reference's
// half-split rotation of the first RotaryDims dims of a head (partial RoPE: the rest pass through),
// gain the per-head q_gain. The CPU oracle is cpu::rmsnorm_forward<Hd>, cpu::rope_forward and
// cpu::head_gain_forward chained as in gpt_cpu.hpp's block_forward (and their backwards).
//
// Thread layout: a head (Hd values) is owned by a group of kTph = Hd / kE adjacent lanes, each
// holding kE consecutive values in registers (kE = 8 for Hd = 64: one 16-byte load per lane). The
// RMS sum is a butterfly over the group. The rotation pairs dim j with j + Rd/2: when kE divides
// Rd/2 the partner values sit in lane + Rd/(2·kE) at the same register index, and are fetched
// with one shuffle per pair of bf16 (the raw 32-bit words, before any arithmetic); when the whole
// rotary part fits in one lane's kE values (tiny heads) the rotation happens inside that lane.
//
// The backward recomputes nothing but the rotation of the incoming gradient: with u = Rᵀ·dq,
//   Σ dq·rope(y) = rstd · Σ u·x   (the gain's gradient)   and   d y = gain · u,
// so one group reduction S = Σ u·x gives both dgain's row term (rstd·S) and the RMSNorm backward
// dx = rstd·dy − rstd³/Hd · x · gain·S. dgain is summed deterministically: one block per fixed
// chunk of qk_detail::kBackwardChunkRows rows writes a per-chunk partial (fixed order inside the
// block), then add_partials adds the chunks in order (scratch: qk_norm_rope_scratch_size<H>(N)).
#pragma once

#include <algorithm>
#include <cstdint>

#include "pgolf/core/error.hpp"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/reduce.cuh"
#include "pgolf/ops/rmsnorm.hpp"
#include "pgolf/ops/rope.hpp"

namespace pgolf::cuda {

// Device copy of the reference's rotary tables: cos/sin (max_seq, rotary_dims/2) fp32, computed on
// the host by cpu::RopeTables<float> (the reference's float32 operation order) and uploaded.
struct DeviceRopeTables {
  DeviceBuffer<float> cos, sin;
  int rotary_dims = 0, seq_len = 0;

  DeviceRopeTables() = default;
  DeviceRopeTables(int max_seq, int rdims, double base) : rotary_dims(rdims), seq_len(max_seq) {
    PGOLF_CHECK(max_seq > 0, "RoPE tables need max_seq > 0, got " << max_seq);
    PGOLF_CHECK(rdims > 0 && rdims % 2 == 0, "RoPE rotary dims must be even and positive, got " << rdims);
    const cpu::RopeTables<float> host(max_seq, rdims, base);
    cos = DeviceBuffer<float>(host.cos.size(), "RoPE cos table");
    sin = DeviceBuffer<float>(host.sin.size(), "RoPE sin table");
    PGOLF_CUDA_CHECK(cudaMemcpy(cos.data(), host.cos.data(), cos.bytes(), cudaMemcpyHostToDevice));
    PGOLF_CUDA_CHECK(cudaMemcpy(sin.data(), host.sin.data(), sin.bytes(), cudaMemcpyHostToDevice));
  }
};

namespace qk_detail {

inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr int kForwardThreads = 256;
inline constexpr int kBackwardTargetThreads = 512;

constexpr bool is_pow2(int v) { return v > 0 && (v & (v - 1)) == 0; }

// How a head of Hd values with Rd rotary dims is spread over lanes.
template <int Hd, int Rd>
struct HeadLayout {
  static constexpr int kHalf = Rd / 2;
  // kE values per lane work if they tile the head with a power-of-two group of at most a warp, and
  // the rotary partner of every value is either in another lane at the same register index (kE
  // divides Rd/2) or in the same lane (the rotary dims fit in lane 0's values).
  static constexpr bool fits(int e) {
    return Hd % e == 0 && is_pow2(Hd / e) && Hd / e <= kWarpSize && (kHalf % e == 0 || Rd <= e);
  }
  static constexpr int kE = fits(8) ? 8 : fits(4) ? 4 : fits(2) ? 2 : Hd;  // Hd: one lane per head
  static constexpr int kTph = Hd / kE;                                    // lanes per head
  static constexpr bool kCross = kHalf % kE == 0;                          // partner in another lane
  static constexpr int kOff = kCross ? kHalf / kE : 0;                     // lane distance to the partner
  static constexpr int kRotChunks = kCross ? Rd / kE : 0;                  // lanes of a head that rotate
  // Widest vector load (in bf16 values) that tiles kE.
  static constexpr int kVec = kE % 8 == 0 ? 8 : kE % 4 == 0 ? 4 : 2;
};

// Butterfly sum over aligned groups of G lanes (G a power of two ≤ 32); every lane of a group gets
// the same bits (IEEE addition is commutative).
template <int G>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int o = G / 2; o > 0; o /= 2) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

// E bf16 values at p as E/2 raw 32-bit words (value 2i in the low half of word i), loaded W values
// at a time (W = 8, 4, 2: 16-, 8-, 4-byte loads, p aligned to W values; W = 1: 2-byte loads).
template <int E, int W>
__device__ __forceinline__ void load_words(std::uint32_t (&w)[E / 2], const nv_bf16* p) {
  if constexpr (W == 8) {
#pragma unroll
    for (int i = 0; i < E / 8; ++i) {
      const uint4 v = *reinterpret_cast<const uint4*>(p + 8 * i);
      w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
    }
  } else if constexpr (W == 4) {
#pragma unroll
    for (int i = 0; i < E / 4; ++i) {
      const uint2 v = *reinterpret_cast<const uint2*>(p + 4 * i);
      w[2 * i] = v.x, w[2 * i + 1] = v.y;
    }
  } else if constexpr (W == 2) {
#pragma unroll
    for (int i = 0; i < E / 2; ++i) w[i] = *reinterpret_cast<const std::uint32_t*>(p + 2 * i);
  } else {
    static_assert(W == 1, "load width must be 1, 2, 4 or 8 values");
    const auto* s = reinterpret_cast<const unsigned short*>(p);
#pragma unroll
    for (int i = 0; i < E / 2; ++i) w[i] = static_cast<std::uint32_t>(s[2 * i]) | (static_cast<std::uint32_t>(s[2 * i + 1]) << 16);
  }
}

template <int E, int W>
__device__ __forceinline__ void store_words(nv_bf16* p, const std::uint32_t (&w)[E / 2]) {
  if constexpr (W == 8) {
#pragma unroll
    for (int i = 0; i < E / 8; ++i) *reinterpret_cast<uint4*>(p + 8 * i) = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
  } else if constexpr (W == 4) {
#pragma unroll
    for (int i = 0; i < E / 4; ++i) *reinterpret_cast<uint2*>(p + 4 * i) = make_uint2(w[2 * i], w[2 * i + 1]);
  } else if constexpr (W == 2) {
#pragma unroll
    for (int i = 0; i < E / 2; ++i) *reinterpret_cast<std::uint32_t*>(p + 2 * i) = w[i];
  } else {
    static_assert(W == 1, "store width must be 1, 2, 4 or 8 values");
    auto* s = reinterpret_cast<unsigned short*>(p);
#pragma unroll
    for (int i = 0; i < E / 2; ++i) {
      s[2 * i] = static_cast<unsigned short>(w[i] & 0xffffu);
      s[2 * i + 1] = static_cast<unsigned short>(w[i] >> 16);
    }
  }
}

template <int E>
__device__ __forceinline__ void unpack(float (&x)[E], const std::uint32_t (&w)[E / 2]) {
#pragma unroll
  for (int i = 0; i < E / 2; ++i) {
    x[2 * i] = __uint_as_float(w[i] << 16);
    x[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

template <int E>
__device__ __forceinline__ void pack(std::uint32_t (&w)[E / 2], const float (&x)[E]) {
#pragma unroll
  for (int i = 0; i < E / 2; ++i) {
    const __nv_bfloat162 b = __floats2bfloat162_rn(x[2 * i], x[2 * i + 1]);  // .x = low half = value 2i
    w[i] = *reinterpret_cast<const std::uint32_t*>(&b);
  }
}

// E consecutive table entries (p aligned to E floats when E % 4 == 0).
template <int E>
__device__ __forceinline__ void load_table(float (&t)[E], const float* p) {
  if constexpr (E % 4 == 0) {
#pragma unroll
    for (int i = 0; i < E / 4; ++i) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(p) + i);
      t[4 * i] = v.x, t[4 * i + 1] = v.y, t[4 * i + 2] = v.z, t[4 * i + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) t[i] = __ldg(p + i);
  }
}

// Rotates this lane's values v (scaled by `scale` first: rstd in the forward, 1 in the backward)
// by +θ (forward, rope) or −θ (Inverse: the transpose, for the backward). `w` are the lane's raw
// words, shuffled to the partner lane in the cross-lane case. Every lane of the warp must call it.
template <class L, bool Inverse>
__device__ __forceinline__ void rotate(float (&v)[L::kE], const std::uint32_t (&w)[L::kE / 2], float scale, int sub, const float* cos_row,
                                       const float* sin_row) {
  constexpr int E = L::kE;
  if constexpr (L::kCross) {
    const bool first = sub < L::kOff, second = !first && sub < L::kRotChunks;
    const int lane = static_cast<int>(threadIdx.x % kWarpSize);
    const int src = first ? lane + L::kOff : (second ? lane - L::kOff : lane);
    std::uint32_t pw[E / 2];
#pragma unroll
    for (int i = 0; i < E / 2; ++i) pw[i] = __shfl_sync(kFullMask, w[i], src);
    if (first || second) {
      float pv[E], c[E], s[E];
      unpack<E>(pv, pw);
      const int j0 = (first ? sub : sub - L::kOff) * E;
      load_table<E>(c, cos_row + j0);
      load_table<E>(s, sin_row + j0);
      // forward:  first half a·c + b·s,  second half −a·s + b·c   (a = x[j], b = x[j + Rd/2])
      // inverse:  first half a·c − b·s,  second half  a·s + b·c
      const float sign = (first != Inverse) ? 1.0f : -1.0f;
#pragma unroll
      for (int i = 0; i < E; ++i) {
        const float own = v[i] * scale, par = pv[i] * scale;
        v[i] = own * c[i] + sign * (par * s[i]);
      }
    } else {
#pragma unroll
      for (int i = 0; i < E; ++i) v[i] *= scale;
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) v[i] *= scale;
    if (sub == 0) {
      constexpr int half = L::kHalf;
#pragma unroll
      for (int j = 0; j < half; ++j) {
        const float a = v[j], b = v[j + half], c = __ldg(cos_row + j), s = Inverse ? -__ldg(sin_row + j) : __ldg(sin_row + j);
        v[j] = a * c + b * s;
        v[j + half] = -a * s + b * c;
      }
    }
  }
}

template <int H, int Hkv, int Hd, int Rd, int W>
__global__ void __launch_bounds__(kForwardThreads)
    qk_norm_rope_forward(nv_bf16* __restrict__ q, nv_bf16* __restrict__ k, float* __restrict__ q_rstd, float* __restrict__ k_rstd,
                         const nv_bf16* __restrict__ qkv, std::int64_t ld_qkv, const float* __restrict__ gain,
                         const float* __restrict__ cos_t, const float* __restrict__ sin_t, std::int64_t rows, std::int64_t seq) {
  using L = HeadLayout<Hd, Rd>;
  constexpr int E = L::kE, kHeads = H + Hkv;
  const std::int64_t gid = static_cast<std::int64_t>(blockIdx.x) * kForwardThreads + threadIdx.x;
  const std::int64_t unit = gid / L::kTph;  // (row, head) pair
  const int sub = static_cast<int>(gid % L::kTph);
  // Lanes past the end still take part in the shuffles (with zeros) and store nothing.
  const bool active = unit < rows * kHeads;
  const std::int64_t n = active ? unit / kHeads : 0;
  const int hh = static_cast<int>(unit % kHeads);  // q heads [0, H), then k heads
  const bool is_q = hh < H;

  std::uint32_t w[E / 2] = {};
  if (active) load_words<E, W>(w, qkv + n * ld_qkv + static_cast<std::int64_t>(hh) * Hd + sub * E);
  float x[E];
  unpack<E>(x, w);
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < E; ++i) ss += x[i] * x[i];
  ss = group_sum<L::kTph>(ss);
  const float rstd = 1.0f / sqrtf(ss / static_cast<float>(Hd) + static_cast<float>(cpu::kRmsNormEps));

  const std::int64_t t = n % seq;
  rotate<L, false>(x, w, rstd, sub, cos_t + t * L::kHalf, sin_t + t * L::kHalf);
  if (!active) return;
  if (is_q) {
    const float g = __ldg(gain + hh);
#pragma unroll
    for (int i = 0; i < E; ++i) x[i] *= g;
  }
  pack<E>(w, x);
  nv_bf16* out = is_q ? q + n * (H * Hd) + hh * Hd : k + n * (Hkv * Hd) + (hh - H) * Hd;
  store_words<E, W>(out + sub * E, w);
  if (sub == 0) {
    if (is_q) {
      q_rstd[n * H + hh] = rstd;
    } else {
      k_rstd[n * Hkv + (hh - H)] = rstd;
    }
  }
}

// The backward's block: kRows rows per pass, (H + Hkv)·kTph lanes per row.
template <int H, int Hkv, int Hd, int Rd>
struct BackwardShape {
  static constexpr int kLanesPerRow = (H + Hkv) * HeadLayout<Hd, Rd>::kTph;
  static constexpr int kRows = std::max(1, kBackwardTargetThreads / kLanesPerRow);
  static constexpr int kThreads = ceil_div(kRows * kLanesPerRow, kWarpSize) * kWarpSize;
  static_assert(kThreads <= 1024, "qk_norm_rope_backward: one row's heads need at most 1024 lanes");
};

// Rows per block of the backward (one partial dgain row each). Smaller than the column sums'
// kReduceRows: one block holds only kRows rows at a time (about 5 for the baseline), so 256-row
// chunks would give 256 blocks for 65,536 rows (two per SM on an H100); 64-row chunks give 1,024.
inline constexpr int kBackwardChunkRows = 64;

template <int H, int Hkv, int Hd, int Rd, int W>
__global__ void __launch_bounds__(BackwardShape<H, Hkv, Hd, Rd>::kThreads)
    qk_norm_rope_backward(nv_bf16* d_qkv, std::int64_t ld_dqkv, float* __restrict__ partials, const nv_bf16* __restrict__ dq,
                          const nv_bf16* __restrict__ dk, const nv_bf16* qkv, std::int64_t ld_qkv, const float* __restrict__ q_rstd,
                          const float* __restrict__ k_rstd, const float* __restrict__ gain, const float* __restrict__ cos_t,
                          const float* __restrict__ sin_t, std::int64_t rows, std::int64_t seq) {
  using L = HeadLayout<Hd, Rd>;
  using S = BackwardShape<H, Hkv, Hd, Rd>;
  constexpr int E = L::kE;
  __shared__ float head_sums[S::kRows][H];

  const int tid = static_cast<int>(threadIdx.x);
  const bool used = tid < S::kRows * S::kLanesPerRow;
  const int rp = tid / S::kLanesPerRow;
  const int within = tid % S::kLanesPerRow;
  const int hh = within / L::kTph, sub = within % L::kTph;
  const bool is_q = hh < H;
  const float g = is_q && used ? __ldg(gain + hh) : 1.0f;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * kBackwardChunkRows;
  const std::int64_t r1 = std::min(r0 + kBackwardChunkRows, rows);

  float acc = 0.0f;  // this lane's Σ over its rows of rstd·S (q heads, sub == 0), in row order
  for (std::int64_t base = r0; base < r1; base += S::kRows) {  // the same trip count for the whole block
    const std::int64_t n = base + rp;
    const bool active = used && n < r1;
    std::uint32_t gw[E / 2] = {}, xw[E / 2] = {};
    float rstd = 0.0f;
    if (active) {
      const nv_bf16* gsrc = is_q ? dq + n * (H * Hd) + hh * Hd : dk + n * (Hkv * Hd) + (hh - H) * Hd;
      load_words<E, W>(gw, gsrc + sub * E);
      load_words<E, W>(xw, qkv + n * ld_qkv + static_cast<std::int64_t>(hh) * Hd + sub * E);
      rstd = is_q ? q_rstd[n * H + hh] : k_rstd[n * Hkv + (hh - H)];
    }
    float u[E], x[E];
    unpack<E>(u, gw);
    unpack<E>(x, xw);
    const std::int64_t t = n % seq;
    rotate<L, true>(u, gw, 1.0f, sub, cos_t + t * L::kHalf, sin_t + t * L::kHalf);  // u = Rᵀ·dq
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < E; ++i) dot += u[i] * x[i];
    dot = group_sum<L::kTph>(dot);  // S = Σ u·x over the head
    if (!active) continue;
    if (is_q && sub == 0) acc += rstd * dot;  // Σ dq·rope(y) = rstd·S
    // dy = g·u;  dx = rstd·dy − rstd³/Hd · x · Σ dy·x
    const float c = g * dot * rstd * rstd * rstd / static_cast<float>(Hd);
#pragma unroll
    for (int i = 0; i < E; ++i) u[i] = rstd * (g * u[i]) - c * x[i];
    pack<E>(gw, u);
    store_words<E, W>(d_qkv + n * ld_dqkv + static_cast<std::int64_t>(hh) * Hd + sub * E, gw);
  }
  if (used && is_q && sub == 0) head_sums[rp][hh] = acc;
  __syncthreads();
  if (tid < H) {
    float total = 0.0f;
#pragma unroll
    for (int r = 0; r < S::kRows; ++r) total += head_sums[r][tid];
    partials[static_cast<std::int64_t>(blockIdx.x) * H + tid] = total;
  }
}

template <int H, int Hkv, int Hd, int Rd>
constexpr void check_shape() {
  static_assert(H > 0 && Hkv > 0, "qk_norm_rope: need at least one q head and one k head");
  static_assert(Hd > 0 && Hd % 2 == 0, "qk_norm_rope: head_dim must be even (RoPE pairs and bf16x2 words)");
  static_assert(Rd > 0 && Rd % 2 == 0 && Rd <= Hd, "qk_norm_rope: RotaryDims must be even, positive and at most head_dim");
}

inline bool aligned_to(const void* p, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

inline void check_rope(const DeviceRopeTables& rope, int rotary_dims, std::int64_t seq) {
  PGOLF_CHECK(rope.rotary_dims == rotary_dims,
              "qk_norm_rope: RoPE tables built for " << rope.rotary_dims << " rotary dims, the kernel rotates " << rotary_dims);
  PGOLF_CHECK(seq >= 1 && seq <= rope.seq_len, "qk_norm_rope: seq " << seq << " outside the RoPE tables' [1, " << rope.seq_len << "]");
}

}  // namespace qk_detail

// From qkv (N = batch·seq rows, row stride ld_qkv) bf16 holding q in columns [0, H·Hd) and k in
// [H·Hd, H·Hd + Hkv·Hd):  q (N, H·Hd) = gain[h] · rope(rms_norm(q_raw)),  k (N, Hkv·Hd) = rope(rms_norm(k_raw)),
// both packed bf16 (computed in fp32, rounded once); q_rstd (N, H) and k_rstd (N, Hkv) fp32 for the
// backward. The position of row n is n % seq. 16-byte accesses when every pointer and ld_qkv allow.
template <int H, int Hkv, int Hd, int RotaryDims>
void qk_norm_rope_forward(nv_bf16* q, nv_bf16* k, float* q_rstd, float* k_rstd, const nv_bf16* qkv, std::int64_t ld_qkv, const float* gain,
                          const DeviceRopeTables& rope, std::int64_t batch, std::int64_t seq, cudaStream_t stream) {
  qk_detail::check_shape<H, Hkv, Hd, RotaryDims>();
  using L = qk_detail::HeadLayout<Hd, RotaryDims>;
  const std::int64_t rows = batch * seq;
  if (rows == 0) return;
  qk_detail::check_rope(rope, RotaryDims, seq);
  PGOLF_CHECK(ld_qkv >= (H + Hkv) * Hd, "qk_norm_rope_forward: ld_qkv " << ld_qkv << " is narrower than q and k");
  const std::int64_t threads = rows * (H + Hkv) * L::kTph;
  const auto blocks = static_cast<unsigned>(ceil_div(threads, static_cast<std::int64_t>(qk_detail::kForwardThreads)));
  constexpr std::size_t kVecBytes = L::kVec * sizeof(nv_bf16);
  const bool vec = ld_qkv % L::kVec == 0 && qk_detail::aligned_to(qkv, kVecBytes) && qk_detail::aligned_to(q, kVecBytes) &&
                   qk_detail::aligned_to(k, kVecBytes);
  if (vec) {
    qk_detail::qk_norm_rope_forward<H, Hkv, Hd, RotaryDims, L::kVec><<<blocks, qk_detail::kForwardThreads, 0, stream>>>(
        q, k, q_rstd, k_rstd, qkv, ld_qkv, gain, rope.cos.data(), rope.sin.data(), rows, seq);
  } else {
    qk_detail::qk_norm_rope_forward<H, Hkv, Hd, RotaryDims, 1><<<blocks, qk_detail::kForwardThreads, 0, stream>>>(
        q, k, q_rstd, k_rstd, qkv, ld_qkv, gain, rope.cos.data(), rope.sin.data(), rows, seq);
  }
  PGOLF_CUDA_LAUNCH_CHECK();
}

// Scratch floats that qk_norm_rope_backward needs for N rows: H per chunk of kBackwardChunkRows.
template <int H>
std::int64_t qk_norm_rope_scratch_size(std::int64_t rows) {
  return ceil_div(rows, static_cast<std::int64_t>(qk_detail::kBackwardChunkRows)) * H;
}

// Backward: from dq (N, H·Hd) and dk (N, Hkv·Hd) bf16 writes d q_raw and d k_raw (bf16) into
// columns [0, H·Hd + Hkv·Hd) of d_qkv (row stride ld_dqkv; the v columns are not touched) and adds dgain[H] += Σ dq ⊙ rope(rms_norm(q_raw)), deterministically (scratch:
// qk_norm_rope_scratch_size<H>(N) floats). The normalised, rotated q is recomputed from qkv and q_rstd.
template <int H, int Hkv, int Hd, int RotaryDims>
void qk_norm_rope_backward(nv_bf16* d_qkv, std::int64_t ld_dqkv, float* dgain, const nv_bf16* dq, const nv_bf16* dk, const nv_bf16* qkv,
                           std::int64_t ld_qkv, const float* q_rstd, const float* k_rstd, const float* gain, const DeviceRopeTables& rope,
                           std::int64_t batch, std::int64_t seq, float* scratch, cudaStream_t stream) {
  qk_detail::check_shape<H, Hkv, Hd, RotaryDims>();
  using L = qk_detail::HeadLayout<Hd, RotaryDims>;
  using S = qk_detail::BackwardShape<H, Hkv, Hd, RotaryDims>;
  const std::int64_t rows = batch * seq;
  if (rows == 0) return;
  qk_detail::check_rope(rope, RotaryDims, seq);
  PGOLF_CHECK(ld_qkv >= (H + Hkv) * Hd && ld_dqkv >= (H + Hkv) * Hd,
              "qk_norm_rope_backward: ld_qkv " << ld_qkv << " / ld_dqkv " << ld_dqkv << " narrower than q and k");
  const std::int64_t chunks = ceil_div(rows, static_cast<std::int64_t>(qk_detail::kBackwardChunkRows));
  PGOLF_CHECK(chunks <= 0x7fffffffLL, "qk_norm_rope_backward: " << rows << " rows exceed one grid");
  constexpr std::size_t kVecBytes = L::kVec * sizeof(nv_bf16);
  const bool vec = ld_qkv % L::kVec == 0 && ld_dqkv % L::kVec == 0 && qk_detail::aligned_to(qkv, kVecBytes) &&
                   qk_detail::aligned_to(d_qkv, kVecBytes) && qk_detail::aligned_to(dq, kVecBytes) && qk_detail::aligned_to(dk, kVecBytes);
  const auto blocks = static_cast<unsigned>(chunks);
  if (vec) {
    qk_detail::qk_norm_rope_backward<H, Hkv, Hd, RotaryDims, L::kVec><<<blocks, S::kThreads, 0, stream>>>(
        d_qkv, ld_dqkv, scratch, dq, dk, qkv, ld_qkv, q_rstd, k_rstd, gain, rope.cos.data(), rope.sin.data(), rows, seq);
  } else {
    qk_detail::qk_norm_rope_backward<H, Hkv, Hd, RotaryDims, 1><<<blocks, S::kThreads, 0, stream>>>(
        d_qkv, ld_dqkv, scratch, dq, dk, qkv, ld_qkv, q_rstd, k_rstd, gain, rope.cos.data(), rope.sin.data(), rows, seq);
  }
  PGOLF_CUDA_LAUNCH_CHECK();
  add_partials(dgain, scratch, chunks, H, stream);
}

}  // namespace pgolf::cuda
