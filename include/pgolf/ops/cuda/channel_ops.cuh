// Element-wise work with per-channel parameters on the GPU (the CPU oracle is
// ops/channel_ops.hpp and, for the leaky activation, ops/features.hpp):
//
//   scaled_add_forward / _backward   out = x + scale⊙a   (attn_scale, mlp_scale, U-Net skip_weights)
//   resid_mix_backward               x_mix = mix[0]⊙x + mix[1]⊙x0   (the forward is fused into
//                                    resid_mix_rmsnorm_forward, rmsnorm.cuh)
//   mlp_activation_forward / _backward   relu(u)² or leaky_relu(u, slope)² on the MLP hidden layer
//
// Parameter gradients (dscale, dmix) are column sums over the rows. They are computed in the same
// pass as the input gradients (each (dout, a) pair is read once), as per-chunk partial sums over
// the fixed chunks of kReduceRows rows of reduce.cuh, and the chunks are then added in order by
// reduce.cuh's add_partials (in double). Every sum has an order fixed by n and D alone: no float
// atomics, bit-identical results run to run.
//
// Forward kernels use the row tiling of rowwise.cuh (rowwise::RowTiling: a lane group per row,
// kVec-wide vector accesses). The backward kernels use a column tiling (ColumnTiling below).
#pragma once

#include <cstdint>
#include <type_traits>

#include "pgolf/core/config.hpp"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/reduce.cuh"
#include "pgolf/ops/cuda/rowwise.cuh"

namespace pgolf::cuda {

namespace rowwise {

// The backward kernels with per-channel sums: block (c, s) owns row chunk c (kReduceRows rows,
// exactly the chunks of reduce.cuh's partials) and column slab s (kColThreads packs of kVec
// columns). Its 256 threads are kColThreads columns × kRowGroups row groups; row group g takes
// rows g, g + kRowGroups, g + 2·kRowGroups, … of the chunk, so that the warps of a block read
// consecutive rows (contiguous memory) together. Each thread sums its rows in order in fp32; the
// row groups are then added in order through shared memory: a fixed tree.
//
// For D = 512: 32 column threads × 8 row groups, 4 slabs; at n = 65,536 that is 256 × 4 = 1,024
// blocks of 8 warps, each warp reading 512 contiguous bytes per row and tensor.
template <int D>
struct ColumnTiling {
  static_assert(D >= 1, "a row needs at least one value");
  static constexpr int kVec = kVecWidth<D>;
  static constexpr int kPacks = D / kVec;
  static constexpr int kThreads = 256;
  static constexpr int kColThreads = kPacks < kWarpSize ? next_pow2(kPacks) : kWarpSize;
  static constexpr int kSlabs = (kPacks + kColThreads - 1) / kColThreads;
  static constexpr bool kRagged = kPacks % kColThreads != 0;  // the last slab has idle column threads
  static constexpr int kSlabCols = kColThreads * kVec;
  static constexpr int kRowGroups = kThreads / kColThreads;
  static constexpr int kGroupRows = kReduceRows / kRowGroups;  // rows of one thread per chunk
  static constexpr int kUnroll = kGroupRows < 4 ? kGroupRows : 4;  // rows whose loads are issued together
  static_assert(kReduceRows % kRowGroups == 0 && kGroupRows % kUnroll == 0, "row groups must split a chunk evenly");
};

// Position of the calling thread in a ColumnTiling block.
template <int D>
struct ColPos {
  using C = ColumnTiling<D>;
  int tc, g, col;
  bool col_ok;
  std::int64_t first_row;  // of this thread's rows
  __device__ __forceinline__ ColPos() {
    tc = static_cast<int>(threadIdx.x % C::kColThreads);
    g = static_cast<int>(threadIdx.x / C::kColThreads);
    const int p = static_cast<int>(blockIdx.y) * C::kColThreads + tc;
    col_ok = !C::kRagged || p < C::kPacks;
    col = p * C::kVec;
    first_row = static_cast<std::int64_t>(blockIdx.x) * kReduceRows + g;
  }
  __device__ __forceinline__ std::int64_t row(int k) const { return first_row + static_cast<std::int64_t>(k) * C::kRowGroups; }
};

// partials[chunk, col_offset + col] = Σ over the row groups, in order, of part[g][col] — the
// block's slab of one column-sum quantity. `part` is the block's shared [kRowGroups][kSlabCols]
// array, filled (and synchronised) by the caller.
template <int D>
__device__ __forceinline__ void write_chunk_partials(float* partials, int width, int col_offset, const float* part) {
  using C = ColumnTiling<D>;
  for (int q = threadIdx.x; q < C::kSlabCols; q += C::kThreads) {
    const int col = static_cast<int>(blockIdx.y) * C::kSlabCols + q;
    if (col >= D) continue;
    float acc = 0.0f;
    for (int g = 0; g < C::kRowGroups; ++g) acc += part[g * C::kSlabCols + q];
    partials[static_cast<std::int64_t>(blockIdx.x) * width + col_offset + col] = acc;
  }
}

template <int D>
dim3 column_grid(std::int64_t n) {
  const std::int64_t chunks = reduce_chunks(n);
  PGOLF_CHECK(chunks <= 0x7fffffffLL, "column-sum CUDA kernel: " << n << " rows exceed one grid");
  return dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(ColumnTiling<D>::kSlabs));
}

// Activations, computed in fp32 from bf16 and rounded once to bf16. For bf16 inputs the fp32
// values are exact when slope is a power of two (a product of two 8-bit significands fits in 24
// bits), so the result is the correctly rounded one, bit-equal to the CPU oracle's rounded.
template <Activation Act>
__device__ __forceinline__ float activation_forward(float u, float slope) {
  if constexpr (Act == Activation::relu2) {
    const float a = u > 0.0f ? u : 0.0f;
    return a * a;
  } else {
    const float a = u > 0.0f ? u : slope * u;
    return a * a;
  }
}
// dr · d/du act(u) = dr · 2·u (u > 0), dr · 2·slope²·u (leaky, u <= 0), 0 (relu², u <= 0).
template <Activation Act>
__device__ __forceinline__ float activation_backward(float dr, float u, float slope) {
  if constexpr (Act == Activation::relu2) {
    return u > 0.0f ? dr * (2.0f * u) : 0.0f;
  } else {
    return dr * (2.0f * (u > 0.0f ? u : slope * slope * u));
  }
}

// 16-byte vectors of the hidden layer: 8 bf16 per access.
inline constexpr int kActVec = 8;

}  // namespace rowwise

namespace kernels {

template <int D, class A>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    scaled_add_forward(float* out, const float* x, const A* a, const float* scale, std::int64_t n) {
  using T = rowwise::RowTiling<D>;
  const rowwise::RowPos<D> pos(n);
  if (!pos.valid) return;  // no shuffles here: threads may leave independently
  rowwise::RowRegs<D> xv = {}, av = {};
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.has(j)) continue;
    rowwise::load_pack<T::kVec>(xv[j], x + pos.at(j));
    rowwise::load_pack<T::kVec>(av[j], a + pos.at(j));
  }
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.has(j)) continue;
    float sc[T::kVec];
    rowwise::load_pack<T::kVec, true>(sc, scale + pos.col(j));
#pragma unroll
    for (int i = 0; i < T::kVec; ++i) xv[j][i] = xv[j][i] + sc[i] * av[j][i];
    rowwise::store_pack<T::kVec>(out + pos.at(j), xv[j]);
  }
}

// da (+)= scale⊙dout for this block's rows and columns; partials[chunk, :] = per-chunk Σ dout⊙a.
template <int D, class A, class DA>
__global__ void __launch_bounds__(rowwise::ColumnTiling<D>::kThreads)
    scaled_add_backward(DA* da, float* partials, const float* dout, const A* a, const float* scale, std::int64_t n, bool accumulate) {
  using C = rowwise::ColumnTiling<D>;
  constexpr int V = C::kVec, U = C::kUnroll;
  __shared__ __align__(16) float part[C::kRowGroups * C::kSlabCols];
  const rowwise::ColPos<D> pos;
  float sc[V] = {}, acc[V] = {};
  if (pos.col_ok) rowwise::load_pack<V, true>(sc, scale + pos.col);
  for (int k0 = 0; k0 < C::kGroupRows; k0 += U) {
    // U rows' loads first (they are independent and all in flight), then the arithmetic and stores.
    float g[U][V] = {}, av[U][V] = {}, old[U][V] = {};
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      if (!pos.col_ok || r >= n) continue;
      rowwise::load_pack<V>(g[u], dout + r * D + pos.col);
      rowwise::load_pack<V>(av[u], a + r * D + pos.col);
      if (accumulate) rowwise::load_pack<V>(old[u], da + r * D + pos.col);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      if (!pos.col_ok || r >= n) continue;
      float o[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        acc[i] += g[u][i] * av[u][i];
        o[i] = (accumulate ? old[u][i] : 0.0f) + sc[i] * g[u][i];
      }
      rowwise::store_pack<V>(da + r * D + pos.col, o);
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) part[pos.g * C::kSlabCols + pos.tc * V + i] = acc[i];
  __syncthreads();
  rowwise::write_chunk_partials<D>(partials, D, 0, part);
}

// dx = mix[0]⊙dout (may alias dout), dx0 += mix[1]⊙dout; partials[chunk, 0:D] = Σ dout⊙x and
// partials[chunk, D:2D] = Σ dout⊙x0 over the chunk.
template <int D>
__global__ void __launch_bounds__(rowwise::ColumnTiling<D>::kThreads)
    resid_mix_backward(float* dx, float* dx0, float* partials, const float* dout, const float* x, const float* x0, const float* mix,
                       std::int64_t n) {
  using C = rowwise::ColumnTiling<D>;
  constexpr int V = C::kVec, U = C::kUnroll;
  __shared__ __align__(16) float part_x[C::kRowGroups * C::kSlabCols];
  __shared__ __align__(16) float part_x0[C::kRowGroups * C::kSlabCols];
  const rowwise::ColPos<D> pos;
  float m0[V] = {}, m1[V] = {}, acc_x[V] = {}, acc_x0[V] = {};
  if (pos.col_ok) {
    rowwise::load_pack<V, true>(m0, mix + pos.col);
    rowwise::load_pack<V, true>(m1, mix + D + pos.col);
  }
  for (int k0 = 0; k0 < C::kGroupRows; k0 += U) {
    float g[U][V] = {}, xv[U][V] = {}, x0v[U][V] = {}, d0[U][V] = {};
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      if (!pos.col_ok || r >= n) continue;
      rowwise::load_pack<V>(g[u], dout + r * D + pos.col);
      rowwise::load_pack<V>(xv[u], x + r * D + pos.col);
      rowwise::load_pack<V>(x0v[u], x0 + r * D + pos.col);
      rowwise::load_pack<V>(d0[u], dx0 + r * D + pos.col);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const std::int64_t r = pos.row(k0 + u);
      if (!pos.col_ok || r >= n) continue;
      float ox[V], ox0[V];
#pragma unroll
      for (int i = 0; i < V; ++i) {
        acc_x[i] += g[u][i] * xv[u][i];
        acc_x0[i] += g[u][i] * x0v[u][i];
        ox[i] = m0[i] * g[u][i];
        ox0[i] = d0[u][i] + m1[i] * g[u][i];
      }
      rowwise::store_pack<V>(dx + r * D + pos.col, ox);
      rowwise::store_pack<V>(dx0 + r * D + pos.col, ox0);
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) {
    part_x[pos.g * C::kSlabCols + pos.tc * V + i] = acc_x[i];
    part_x0[pos.g * C::kSlabCols + pos.tc * V + i] = acc_x0[i];
  }
  __syncthreads();
  rowwise::write_chunk_partials<D>(partials, 2 * D, 0, part_x);
  rowwise::write_chunk_partials<D>(partials, 2 * D, D, part_x0);
}

// Element-wise over `count` values: packs of V = kActVec (16-byte accesses) for the first
// packs·V values (grid-stride), then the count % V tail one value per thread. V = 1 is the path
// for pointers that are not 16-byte aligned.
template <Activation Act, int V>
__global__ void __launch_bounds__(kElementwiseThreads)
    mlp_activation_forward(nv_bf16* r, const nv_bf16* u, std::int64_t count, float slope) {
  const std::int64_t packs = count / V;
  const std::int64_t tid = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t p = tid; p < packs; p += stride) {
    float v[V];
    rowwise::load_pack<V>(v, u + p * V);
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = rowwise::activation_forward<Act>(v[i], slope);
    rowwise::store_pack<V>(r + p * V, v);
  }
  if (const std::int64_t i = packs * V + tid; i < count) r[i] = from_float<nv_bf16>(rowwise::activation_forward<Act>(to_float(u[i]), slope));
}

template <Activation Act, int V>
__global__ void __launch_bounds__(kElementwiseThreads)
    mlp_activation_backward(nv_bf16* du, const nv_bf16* dr, const nv_bf16* u, std::int64_t count, float slope) {
  const std::int64_t packs = count / V;
  const std::int64_t tid = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t p = tid; p < packs; p += stride) {
    float g[V], uv[V];
    rowwise::load_pack<V>(g, dr + p * V);
    rowwise::load_pack<V>(uv, u + p * V);
#pragma unroll
    for (int i = 0; i < V; ++i) g[i] = rowwise::activation_backward<Act>(g[i], uv[i], slope);
    rowwise::store_pack<V>(du + p * V, g);
  }
  if (const std::int64_t i = packs * V + tid; i < count) {
    du[i] = from_float<nv_bf16>(rowwise::activation_backward<Act>(to_float(dr[i]), to_float(u[i]), slope));
  }
}

}  // namespace kernels

// ---------------------------------------------------------------------------------------------
// Launchers. Pointers are device memory; the row and column kernels need every (n, D) tensor
// and per-channel vector aligned to kVecWidth<D> elements (checked on the host). n == 0 is a no-op.
// ---------------------------------------------------------------------------------------------

// out (n, D) = x (n, D) + scale (D) ⊙ a (n, D); A = float (U-Net skip) or nv_bf16 (a branch's
// GEMM output). out may alias x.
template <int D, class A>
void scaled_add_forward(float* out, const float* x, const A* a, const float* scale, std::int64_t n, cudaStream_t stream) {
  static_assert(std::is_same_v<A, float> || std::is_same_v<A, nv_bf16>, "scaled_add_forward reads a as float or nv_bf16");
  using T = rowwise::RowTiling<D>;
  constexpr const char* op = "scaled_add_forward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(out, T::kVec, op, "out", D);
  rowwise::check_aligned(x, T::kVec, op, "x", D);
  rowwise::check_aligned(a, T::kVec, op, "a", D);
  rowwise::check_aligned(scale, T::kVec, op, "scale", D);
  if (n == 0) return;
  kernels::scaled_add_forward<D, A><<<rowwise::row_blocks<D>(n), T::kThreads, 0, stream>>>(out, x, a, scale, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// For out = x + scale⊙a: da (n, D) (+)= scale⊙dout; dscale (D) += Σ_rows dout⊙a.
// dout (n, D) fp32; a (n, D) the forward's a. DA = nv_bf16 (da feeds a GEMM; then accumulate must
// be false) or float. dx = dout needs no work. scratch: column_partials_size(n, D) floats.
template <int D, class A, class DA>
void scaled_add_backward(DA* da, float* dscale, const float* dout, const A* a, const float* scale, std::int64_t n, bool accumulate,
                         float* scratch, cudaStream_t stream) {
  static_assert(std::is_same_v<A, float> || std::is_same_v<A, nv_bf16>, "scaled_add_backward reads a as float or nv_bf16");
  static_assert(std::is_same_v<DA, float> || std::is_same_v<DA, nv_bf16>, "scaled_add_backward writes da as float or nv_bf16");
  using C = rowwise::ColumnTiling<D>;
  constexpr const char* op = "scaled_add_backward";
  rowwise::check_rows(n, op);
  if constexpr (std::is_same_v<DA, nv_bf16>) {
    PGOLF_CHECK(!accumulate, op << ": a bf16 da (a GEMM input) is written, not accumulated; accumulate into a float da instead");
  }
  rowwise::check_aligned(da, C::kVec, op, "da", D);
  rowwise::check_aligned(dout, C::kVec, op, "dout", D);
  rowwise::check_aligned(a, C::kVec, op, "a", D);
  rowwise::check_aligned(scale, C::kVec, op, "scale", D);
  if (n == 0) return;
  PGOLF_CHECK(scratch != nullptr, op << ": needs scratch of column_partials_size(n, D) = " << column_partials_size(n, D) << " floats");
  kernels::scaled_add_backward<D, A, DA><<<rowwise::column_grid<D>(n), C::kThreads, 0, stream>>>(da, scratch, dout, a, scale, n, accumulate);
  PGOLF_CUDA_LAUNCH_CHECK();
  add_partials(dscale, scratch, reduce_chunks(n), D, stream);
}

// For x_mix = mix[0:D]⊙x + mix[D:2D]⊙x0: dx (n, D) = mix[0]⊙dout (written; may alias dout),
// dx0 (n, D) += mix[1]⊙dout, dmix (2, D) += [Σ_rows dout⊙x ; Σ_rows dout⊙x0].
// dout, x, x0 (n, D) fp32. scratch: column_partials_size(n, 2·D) floats.
template <int D>
void resid_mix_backward(float* dx, float* dx0, float* dmix, const float* dout, const float* x, const float* x0, const float* mix,
                        std::int64_t n, float* scratch, cudaStream_t stream) {
  using C = rowwise::ColumnTiling<D>;
  constexpr const char* op = "resid_mix_backward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(dx, C::kVec, op, "dx", D);
  rowwise::check_aligned(dx0, C::kVec, op, "dx0", D);
  rowwise::check_aligned(dout, C::kVec, op, "dout", D);
  rowwise::check_aligned(x, C::kVec, op, "x", D);
  rowwise::check_aligned(x0, C::kVec, op, "x0", D);
  rowwise::check_aligned(mix, C::kVec, op, "mix", D);
  if (n == 0) return;
  PGOLF_CHECK(scratch != nullptr, op << ": needs scratch of column_partials_size(n, 2·D) = " << column_partials_size(n, 2 * D) << " floats");
  kernels::resid_mix_backward<D><<<rowwise::column_grid<D>(n), C::kThreads, 0, stream>>>(dx, dx0, scratch, dout, x, x0, mix, n);
  PGOLF_CUDA_LAUNCH_CHECK();
  add_partials(dmix, scratch, reduce_chunks(n), 2 * D, stream);
}

namespace rowwise {
inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }
}  // namespace rowwise

// r (count) = act(u (count)), bf16 in and out: relu(u)² or leaky_relu(u, slope)² (slope unused by
// relu2). 16-byte accesses when the pointers allow, one value per access otherwise (any count).
template <Activation Act>
void mlp_activation_forward(nv_bf16* r, const nv_bf16* u, std::int64_t count, float slope, cudaStream_t stream) {
  PGOLF_CHECK(count >= 0, "mlp_activation_forward: negative count " << count);
  if (count == 0) return;
  if (rowwise::aligned16(r) && rowwise::aligned16(u)) {
    constexpr int V = rowwise::kActVec;
    kernels::mlp_activation_forward<Act, V>
        <<<grid_for(ceil_div(count, V), kElementwiseThreads), kElementwiseThreads, 0, stream>>>(r, u, count, slope);
  } else {
    kernels::mlp_activation_forward<Act, 1><<<grid_for(count, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(r, u, count, slope);
  }
  PGOLF_CUDA_LAUNCH_CHECK();
}

// du (count) = dr (count) · act'(u (count)); du may alias dr.
template <Activation Act>
void mlp_activation_backward(nv_bf16* du, const nv_bf16* dr, const nv_bf16* u, std::int64_t count, float slope, cudaStream_t stream) {
  PGOLF_CHECK(count >= 0, "mlp_activation_backward: negative count " << count);
  if (count == 0) return;
  if (rowwise::aligned16(du) && rowwise::aligned16(dr) && rowwise::aligned16(u)) {
    constexpr int V = rowwise::kActVec;
    kernels::mlp_activation_backward<Act, V>
        <<<grid_for(ceil_div(count, V), kElementwiseThreads), kElementwiseThreads, 0, stream>>>(du, dr, u, count, slope);
  } else {
    kernels::mlp_activation_backward<Act, 1>
        <<<grid_for(count, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(du, dr, u, count, slope);
  }
  PGOLF_CUDA_LAUNCH_CHECK();
}

}  // namespace pgolf::cuda
