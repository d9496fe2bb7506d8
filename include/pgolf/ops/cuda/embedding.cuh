// Token embedding lookup and its deterministic backward on the GPU.
//
// Forward: a gather, out[n, :] = table[ids[n], :], with 16-byte copies when D and the pointers allow.
//
// Backward: dtable[v, :] += Σ_{n : ids[n] = v} dout[n, :], summed in increasing n for every v, the
// order of cpu::embedding_backward, so the two give the same bits (both are chains of fp32 adds).
// EmbeddingGradPlan::prepare groups the positions by id with a stable radix sort of (id, position)
// pairs (cub::DeviceRadixSort::SortPairs), finds each id's segment, and orders the ids by
// decreasing segment length (a second stable sort, of 'rows' counts) so that the longest segments
// start first. The backward kernel gives each (id, 32-column slice) to one warp: lane i owns column
// slice·32 + i and adds the segment's rows one after the other (one 128-byte coalesced load per row
// per warp). Each column is a sequential chain, so a frequent id is split over D/32 warps in
// different blocks; each warp fetches the positions 32 at a time (one coalesced load, broadcast by
// shuffles) and keeps the next 32 rows in flight while it adds the current 32 in order.
#pragma once

#include <cub/device/device_radix_sort.cuh>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "pgolf/core/error.hpp"
#include "pgolf/ops/cuda/common.cuh"

namespace pgolf::cuda {

namespace embedding_detail {

inline constexpr int kForwardThreads = 256;
inline constexpr int kBackwardWarps = 4;  // warps (work items) per block of the backward
inline constexpr int kBatch = kWarpSize;  // rows loaded before they are added

template <int = 0>  // a template, so that every translation unit may instantiate it (no ODR clash)
__global__ void iota(std::int32_t* out, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[i] = static_cast<std::int32_t>(i);
  }
}

// starts[v] = the first index of sorted_ids holding an id >= v, for v in [0, rows]: each index i
// in [0, n] writes the ids in (sorted_ids[i − 1], sorted_ids[i]] (with −1 before the start and rows
// after the end), so every entry is written exactly once.
template <int = 0>  // a template, so that every translation unit may instantiate it (no ODR clash)
__global__ void segment_starts(std::int32_t* starts, const std::int32_t* sorted_ids, std::int64_t n, int rows) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i <= n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const int prev = i == 0 ? -1 : sorted_ids[i - 1];
    const int cur = i == n ? rows : sorted_ids[i];
    for (int v = prev + 1; v <= cur; ++v) starts[v] = static_cast<std::int32_t>(i);
  }
}

template <int = 0>  // a template, so that every translation unit may instantiate it (no ODR clash)
__global__ void segment_counts(std::int32_t* counts, const std::int32_t* starts, int rows) {
  const int v = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (v < rows) counts[v] = starts[v + 1] - starts[v];
}

template <int D, int VW>
__global__ void __launch_bounds__(kForwardThreads)
    embedding_forward(float* __restrict__ out, const float* __restrict__ table, const std::int32_t* __restrict__ ids, std::int64_t n) {
  constexpr int kPerRow = D / VW;
  using Vec = std::conditional_t<VW == 4, float4, float>;
  const std::int64_t total = n * kPerRow;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / kPerRow;
    const int c = static_cast<int>(i % kPerRow);
    const std::int64_t id = __ldg(ids + r);
    reinterpret_cast<Vec*>(out)[r * kPerRow + c] = __ldg(reinterpret_cast<const Vec*>(table) + id * kPerRow + c);
  }
}

// Rows k .. k + cnt − 1 of the segment, column col: lane u's position broadcast, one load each.
template <int D>
__device__ __forceinline__ void load_batch(float (&g)[kBatch], const float* __restrict__ dout, std::int32_t lane_position, int cnt,
                                           int col, bool has_col) {
#pragma unroll
  for (int u = 0; u < kBatch; ++u) {
    const std::int64_t p = __shfl_sync(0xffffffffu, lane_position, u);
    g[u] = (u < cnt && has_col) ? __ldg(dout + p * D + col) : 0.0f;
  }
}

// One warp per work item (the id order[item / slices], column slice item % slices). Block b, warp w
// takes item b + w·gridDim.x, so the first items (the longest segments) land in different blocks.
// Software pipeline: while batch i (32 rows) is added, the rows of batch i + 1 are in flight and
// the positions of batch i + 2 are being fetched, so a long segment costs about half a memory
// round trip per 32 rows instead of two.
template <int D>
__global__ void __launch_bounds__(kBackwardWarps* kWarpSize)
    embedding_backward(float* __restrict__ dtable, const float* __restrict__ dout, const std::int32_t* __restrict__ positions,
                       const std::int32_t* __restrict__ starts, const std::int32_t* __restrict__ order, std::int64_t items) {
  constexpr int kSlices = ceil_div(D, kWarpSize);
  const int lane = static_cast<int>(threadIdx.x % kWarpSize), warp = static_cast<int>(threadIdx.x / kWarpSize);
  const std::int64_t item = blockIdx.x + static_cast<std::int64_t>(warp) * gridDim.x;
  if (item >= items) return;  // warp-uniform
  const std::int64_t v = order[item / kSlices];
  const int col = static_cast<int>(item % kSlices) * kWarpSize + lane;
  const bool has_col = col < D;
  const std::int64_t b = starts[v], e = starts[v + 1];
  if (b == e) return;  // warp-uniform: no row of dout adds to v
  // Lane u's share of the positions of the batch starting at k (0 past the end).
  auto lane_position = [&](std::int64_t k) { return k + lane < e ? __ldg(positions + k + lane) : 0; };
  auto batch_size = [&](std::int64_t k) { return k < e ? static_cast<int>(e - k < kBatch ? e - k : kBatch) : 0; };

  float* dst = dtable + v * D + col;
  float acc = has_col ? *dst : 0.0f;
  std::int64_t k = b;
  std::int32_t next_positions = lane_position(k + kBatch);
  float g[kBatch];
  load_batch<D>(g, dout, lane_position(k), batch_size(k), col, has_col);
  for (;;) {
    const std::int64_t k1 = k + kBatch;
    const int cnt = batch_size(k), cnt1 = batch_size(k1);  // cnt1 == 0: batch i is the last
    const std::int32_t after_positions = lane_position(k1 + kBatch);
    float g1[kBatch];
    load_batch<D>(g1, dout, next_positions, cnt1, col, has_col);
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      if (u < cnt) acc += g[u];  // in increasing position: the CPU's order (no + 0.0f, which would turn −0 into +0)
    }
    if (cnt1 == 0) break;  // warp-uniform
#pragma unroll
    for (int u = 0; u < kBatch; ++u) g[u] = g1[u];
    next_positions = after_positions;
    k = k1;
  }
  if (has_col) *dst = acc;
}

inline int bit_width_at_least_1(std::uint64_t v) { return std::max(1, static_cast<int>(std::bit_width(v))); }

}  // namespace embedding_detail

// out[n, :] = table[ids[n], :]   table (rows, D) fp32 master weights, out (n, D) fp32. The ids are
// validated on the host before upload.
template <int D>
void embedding_forward(float* out, const float* table, const std::int32_t* ids, std::int64_t n, cudaStream_t stream) {
  static_assert(D > 0, "embedding_forward: D must be positive");
  if (n == 0) return;
  constexpr int kThreads = embedding_detail::kForwardThreads;
  if constexpr (D % 4 == 0) {
    if (reinterpret_cast<std::uintptr_t>(out) % 16 == 0 && reinterpret_cast<std::uintptr_t>(table) % 16 == 0) {
      embedding_detail::embedding_forward<D, 4><<<grid_for(n * (D / 4), kThreads), kThreads, 0, stream>>>(out, table, ids, n);
      PGOLF_CUDA_LAUNCH_CHECK();
      return;
    }
  }
  embedding_detail::embedding_forward<D, 1><<<grid_for(n * D, kThreads), kThreads, 0, stream>>>(out, table, ids, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// The grouping of positions by id that embedding_backward needs, for one batch of ids at a time.
// Everything is allocated once, for up to max_n positions into `rows` rows.
class EmbeddingGradPlan {
 public:
  EmbeddingGradPlan(std::int64_t max_n, int rows)
      : max_n_(max_n),
        rows_(rows),
        id_bits_(embedding_detail::bit_width_at_least_1(rows > 0 ? static_cast<std::uint64_t>(rows - 1) : 0)),
        count_bits_(embedding_detail::bit_width_at_least_1(max_n > 0 ? static_cast<std::uint64_t>(max_n) : 0)) {
    PGOLF_CHECK(max_n >= 0 && max_n <= std::numeric_limits<std::int32_t>::max(),
                "EmbeddingGradPlan: max_n " << max_n << " must fit in int32 positions");
    PGOLF_CHECK(rows > 0, "EmbeddingGradPlan: rows must be positive, got " << rows);
    const std::int64_t iota_n = std::max<std::int64_t>(max_n, rows);
    iota_ = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(iota_n), "embedding grad: iota");
    sorted_ids_ = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(std::max<std::int64_t>(max_n, 1)), "embedding grad: sorted ids");
    positions_ = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(std::max<std::int64_t>(max_n, 1)), "embedding grad: sorted positions");
    starts_ = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(rows) + 1, "embedding grad: segment starts");
    counts_ = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(rows), "embedding grad: segment lengths");
    sorted_counts_ = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(rows), "embedding grad: sorted segment lengths");
    order_ = DeviceBuffer<std::int32_t>(static_cast<std::size_t>(rows), "embedding grad: row order");
    temp_bytes_ = std::max<std::size_t>({sort_ids_bytes(max_n), sort_counts_bytes(), 1});
    temp_ = DeviceBuffer<std::uint8_t>(temp_bytes_, "embedding grad: CUB temporary storage");
    embedding_detail::iota<><<<grid_for(iota_n, kElementwiseThreads), kElementwiseThreads>>>(iota_.data(), iota_n);
    PGOLF_CUDA_LAUNCH_CHECK();
    PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  }

  // Groups the positions of ids (n, device, each in [0, rows)) by id; once per batch of ids.
  void prepare(const std::int32_t* ids, std::int64_t n, cudaStream_t stream) {
    PGOLF_CHECK(n >= 0 && n <= max_n_, "EmbeddingGradPlan::prepare: n " << n << " outside [0, " << max_n_ << "]");
    if (n > 0) {
      std::size_t bytes = sort_ids_bytes(n);
      PGOLF_CHECK(bytes <= temp_bytes_, "EmbeddingGradPlan: CUB needs " << bytes << " temporary bytes, " << temp_bytes_ << " allocated");
      bytes = temp_bytes_;
      PGOLF_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp_.data(), bytes, ids, sorted_ids_.data(), iota_.data(), positions_.data(), n, 0,
                                                       id_bits_, stream));
    }
    embedding_detail::segment_starts<><<<grid_for(n + 1, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        starts_.data(), sorted_ids_.data(), n, rows_);
    PGOLF_CUDA_LAUNCH_CHECK();
    embedding_detail::segment_counts<><<<static_cast<unsigned>(ceil_div(rows_, kElementwiseThreads)), kElementwiseThreads, 0, stream>>>(
        counts_.data(), starts_.data(), rows_);
    PGOLF_CUDA_LAUNCH_CHECK();
    std::size_t bytes = temp_bytes_;
    PGOLF_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(temp_.data(), bytes, counts_.data(), sorted_counts_.data(), iota_.data(),
                                                               order_.data(), rows_, 0, count_bits_, stream));
    n_ = n;
  }

  std::int64_t n() const { return n_; }          // positions of the last prepare()
  std::int64_t max_n() const { return max_n_; }
  int rows() const { return rows_; }
  // (n) positions grouped by id, increasing within each id.
  const std::int32_t* sorted_positions() const { return positions_.data(); }
  // (n) the ids in sorted order.
  const std::int32_t* sorted_ids() const { return sorted_ids_.data(); }
  // (rows + 1) the positions of id v are sorted_positions()[starts[v], starts[v + 1]).
  const std::int32_t* segment_starts() const { return starts_.data(); }
  // (rows) ids by decreasing number of positions (ties in increasing id): the backward's schedule.
  const std::int32_t* row_order() const { return order_.data(); }

 private:
  std::size_t sort_ids_bytes(std::int64_t n) const {
    std::size_t bytes = 0;
    if (n > 0) {
      PGOLF_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const std::int32_t*>(nullptr),
                                                       static_cast<std::int32_t*>(nullptr), static_cast<const std::int32_t*>(nullptr),
                                                       static_cast<std::int32_t*>(nullptr), n, 0, id_bits_));
    }
    return bytes;
  }
  std::size_t sort_counts_bytes() const {
    std::size_t bytes = 0;
    PGOLF_CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, static_cast<const std::int32_t*>(nullptr),
                                                               static_cast<std::int32_t*>(nullptr), static_cast<const std::int32_t*>(nullptr),
                                                               static_cast<std::int32_t*>(nullptr), rows_, 0, count_bits_));
    return bytes;
  }

  std::int64_t max_n_ = 0, n_ = 0;
  int rows_ = 0, id_bits_ = 1, count_bits_ = 1;
  std::size_t temp_bytes_ = 0;
  DeviceBuffer<std::int32_t> iota_, sorted_ids_, positions_, starts_, counts_, sorted_counts_, order_;
  DeviceBuffer<std::uint8_t> temp_;
};

// dtable[v, :] += Σ_{n : ids[n] = v} dout[n, :], each sum in increasing n (the same order as
// cpu::embedding_backward: the same bits). dtable (plan.rows(), D) fp32, dout (plan.n(), D) fp32,
// for the ids of the plan's last prepare().
template <int D>
void embedding_backward(float* dtable, const float* dout, const EmbeddingGradPlan& plan, cudaStream_t stream) {
  static_assert(D > 0, "embedding_backward: D must be positive");
  if (plan.n() == 0) return;
  const std::int64_t items = static_cast<std::int64_t>(plan.rows()) * ceil_div(D, kWarpSize);
  const auto blocks = static_cast<unsigned>(ceil_div(items, static_cast<std::int64_t>(embedding_detail::kBackwardWarps)));
  embedding_detail::embedding_backward<D><<<blocks, embedding_detail::kBackwardWarps * kWarpSize, 0, stream>>>(
      dtable, dout, plan.sorted_positions(), plan.segment_starts(), plan.row_order(), items);
  PGOLF_CUDA_LAUNCH_CHECK();
}

}  // namespace pgolf::cuda
