// Shared pieces of pgolf's CUDA kernels: the bf16 type, launch checks, warp and block
// reductions, and the small element-wise kernels every layer needs (casts, fills, adds).
//
// Conventions of every kernel header under ops/cuda/ (llm.c style):
//   - `op_forward(...)` / `op_backward(...)` launchers take the output pointers first, then the
//     inputs, then the run-time extents, then the stream; model dimensions are template
//     parameters, checked by static_assert.
//   - Tensors are row-major; a comment gives each pointer's shape, e.g. `// (N, D)`.
//   - Launchers never synchronise; they check the launch with PGOLF_CUDA_LAUNCH_CHECK().
//   - Sums that feed parameter gradients are deterministic: a fixed reduction tree, no float atomics.
#pragma once

#if !defined(__CUDACC__)
#error "pgolf/ops/cuda/common.cuh is for CUDA translation units"
#endif

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "pgolf/core/cuda_runtime.cuh"
#include "pgolf/core/platform.hpp"

namespace pgolf::cuda {

using nv_bf16 = __nv_bfloat16;

inline constexpr int kWarpSize = 32;

// After a kernel launch: reports a bad launch configuration at once (no synchronisation).
#define PGOLF_CUDA_LAUNCH_CHECK() PGOLF_CUDA_CHECK(cudaGetLastError())

template <class A, class B>
PGOLF_HD constexpr A ceil_div(A a, B b) {
  return (a + static_cast<A>(b) - 1) / static_cast<A>(b);
}

// Blocks for a grid-stride loop over `count` items with `threads` per block: enough to fill the
// GPU several times over, never more than needed.
inline unsigned grid_for(std::int64_t count, int threads) {
  constexpr std::int64_t kMaxBlocks = 65535LL * 16;
  const std::int64_t blocks = ceil_div(count, static_cast<std::int64_t>(threads));
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

// ------------------------------------------------------------------------------ conversions
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(nv_bf16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ nv_bf16 from_float<nv_bf16>(float v) {
  return __float2bfloat16_rn(v);
}

// The float that bf16 storage would hold (round to nearest even), as the reference's bf16 tensors.
__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// ------------------------------------------------------------------------------ reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarpSize / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block, returned to every thread. Threads must be a multiple of 32 (at most 1024);
// `scratch` is __shared__ storage of at least Threads/32 elements. The tree is fixed, so the
// result is deterministic.
template <int Threads, class T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  static_assert(Threads % kWarpSize == 0 && Threads <= 1024, "block_sum needs whole warps");
  constexpr int kWarps = Threads / kWarpSize;
  v = warp_sum(v);
  if constexpr (kWarps == 1) {
    return v;
  } else {
    const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += scratch[w];
    return total;
  }
}

template <int Threads>
__device__ __forceinline__ float block_max(float v, float* scratch) {
  static_assert(Threads % kWarpSize == 0 && Threads <= 1024, "block_max needs whole warps");
  constexpr int kWarps = Threads / kWarpSize;
  v = warp_max(v);
  if constexpr (kWarps == 1) {
    return v;
  } else {
    const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = scratch[0];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) m = fmaxf(m, scratch[w]);
    return m;
  }
}

// ------------------------------------------------------------------------------ element-wise
namespace kernels {
template <class Dst, class Src>
__global__ void convert(Dst* dst, const Src* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = from_float<Dst>(to_float(src[i]));
  }
}
template <class T>
__global__ void add_into(T* dst, const T* src, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = from_float<T>(to_float(dst[i]) + to_float(src[i]));
  }
}
template <class T>
__global__ void fill(T* dst, T value, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = value;
  }
}
}  // namespace kernels

inline constexpr int kElementwiseThreads = 256;

// dst[i] = Dst(src[i]) (float ↔ bf16, round to nearest even).
template <class Dst, class Src>
void convert(Dst* dst, const Src* src, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  kernels::convert<<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(dst, src, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// dst[i] += src[i]
template <class T>
void add_into(T* dst, const T* src, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  kernels::add_into<<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(dst, src, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

inline void fill(float* dst, float value, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  kernels::fill<float><<<grid_for(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(dst, value, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

}  // namespace pgolf::cuda
