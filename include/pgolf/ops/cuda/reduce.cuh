// Deterministic reductions on the GPU: sums whose order is fixed by the sizes alone, so that a
// training run gives the same bits every time (no float atomics).
//
//   column sums   dst[i] += Σ_r a[r, i] · b[r, i]         (per-channel parameter gradients)
//                 in two passes: partial sums over fixed chunks of kReduceRows rows, then the
//                 chunks added in order (add_partials).
//   scalar sums   out = Σ_i x[i] or Σ_i x[i]²             (losses, gradient norms)
//                 per-block partials over fixed chunks of kSumChunk elements, then one block.
#pragma once

#include <cstdint>

#include "pgolf/ops/cuda/common.cuh"

namespace pgolf::cuda {

inline constexpr int kReduceRows = 256;     // rows per partial column sum
inline constexpr int kColumnThreads = 128;  // columns per block of the partial-sum kernels
inline constexpr int kSumThreads = 256;
inline constexpr int kSumChunk = kSumThreads * 16;  // elements per partial of a scalar sum

inline std::int64_t reduce_chunks(std::int64_t rows) { return ceil_div(rows, static_cast<std::int64_t>(kReduceRows)); }
// Scratch floats that column_dot_partials needs for `rows` × `width`.
inline std::int64_t column_partials_size(std::int64_t rows, int width) { return reduce_chunks(rows) * width; }
// Scratch doubles that sum()/sum_squares() need for n elements.
inline std::int64_t sum_scratch_size(std::int64_t n) { return ceil_div(n, static_cast<std::int64_t>(kSumChunk)); }

namespace kernels {

// partials[c, i] = Σ_{r in chunk c} a[r·lda + i] · b[r·ldb + i]; b == nullptr means b = 1.
template <class A, class B>
__global__ void column_dot_partials(float* partials, const A* a, std::int64_t lda, const B* b, std::int64_t ldb, std::int64_t rows,
                                    int width) {
  const int i = blockIdx.y * blockDim.x + threadIdx.x;
  if (i >= width) return;
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * kReduceRows;
  const std::int64_t r1 = r0 + kReduceRows < rows ? r0 + kReduceRows : rows;
  float acc = 0.0f;
  for (std::int64_t r = r0; r < r1; ++r) {
    const float av = to_float(a[r * lda + i]);
    acc += b ? av * to_float(b[r * ldb + i]) : av;
  }
  partials[static_cast<std::int64_t>(blockIdx.x) * width + i] = acc;
}

// dst[i] += Σ_c partials[c, i], in chunk order, in double. (A template, like every kernel in a
// header, so that each translation unit may instantiate it.)
template <class T>
__global__ void add_partials(T* dst, const T* partials, std::int64_t chunks, int width) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= width) return;
  double acc = 0.0;
  for (std::int64_t c = 0; c < chunks; ++c) acc += partials[c * width + i];
  dst[i] = static_cast<float>(static_cast<double>(dst[i]) + acc);
}

template <bool Square>
__global__ void sum_partials(double* partials, const float* x, std::int64_t n) {
  __shared__ double scratch[kSumThreads / kWarpSize];
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kSumChunk;
  double acc = 0.0;
  for (int k = threadIdx.x; k < kSumChunk; k += kSumThreads) {
    const std::int64_t i = base + k;
    if (i < n) {
      const double v = x[i];
      acc += Square ? v * v : v;
    }
  }
  acc = block_sum<kSumThreads>(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <class T>
__global__ void sum_final(T* out, const T* partials, std::int64_t count, bool accumulate) {
  __shared__ T scratch[kSumThreads / kWarpSize];
  T acc = 0;
  for (std::int64_t k = threadIdx.x; k < count; k += kSumThreads) acc += partials[k];
  acc = block_sum<kSumThreads>(acc, scratch);
  if (threadIdx.x == 0) out[0] = accumulate ? out[0] + acc : acc;
}

}  // namespace kernels

// partials (reduce_chunks(rows), width) = per-chunk column sums of a ⊙ b (b may be nullptr: Σ a).
// a: (rows, width) with row stride lda; b: (rows, width) with row stride ldb.
template <class A, class B>
void column_dot_partials(float* partials, const A* a, std::int64_t lda, const B* b, std::int64_t ldb, std::int64_t rows, int width,
                         cudaStream_t stream) {
  if (rows == 0 || width == 0) return;
  const dim3 grid(static_cast<unsigned>(reduce_chunks(rows)), static_cast<unsigned>(ceil_div(width, kColumnThreads)));
  kernels::column_dot_partials<<<grid, kColumnThreads, 0, stream>>>(partials, a, lda, b, ldb, rows, width);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// dst[width] += Σ over the chunks of partials (chunks, width), in chunk order.
inline void add_partials(float* dst, const float* partials, std::int64_t chunks, int width, cudaStream_t stream) {
  if (chunks == 0 || width == 0) return;
  kernels::add_partials<float><<<static_cast<unsigned>(ceil_div(width, kColumnThreads)), kColumnThreads, 0, stream>>>(dst, partials, chunks,
                                                                                                             width);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// dst[width] += Σ_r a[r, :] ⊙ b[r, :]   (scratch: column_partials_size(rows, width) floats)
template <class A, class B>
void column_dot_add(float* dst, const A* a, std::int64_t lda, const B* b, std::int64_t ldb, std::int64_t rows, int width, float* scratch,
                    cudaStream_t stream) {
  column_dot_partials(scratch, a, lda, b, ldb, rows, width, stream);
  add_partials(dst, scratch, reduce_chunks(rows), width, stream);
}

// out[0] (+)= Σ x[i]  (scratch: sum_scratch_size(n) doubles); out is device memory.
inline void sum(double* out, const float* x, std::int64_t n, double* scratch, bool accumulate, cudaStream_t stream) {
  const std::int64_t parts = sum_scratch_size(n);
  if (parts > 0) {
    kernels::sum_partials<false><<<static_cast<unsigned>(parts), kSumThreads, 0, stream>>>(scratch, x, n);
    PGOLF_CUDA_LAUNCH_CHECK();
  }
  kernels::sum_final<double><<<1, kSumThreads, 0, stream>>>(out, scratch, parts, accumulate);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// out[0] (+)= Σ x[i]²
inline void sum_squares(double* out, const float* x, std::int64_t n, double* scratch, bool accumulate, cudaStream_t stream) {
  const std::int64_t parts = sum_scratch_size(n);
  if (parts > 0) {
    kernels::sum_partials<true><<<static_cast<unsigned>(parts), kSumThreads, 0, stream>>>(scratch, x, n);
    PGOLF_CUDA_LAUNCH_CHECK();
  }
  kernels::sum_final<double><<<1, kSumThreads, 0, stream>>>(out, scratch, parts, accumulate);
  PGOLF_CUDA_LAUNCH_CHECK();
}

}  // namespace pgolf::cuda
