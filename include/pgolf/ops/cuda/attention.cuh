// Causal grouped-query attention on the GPU: softmax(q·kᵀ/√Hd)·v with query head h reading KV
// head h / (Heads/KvHeads), forward and backward, as cpu::attention_forward/backward
// (ops/attention.hpp, the oracle) computes them.
//
//   q, y, dq, dy : (B, T, Heads,   Hd)   row stride ld* (elements between consecutive tokens)
//   k, v, dk, dv : (B, T, KvHeads, Hd)   row strides ld*
//   lse          : (B, Heads, T) fp32, natural-log logsumexp of the scaled scores of each query row
//
// Two implementations, chosen at compile time by attention_forward/attention_backward:
//   - tensor cores (HeadDim ∈ {32, 64, 128}): FlashAttention-2-style kernels on mma.sync
//     m16n8k16 bf16 → fp32 (ops/cuda/mma.cuh), described below;
//   - `_simple` (any even HeadDim): one warp per row, fp32 math on bf16 inputs, a plain loop over
//     keys. Slow (no tiling, no tensor cores) and obviously correct; the reference for the tests
//     and the path of tiny test models (HeadDim 4 or 8).
//
// Requirements (checked on the host, pgolf::Error otherwise): batch in [1, 65535], seq in
// [1, 2^30]; every row stride >= the row's width (Heads·Hd or KvHeads·Hd). The tensor-core path
// also needs every pointer 16-byte aligned and every stride a multiple of 8 elements (16-byte
// cp.async rows); the simple path needs 4-byte pointers and even strides (bf16 pairs).
// `scratch` (backward) is device memory of attention_backward_scratch_bytes(batch, seq) bytes,
// 4-byte aligned: delta = rowsum(dy ∘ y) per (B, Heads, T) in fp32. Its size depends only on
// batch·seq, so a buffer sized for (1, B·T) serves (B, T).
//
// ================================================================================================
// Tensor-core kernels. Every CTA has 4 warps (128 threads); every warp owns 16 rows of the tile
// (one m16 row block of the mma), so no data is exchanged between warps except through the
// shared-memory tiles that all of them read. Shared-memory tiles are (rows, Hd) bf16, swizzled
// (mma::swizzle) so that ldmatrix reads them without bank conflicts; they are filled by 16-byte
// cp.async copies, double-buffered (the next tile streams in while the current one is used), and
// rows past the end of the sequence are zero-filled.
//
// Forward (kernels::flash_forward), one CTA per (query block of 64 rows, head, batch):
//   Q tile (64, Hd) → registers (A fragments, 16 rows per warp), kept for the whole CTA.
//   For each key tile of 64 keys at or below the diagonal (tiles above it are never loaded):
//     S = Q·Kᵀ (16 × 64 per warp, fp32 accumulators; K read with ldmatrix, no transpose);
//     causal mask on the tiles that cross the warp's diagonal only (key > query → −∞);
//     online softmax in fp32 registers: running max m and sum l per row, P = 2^(S·c − m·c) with
//     c = log2(e)/√Hd folded into one FMA, O and l rescaled by 2^((m_old − m_new)·c);
//     O += P·V (P rounded to bf16 and reused in registers as the A operand; V with ldmatrix.trans).
//   Finally y = O / l (bf16) and lse = m/√Hd + ln l. Row sums of l stay per-thread partials (the 4
//   lanes of a row hold different columns) until the end, when the quad is reduced once.
//   Query blocks run heaviest-first (the last block of the sequence has the most key tiles).
//   Why 64 × 64: 16 rows per warp keep Q (Hd/16 × 4 registers), O (Hd/2 floats) and S (32 floats)
//   in registers for Hd up to 128 without spills, and 4 warps × 64 rows give ceil(T/64)·H·B CTAs
//   (8192 at the baseline shape), several per SM. Shared memory: Q + 2 stages of K and V =
//   5·64·Hd·2 bytes (40 KiB at Hd = 64, 80 KiB at Hd = 128).
//
// Backward, deterministic (no atomics; every output element is written by one thread, every sum
// runs in a fixed order), three kernels:
//   1. kernels::attention_delta: delta = rowsum(dy ∘ y) in fp32 into `scratch`, one warp per row.
//   2. kernels::flash_backward_dq, one CTA per (query block of 64, head, batch): Q and dY tiles
//      → registers; for each key tile at or below the diagonal: S = Q·Kᵀ, dP = dY·Vᵀ, P from lse,
//      dS = P ∘ (dP − delta) / √Hd, dQ += dS·K (K with ldmatrix.trans); dQ written once.
//   3. kernels::flash_backward_dkdv, one CTA per (key block of 64, KV head, batch): K and V tiles
//      (the warp's 16 keys as A fragments); for each query head of the group and each query block
//      at or below the diagonal (Q, dY, lse, delta double-buffered): Sᵀ = K·Qᵀ and dPᵀ = V·dYᵀ
//      (keys × queries, so that the accumulators are already the A operands of the next products),
//      Pᵀ, dSᵀ, then dV += Pᵀ·dY and dK += dSᵀ·Q in registers; written once at the end. The sum
//      over the group's query heads happens here, in a fixed order, instead of in atomics.
//   FlashAttention-2 computes dQ in the dK/dV kernel with fp32 atomic adds (5 GEMMs in all); here
//   the dQ kernel recomputes S and dP (7 GEMMs), the price of determinism without a reduction
//   buffer of (key blocks × T × Hd) partial dQs.
//   Tiles: Hd <= 64: 64 × 64 in both kernels, K/V fragments of the dK/dV kernel held in registers;
//   Hd = 128: 64 query rows × 32 keys (dQ) and 64 keys × 32 queries (dK/dV), K/V fragments
//   re-read from shared memory, to keep the accumulators (dK and dV: 2 × 64 floats) in registers.
//
// Numerics (both paths): scores, softmax and every accumulation in fp32; bf16 only for the inputs,
// the outputs, and (tensor-core path) P and dS where they feed the P·V, Pᵀ·dY, dSᵀ·Q, dS·K
// products, as in FlashAttention-2.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>

#include "pgolf/core/error.hpp"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/mma.cuh"

namespace pgolf::cuda {

namespace attn {

inline constexpr int kWarps = 4;
inline constexpr int kThreads = kWarps * kWarpSize;  // per CTA of the tensor-core kernels
inline constexpr int kWarpRows = 16;                 // rows of a warp: one mma m16 block
inline constexpr int kSimpleThreads = 256;           // per block of the simple kernels (8 rows)
inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr int kMaxSmemBytes = 227 * 1024;  // dynamic shared memory per block on sm_90 (sm_80: 163 KiB)

template <int HeadDim>
inline constexpr bool kTensorCore = HeadDim == 32 || HeadDim == 64 || HeadDim == 128;

template <int Heads, int KvHeads, int HeadDim>
constexpr bool check_shape() {
  static_assert(Heads > 0 && KvHeads > 0 && HeadDim > 0, "attention: Heads, KvHeads and HeadDim must be positive");
  static_assert(Heads % KvHeads == 0, "attention: Heads must be a multiple of KvHeads (query head h reads KV head h / (Heads/KvHeads))");
  static_assert(HeadDim % 2 == 0, "attention: HeadDim must be even (rows are read as bf16 pairs)");
  static_assert(Heads <= 65535, "attention: Heads is a grid dimension (at most 65535)");
  return true;
}

// Tile sizes of the tensor-core kernels for one head dim (see the file comment for the choice).
template <int D>
struct Tiles {
  static_assert(kTensorCore<D>, "tensor-core attention is built for head dims 32, 64 and 128");
  static constexpr int kFwdM = kWarps * kWarpRows;  // query rows per forward CTA
  static constexpr int kFwdN = 64;                  // keys per K/V tile
  static constexpr int kDqM = kWarps * kWarpRows;   // query rows per dQ CTA
  static constexpr int kDqN = D >= 128 ? 32 : 64;   // keys per K/V tile of the dQ kernel
  static constexpr int kDkvN = kWarps * kWarpRows;  // keys per dK/dV CTA
  static constexpr int kDkvM = D >= 128 ? 32 : 64;  // queries per step of the dK/dV kernel
  static constexpr bool kDkvHoldKV = D <= 64;       // dK/dV kernel keeps K/V fragments in registers

  static constexpr int kFwdSmem = (kFwdM + 4 * kFwdN) * D * 2;                       // Q, 2 × (K, V)
  static constexpr int kDqSmem = (2 * kDqM + 4 * kDqN) * D * 2;                      // Q, dY, 2 × (K, V)
  static constexpr int kDkvSmem = (2 * kDkvN + 4 * kDkvM) * D * 2 + 4 * kDkvM * 4;  // K, V, 2 × (Q, dY, lse, delta)

  // Every tile is a whole number of 16-row mma blocks and of 16-column k-steps ...
  static_assert(D % 16 == 0 && kFwdN % 16 == 0 && kDqN % 16 == 0 && kDkvM % 16 == 0, "tiles must be multiples of 16");
  // ... and of 16-byte copies per thread (each of the 128 threads copies the same number of chunks).
  static_assert((kFwdN * D / 8) % kThreads == 0 && (kDqN * D / 8) % kThreads == 0 && (kDkvM * D / 8) % kThreads == 0 &&
                    (kFwdM * D / 8) % kThreads == 0,
                "each tile must be a whole number of 16-byte chunks per thread");
  static_assert(2 * kDkvM <= kThreads, "one thread per lse and per delta value of a query block");
  static_assert(kDkvN % kDkvM == 0 || kDkvM % kDkvN == 0, "key and query blocks must nest (the diagonal block starts at a key block)");
  static_assert(kFwdSmem <= kMaxSmemBytes && kDqSmem <= kMaxSmemBytes && kDkvSmem <= kMaxSmemBytes, "tiles exceed shared memory");
};

// ------------------------------------------------------------------------------ tile schedule (host and device)
// Which (query, key) blocks the tensor-core kernels visit and where they mask, as functions shared
// by the kernels and the host tests (test/cuda/attention_test.cu enumerates every CTA, warp and
// tile with them and checks that each visible pair key <= query < seq is used exactly once and
// every other pair that reaches the softmax is masked: keys past the end read zero-filled rows,
// whose score 0 would otherwise count).
//
// A block of queries [q0, q0 + nq) × keys [k0, k0 + nk):
// some key is visible to some query (else the block is skipped) ...
PGOLF_HD constexpr bool block_has_visible(int q0, int nq, int k0) { return k0 <= q0 + nq - 1; }
// ... and some key is after some query (the block needs the causal mask).
PGOLF_HD constexpr bool block_has_hidden(int q0, int k0, int nk) { return k0 + nk - 1 > q0; }
// The causal rule: key j is hidden from query i iff j > i.
PGOLF_HD constexpr bool causal_hidden(int query, int key) { return key > query; }

// Query-major kernels (forward, dQ): the CTA of queries [i0, i0 + m) walks key tiles t·n, t <
// key_tiles(...): every key <= the CTA's last real query.
PGOLF_HD constexpr int key_tiles(int i0, int m, int n, int seq) { return ceil_div(i0 + m < seq ? i0 + m : seq, n); }

// Key-major kernel (dK/dV): the CTA of keys [j0, j0 + n) walks, for each query head of its group,
// the query blocks of m from the one holding key j0 to the end. Step s of kGroup·per_head:
PGOLF_HD constexpr int first_query_block(int j0, int m) { return j0 / m; }
PGOLF_HD constexpr int query_blocks_per_head(int j0, int m, int seq) { return ceil_div(seq, m) - first_query_block(j0, m); }
struct DkvStep {
  int head, i0;  // query head, first query of the block
};
PGOLF_HD constexpr DkvStep dkdv_step(int kh, int group, int j0, int m, int per_head, int step) {
  return {kh * group + step / per_head, (first_query_block(j0, m) + step % per_head) * m};
}
// A warp's keys [key0, key0 + 16) × queries [i0, i0 + m) need masking when some key is after some
// query or some query is past the end (zero-filled Q rows, lse and delta 0: P would be 2^0 = 1).
PGOLF_HD constexpr bool dkdv_block_needs_mask(int key0, int i0, int m, int seq) {
  return block_has_hidden(i0, key0, kWarpRows) || i0 + m > seq;
}
PGOLF_HD constexpr bool dkdv_masked(int query, int key, int seq) { return causal_hidden(query, key) || query >= seq; }

// ------------------------------------------------------------------------------ host-side checks
struct Operand {
  const char* name;
  const void* ptr;
  std::int64_t ld;     // row stride (elements)
  std::int64_t width;  // elements of a row that are read or written
};

inline void check_extents(std::int64_t batch, std::int64_t seq) {
  PGOLF_CHECK(batch >= 1 && batch <= 65535, "attention: batch " << batch << " must be in [1, 65535] (a grid dimension)");
  PGOLF_CHECK(seq >= 1 && seq <= (std::int64_t{1} << 30), "attention: seq " << seq << " must be in [1, 2^30]");
}

// Tensor-core path: 16-byte aligned pointers and strides of multiples of 8 elements; simple path:
// 4-byte pointers and even strides.
inline void check_operands(std::initializer_list<Operand> ops, bool tensor_core) {
  const std::int64_t align = tensor_core ? 16 : 4, ld_multiple = tensor_core ? 8 : 2;
  for (const Operand& op : ops) {
    PGOLF_CHECK(op.ptr != nullptr, "attention: " << op.name << " is null");
    PGOLF_CHECK(op.ld >= op.width, "attention: row stride of " << op.name << " is " << op.ld << ", less than its width " << op.width);
    PGOLF_CHECK(reinterpret_cast<std::uintptr_t>(op.ptr) % align == 0,
                "attention: " << op.name << " must be " << align << "-byte aligned" << (tensor_core ? " (tensor-core path)" : ""));
    PGOLF_CHECK(op.ld % ld_multiple == 0, "attention: row stride of " << op.name << " (" << op.ld << ") must be a multiple of "
                                                                   << ld_multiple << " elements" << (tensor_core ? " (tensor-core path)" : ""));
  }
}

// Raises the dynamic shared-memory limit of `kernel` when it needs more than the default 48 KiB.
template <class Kernel>
void allow_smem(Kernel kernel, int bytes) {
  if (bytes > 48 * 1024) PGOLF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

// ------------------------------------------------------------------------------ tile helpers (device)
// Rows row0 .. row0+Rows-1 of a slab whose row r starts at g + r·ld, into the swizzled (Rows, D)
// tile s; rows >= seq are zero-filled (so keys past the end contribute exact zeros to P·V).
// All threads of the CTA take part; the copies are asynchronous (commit and wait by the caller).
template <int Rows, int D>
__device__ __forceinline__ void load_tile(nv_bf16* s, const nv_bf16* g, std::int64_t ld, int row0, int seq) {
  constexpr int kChunksPerRow = D / 8, kChunks = Rows * kChunksPerRow;
  static_assert(kChunks % kThreads == 0, "whole chunks per thread");
#pragma unroll
  for (int i = 0; i < kChunks / kThreads; ++i) {
    const int c = static_cast<int>(threadIdx.x) + i * kThreads;
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const bool valid = row0 + r < seq;
    const nv_bf16* src = g + static_cast<std::int64_t>(valid ? row0 + r : 0) * ld + col;  // a mapped address even when unused
    mma::cp_async_16(s + mma::swizzle<D>(r, col), src, valid);
  }
}

// A fragments of the 16 rows row0 .. row0+15 of a swizzled (·, D) tile, for all D/16 k-steps:
// f[kk] covers columns 16·kk .. 16·kk+15.
template <int D>
__device__ __forceinline__ void load_a_frags(std::uint32_t (&f)[D / 16][4], const nv_bf16* tile, int row0, int lane) {
  const mma::RowCol at = mma::ldsm_a(lane);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) mma::ldsm_x4(f[kk], tile + mma::swizzle<D>(row0 + at.row, kk * 16 + at.col));
}

// acc (16 × N) += A (16 × D, fragments a) · Bᵀ with B the swizzled (N, D) tile `tile`:
// S = Q·Kᵀ, dP = dY·Vᵀ, Sᵀ = K·Qᵀ, dPᵀ = V·dYᵀ. acc[nt] is the 16×8 C fragment of columns 8nt..8nt+7.
template <int D, int N>
__device__ __forceinline__ void mma_abt(float (&acc)[N / 8][4], const std::uint32_t (&a)[D / 16][4], const nv_bf16* tile, int lane) {
  const mma::RowCol at = mma::ldsm_b_nk(lane);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      std::uint32_t b[4];  // B registers of n-tiles 2np (b[0], b[1]) and 2np+1 (b[2], b[3])
      mma::ldsm_x4(b, tile + mma::swizzle<D>(np * 16 + at.row, kk * 16 + at.col));
      mma::mma_bf16(acc[2 * np], a[kk], b[0], b[1]);
      mma::mma_bf16(acc[2 * np + 1], a[kk], b[2], b[3]);
    }
  }
}

// acc (16 × D) += A (16 × K, fragments a) · B with B the swizzled (K, D) tile `tile`:
// O += P·V, dQ += dS·K, dV += Pᵀ·dY, dK += dSᵀ·Q.
template <int D, int K>
__device__ __forceinline__ void mma_ab(float (&acc)[D / 8][4], const std::uint32_t (&a)[K / 16][4], const nv_bf16* tile, int lane) {
  const mma::RowCol at = mma::ldsm_b_kn_trans(lane);
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
#pragma unroll
    for (int dp = 0; dp < D / 16; ++dp) {
      std::uint32_t b[4];
      mma::ldsm_x4_trans(b, tile + mma::swizzle<D>(kk * 16 + at.row, dp * 16 + at.col));
      mma::mma_bf16(acc[2 * dp], a[kk], b[0], b[1]);
      mma::mma_bf16(acc[2 * dp + 1], a[kk], b[2], b[3]);
    }
  }
}

// C fragments of a 16 × N tile → bf16 A fragments of the same tile (N as the k dimension).
template <int N>
__device__ __forceinline__ void c_to_a(std::uint32_t (&a)[N / 16][4], const float (&c)[N / 8][4]) {
#pragma unroll
  for (int kk = 0; kk < N / 16; ++kk) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const float(&src)[4] = c[2 * kk + mma::c_to_a_tile(r)];
      const int e = mma::c_to_a_elem(r);
      a[kk][r] = mma::pack_bf16(src[e], src[e + 1]);
    }
  }
}

// Stores a warp's 16 × D fp32 accumulator as bf16 rows row0 .. row0+15 of `out` (row r at
// out + r·ld); rows >= seq are skipped. Each lane writes bf16 pairs (4 bytes).
template <int D>
__device__ __forceinline__ void store_rows(nv_bf16* out, std::int64_t ld, const float (&acc)[D / 8][4], int row0, int seq, int lane) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const mma::RowCol rc = mma::frag_c(lane, 2 * half);
    const int row = row0 + rc.row;
    if (row >= seq) continue;
    nv_bf16* dst = out + static_cast<std::int64_t>(row) * ld + rc.col;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) {
      const std::uint32_t bits = mma::pack_bf16(acc[nt][2 * half], acc[nt][2 * half + 1]);
      *reinterpret_cast<std::uint32_t*>(dst + nt * 8) = bits;
    }
  }
}

// ------------------------------------------------------------------------------ simple-path helpers
// A warp holds a row of D elements as D/2 bf16 pairs spread over the lanes: lane l has pairs
// l, l + 32, ... (zeros past the end).
template <int D>
struct LaneRow {
  static constexpr int kPairs = D / 2;
  static constexpr int kPerLane = (kPairs + kWarpSize - 1) / kWarpSize;
  float2 x[kPerLane];

  __device__ __forceinline__ void load(const nv_bf16* row, int lane) {
    const auto* p = reinterpret_cast<const __nv_bfloat162*>(row);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int idx = lane + i * kWarpSize;
      x[i] = idx < kPairs ? __bfloat1622float2(p[idx]) : make_float2(0.0f, 0.0f);
    }
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) x[i] = make_float2(0.0f, 0.0f);
  }
  __device__ __forceinline__ void store(nv_bf16* row, int lane) const {
    auto* p = reinterpret_cast<__nv_bfloat162*>(row);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int idx = lane + i * kWarpSize;
      if (idx < kPairs) p[idx] = __floats2bfloat162_rn(x[i].x, x[i].y);
    }
  }
  // Σ this · other over the row, returned to every lane.
  __device__ __forceinline__ float dot(const LaneRow& o) const {
    float acc = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc = fmaf(x[i].x, o.x[i].x, fmaf(x[i].y, o.x[i].y, acc));
    return warp_sum(acc);
  }
  __device__ __forceinline__ void scale(float alpha) {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) x[i] = make_float2(x[i].x * alpha, x[i].y * alpha);
  }
  // this = this·alpha + beta·o
  __device__ __forceinline__ void scale_add(float alpha, float beta, const LaneRow& o) {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      x[i].x = fmaf(beta, o.x[i].x, x[i].x * alpha);
      x[i].y = fmaf(beta, o.x[i].y, x[i].y * alpha);
    }
  }
};

}  // namespace attn

// =============================================================================================
namespace kernels {

// ------------------------------------------------------------------------------ tensor-core forward
// grid (ceil(T / 64), Heads, B), kThreads threads, Tiles<D>::kFwdSmem bytes of dynamic smem.
template <int Heads, int KvHeads, int D>
__global__ void __launch_bounds__(attn::kThreads)
    flash_forward(nv_bf16* __restrict__ y, std::int64_t ldy, float* __restrict__ lse, const nv_bf16* __restrict__ q, std::int64_t ldq,
                  const nv_bf16* __restrict__ k, std::int64_t ldk, const nv_bf16* __restrict__ v, std::int64_t ldv, int seq, float scale,
                  float scale_log2) {
  using Tl = attn::Tiles<D>;
  constexpr int M = Tl::kFwdM, N = Tl::kFwdN, kGroup = Heads / KvHeads;
  extern __shared__ __align__(128) unsigned char attn_smem[];
  nv_bf16* sQ = reinterpret_cast<nv_bf16*>(attn_smem);  // (M, D)
  nv_bf16* sK = sQ + M * D;                              // 2 stages × (N, D)
  nv_bf16* sV = sK + 2 * N * D;                          // 2 stages × (N, D)

  const int qblock = static_cast<int>(gridDim.x - 1 - blockIdx.x);  // heaviest (last) query blocks first
  const int h = static_cast<int>(blockIdx.y), kh = h / kGroup;
  const std::int64_t b = blockIdx.z;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int i0 = qblock * M;                  // first query row of the CTA
  const int row0 = i0 + attn::kWarpRows * warp;  // first query row of this warp
  const bool warp_active = row0 < seq;        // warp-uniform: some of its rows are real

  const nv_bf16* qg = q + b * seq * ldq + h * D;  // token t of this (batch, head) at qg + t·ldq
  const nv_bf16* kg = k + b * seq * ldk + kh * D;
  const nv_bf16* vg = v + b * seq * ldv + kh * D;
  const int n_tiles = attn::key_tiles(i0, M, N, seq);  // key tiles holding keys <= the block's last real row

  attn::load_tile<M, D>(sQ, qg, ldq, i0, seq);
  mma::cp_async_commit();
  attn::load_tile<N, D>(sK, kg, ldk, 0, seq);
  attn::load_tile<N, D>(sV, vg, ldv, 0, seq);
  mma::cp_async_commit();
  mma::cp_async_wait<1>();  // Q has landed (groups complete in order)
  __syncthreads();

  std::uint32_t qf[D / 16][4] = {};  // (16, D) Q rows of this warp, A fragments
  if (warp_active) attn::load_a_frags<D>(qf, sQ, attn::kWarpRows * warp, lane);

  float o[D / 8][4] = {};                            // (16, D) unnormalised output
  float m_run[2] = {-INFINITY, -INFINITY};           // running max of the raw scores of rows g, g+8
  float l_run[2] = {0.0f, 0.0f};                     // this lane's part of Σ exp of those rows

  for (int t = 0; t < n_tiles; ++t) {
    if (t + 1 < n_tiles) {  // prefetch the next K/V tile into the other stage
      const int st = (t + 1) & 1;
      attn::load_tile<N, D>(sK + st * N * D, kg, ldk, (t + 1) * N, seq);
      attn::load_tile<N, D>(sV + st * N * D, vg, ldv, (t + 1) * N, seq);
      mma::cp_async_commit();
      mma::cp_async_wait<1>();
    } else {
      mma::cp_async_wait<0>();
    }
    __syncthreads();  // tile t is visible to every warp
    const int j0 = t * N;
    if (warp_active && attn::block_has_visible(row0, attn::kWarpRows, j0)) {  // else every key of the tile is after every row of the warp
      const nv_bf16* sKt = sK + (t & 1) * N * D;
      const nv_bf16* sVt = sV + (t & 1) * N * D;
      float s[N / 8][4] = {};  // (16, N) raw scores q·k
      attn::mma_abt<D, N>(s, qf, sKt, lane);
      if (attn::block_has_hidden(row0, j0, N)) {  // the tile crosses the warp's diagonal: key j > query i is masked
#pragma unroll
        for (int nt = 0; nt < N / 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const mma::RowCol rc = mma::frag_c(lane, e);
            if (attn::causal_hidden(row0 + rc.row, j0 + nt * 8 + rc.col)) s[nt][e] = -INFINITY;
          }
        }
      }
      // Online softmax. Element e of a C fragment belongs to row g (e < 2) or g + 8 (e >= 2); the
      // 4 lanes of a quad (lane / 4 equal) hold the row's other columns, hence the xor-1/xor-2 shuffles.
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int nt = 0; nt < N / 8; ++nt) {
        mx[0] = fmaxf(mx[0], fmaxf(s[nt][0], s[nt][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[nt][2], s[nt][3]));
      }
      float ms[2], alpha[2];
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        mx[hf] = fmaxf(mx[hf], __shfl_xor_sync(0xffffffffu, mx[hf], 1));
        mx[hf] = fmaxf(mx[hf], __shfl_xor_sync(0xffffffffu, mx[hf], 2));
        const float m_new = fmaxf(m_run[hf], mx[hf]);
        ms[hf] = m_new == -INFINITY ? 0.0f : m_new * scale_log2;  // a row with nothing visible yet stays at 0
        alpha[hf] = mma::ex2(m_run[hf] * scale_log2 - ms[hf]);    // 0 when m_run was −∞
        m_run[hf] = m_new;
        l_run[hf] *= alpha[hf];
      }
#pragma unroll
      for (int nt = 0; nt < N / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[nt][e] = mma::ex2(fmaf(s[nt][e], scale_log2, -ms[e / 2]));  // p = exp((s − m)/√D); masked → 0
          l_run[e / 2] += s[nt][e];
        }
      }
#pragma unroll
      for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) o[dt][e] *= alpha[e / 2];
      }
      std::uint32_t pa[N / 16][4];  // (16, N) P in bf16, A fragments
      attn::c_to_a<N>(pa, s);
      attn::mma_ab<D, N>(o, pa, sVt, lane);
    }
    __syncthreads();  // every warp is done with stage t & 1 before the next prefetch overwrites it
  }

  if (warp_active) {
    float inv[2], row_lse[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = l_run[hf];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv[hf] = 1.0f / l;  // l >= 1 for every row (its max contributes exp(0))
      row_lse[hf] = m_run[hf] * scale + logf(l);
    }
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[dt][e] *= inv[e / 2];
    }
    attn::store_rows<D>(y + b * seq * ldy + h * D, ldy, o, row0, seq, lane);
    if (lane % 4 == 0) {
      float* lse_row = lse + (b * Heads + h) * seq;
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int row = row0 + mma::frag_c(lane, 2 * hf).row;
        if (row < seq) lse_row[row] = row_lse[hf];
      }
    }
  }
}

// ------------------------------------------------------------------------------ delta = rowsum(dy ∘ y)
// One warp per (b, t, h) row; delta is (B, Heads, T). Grid-stride over rows.
template <int Heads, int D>
__global__ void attention_delta(float* __restrict__ delta, const nv_bf16* __restrict__ dy, std::int64_t lddy, const nv_bf16* __restrict__ y,
                                std::int64_t ldy, std::int64_t rows, int seq) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const std::int64_t warps_per_block = blockDim.x / kWarpSize;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * warps_per_block;
  for (std::int64_t r = blockIdx.x * warps_per_block + threadIdx.x / kWarpSize; r < rows; r += stride) {
    const int h = static_cast<int>(r % Heads);
    const std::int64_t token = r / Heads;  // b·T + t
    attn::LaneRow<D> a, c;
    a.load(dy + token * lddy + h * D, lane);
    c.load(y + token * ldy + h * D, lane);
    const float d = a.dot(c);
    if (lane == 0) {
      const std::int64_t b = token / seq, t = token % seq;
      delta[(b * Heads + h) * seq + t] = d;
    }
  }
}

// ------------------------------------------------------------------------------ tensor-core dQ
// grid (ceil(T / 64), Heads, B), kThreads threads, Tiles<D>::kDqSmem bytes of dynamic smem.
template <int Heads, int KvHeads, int D>
__global__ void __launch_bounds__(attn::kThreads)
    flash_backward_dq(nv_bf16* __restrict__ dq, std::int64_t lddq, const nv_bf16* __restrict__ dy, std::int64_t lddy,
                      const float* __restrict__ lse, const float* __restrict__ delta, const nv_bf16* __restrict__ q, std::int64_t ldq,
                      const nv_bf16* __restrict__ k, std::int64_t ldk, const nv_bf16* __restrict__ v, std::int64_t ldv, int seq, float scale,
                      float scale_log2) {
  using Tl = attn::Tiles<D>;
  constexpr int M = Tl::kDqM, N = Tl::kDqN, kGroup = Heads / KvHeads;
  extern __shared__ __align__(128) unsigned char attn_smem[];
  nv_bf16* sQ = reinterpret_cast<nv_bf16*>(attn_smem);  // (M, D)
  nv_bf16* sdY = sQ + M * D;                             // (M, D)
  nv_bf16* sK = sdY + M * D;                             // 2 stages × (N, D)
  nv_bf16* sV = sK + 2 * N * D;                          // 2 stages × (N, D)

  const int qblock = static_cast<int>(gridDim.x - 1 - blockIdx.x);  // heaviest first
  const int h = static_cast<int>(blockIdx.y), kh = h / kGroup;
  const std::int64_t b = blockIdx.z;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int i0 = qblock * M, row0 = i0 + attn::kWarpRows * warp;
  const bool warp_active = row0 < seq;

  const nv_bf16* kg = k + b * seq * ldk + kh * D;
  const nv_bf16* vg = v + b * seq * ldv + kh * D;
  const int n_tiles = attn::key_tiles(i0, M, N, seq);

  attn::load_tile<M, D>(sQ, q + b * seq * ldq + h * D, ldq, i0, seq);
  attn::load_tile<M, D>(sdY, dy + b * seq * lddy + h * D, lddy, i0, seq);
  mma::cp_async_commit();
  attn::load_tile<N, D>(sK, kg, ldk, 0, seq);
  attn::load_tile<N, D>(sV, vg, ldv, 0, seq);
  mma::cp_async_commit();
  mma::cp_async_wait<1>();
  __syncthreads();

  std::uint32_t qf[D / 16][4] = {}, dyf[D / 16][4] = {};  // (16, D) Q and dY rows of this warp
  float lse2[2] = {INFINITY, INFINITY}, dlt[2] = {0.0f, 0.0f};  // rows g, g+8: lse·log2(e), delta (rows >= seq: P = 0)
  if (warp_active) {
    attn::load_a_frags<D>(qf, sQ, attn::kWarpRows * warp, lane);
    attn::load_a_frags<D>(dyf, sdY, attn::kWarpRows * warp, lane);
    const std::int64_t base = (b * Heads + h) * seq;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int row = row0 + mma::frag_c(lane, 2 * hf).row;
      if (row < seq) {
        lse2[hf] = lse[base + row] * attn::kLog2e;
        dlt[hf] = delta[base + row];
      }
    }
  }

  float dqa[D / 8][4] = {};  // (16, D) dQ accumulator
  for (int t = 0; t < n_tiles; ++t) {
    if (t + 1 < n_tiles) {
      const int st = (t + 1) & 1;
      attn::load_tile<N, D>(sK + st * N * D, kg, ldk, (t + 1) * N, seq);
      attn::load_tile<N, D>(sV + st * N * D, vg, ldv, (t + 1) * N, seq);
      mma::cp_async_commit();
      mma::cp_async_wait<1>();
    } else {
      mma::cp_async_wait<0>();
    }
    __syncthreads();
    const int j0 = t * N;
    if (warp_active && attn::block_has_visible(row0, attn::kWarpRows, j0)) {
      const nv_bf16* sKt = sK + (t & 1) * N * D;
      const nv_bf16* sVt = sV + (t & 1) * N * D;
      float s[N / 8][4] = {}, dp[N / 8][4] = {};  // (16, N) scores and dP = dY·Vᵀ
      attn::mma_abt<D, N>(s, qf, sKt, lane);
      attn::mma_abt<D, N>(dp, dyf, sVt, lane);
      const bool diag = attn::block_has_hidden(row0, j0, N);
#pragma unroll
      for (int nt = 0; nt < N / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const mma::RowCol rc = mma::frag_c(lane, e);
          float p = mma::ex2(fmaf(s[nt][e], scale_log2, -lse2[e / 2]));
          if (diag && attn::causal_hidden(row0 + rc.row, j0 + nt * 8 + rc.col)) p = 0.0f;
          s[nt][e] = p * (dp[nt][e] - dlt[e / 2]) * scale;  // dS, including the score scale
        }
      }
      std::uint32_t dsa[N / 16][4];  // (16, N) dS in bf16, A fragments
      attn::c_to_a<N>(dsa, s);
      attn::mma_ab<D, N>(dqa, dsa, sKt, lane);
    }
    __syncthreads();
  }
  if (warp_active) attn::store_rows<D>(dq + b * seq * lddq + h * D, lddq, dqa, row0, seq, lane);
}

// ------------------------------------------------------------------------------ tensor-core dK, dV
// grid (ceil(T / 64), KvHeads, B), kThreads threads, Tiles<D>::kDkvSmem bytes of dynamic smem.
template <int Heads, int KvHeads, int D>
__global__ void __launch_bounds__(attn::kThreads)
    flash_backward_dkdv(nv_bf16* __restrict__ dk, std::int64_t lddk, nv_bf16* __restrict__ dv, std::int64_t lddv,
                        const nv_bf16* __restrict__ dy, std::int64_t lddy, const float* __restrict__ lse, const float* __restrict__ delta,
                        const nv_bf16* __restrict__ q, std::int64_t ldq, const nv_bf16* __restrict__ k, std::int64_t ldk,
                        const nv_bf16* __restrict__ v, std::int64_t ldv, int seq, float scale, float scale_log2) {
  using Tl = attn::Tiles<D>;
  constexpr int N = Tl::kDkvN, M = Tl::kDkvM, kGroup = Heads / KvHeads;
  constexpr bool kHold = Tl::kDkvHoldKV;
  extern __shared__ __align__(128) unsigned char attn_smem[];
  nv_bf16* sK = reinterpret_cast<nv_bf16*>(attn_smem);  // (N, D) keys of the CTA
  nv_bf16* sV = sK + N * D;                              // (N, D)
  nv_bf16* sQ = sV + N * D;                              // 2 stages × (M, D)
  nv_bf16* sdY = sQ + 2 * M * D;                         // 2 stages × (M, D)
  float* sLse = reinterpret_cast<float*>(sdY + 2 * M * D);  // 2 stages × M
  float* sDelta = sLse + 2 * M;                             // 2 stages × M

  const int kblock = static_cast<int>(blockIdx.x);  // the first key blocks have the most query blocks: they start first
  const int kh = static_cast<int>(blockIdx.y);
  const std::int64_t b = blockIdx.z;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int j0 = kblock * N, key0 = j0 + attn::kWarpRows * warp;  // first key of the CTA, of the warp
  const bool warp_active = key0 < seq;

  // Steps: for each query head of the group, the query blocks from the one holding key j0 to the end.
  const int per_head = attn::query_blocks_per_head(j0, M, seq), steps = kGroup * per_head;
  auto issue = [&](int step, int st) {  // start the copies of one step's Q, dY, lse, delta into stage st
    const attn::DkvStep sp = attn::dkdv_step(kh, kGroup, j0, M, per_head, step);
    const int h = sp.head, i0 = sp.i0;
    attn::load_tile<M, D>(sQ + st * M * D, q + b * seq * ldq + h * D, ldq, i0, seq);
    attn::load_tile<M, D>(sdY + st * M * D, dy + b * seq * lddy + h * D, lddy, i0, seq);
    const std::int64_t base = (b * Heads + h) * seq;
    const int tid = static_cast<int>(threadIdx.x);
    if (tid < 2 * M) {
      const int c = tid % M, i = i0 + c;
      const bool valid = i < seq;
      const float* src = (tid < M ? lse : delta) + base + (valid ? i : 0);
      mma::cp_async_4((tid < M ? sLse : sDelta) + st * M + c, src, valid);
    }
  };

  attn::load_tile<N, D>(sK, k + b * seq * ldk + kh * D, ldk, j0, seq);
  attn::load_tile<N, D>(sV, v + b * seq * ldv + kh * D, ldv, j0, seq);
  mma::cp_async_commit();
  issue(0, 0);
  mma::cp_async_commit();
  mma::cp_async_wait<1>();  // K and V have landed
  __syncthreads();

  std::uint32_t kf[D / 16][4] = {}, vf[D / 16][4] = {};  // (16, D) K and V rows of this warp's keys
  if (kHold && warp_active) {
    attn::load_a_frags<D>(kf, sK, attn::kWarpRows * warp, lane);
    attn::load_a_frags<D>(vf, sV, attn::kWarpRows * warp, lane);
  }

  float dka[D / 8][4] = {}, dva[D / 8][4] = {};  // (16, D) dK and dV accumulators of the warp's keys
  for (int step = 0; step < steps; ++step) {
    if (step + 1 < steps) {
      issue(step + 1, (step + 1) & 1);
      mma::cp_async_commit();
      mma::cp_async_wait<1>();
    } else {
      mma::cp_async_wait<0>();
    }
    __syncthreads();
    const int st = step & 1, i0 = attn::dkdv_step(kh, kGroup, j0, M, per_head, step).i0;
    if (warp_active && attn::block_has_visible(i0, M, key0)) {  // else every query of the block precedes every key of the warp
      const nv_bf16* sQt = sQ + st * M * D;
      const nv_bf16* sdYt = sdY + st * M * D;
      const float* lse_t = sLse + st * M;
      const float* delta_t = sDelta + st * M;
      if constexpr (!kHold) attn::load_a_frags<D>(kf, sK, attn::kWarpRows * warp, lane);
      float s[M / 8][4] = {};  // (16 keys, M queries) Sᵀ = K·Qᵀ
      attn::mma_abt<D, M>(s, kf, sQt, lane);
      if constexpr (!kHold) attn::load_a_frags<D>(vf, sV, attn::kWarpRows * warp, lane);
      float dp[M / 8][4] = {};  // dPᵀ = V·dYᵀ
      attn::mma_abt<D, M>(dp, vf, sdYt, lane);
      const bool mask = attn::dkdv_block_needs_mask(key0, i0, M, seq);  // crosses the diagonal or the end
#pragma unroll
      for (int nt = 0; nt < M / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const mma::RowCol rc = mma::frag_c(lane, e);  // row: key, col: query within the tiles
          const int col = nt * 8 + rc.col;
          float p = mma::ex2(fmaf(s[nt][e], scale_log2, -lse_t[col] * attn::kLog2e));
          if (mask) {
            if (attn::dkdv_masked(i0 + col, key0 + rc.row, seq)) p = 0.0f;
          }
          s[nt][e] = p;                                      // Pᵀ
          dp[nt][e] = p * (dp[nt][e] - delta_t[col]) * scale;  // dSᵀ
        }
      }
      std::uint32_t pa[M / 16][4], dsa[M / 16][4];  // (16, M) Pᵀ and dSᵀ in bf16, A fragments
      attn::c_to_a<M>(pa, s);
      attn::c_to_a<M>(dsa, dp);
      attn::mma_ab<D, M>(dva, pa, sdYt, lane);  // dV += Pᵀ·dY
      attn::mma_ab<D, M>(dka, dsa, sQt, lane);  // dK += dSᵀ·Q
    }
    __syncthreads();
  }
  if (warp_active) {
    attn::store_rows<D>(dk + b * seq * lddk + kh * D, lddk, dka, key0, seq, lane);
    attn::store_rows<D>(dv + b * seq * lddv + kh * D, lddv, dva, key0, seq, lane);
  }
}

// ------------------------------------------------------------------------------ simple kernels
// One warp per query row (b, h, i) — r = (b·Heads + h)·T + i, the lse index — with an online
// softmax over keys 0..i in fp32.
template <int Heads, int KvHeads, int D>
__global__ void attention_forward_simple(nv_bf16* __restrict__ y, std::int64_t ldy, float* __restrict__ lse, const nv_bf16* __restrict__ q,
                                         std::int64_t ldq, const nv_bf16* __restrict__ k, std::int64_t ldk, const nv_bf16* __restrict__ v,
                                         std::int64_t ldv, std::int64_t rows, int seq, float scale) {
  constexpr int kGroup = Heads / KvHeads;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const std::int64_t warps_per_block = blockDim.x / kWarpSize;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * warps_per_block;
  for (std::int64_t r = blockIdx.x * warps_per_block + threadIdx.x / kWarpSize; r < rows; r += stride) {
    const int i = static_cast<int>(r % seq);
    const int h = static_cast<int>((r / seq) % Heads), kh = h / kGroup;
    const std::int64_t b = r / (static_cast<std::int64_t>(seq) * Heads);
    attn::LaneRow<D> qr, kr, vr, o;
    qr.load(q + (b * seq + i) * ldq + h * D, lane);
    o.zero();
    float m = -INFINITY, l = 0.0f;
    for (int j = 0; j <= i; ++j) {
      kr.load(k + (b * seq + j) * ldk + kh * D, lane);
      vr.load(v + (b * seq + j) * ldv + kh * D, lane);
      const float s = qr.dot(kr) * scale;
      const float m_new = fmaxf(m, s);
      const float alpha = expf(m - m_new), p = expf(s - m_new);  // alpha = 0 on the first key
      l = l * alpha + p;
      o.scale_add(alpha, p, vr);
      m = m_new;
    }
    o.scale(1.0f / l);
    o.store(y + (b * seq + i) * ldy + h * D, lane);
    if (lane == 0) lse[r] = m + logf(l);
  }
}

// dQ: one warp per query row (b, h, i), keys 0..i in order.
template <int Heads, int KvHeads, int D>
__global__ void attention_backward_dq_simple(nv_bf16* __restrict__ dq, std::int64_t lddq, const nv_bf16* __restrict__ dy, std::int64_t lddy,
                                             const float* __restrict__ lse, const float* __restrict__ delta, const nv_bf16* __restrict__ q,
                                             std::int64_t ldq, const nv_bf16* __restrict__ k, std::int64_t ldk,
                                             const nv_bf16* __restrict__ v, std::int64_t ldv, std::int64_t rows, int seq, float scale) {
  constexpr int kGroup = Heads / KvHeads;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const std::int64_t warps_per_block = blockDim.x / kWarpSize;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * warps_per_block;
  for (std::int64_t r = blockIdx.x * warps_per_block + threadIdx.x / kWarpSize; r < rows; r += stride) {
    const int i = static_cast<int>(r % seq);
    const int h = static_cast<int>((r / seq) % Heads), kh = h / kGroup;
    const std::int64_t b = r / (static_cast<std::int64_t>(seq) * Heads);
    attn::LaneRow<D> qr, gr, kr, vr, acc;
    qr.load(q + (b * seq + i) * ldq + h * D, lane);
    gr.load(dy + (b * seq + i) * lddy + h * D, lane);
    acc.zero();
    const float row_lse = lse[r], row_delta = delta[r];
    for (int j = 0; j <= i; ++j) {
      kr.load(k + (b * seq + j) * ldk + kh * D, lane);
      vr.load(v + (b * seq + j) * ldv + kh * D, lane);
      const float p = expf(qr.dot(kr) * scale - row_lse);
      const float ds = p * (gr.dot(vr) - row_delta) * scale;
      acc.scale_add(1.0f, ds, kr);
    }
    acc.store(dq + (b * seq + i) * lddq + h * D, lane);
  }
}

// dK, dV: one warp per key row (b, kh, j) — r = (b·KvHeads + kh)·T + j — over the group's query
// heads in order and queries j..T-1 in order.
template <int Heads, int KvHeads, int D>
__global__ void attention_backward_dkdv_simple(nv_bf16* __restrict__ dk, std::int64_t lddk, nv_bf16* __restrict__ dv, std::int64_t lddv,
                                               const nv_bf16* __restrict__ dy, std::int64_t lddy, const float* __restrict__ lse,
                                               const float* __restrict__ delta, const nv_bf16* __restrict__ q, std::int64_t ldq,
                                               const nv_bf16* __restrict__ k, std::int64_t ldk, const nv_bf16* __restrict__ v,
                                               std::int64_t ldv, std::int64_t rows, int seq, float scale) {
  constexpr int kGroup = Heads / KvHeads;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const std::int64_t warps_per_block = blockDim.x / kWarpSize;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * warps_per_block;
  for (std::int64_t r = blockIdx.x * warps_per_block + threadIdx.x / kWarpSize; r < rows; r += stride) {
    const int j = static_cast<int>(r % seq);
    const int kh = static_cast<int>((r / seq) % KvHeads);
    const std::int64_t b = r / (static_cast<std::int64_t>(seq) * KvHeads);
    attn::LaneRow<D> kr, vr, qr, gr, dka, dva;
    kr.load(k + (b * seq + j) * ldk + kh * D, lane);
    vr.load(v + (b * seq + j) * ldv + kh * D, lane);
    dka.zero();
    dva.zero();
    for (int h = kh * kGroup; h < (kh + 1) * kGroup; ++h) {
      const std::int64_t stats = (b * Heads + h) * seq;
      for (int i = j; i < seq; ++i) {
        qr.load(q + (b * seq + i) * ldq + h * D, lane);
        gr.load(dy + (b * seq + i) * lddy + h * D, lane);
        const float p = expf(qr.dot(kr) * scale - lse[stats + i]);
        const float ds = p * (gr.dot(vr) - delta[stats + i]) * scale;
        dva.scale_add(1.0f, p, gr);
        dka.scale_add(1.0f, ds, qr);
      }
    }
    dka.store(dk + (b * seq + j) * lddk + kh * D, lane);
    dva.store(dv + (b * seq + j) * lddv + kh * D, lane);
  }
}

}  // namespace kernels

// =============================================================================================
// Launchers.

// Bytes of `scratch` attention_backward needs: delta (B, Heads, T) fp32. Depends on batch·seq only.
template <int Heads, int KvHeads, int HeadDim>
std::size_t attention_backward_scratch_bytes(std::int64_t batch, std::int64_t seq) {
  static_assert(attn::check_shape<Heads, KvHeads, HeadDim>());
  return static_cast<std::size_t>(batch * seq) * Heads * sizeof(float);
}

namespace attn {

inline float score_scale(int head_dim) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim))); }
inline float score_scale_log2(int head_dim) { return static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(head_dim))); }

template <int Heads, int KvHeads, int HeadDim>
void check_forward(const nv_bf16* y, std::int64_t ldy, const float* lse, const nv_bf16* q, std::int64_t ldq, const nv_bf16* k,
                   std::int64_t ldk, const nv_bf16* v, std::int64_t ldv, std::int64_t batch, std::int64_t seq, bool tensor_core) {
  constexpr std::int64_t qw = std::int64_t{Heads} * HeadDim, kw = std::int64_t{KvHeads} * HeadDim;
  check_extents(batch, seq);
  check_operands({{"y", y, ldy, qw}, {"q", q, ldq, qw}, {"k", k, ldk, kw}, {"v", v, ldv, kw}}, tensor_core);
  check_operands({{"lse", lse, 1, 1}}, false);
}

// One launch of the delta kernel over B·T·Heads rows.
template <int Heads, int HeadDim>
void launch_delta(float* delta, const nv_bf16* dy, std::int64_t lddy, const nv_bf16* y, std::int64_t ldy, std::int64_t batch, std::int64_t seq,
                  cudaStream_t stream) {
  const std::int64_t rows = batch * seq * Heads;
  kernels::attention_delta<Heads, HeadDim>
      <<<grid_for(rows * kWarpSize, kSimpleThreads), kSimpleThreads, 0, stream>>>(delta, dy, lddy, y, ldy, rows, static_cast<int>(seq));
  PGOLF_CUDA_LAUNCH_CHECK();
}

}  // namespace attn

// ------------------------------------------------------------------------------ simple path
template <int Heads, int KvHeads, int HeadDim>
void attention_forward_simple(nv_bf16* y, std::int64_t ldy, float* lse, const nv_bf16* q, std::int64_t ldq, const nv_bf16* k,
                              std::int64_t ldk, const nv_bf16* v, std::int64_t ldv, std::int64_t batch, std::int64_t seq,
                              cudaStream_t stream) {
  static_assert(attn::check_shape<Heads, KvHeads, HeadDim>());
  attn::check_forward<Heads, KvHeads, HeadDim>(y, ldy, lse, q, ldq, k, ldk, v, ldv, batch, seq, false);
  const std::int64_t rows = batch * Heads * seq;
  kernels::attention_forward_simple<Heads, KvHeads, HeadDim>
      <<<grid_for(rows * kWarpSize, attn::kSimpleThreads), attn::kSimpleThreads, 0, stream>>>(
          y, ldy, lse, q, ldq, k, ldk, v, ldv, rows, static_cast<int>(seq), attn::score_scale(HeadDim));
  PGOLF_CUDA_LAUNCH_CHECK();
}

template <int Heads, int KvHeads, int HeadDim>
void attention_backward_simple(nv_bf16* dq, std::int64_t lddq, nv_bf16* dk, std::int64_t lddk, nv_bf16* dv, std::int64_t lddv,
                               const nv_bf16* dy, std::int64_t lddy, const nv_bf16* y, std::int64_t ldy, const float* lse,
                               const nv_bf16* q, std::int64_t ldq, const nv_bf16* k, std::int64_t ldk, const nv_bf16* v,
                               std::int64_t ldv, std::int64_t batch, std::int64_t seq, void* scratch, cudaStream_t stream) {
  static_assert(attn::check_shape<Heads, KvHeads, HeadDim>());
  constexpr std::int64_t qw = std::int64_t{Heads} * HeadDim, kw = std::int64_t{KvHeads} * HeadDim;
  attn::check_extents(batch, seq);
  attn::check_operands({{"dq", dq, lddq, qw}, {"dk", dk, lddk, kw}, {"dv", dv, lddv, kw}, {"dy", dy, lddy, qw}, {"y", y, ldy, qw},
                        {"q", q, ldq, qw}, {"k", k, ldk, kw}, {"v", v, ldv, kw}},
                       false);
  attn::check_operands({{"lse", lse, 1, 1}, {"scratch", scratch, 1, 1}}, false);
  auto* delta = static_cast<float*>(scratch);
  const float scale = attn::score_scale(HeadDim);
  const int s = static_cast<int>(seq);
  attn::launch_delta<Heads, HeadDim>(delta, dy, lddy, y, ldy, batch, seq, stream);
  const std::int64_t qrows = batch * Heads * seq, krows = batch * KvHeads * seq;
  kernels::attention_backward_dq_simple<Heads, KvHeads, HeadDim>
      <<<grid_for(qrows * kWarpSize, attn::kSimpleThreads), attn::kSimpleThreads, 0, stream>>>(dq, lddq, dy, lddy, lse, delta, q, ldq, k, ldk,
                                                                                               v, ldv, qrows, s, scale);
  PGOLF_CUDA_LAUNCH_CHECK();
  kernels::attention_backward_dkdv_simple<Heads, KvHeads, HeadDim>
      <<<grid_for(krows * kWarpSize, attn::kSimpleThreads), attn::kSimpleThreads, 0, stream>>>(
          dk, lddk, dv, lddv, dy, lddy, lse, delta, q, ldq, k, ldk, v, ldv, krows, s, scale);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// ------------------------------------------------------------------------------ dispatching entry points
// Causal softmax(q·kᵀ/√Hd)·v with grouped KV heads; y and lse written. See the file comment for
// layouts and requirements.
template <int Heads, int KvHeads, int HeadDim>
void attention_forward(nv_bf16* y, std::int64_t ldy, float* lse, const nv_bf16* q, std::int64_t ldq, const nv_bf16* k, std::int64_t ldk,
                       const nv_bf16* v, std::int64_t ldv, std::int64_t batch, std::int64_t seq, cudaStream_t stream) {
  static_assert(attn::check_shape<Heads, KvHeads, HeadDim>());
  if constexpr (!attn::kTensorCore<HeadDim>) {
    attention_forward_simple<Heads, KvHeads, HeadDim>(y, ldy, lse, q, ldq, k, ldk, v, ldv, batch, seq, stream);
  } else {
    using Tl = attn::Tiles<HeadDim>;
    attn::check_forward<Heads, KvHeads, HeadDim>(y, ldy, lse, q, ldq, k, ldk, v, ldv, batch, seq, true);
    auto kernel = kernels::flash_forward<Heads, KvHeads, HeadDim>;
    static const bool configured = (attn::allow_smem(kernel, Tl::kFwdSmem), true);  // once per process, for the device current then
    (void)configured;
    const dim3 grid(static_cast<unsigned>(ceil_div(seq, std::int64_t{Tl::kFwdM})), Heads, static_cast<unsigned>(batch));
    kernel<<<grid, attn::kThreads, Tl::kFwdSmem, stream>>>(y, ldy, lse, q, ldq, k, ldk, v, ldv, static_cast<int>(seq),
                                                          attn::score_scale(HeadDim), attn::score_scale_log2(HeadDim));
    PGOLF_CUDA_LAUNCH_CHECK();
  }
}

// Gradients of attention_forward, written (not accumulated): dq like q, dk/dv like k/v. y and lse
// are attention_forward's outputs for these q, k, v; scratch holds
// attention_backward_scratch_bytes(batch, seq) bytes. Deterministic: the same bits every run.
template <int Heads, int KvHeads, int HeadDim>
void attention_backward(nv_bf16* dq, std::int64_t lddq, nv_bf16* dk, std::int64_t lddk, nv_bf16* dv, std::int64_t lddv, const nv_bf16* dy,
                        std::int64_t lddy, const nv_bf16* y, std::int64_t ldy, const float* lse, const nv_bf16* q, std::int64_t ldq,
                        const nv_bf16* k, std::int64_t ldk, const nv_bf16* v, std::int64_t ldv, std::int64_t batch, std::int64_t seq,
                        void* scratch, cudaStream_t stream) {
  static_assert(attn::check_shape<Heads, KvHeads, HeadDim>());
  if constexpr (!attn::kTensorCore<HeadDim>) {
    attention_backward_simple<Heads, KvHeads, HeadDim>(dq, lddq, dk, lddk, dv, lddv, dy, lddy, y, ldy, lse, q, ldq, k, ldk, v, ldv, batch,
                                                       seq, scratch, stream);
  } else {
    using Tl = attn::Tiles<HeadDim>;
    constexpr std::int64_t qw = std::int64_t{Heads} * HeadDim, kw = std::int64_t{KvHeads} * HeadDim;
    attn::check_extents(batch, seq);
    attn::check_operands({{"dq", dq, lddq, qw}, {"dk", dk, lddk, kw}, {"dv", dv, lddv, kw}, {"dy", dy, lddy, qw}, {"y", y, ldy, qw},
                          {"q", q, ldq, qw}, {"k", k, ldk, kw}, {"v", v, ldv, kw}},
                         true);
    attn::check_operands({{"lse", lse, 1, 1}, {"scratch", scratch, 1, 1}}, false);
    auto* delta = static_cast<float*>(scratch);
    const int s = static_cast<int>(seq);
    const float scale = attn::score_scale(HeadDim), scale_log2 = attn::score_scale_log2(HeadDim);
    auto dq_kernel = kernels::flash_backward_dq<Heads, KvHeads, HeadDim>;
    auto dkdv_kernel = kernels::flash_backward_dkdv<Heads, KvHeads, HeadDim>;
    static const bool configured = (attn::allow_smem(dq_kernel, Tl::kDqSmem), attn::allow_smem(dkdv_kernel, Tl::kDkvSmem), true);
    (void)configured;

    attn::launch_delta<Heads, HeadDim>(delta, dy, lddy, y, ldy, batch, seq, stream);
    const dim3 dq_grid(static_cast<unsigned>(ceil_div(seq, std::int64_t{Tl::kDqM})), Heads, static_cast<unsigned>(batch));
    dq_kernel<<<dq_grid, attn::kThreads, Tl::kDqSmem, stream>>>(dq, lddq, dy, lddy, lse, delta, q, ldq, k, ldk, v, ldv, s, scale, scale_log2);
    PGOLF_CUDA_LAUNCH_CHECK();
    const dim3 kv_grid(static_cast<unsigned>(ceil_div(seq, std::int64_t{Tl::kDkvN})), KvHeads, static_cast<unsigned>(batch));
    dkdv_kernel<<<kv_grid, attn::kThreads, Tl::kDkvSmem, stream>>>(dk, lddk, dv, lddv, dy, lddy, lse, delta, q, ldq, k, ldk, v, ldv, s, scale,
                                                                    scale_log2);
    PGOLF_CUDA_LAUNCH_CHECK();
  }
}

}  // namespace pgolf::cuda
