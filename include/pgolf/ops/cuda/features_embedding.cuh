// The embedding-stage features of the records on the GPU. CPU oracle: ops/features.hpp (the ops)
// and model/gpt_cpu.hpp (embed_forward / embed_backward / block_forward: how the model chains
// them); formulas and sources: docs/features.md.
//
//   bigram_hash_indices / engram_indices   hashed n-gram bucket indices (BigramHash, EngramLite)
//   smear_blocked_mask                     where a token may not read its predecessor (BOS fix)
//   sigmoid_gated_add_{forward,backward}   EngramLite:  e += σ(gate) ⊙ z
//   scalar_scaled_add_{forward,backward}   BigramHash:  e += scale · z
//   smear_{forward,backward}               SmearGate v1 (pre_norm) / v2 (post_norm), constant gate
//   smear_input_{forward,backward}         SmearGate v3, input-gated: out_i = x_i + λσ(W·x_i[:Win]) x_{i−1}
//   gated_skip_{forward,backward}          U-Net skip with sigmoid gates
//
// Precision: the embedding stage's activations (e, x, out, dx, the skip tensors) are fp32 (N, D);
// the hash projection output z is bf16 (a GEMM output) and its gradient dz bf16 (a GEMM input);
// parameters and their gradients fp32, read from device pointers (no host synchronisation).
//
// Designs (every kernel is one pass over its (N, D) tensors: each input read once from DRAM,
// each output written once; memory-bandwidth bound):
//   - Index and mask kernels: one thread per token, grid-stride. The per-token arithmetic is in
//     __host__ __device__ functions (emb_detail::bigram_index, engram_index, smear_blocked_at)
//     shared by the kernels and the host-side tests, which compare them with the CPU functions.
//   - Row forwards: rowwise::RowTiling (a lane group per row, kVec-wide vector accesses); a block
//     covers kRowIters·kRowsPerBlock consecutive rows, so each thread evaluates σ of its channels'
//     parameters once and reuses it for kRowIters rows. The smear kernels read row i − 1 as well;
//     it is the neighbouring lane group's row of the same moment, so it comes from L2, not DRAM.
//   - Backwards with per-channel parameter gradients (sigmoid_gated_add, smear, gated_skip): the
//     column tiling of channel_ops.cuh (rowwise::ColumnTiling: block = a chunk of kReduceRows rows
//     × a slab of columns), which writes the input gradients and the chunk's column sums in the
//     same pass. The per-channel factors (σ'(w), 1 − σ(g), ...) are constant over the rows, so the
//     kernels sum only the row-dependent products and the final kernel multiplies once.
//   - smear_input_backward needs a dot product over each row (dg_i = dout_i · x_{i−1}), so it is
//     a row kernel: a block owns a chunk of kChunkRows rows, each lane group sums its rows' dλ and
//     dW terms in order, and the lane groups are added in order through shared memory.
//   - scalar_scaled_add: flat over the n·D values (the scale is one number); the backward's
//     Σ de⊙z is per-block partials over fixed chunks (fp32 per thread, double across the block).
//   - Final sums (add_scaled_partials): one warp per parameter, lanes take the chunks lane,
//     lane + 32, … in order (double), then a fixed xor tree. Every parameter gradient has an order
//     fixed by n and D alone: no float atomics, bit-identical results run to run.
//
// Parameter gradients accumulate (+=) into fp32 buffers, as the CPU ops do. Each backward needs a
// scratch buffer of <op>_scratch_bytes<...>(n) bytes (embedding_features_scratch_bytes<D, Win>(n)
// covers all of them); the scratch is only used between the two launches of one backward, so
// one buffer can serve every op on the same stream.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "pgolf/core/config.hpp"
#include "pgolf/core/error.hpp"
#include "pgolf/core/platform.hpp"
#include "pgolf/ops/cuda/channel_ops.cuh"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/reduce.cuh"
#include "pgolf/ops/cuda/rowwise.cuh"

namespace pgolf::cuda {

namespace emb_detail {

// ---------------------------------------------------------------------------------------------
// Per-token index arithmetic, shared by the kernels and the host (tests). Token i of a row-major
// (batch, seq) id array sits at position t = i mod seq of its sequence.
// ---------------------------------------------------------------------------------------------

// BigramHash, exactly cpu::bigram_hash_indices: mod = buckets − 1; t = 0 → mod (or prev = 0 there
// with zero_prev); else ((36313·cur) XOR (27191·prev)) mod `mod` in int32 with wrap-around (the
// products are taken in uint32 and converted back: C++20 defines that as modular), non-negative
// (Python) modulo.
PGOLF_HD inline std::int32_t bigram_index(const std::int32_t* ids, std::int64_t seq, std::int64_t i, std::int32_t mod,
                                          bool zero_prev = false) {
  const bool first = i % seq == 0;
  if (first && !zero_prev) return mod;
  const auto cur = static_cast<std::int32_t>(static_cast<std::uint32_t>(ids[i]) * 36313u);
  const auto prev = first ? 0 : static_cast<std::int32_t>(static_cast<std::uint32_t>(ids[i - 1]) * 27191u);
  std::int32_t r = (cur ^ prev) % mod;
  if (r < 0) r += mod;
  return r;
}

// EngramLite, exactly cpu::engram_indices: the 2·orders row indices of token i (int64
// arithmetic, prev/pp = 0 before the sequence start, C++ remainder as the CPU computes it) into
// o[0 .. 2·orders).
PGOLF_HD inline void engram_index(std::int32_t* o, const std::int32_t* ids, std::int64_t seq, std::int64_t i, std::int64_t buckets,
                                  int orders) {
  const std::int64_t B = buckets;
  const std::int64_t t = i % seq;
  const std::int64_t cur = ids[i], prev = t >= 1 ? ids[i - 1] : 0, pp = t >= 2 ? ids[i - 2] : 0;
  o[0] = static_cast<std::int32_t>((prev * 1009 + cur) % B);
  o[1] = static_cast<std::int32_t>(((prev * 2719 + 314159) ^ (cur * 3137)) % B + B);
  if (orders >= 2) {
    o[2] = static_cast<std::int32_t>(((pp * 36313) ^ (prev * 27191) ^ (cur * 4903)) % B + 2 * B);
    o[3] = static_cast<std::int32_t>(((pp * 7919) ^ (prev * 4391) ^ (cur * 6151)) % B + 3 * B);
  }
}

// 1 where token i may not read token i − 1: its sequence's first position, or (BOS fix) a BOS
// token (gpt_cpu.hpp's build_blocked_mask).
PGOLF_HD inline std::uint8_t smear_blocked_at(const std::int32_t* ids, std::int64_t seq, std::int64_t i, bool bos_fix, int bos_id) {
  return (i % seq == 0 || (bos_fix && ids[i] == bos_id)) ? std::uint8_t{1} : std::uint8_t{0};
}

// ---------------------------------------------------------------------------------------------
// Tilings and constants.
// ---------------------------------------------------------------------------------------------

inline constexpr int kIndexThreads = 256;
inline constexpr int kRowIters = 4;        // rows per lane group in the row forwards
inline constexpr int kFinalThreads = 256;  // add_scaled_partials: 8 warps, a warp per parameter
inline constexpr int kScalarThreads = 256;
inline constexpr int kScalarPacks = 8;     // vector packs per thread in scalar_scaled_add_backward

// The flat scalar sum of scalar_scaled_add_backward: a block covers kScalarThreads·kScalarPacks
// packs of kVecWidth<D> values; one double partial per block.
template <int D>
inline constexpr std::int64_t kScalarChunk = static_cast<std::int64_t>(kScalarThreads) * kScalarPacks * rowwise::kVecWidth<D>;
template <int D>
constexpr std::int64_t scalar_chunks(std::int64_t n) {
  return n <= 0 ? 0 : (n * D + kScalarChunk<D> - 1) / kScalarChunk<D>;
}

constexpr int log2_exact(int v) {
  int l = 0;
  while ((1 << l) < v) ++l;
  return l;
}

// The row kernel of smear_input_backward: a block (256 threads, kRowsPerBlock lane groups) owns
// kChunkRows consecutive rows; lane group g takes rows g, g + kRowsPerBlock, … of the chunk. The
// chunk's partial sums are Win + 1 floats: dW[0 .. Win) then dλ.
template <int D, int Win>
struct SmearInputTiling {
  using T = rowwise::RowTiling<D>;
  static_assert(Win >= 1 && Win <= D, "the input-gated smear reads the first Win channels of a row: 1 <= Win <= D");
  static constexpr int kChunkRows = T::kRowsPerBlock > 64 ? T::kRowsPerBlock : 64;
  static constexpr int kIters = kChunkRows / T::kRowsPerBlock;
  static constexpr int kWidth = Win + 1;
  static constexpr int kWinPacks = (Win + T::kVec - 1) / T::kVec;          // packs holding window channels
  static constexpr int kWinJ = (kWinPacks + T::kLanes - 1) / T::kLanes;    // per-lane pack slots that may hold them
  // Additions a chunk's partial goes through (the tests' error bound): a lane group's rows in
  // order, then the lane groups in order, plus the product's rounding.
  static constexpr int kSumDepth = kIters + T::kRowsPerBlock + 1;
  // Roundings a term of the row dot product dg = dout_i · x_{i−1} goes through: the lane's
  // kPerLane·kVec products in order, then log2(kLanes) shuffle levels, plus the product's rounding.
  static constexpr int kDotDepth = T::kPerLane * T::kVec + log2_exact(T::kLanes) + 1;
  static_assert(kChunkRows % T::kRowsPerBlock == 0, "lane groups must split a chunk evenly");
};

template <int D, int Win>
constexpr std::int64_t smear_input_chunks(std::int64_t n) {
  return n <= 0 ? 0 : (n + SmearInputTiling<D, Win>::kChunkRows - 1) / SmearInputTiling<D, Win>::kChunkRows;
}

// Where the calling thread sits in a row forward: its lane group's rows first + k·kRowsPerBlock
// (k < kRowIters) and its lane's packs j (columns col(j) .. col(j) + kVec), the same for every row.
template <int D>
struct FwdPos {
  using T = rowwise::RowTiling<D>;
  std::int64_t first;
  int lane;
  __device__ __forceinline__ FwdPos() {
    first = static_cast<std::int64_t>(blockIdx.x) * (kRowIters * T::kRowsPerBlock) + threadIdx.x / T::kLanes;
    lane = static_cast<int>(threadIdx.x % T::kLanes);
  }
  __device__ __forceinline__ std::int64_t row(int k) const { return first + static_cast<std::int64_t>(k) * T::kRowsPerBlock; }
  __device__ __forceinline__ bool owns(int j) const { return !T::kRagged || j * T::kLanes + lane < T::kPacks; }
  __device__ __forceinline__ int col(int j) const { return (j * T::kLanes + lane) * T::kVec; }
};

template <int D>
unsigned fwd_blocks(std::int64_t n) {
  constexpr std::int64_t rows = static_cast<std::int64_t>(kRowIters) * rowwise::RowTiling<D>::kRowsPerBlock;
  const std::int64_t blocks = ceil_div(n, rows);
  PGOLF_CHECK(blocks <= 0x7fffffffLL, "row-wise CUDA kernel: " << n << " rows exceed one grid");
  return static_cast<unsigned>(blocks);
}

// σ(z) as the CPU computes it (1 / (1 + e^−z)), with IEEE division and the full-precision expf
// (2 ulp): within a few ulp of the CPU's.
__device__ __forceinline__ float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// The constant factor that multiplies a chunk-summed column in the final pass.
enum class Coef : int {
  one,                // dλ, dW of the input-gated smear
  dsigmoid,           // σ'(p) = σ(p)(1 − σ(p)): EngramLite gate, pre-norm smear, skip gates
  neg_dsigmoid,       // −σ'(p): post-norm smear (a = 1 − σ)
  one_minus_sigmoid,  // 1 − σ(p): skip weights (the weighted skip enters with (1 − σ(g)))
};

template <Coef K>
__device__ __forceinline__ float coef(const float* param, int i) {
  if constexpr (K == Coef::one) {
    (void)param;
    (void)i;
    return 1.0f;
  } else {
    const float g = sigmoid(__ldg(param + i));
    if constexpr (K == Coef::dsigmoid) {
      return g * (1.0f - g);
    } else if constexpr (K == Coef::neg_dsigmoid) {
      return -1.0f * g * (1.0f - g);  // the CPU's (−1)·g·(1 − g), the same roundings
    } else {
      return 1.0f - g;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Kernels.
// ---------------------------------------------------------------------------------------------

// The kernels without a natural template parameter are templates anyway (on an unused int), like
// every kernel in a header, so that each translation unit may instantiate them (nvcc ignores
// `inline` on __global__ functions).
template <int = 0>
__global__ void bigram_hash_indices(std::int32_t* out, const std::int32_t* ids, std::int64_t n, std::int64_t seq, std::int32_t mod,
                                    bool zero_prev) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[i] = bigram_index(ids, seq, i, mod, zero_prev);
  }
}

template <int = 0>
__global__ void engram_indices(std::int32_t* out, const std::int32_t* ids, std::int64_t n, std::int64_t seq, std::int64_t buckets,
                                      int orders) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::int32_t o[4] = {};
    engram_index(o, ids, seq, i, buckets, orders);
    for (int k = 0; k < 2 * orders; ++k) out[i * 2 * orders + k] = o[k];
  }
}

template <int = 0>
__global__ void smear_blocked_mask(std::uint8_t* blocked, const std::int32_t* ids, std::int64_t n, std::int64_t seq, bool bos_fix,
                                          int bos_id) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    blocked[i] = smear_blocked_at(ids, seq, i, bos_fix, bos_id);
  }
}

// Row 0 never reads a predecessor, whatever the mask says (the CPU would read before the buffer).
__device__ __forceinline__ bool is_blocked(const std::uint8_t* blocked, std::int64_t row) { return row == 0 || __ldg(blocked + row) != 0; }

// e (n, D) += σ(gate) ⊙ z
template <int D>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    sigmoid_gated_add_forward(float* e, const nv_bf16* z, const float* gate, std::int64_t n) {
  using T = rowwise::RowTiling<D>;
  constexpr int V = T::kVec;
  const FwdPos<D> pos;
  if (pos.row(0) >= n) return;  // no shuffles here: threads may leave independently
  float sg[T::kPerLane][V] = {};
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.owns(j)) continue;
    rowwise::load_pack<V, true>(sg[j], gate + pos.col(j));
#pragma unroll
    for (int i = 0; i < V; ++i) sg[j][i] = sigmoid(sg[j][i]);
  }
  for (int k = 0; k < kRowIters; ++k) {
    const std::int64_t r = pos.row(k);
    if (r >= n) break;
    rowwise::RowRegs<D> ev = {}, zv = {};
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!pos.owns(j)) continue;
      rowwise::load_pack<V>(ev[j], e + r * D + pos.col(j));
      rowwise::load_pack<V>(zv[j], z + r * D + pos.col(j));
    }
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!pos.owns(j)) continue;
#pragma unroll
      for (int i = 0; i < V; ++i) ev[j][i] = ev[j][i] + sg[j][i] * zv[j][i];
      rowwise::store_pack<V>(e + r * D + pos.col(j), ev[j]);
    }
  }
}

// dz (n, D) = bf16(σ(gate) ⊙ de); partials[chunk, :] = Σ_chunk de ⊙ z.
template <int D>
__global__ void __launch_bounds__(rowwise::ColumnTiling<D>::kThreads)
    sigmoid_gated_add_backward(nv_bf16* dz, float* partials, const float* de, const nv_bf16* z, const float* gate, std::int64_t n) {
  using C = rowwise::ColumnTiling<D>;
  constexpr int V = C::kVec, U = C::kUnroll;
  __shared__ __align__(16) float part[C::kRowGroups * C::kSlabCols];
  const rowwise::ColPos<D> pos;
  float sg[V] = {}, acc[V] = {};
  if (pos.col_ok) {
    rowwise::load_pack<V, true>(sg, gate + pos.col);
#pragma unroll
    for (int i = 0; i < V; ++i) sg[i] = sigmoid(sg[i]);
  }
  for (int k0 = 0; k0 < C::kGroupRows; k0 += U) {
    float g[U][V] = {}, zv[U][V] = {};
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      if (!pos.col_ok || r >= n) continue;
      rowwise::load_pack<V>(g[u], de + r * D + pos.col);
      rowwise::load_pack<V>(zv[u], z + r * D + pos.col);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      if (!pos.col_ok || r >= n) continue;
      float o[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        acc[i] += g[u][i] * zv[u][i];
        o[i] = sg[i] * g[u][i];
      }
      rowwise::store_pack<V>(dz + r * D + pos.col, o);
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) part[pos.g * C::kSlabCols + pos.tc * V + i] = acc[i];
  __syncthreads();
  rowwise::write_chunk_partials<D>(partials, D, 0, part);
}

// e (count) += scale[0] · z, flat over packs of V values.
template <int V>
__global__ void __launch_bounds__(kElementwiseThreads)
    scalar_scaled_add_forward(float* e, const nv_bf16* z, const float* scale, std::int64_t packs) {
  const float s = __ldg(scale);
  for (std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; p < packs;
       p += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float ev[V], zv[V];
    rowwise::load_pack<V>(ev, e + p * V);
    rowwise::load_pack<V>(zv, z + p * V);
#pragma unroll
    for (int i = 0; i < V; ++i) ev[i] = ev[i] + s * zv[i];
    rowwise::store_pack<V>(e + p * V, ev);
  }
}

// dz (count) = bf16(scale[0] · de); partials[block] = Σ_block de ⊙ z (fp32 per thread over its
// kScalarPacks packs in order, then the block's fixed tree in double).
template <int V>
__global__ void __launch_bounds__(kScalarThreads)
    scalar_scaled_add_backward(nv_bf16* dz, double* partials, const float* de, const nv_bf16* z, const float* scale, std::int64_t packs) {
  __shared__ double scratch[kScalarThreads / kWarpSize];
  const float s = __ldg(scale);
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * (kScalarThreads * kScalarPacks) + threadIdx.x;
  float g[kScalarPacks][V] = {}, zv[kScalarPacks][V] = {};
#pragma unroll
  for (int k = 0; k < kScalarPacks; ++k) {
    const std::int64_t p = base + static_cast<std::int64_t>(k) * kScalarThreads;
    if (p >= packs) continue;
    rowwise::load_pack<V>(g[k], de + p * V);
    rowwise::load_pack<V>(zv[k], z + p * V);
  }
  float acc = 0.0f;
#pragma unroll
  for (int k = 0; k < kScalarPacks; ++k) {
    const std::int64_t p = base + static_cast<std::int64_t>(k) * kScalarThreads;
    if (p >= packs) continue;
    float o[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
      acc += g[k][i] * zv[k][i];
      o[i] = s * g[k][i];
    }
    rowwise::store_pack<V>(dz + p * V, o);
  }
  const double total = block_sum<kScalarThreads>(static_cast<double>(acc), scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// dst[0] += Σ partials (count doubles): thread t sums t, t + 256, … in order, then a fixed tree.
template <int = 0>
__global__ void __launch_bounds__(kScalarThreads) add_scalar_partials(float* dst, const double* partials, std::int64_t count) {
  __shared__ double scratch[kScalarThreads / kWarpSize];
  double acc = 0.0;
  for (std::int64_t k = threadIdx.x; k < count; k += kScalarThreads) acc += partials[k];
  acc = block_sum<kScalarThreads>(acc, scratch);
  if (threadIdx.x == 0) dst[0] = static_cast<float>(static_cast<double>(dst[0]) + acc);
}

// dst[i] += coef(param, i) · Σ_c partials[c·ld + offset + i] for i < width; a warp per i, the
// chunks in a fixed order (lane l: c = l, l + 32, …, in double), then a fixed xor tree.
template <Coef K>
__global__ void __launch_bounds__(kFinalThreads)
    add_scaled_partials(float* dst, const float* partials, std::int64_t chunks, std::int64_t ld, int offset, int width, const float* param) {
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int i = static_cast<int>(blockIdx.x) * (kFinalThreads / kWarpSize) + static_cast<int>(threadIdx.x / kWarpSize);
  if (i >= width) return;  // warp-uniform
  double acc = 0.0;
  for (std::int64_t c = lane; c < chunks; c += kWarpSize) acc += partials[c * ld + offset + i];
  acc = warp_sum(acc);
  if (lane == 0) dst[i] = static_cast<float>(static_cast<double>(dst[i]) + static_cast<double>(coef<K>(param, i)) * acc);
}

// out_i = a ⊙ x_i + c ⊙ x_{i−1} (x_{i−1} = 0 where blocked), (a, c) = (g, 1 − g) pre-norm,
// (1 − g, g) post-norm, g = σ(w). out must not alias x (row i − 1 is another lane group's).
template <int D>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    smear_forward(float* out, const float* x, const float* w, const std::uint8_t* blocked, std::int64_t n, bool post_norm) {
  using T = rowwise::RowTiling<D>;
  constexpr int V = T::kVec;
  const FwdPos<D> pos;
  if (pos.row(0) >= n) return;  // no shuffles
  float a[T::kPerLane][V] = {}, c[T::kPerLane][V] = {};
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.owns(j)) continue;
    float wv[V];
    rowwise::load_pack<V, true>(wv, w + pos.col(j));
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float g = sigmoid(wv[i]);
      a[j][i] = post_norm ? 1.0f - g : g;
      c[j][i] = post_norm ? g : 1.0f - g;
    }
  }
  for (int k = 0; k < kRowIters; ++k) {
    const std::int64_t r = pos.row(k);
    if (r >= n) break;
    const bool blk = is_blocked(blocked, r);
    rowwise::RowRegs<D> xv = {}, pv = {};
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!pos.owns(j)) continue;
      rowwise::load_pack<V>(xv[j], x + r * D + pos.col(j));
      if (!blk) rowwise::load_pack<V>(pv[j], x + (r - 1) * D + pos.col(j));
    }
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!pos.owns(j)) continue;
      float o[V];
#pragma unroll
      for (int i = 0; i < V; ++i) o[i] = a[j][i] * xv[j][i] + c[j][i] * pv[j][i];
      rowwise::store_pack<V>(out + r * D + pos.col(j), o);
    }
  }
}

// dx_i = a ⊙ dout_i + c ⊙ dout_{i+1} (the second term only where i + 1 < n reads i);
// partials[chunk, :] = Σ_chunk dout_i ⊙ (x_i − x_{i−1}) (x_{i−1} = 0 where blocked).
template <int D>
__global__ void __launch_bounds__(rowwise::ColumnTiling<D>::kThreads)
    smear_backward(float* dx, float* partials, const float* dout, const float* x, const float* w, const std::uint8_t* blocked,
                   std::int64_t n, bool post_norm) {
  using C = rowwise::ColumnTiling<D>;
  constexpr int V = C::kVec, U = C::kUnroll;
  __shared__ __align__(16) float part[C::kRowGroups * C::kSlabCols];
  const rowwise::ColPos<D> pos;
  float a[V] = {}, c[V] = {}, acc[V] = {};
  if (pos.col_ok) {
    float wv[V];
    rowwise::load_pack<V, true>(wv, w + pos.col);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float g = sigmoid(wv[i]);
      a[i] = post_norm ? 1.0f - g : g;
      c[i] = post_norm ? g : 1.0f - g;
    }
  }
  for (int k0 = 0; k0 < C::kGroupRows; k0 += U) {
    float g[U][V] = {}, xv[U][V] = {}, pv[U][V] = {}, nv[U][V] = {};
    bool has_next[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      has_next[u] = false;
      if (!pos.col_ok || r >= n) continue;
      has_next[u] = r + 1 < n && __ldg(blocked + r + 1) == 0;
      rowwise::load_pack<V>(g[u], dout + r * D + pos.col);
      rowwise::load_pack<V>(xv[u], x + r * D + pos.col);
      if (!is_blocked(blocked, r)) rowwise::load_pack<V>(pv[u], x + (r - 1) * D + pos.col);
      if (has_next[u]) rowwise::load_pack<V>(nv[u], dout + (r + 1) * D + pos.col);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      if (!pos.col_ok || r >= n) continue;
      float o[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        acc[i] += g[u][i] * (xv[u][i] - pv[u][i]);
        o[i] = a[i] * g[u][i];
        if (has_next[u]) o[i] += c[i] * nv[u][i];
      }
      rowwise::store_pack<V>(dx + r * D + pos.col, o);
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) part[pos.g * C::kSlabCols + pos.tc * V + i] = acc[i];
  __syncthreads();
  rowwise::write_chunk_partials<D>(partials, D, 0, part);
}

// out_i = x_i + g_i x_{i−1}, g_i = λ σ(z_i) (0 where blocked), z_i = W · x_i[:Win] kept in gate_z.
template <int D, int Win>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    smear_input_forward(float* out, float* gate_z, const float* x, const float* W, const float* lambda, const std::uint8_t* blocked,
                        std::int64_t n) {
  using T = rowwise::RowTiling<D>;
  using S = SmearInputTiling<D, Win>;
  constexpr int V = T::kVec;
  const FwdPos<D> pos;
  // Warp-uniform exit (the lane-group sum shuffles over the whole warp): rows of a warp are consecutive.
  constexpr int kRowsPerWarp = T::kRowsPerWarp;
  const std::int64_t warp_first = pos.row(0) - static_cast<std::int64_t>((threadIdx.x / T::kLanes) % kRowsPerWarp);
  if (warp_first >= n) return;
  float wv[S::kWinJ][V] = {};
#pragma unroll
  for (int j = 0; j < S::kWinJ; ++j) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int col = pos.col(j) + i;
      if (col < Win) wv[j][i] = __ldg(W + col);
    }
  }
  const float lam = __ldg(lambda);
  for (int k = 0; k < kRowIters; ++k) {
    const std::int64_t r = pos.row(k);
    if (warp_first + static_cast<std::int64_t>(k) * T::kRowsPerBlock >= n) break;  // warp-uniform
    const bool valid = r < n;
    const bool blk = !valid || is_blocked(blocked, r);
    rowwise::RowRegs<D> xv = {}, pv = {};
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!valid || !pos.owns(j)) continue;
      rowwise::load_pack<V>(xv[j], x + r * D + pos.col(j));
      if (!blk) rowwise::load_pack<V>(pv[j], x + (r - 1) * D + pos.col(j));
    }
    float zp = 0.0f;
#pragma unroll
    for (int j = 0; j < S::kWinJ; ++j) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        if (pos.col(j) + i < Win) zp += wv[j][i] * xv[j][i];  // only window channels (as the CPU: no 0·inf)
      }
    }
    const float z = rowwise::lane_group_sum<T::kLanes>(zp);
    if (!valid) continue;
    if (pos.lane == 0) gate_z[r] = z;
    const float g = blk ? 0.0f : lam * sigmoid(z);
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!pos.owns(j)) continue;
      float o[V];
#pragma unroll
      for (int i = 0; i < V; ++i) o[i] = xv[j][i] + (blk ? 0.0f : g * pv[j][i]);
      rowwise::store_pack<V>(out + r * D + pos.col(j), o);
    }
  }
}

// dg_i = dout_i · x_{i−1}; dz_i = dg_i λ σ'(z_i) (0 where blocked);
// dx_i = dout_i + g_{i+1} dout_{i+1} + dz_i W (window channels);
// partials[chunk, 0:Win] = Σ_chunk dz_i x_i[:Win], partials[chunk, Win] = Σ_chunk dg_i σ(z_i).
template <int D, int Win>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    smear_input_backward(float* dx, float* partials, const float* dout, const float* x, const float* gate_z, const float* W,
                         const float* lambda, const std::uint8_t* blocked, std::int64_t n) {
  using T = rowwise::RowTiling<D>;
  using S = SmearInputTiling<D, Win>;
  constexpr int V = T::kVec;
  __shared__ float part[T::kRowsPerBlock * S::kWidth];
  const int lane = static_cast<int>(threadIdx.x % T::kLanes), grp = static_cast<int>(threadIdx.x / T::kLanes);
  auto col = [&](int j) { return (j * T::kLanes + lane) * V; };
  auto owns = [&](int j) { return !T::kRagged || j * T::kLanes + lane < T::kPacks; };
  const std::int64_t chunk_first = static_cast<std::int64_t>(blockIdx.x) * S::kChunkRows;
  const float lam = __ldg(lambda);
  // W of the window channels this lane owns (sized kPerLane so that the dx loop can index every
  // pack; the slots past kWinJ stay zero and are never used).
  float wv[T::kPerLane][V] = {}, acc_w[S::kWinJ][V] = {}, acc_l = 0.0f;
#pragma unroll
  for (int j = 0; j < S::kWinJ; ++j) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (col(j) + i < Win) wv[j][i] = __ldg(W + col(j) + i);
    }
  }
  // Every lane runs every iteration (rows past n contribute zeros): the lane-group sum shuffles.
  for (int k = 0; k < S::kIters; ++k) {
    const std::int64_t r = chunk_first + grp + static_cast<std::int64_t>(k) * T::kRowsPerBlock;
    const bool valid = r < n;
    const bool blk = !valid || is_blocked(blocked, r);
    const bool nxt = valid && r + 1 < n && __ldg(blocked + r + 1) == 0;
    rowwise::RowRegs<D> g = {}, pv = {}, nv = {};
    float xw[S::kWinJ][V] = {};
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!valid || !owns(j)) continue;
      rowwise::load_pack<V>(g[j], dout + r * D + col(j));
      if (!blk) rowwise::load_pack<V>(pv[j], x + (r - 1) * D + col(j));
      if (nxt) rowwise::load_pack<V>(nv[j], dout + (r + 1) * D + col(j));
    }
#pragma unroll
    for (int j = 0; j < S::kWinJ; ++j) {
      if (valid && col(j) < Win) rowwise::load_pack<V>(xw[j], x + r * D + col(j));
    }
    float dgp = 0.0f;
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
#pragma unroll
      for (int i = 0; i < V; ++i) dgp += g[j][i] * pv[j][i];
    }
    const float dg = rowwise::lane_group_sum<T::kLanes>(dgp);
    if (!valid) continue;
    const float s = sigmoid(__ldg(gate_z + r));
    const float dz = blk ? 0.0f : dg * lam * s * (1.0f - s);
    const float g_next = nxt ? lam * sigmoid(__ldg(gate_z + r + 1)) : 0.0f;
    if (!blk) acc_l += dg * s;
#pragma unroll
    for (int j = 0; j < S::kWinJ; ++j) {
#pragma unroll
      for (int i = 0; i < V; ++i) {
        if (col(j) + i < Win) acc_w[j][i] += dz * xw[j][i];
      }
    }
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!owns(j)) continue;
      float o[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        o[i] = g[j][i];
        if (nxt) o[i] += g_next * nv[j][i];
        if (col(j) + i < Win) o[i] += dz * wv[j][i];  // the window channels (j < kWinJ)
      }
      rowwise::store_pack<V>(dx + r * D + col(j), o);
    }
  }
  // The chunk's sums: each window channel and dλ have one owner per lane group; add the lane
  // groups in order.
  if (lane == 0) part[grp * S::kWidth + Win] = acc_l;
#pragma unroll
  for (int j = 0; j < S::kWinJ; ++j) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (col(j) + i < Win) part[grp * S::kWidth + col(j) + i] = acc_w[j][i];
    }
  }
  __syncthreads();
  for (int q = static_cast<int>(threadIdx.x); q < S::kWidth; q += T::kThreads) {
    float acc = 0.0f;
    for (int gg = 0; gg < T::kRowsPerBlock; ++gg) acc += part[gg * S::kWidth + q];
    partials[static_cast<std::int64_t>(blockIdx.x) * S::kWidth + q] = acc;
  }
}

// out = w ⊙ s + σ(g) ⊙ (x − w ⊙ s); out may alias x (each value is read and written by one thread).
template <int D>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    gated_skip_forward(float* out, const float* x, const float* s, const float* w, const float* g, std::int64_t n) {
  using T = rowwise::RowTiling<D>;
  constexpr int V = T::kVec;
  const FwdPos<D> pos;
  if (pos.row(0) >= n) return;  // no shuffles
  float wv[T::kPerLane][V] = {}, sg[T::kPerLane][V] = {};
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.owns(j)) continue;
    rowwise::load_pack<V, true>(wv[j], w + pos.col(j));
    rowwise::load_pack<V, true>(sg[j], g + pos.col(j));
#pragma unroll
    for (int i = 0; i < V; ++i) sg[j][i] = sigmoid(sg[j][i]);
  }
  for (int k = 0; k < kRowIters; ++k) {
    const std::int64_t r = pos.row(k);
    if (r >= n) break;
    rowwise::RowRegs<D> xv = {}, sv = {};
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!pos.owns(j)) continue;
      rowwise::load_pack<V>(xv[j], x + r * D + pos.col(j));
      rowwise::load_pack<V>(sv[j], s + r * D + pos.col(j));
    }
#pragma unroll
    for (int j = 0; j < T::kPerLane; ++j) {
      if (!pos.owns(j)) continue;
      float o[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float ws = wv[j][i] * sv[j][i];
        o[i] = ws + sg[j][i] * (xv[j][i] - ws);
      }
      rowwise::store_pack<V>(out + r * D + pos.col(j), o);
    }
  }
}

// dx = σ(g) ⊙ dout (may alias dout), ds += (1 − σ(g)) ⊙ w ⊙ dout;
// partials[chunk, 0:D] = Σ dout ⊙ s, partials[chunk, D:2D] = Σ dout ⊙ (x − w ⊙ s).
template <int D>
__global__ void __launch_bounds__(rowwise::ColumnTiling<D>::kThreads)
    gated_skip_backward(float* dx, float* ds, float* partials, const float* dout, const float* x, const float* s, const float* w,
                        const float* g, std::int64_t n) {
  using C = rowwise::ColumnTiling<D>;
  constexpr int V = C::kVec, U = C::kUnroll;
  __shared__ __align__(16) float part_s[C::kRowGroups * C::kSlabCols];
  __shared__ __align__(16) float part_x[C::kRowGroups * C::kSlabCols];
  const rowwise::ColPos<D> pos;
  float sg[V] = {}, kw[V] = {}, wv[V] = {}, acc_s[V] = {}, acc_x[V] = {};
  if (pos.col_ok) {
    rowwise::load_pack<V, true>(wv, w + pos.col);
    rowwise::load_pack<V, true>(sg, g + pos.col);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      sg[i] = sigmoid(sg[i]);
      kw[i] = (1.0f - sg[i]) * wv[i];  // the CPU's ((1 − σ) · w) · dout
    }
  }
  for (int k0 = 0; k0 < C::kGroupRows; k0 += U) {
    float gv[U][V] = {}, xv[U][V] = {}, sv[U][V] = {}, d0[U][V] = {};
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      if (!pos.col_ok || r >= n) continue;
      rowwise::load_pack<V>(gv[u], dout + r * D + pos.col);
      rowwise::load_pack<V>(xv[u], x + r * D + pos.col);
      rowwise::load_pack<V>(sv[u], s + r * D + pos.col);
      rowwise::load_pack<V>(d0[u], ds + r * D + pos.col);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      if (!pos.col_ok || r >= n) continue;
      float odx[V], ods[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        acc_s[i] += gv[u][i] * sv[u][i];
        acc_x[i] += gv[u][i] * (xv[u][i] - wv[i] * sv[u][i]);
        ods[i] = d0[u][i] + kw[i] * gv[u][i];
        odx[i] = sg[i] * gv[u][i];
      }
      rowwise::store_pack<V>(ds + r * D + pos.col, ods);
      rowwise::store_pack<V>(dx + r * D + pos.col, odx);
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) {
    part_s[pos.g * C::kSlabCols + pos.tc * V + i] = acc_s[i];
    part_x[pos.g * C::kSlabCols + pos.tc * V + i] = acc_x[i];
  }
  __syncthreads();
  rowwise::write_chunk_partials<D>(partials, 2 * D, 0, part_s);
  rowwise::write_chunk_partials<D>(partials, 2 * D, D, part_x);
}

// Host side of the final pass.
template <Coef K>
void launch_add_scaled_partials(float* dst, const float* partials, std::int64_t chunks, std::int64_t ld, int offset, int width,
                                const float* param, cudaStream_t stream) {
  if (chunks == 0 || width == 0) return;
  constexpr int kPerBlock = kFinalThreads / kWarpSize;
  add_scaled_partials<K><<<static_cast<unsigned>(ceil_div(width, kPerBlock)), kFinalThreads, 0, stream>>>(dst, partials, chunks, ld, offset,
                                                                                                        width, param);
  PGOLF_CUDA_LAUNCH_CHECK();
}

inline void check_scratch(const void* scratch, std::size_t bytes, std::size_t align, const char* op) {
  PGOLF_CHECK(scratch != nullptr, op << ": needs a scratch buffer of " << bytes << " bytes (" << op << "_scratch_bytes)");
  PGOLF_CHECK(reinterpret_cast<std::uintptr_t>(scratch) % align == 0,
              op << ": scratch = " << scratch << " must be " << align << "-byte aligned");
}

inline void check_tokens(std::int64_t batch, std::int64_t seq, const char* op) {
  PGOLF_CHECK(batch >= 0 && seq >= 0, op << ": batch " << batch << " and seq " << seq << " must be non-negative");
}

}  // namespace emb_detail

// ---------------------------------------------------------------------------------------------
// Scratch sizes (bytes) of the backwards; the scratch is needed only during the call.
// ---------------------------------------------------------------------------------------------

// column_partials_size(n, D) floats.
template <int D>
constexpr std::size_t sigmoid_gated_add_backward_scratch_bytes(std::int64_t n) {
  return n <= 0 ? 0 : sizeof(float) * static_cast<std::size_t>((n + kReduceRows - 1) / kReduceRows) * D;
}
// One double per kScalarChunk<D> values (n = 65,536, D = 512: 4,096 doubles, 32 KiB).
template <int D>
constexpr std::size_t scalar_scaled_add_backward_scratch_bytes(std::int64_t n) {
  return sizeof(double) * static_cast<std::size_t>(emb_detail::scalar_chunks<D>(n));
}
// column_partials_size(n, D) floats.
template <int D>
constexpr std::size_t smear_backward_scratch_bytes(std::int64_t n) {
  return sigmoid_gated_add_backward_scratch_bytes<D>(n);
}
// Win + 1 floats per chunk of SmearInputTiling<D, Win>::kChunkRows rows (D = 512: 64 rows).
template <int D, int Win>
constexpr std::size_t smear_input_backward_scratch_bytes(std::int64_t n) {
  return sizeof(float) * static_cast<std::size_t>(emb_detail::smear_input_chunks<D, Win>(n)) * (Win + 1);
}
// column_partials_size(n, 2·D) floats.
template <int D>
constexpr std::size_t gated_skip_backward_scratch_bytes(std::int64_t n) {
  return 2 * sigmoid_gated_add_backward_scratch_bytes<D>(n);
}
// Enough for every backward of this header (one shared scratch buffer; 8-byte aligned suffices).
template <int D, int Win>
constexpr std::size_t embedding_features_scratch_bytes(std::int64_t n) {
  return std::max({sigmoid_gated_add_backward_scratch_bytes<D>(n), scalar_scaled_add_backward_scratch_bytes<D>(n),
                   smear_backward_scratch_bytes<D>(n), smear_input_backward_scratch_bytes<D, Win>(n), gated_skip_backward_scratch_bytes<D>(n)});
}

// ---------------------------------------------------------------------------------------------
// Launchers. Pointers are device memory (ids and masks: int32 / uint8 per token; activations
// (n, D) row-major; per-channel parameters (D)). Every (n, D) tensor and per-channel vector must be
// aligned to kVecWidth<D> elements (checked on the host). n == 0 is a no-op. None synchronises.
// ---------------------------------------------------------------------------------------------

// out (batch·seq) = BigramHash bucket of every token, exactly cpu::bigram_hash_indices
// (buckets >= 2: the modulus is buckets − 1).
inline void bigram_hash_indices(std::int32_t* out, const std::int32_t* ids, std::int64_t batch, std::int64_t seq, int buckets,
                                cudaStream_t stream, BigramStart start = BigramStart::reserved_bucket) {
  emb_detail::check_tokens(batch, seq, "bigram_hash_indices");
  PGOLF_CHECK(buckets >= 2, "bigram_hash_indices: buckets = " << buckets << " must be >= 2 (indices are taken mod buckets − 1)");
  const std::int64_t n = batch * seq;
  if (n == 0) return;
  emb_detail::bigram_hash_indices<><<<grid_for(n, emb_detail::kIndexThreads), emb_detail::kIndexThreads, 0, stream>>>(out, ids, n, seq,
                                                                                                               buckets - 1,
                                                                                                               start == BigramStart::zero_prev);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// out (batch·seq, 2·orders) = EngramLite's row indices into its table of 2·orders·buckets rows,
// exactly cpu::engram_indices (orders 1 or 2).
inline void engram_indices(std::int32_t* out, const std::int32_t* ids, std::int64_t batch, std::int64_t seq, int buckets, int orders,
                           cudaStream_t stream) {
  emb_detail::check_tokens(batch, seq, "engram_indices");
  PGOLF_CHECK(orders == 1 || orders == 2, "engram_indices: orders = " << orders << " must be 1 (bigrams) or 2 (bigrams and trigrams)");
  PGOLF_CHECK(buckets >= 1 && static_cast<std::int64_t>(buckets) * 2 * orders <= std::numeric_limits<std::int32_t>::max(),
              "engram_indices: buckets = " << buckets << " must be >= 1 with 2·orders·buckets rows addressable by int32");
  const std::int64_t n = batch * seq;
  if (n == 0) return;
  emb_detail::engram_indices<><<<grid_for(n, emb_detail::kIndexThreads), emb_detail::kIndexThreads, 0, stream>>>(out, ids, n, seq, buckets,
                                                                                                          orders);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// blocked (batch·seq) = 1 where token i may not read token i − 1: t == 0, or (bos_fix) ids[i] == bos_id.
inline void smear_blocked_mask(std::uint8_t* blocked, const std::int32_t* ids, std::int64_t batch, std::int64_t seq, bool bos_fix,
                               int bos_id, cudaStream_t stream) {
  emb_detail::check_tokens(batch, seq, "smear_blocked_mask");
  const std::int64_t n = batch * seq;
  if (n == 0) return;
  emb_detail::smear_blocked_mask<><<<grid_for(n, emb_detail::kIndexThreads), emb_detail::kIndexThreads, 0, stream>>>(blocked, ids, n, seq,
                                                                                                              bos_fix, bos_id);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// EngramLite: e (n, D) += σ(gate (D)) ⊙ z (n, D, bf16).
template <int D>
void sigmoid_gated_add_forward(float* e, const nv_bf16* z, const float* gate, std::int64_t n, cudaStream_t stream) {
  using T = rowwise::RowTiling<D>;
  constexpr const char* op = "sigmoid_gated_add_forward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(e, T::kVec, op, "e", D);
  rowwise::check_aligned(z, T::kVec, op, "z", D);
  rowwise::check_aligned(gate, T::kVec, op, "gate", D);
  if (n == 0) return;
  emb_detail::sigmoid_gated_add_forward<D><<<emb_detail::fwd_blocks<D>(n), T::kThreads, 0, stream>>>(e, z, gate, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// For e += σ(gate) ⊙ z: dz (n, D, bf16) = σ(gate) ⊙ de (written); dgate (D) += Σ_rows de ⊙ z ⊙ σ'(gate).
// scratch: sigmoid_gated_add_backward_scratch_bytes<D>(n) (= column_partials_size(n, D) floats).
template <int D>
void sigmoid_gated_add_backward(nv_bf16* dz, float* dgate, const float* de, const nv_bf16* z, const float* gate, std::int64_t n,
                                float* scratch, cudaStream_t stream) {
  using C = rowwise::ColumnTiling<D>;
  constexpr const char* op = "sigmoid_gated_add_backward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(dz, C::kVec, op, "dz", D);
  rowwise::check_aligned(de, C::kVec, op, "de", D);
  rowwise::check_aligned(z, C::kVec, op, "z", D);
  rowwise::check_aligned(gate, C::kVec, op, "gate", D);
  if (n == 0) return;
  emb_detail::check_scratch(scratch, sigmoid_gated_add_backward_scratch_bytes<D>(n), alignof(float), op);
  emb_detail::sigmoid_gated_add_backward<D><<<rowwise::column_grid<D>(n), C::kThreads, 0, stream>>>(dz, scratch, de, z, gate, n);
  PGOLF_CUDA_LAUNCH_CHECK();
  emb_detail::launch_add_scaled_partials<emb_detail::Coef::dsigmoid>(dgate, scratch, reduce_chunks(n), D, 0, D, gate, stream);
}

// BigramHash: e (n, D) += scale[0] · z (n, D, bf16); scale is one device float.
template <int D>
void scalar_scaled_add_forward(float* e, const nv_bf16* z, const float* scale, std::int64_t n, cudaStream_t stream) {
  constexpr int V = rowwise::kVecWidth<D>;
  constexpr const char* op = "scalar_scaled_add_forward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(e, V, op, "e", D);
  rowwise::check_aligned(z, V, op, "z", D);
  if (n == 0) return;
  const std::int64_t packs = n * D / V;
  emb_detail::scalar_scaled_add_forward<V><<<grid_for(packs, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(e, z, scale, packs);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// For e += scale · z: dz (n, D, bf16) = scale[0] · de (written); dscale[0] += Σ de ⊙ z (fixed
// order). scratch: scalar_scaled_add_backward_scratch_bytes<D>(n), 8-byte aligned (doubles).
template <int D>
void scalar_scaled_add_backward(nv_bf16* dz, float* dscale, const float* de, const nv_bf16* z, const float* scale, std::int64_t n,
                                void* scratch, cudaStream_t stream) {
  constexpr int V = rowwise::kVecWidth<D>;
  constexpr const char* op = "scalar_scaled_add_backward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(dz, V, op, "dz", D);
  rowwise::check_aligned(de, V, op, "de", D);
  rowwise::check_aligned(z, V, op, "z", D);
  if (n == 0) return;
  emb_detail::check_scratch(scratch, scalar_scaled_add_backward_scratch_bytes<D>(n), alignof(double), op);
  const std::int64_t packs = n * D / V, chunks = emb_detail::scalar_chunks<D>(n);
  PGOLF_CHECK(chunks <= 0x7fffffffLL, op << ": " << n << " rows exceed one grid");
  auto* partials = static_cast<double*>(scratch);
  emb_detail::scalar_scaled_add_backward<V><<<static_cast<unsigned>(chunks), emb_detail::kScalarThreads, 0, stream>>>(dz, partials, de, z,
                                                                                                                scale, packs);
  PGOLF_CUDA_LAUNCH_CHECK();
  emb_detail::add_scalar_partials<><<<1, emb_detail::kScalarThreads, 0, stream>>>(dscale, partials, chunks);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// SmearGate with a constant gate: out (n, D) = a ⊙ x_i + c ⊙ x_{i−1} (x_{i−1} = 0 where blocked
// (n); row 0 is always treated as blocked), (a, c) = (σ(w), 1 − σ(w)) pre-norm, (1 − σ(w), σ(w))
// post-norm. out must not alias x.
template <int D>
void smear_forward(float* out, const float* x, const float* w, const std::uint8_t* blocked, std::int64_t n, bool post_norm,
                   cudaStream_t stream) {
  using T = rowwise::RowTiling<D>;
  constexpr const char* op = "smear_forward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(out, T::kVec, op, "out", D);
  rowwise::check_aligned(x, T::kVec, op, "x", D);
  rowwise::check_aligned(w, T::kVec, op, "w", D);
  rowwise::check_disjoint(out, x, n * D, op, "out", "x", "each row reads its predecessor");
  if (n == 0) return;
  emb_detail::smear_forward<D><<<emb_detail::fwd_blocks<D>(n), T::kThreads, 0, stream>>>(out, x, w, blocked, n, post_norm);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// dx (n, D) written (must not overlap dout or x), dw (D) += (as cpu::smear_backward); x is the
// forward's input.
// scratch: smear_backward_scratch_bytes<D>(n) (= column_partials_size(n, D) floats).
template <int D>
void smear_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const std::uint8_t* blocked, std::int64_t n,
                    bool post_norm, float* scratch, cudaStream_t stream) {
  using C = rowwise::ColumnTiling<D>;
  constexpr const char* op = "smear_backward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(dx, C::kVec, op, "dx", D);
  rowwise::check_aligned(dout, C::kVec, op, "dout", D);
  rowwise::check_aligned(x, C::kVec, op, "x", D);
  rowwise::check_aligned(w, C::kVec, op, "w", D);
  rowwise::check_disjoint(dx, dout, n * D, op, "dx", "dout", "row i reads dout_{i+1}");
  rowwise::check_disjoint(dx, x, n * D, op, "dx", "x", "row i reads x_{i-1}");
  if (n == 0) return;
  emb_detail::check_scratch(scratch, smear_backward_scratch_bytes<D>(n), alignof(float), op);
  emb_detail::smear_backward<D><<<rowwise::column_grid<D>(n), C::kThreads, 0, stream>>>(dx, scratch, dout, x, w, blocked, n, post_norm);
  PGOLF_CUDA_LAUNCH_CHECK();
  if (post_norm) {
    emb_detail::launch_add_scaled_partials<emb_detail::Coef::neg_dsigmoid>(dw, scratch, reduce_chunks(n), D, 0, D, w, stream);
  } else {
    emb_detail::launch_add_scaled_partials<emb_detail::Coef::dsigmoid>(dw, scratch, reduce_chunks(n), D, 0, D, w, stream);
  }
}

// Input-gated smear: out (n, D) = x_i + g_i · x_{i−1}, g_i = λ σ(W · x_i[:Win]) (0 where blocked);
// gate_z (n) = W · x_i[:Win]. W (Win), lambda (1) device floats. out must not alias x.
template <int D, int Win>
void smear_input_forward(float* out, float* gate_z, const float* x, const float* W, const float* lambda, const std::uint8_t* blocked,
                         std::int64_t n, cudaStream_t stream) {
  using T = rowwise::RowTiling<D>;
  (void)emb_detail::SmearInputTiling<D, Win>::kWidth;  // its static_asserts: 1 <= Win <= D
  constexpr const char* op = "smear_input_forward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(out, T::kVec, op, "out", D);
  rowwise::check_aligned(x, T::kVec, op, "x", D);
  rowwise::check_disjoint(out, x, n * D, op, "out", "x", "each row reads its predecessor");
  if (n == 0) return;
  emb_detail::smear_input_forward<D, Win><<<emb_detail::fwd_blocks<D>(n), T::kThreads, 0, stream>>>(out, gate_z, x, W, lambda, blocked, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// dx (n, D) written (must not overlap dout or x), dW (Win) +=, dlambda (1) += (as cpu::smear_input_backward);
// x and gate_z are the forward's input and gate pre-activation.
// scratch: smear_input_backward_scratch_bytes<D, Win>(n), 4-byte aligned.
template <int D, int Win>
void smear_input_backward(float* dx, float* dW, float* dlambda, const float* dout, const float* x, const float* gate_z, const float* W,
                          const float* lambda, const std::uint8_t* blocked, std::int64_t n, void* scratch, cudaStream_t stream) {
  using T = rowwise::RowTiling<D>;
  using S = emb_detail::SmearInputTiling<D, Win>;
  constexpr const char* op = "smear_input_backward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(dx, T::kVec, op, "dx", D);
  rowwise::check_aligned(dout, T::kVec, op, "dout", D);
  rowwise::check_aligned(x, T::kVec, op, "x", D);
  rowwise::check_disjoint(dx, dout, n * D, op, "dx", "dout", "row i reads dout_{i+1}");
  rowwise::check_disjoint(dx, x, n * D, op, "dx", "x", "row i reads x_{i-1}");
  if (n == 0) return;
  emb_detail::check_scratch(scratch, smear_input_backward_scratch_bytes<D, Win>(n), alignof(float), op);
  const std::int64_t chunks = emb_detail::smear_input_chunks<D, Win>(n);
  PGOLF_CHECK(chunks <= 0x7fffffffLL, op << ": " << n << " rows exceed one grid");
  auto* partials = static_cast<float*>(scratch);
  emb_detail::smear_input_backward<D, Win><<<static_cast<unsigned>(chunks), T::kThreads, 0, stream>>>(dx, partials, dout, x, gate_z, W,
                                                                                                  lambda, blocked, n);
  PGOLF_CUDA_LAUNCH_CHECK();
  emb_detail::launch_add_scaled_partials<emb_detail::Coef::one>(dW, partials, chunks, S::kWidth, 0, Win, nullptr, stream);
  emb_detail::launch_add_scaled_partials<emb_detail::Coef::one>(dlambda, partials, chunks, S::kWidth, Win, 1, nullptr, stream);
}

// U-Net skip with sigmoid gates: out (n, D) = w ⊙ s + σ(g) ⊙ (x − w ⊙ s); x, s (n, D); w, g (D).
// out may alias x.
template <int D>
void gated_skip_forward(float* out, const float* x, const float* s, const float* w, const float* g, std::int64_t n, cudaStream_t stream) {
  using T = rowwise::RowTiling<D>;
  constexpr const char* op = "gated_skip_forward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(out, T::kVec, op, "out", D);
  rowwise::check_aligned(x, T::kVec, op, "x", D);
  rowwise::check_aligned(s, T::kVec, op, "s", D);
  rowwise::check_aligned(w, T::kVec, op, "w", D);
  rowwise::check_aligned(g, T::kVec, op, "g", D);
  if (n == 0) return;
  emb_detail::gated_skip_forward<D><<<emb_detail::fwd_blocks<D>(n), T::kThreads, 0, stream>>>(out, x, s, w, g, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// dx (n, D) = σ(g) ⊙ dout (written; may alias dout), ds (n, D) += (1 − σ(g)) ⊙ w ⊙ dout,
// dw (D) += Σ_rows dout ⊙ (1 − σ(g)) ⊙ s, dg (D) += Σ_rows dout ⊙ σ'(g) ⊙ (x − w ⊙ s).
// scratch: gated_skip_backward_scratch_bytes<D>(n) (= column_partials_size(n, 2·D) floats).
template <int D>
void gated_skip_backward(float* dx, float* ds, float* dw, float* dg, const float* dout, const float* x, const float* s, const float* w,
                         const float* g, std::int64_t n, float* scratch, cudaStream_t stream) {
  using C = rowwise::ColumnTiling<D>;
  constexpr const char* op = "gated_skip_backward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(dx, C::kVec, op, "dx", D);
  rowwise::check_aligned(ds, C::kVec, op, "ds", D);
  rowwise::check_aligned(dout, C::kVec, op, "dout", D);
  rowwise::check_aligned(x, C::kVec, op, "x", D);
  rowwise::check_aligned(s, C::kVec, op, "s", D);
  rowwise::check_aligned(w, C::kVec, op, "w", D);
  rowwise::check_aligned(g, C::kVec, op, "g", D);
  if (n == 0) return;
  emb_detail::check_scratch(scratch, gated_skip_backward_scratch_bytes<D>(n), alignof(float), op);
  emb_detail::gated_skip_backward<D><<<rowwise::column_grid<D>(n), C::kThreads, 0, stream>>>(dx, ds, scratch, dout, x, s, w, g, n);
  PGOLF_CUDA_LAUNCH_CHECK();
  emb_detail::launch_add_scaled_partials<emb_detail::Coef::one_minus_sigmoid>(dw, scratch, reduce_chunks(n), 2 * D, 0, D, g, stream);
  emb_detail::launch_add_scaled_partials<emb_detail::Coef::dsigmoid>(dg, scratch, reduce_chunks(n), 2 * D, D, D, g, stream);
}

}  // namespace pgolf::cuda
