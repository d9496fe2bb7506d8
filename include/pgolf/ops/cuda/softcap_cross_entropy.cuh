// The head's logit softcap and cross-entropy on the GPU, one pass over each row of bf16 logits:
//
//   z' = cap · tanh(z / cap);   loss_n = logsumexp(z'_n) − z'_n[y_n]
//   dlogits[n, i] = dloss · (softmax(z'_n)_i − [i == y_n]) · (1 − (z'_ni / cap)²)
//
// The CPU oracle is cpu::softcap_cross_entropy_forward/backward (which keep z' and lse between the
// two calls; here the training kernel does both in one pass and stores nothing but loss and dz).
//
// A row of V logits is held in registers by kThreads lanes (a warp for V ≤ 1024 with 16-byte
// loads, up to a block for V = 8192: at most 32 values per lane on the vector path), in chunks of W
// values interleaved across the lanes so that every load is coalesced. The raw z are read once;
// th = tanh(z · (1/cap)) is computed once per value in fp32 and kept in registers: z' = cap·th and
// 1 − (z'/cap)² = 1 − th². tanhf is CUDA's accurate one, which PyTorch uses; the product with the
// reciprocal is what PyTorch's CUDA division by a Python scalar computes (div_true_kernel_cuda), and
// it saves the IEEE divisions z/cap and z'/cap, which matter here: at V = 1024 the kernel is about
// as arithmetic-bound as it is memory-bound. z' is always the rounded product (__fmul_rn: never
// fused into the following subtraction), like the CPU's stored z', so both kernels give the loss the
// same bits. The row max and Σ exp(z' − max) are fp32 warp/block reductions with a fixed tree. The
// training kernel then writes dz over the same positions (each lane overwrites only the values it
// read, after all its reads), so dlogits may alias logits.
#pragma once

#include <algorithm>
#include <cstdint>

#include "pgolf/ops/cuda/common.cuh"

namespace pgolf::cuda {

namespace ce_detail {

template <int V, int W>
struct RowShape {
  static_assert(V % W == 0, "the chunk width must divide V");
  static constexpr int kChunks = V / W;  // W-value chunks in a row
  // About 4 chunks per lane, in whole warps, between one warp and 1024 lanes.
  static constexpr int kThreads = std::min(1024, std::max(kWarpSize, ceil_div(ceil_div(kChunks, 4), kWarpSize) * kWarpSize));
  static constexpr int kPerThread = ceil_div(kChunks, kThreads);  // chunks per lane
  static constexpr bool kExact = kChunks % kThreads == 0;         // no lane is short of chunks
  static constexpr int kRowsPerBlock = kThreads == kWarpSize ? 4 : 1;
  static constexpr int kBlockThreads = kThreads * kRowsPerBlock;
  // No minimum-blocks launch bound: ptxas gives the V = 1024 training kernel ~105 registers without
  // spills (16 warps per SM, each with 2 KiB of 16-byte loads in flight); capped at 64 or 85 it spills.
};

template <int W>
__device__ __forceinline__ void load_chunk(float (&z)[W], const nv_bf16* p) {
  if constexpr (W == 8) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const std::uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      z[2 * i] = __uint_as_float(w[i] << 16);
      z[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  } else {
    static_assert(W == 1, "chunks are 8 values (16-byte loads) or 1");
    z[0] = __bfloat162float(*p);
  }
}

template <int W>
__device__ __forceinline__ void store_chunk(nv_bf16* p, const float (&d)[W]) {
  if constexpr (W == 8) {
    std::uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const __nv_bfloat162 b = __floats2bfloat162_rn(d[2 * i], d[2 * i + 1]);
      w[i] = *reinterpret_cast<const std::uint32_t*>(&b);
    }
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
    *p = __float2bfloat16_rn(d[0]);
  }
}

template <int Threads>
__device__ __forceinline__ float row_max(float v, float* scratch) {
  if constexpr (Threads == kWarpSize) {
    return warp_max(v);
  } else {
    return block_max<Threads>(v, scratch);
  }
}

template <int Threads>
__device__ __forceinline__ float row_sum(float v, float* scratch) {
  if constexpr (Threads == kWarpSize) {
    return warp_sum(v);
  } else {
    return block_sum<Threads>(v, scratch);
  }
}

// One row per kThreads lanes. dlogits may alias logits (no __restrict__ on either).
template <int V, int W, bool Backward>
__global__ void __launch_bounds__(RowShape<V, W>::kBlockThreads)
    softcap_cross_entropy(float* __restrict__ loss, nv_bf16* dlogits, const nv_bf16* logits, const std::int32_t* __restrict__ targets,
                          float cap, float dloss, std::int64_t n) {
  using S = RowShape<V, W>;
  __shared__ float scratch[S::kThreads / kWarpSize];
  const int tid = static_cast<int>(threadIdx.x % S::kThreads);
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * S::kRowsPerBlock + threadIdx.x / S::kThreads;
  if (row >= n) return;  // a whole warp (several rows per block) or never (one row per block)
  const nv_bf16* zr = logits + row * V;
  const int y = targets[row];

  const float inv_cap = 1.0f / cap;
  float th[S::kPerThread][W];  // tanh(z / cap); z' = cap · th
  float m = -INFINITY;
#pragma unroll
  for (int j = 0; j < S::kPerThread; ++j) {
    const int c = tid + j * S::kThreads;
    if (S::kExact || c < S::kChunks) {
      load_chunk<W>(th[j], zr + c * W);
#pragma unroll
      for (int e = 0; e < W; ++e) {
        th[j][e] = tanhf(th[j][e] * inv_cap);
        m = fmaxf(m, __fmul_rn(cap, th[j][e]));
      }
    }
  }
  m = row_max<S::kThreads>(m, scratch);

  float s = 0.0f, zy = 0.0f;
  bool owner = false;
#pragma unroll
  for (int j = 0; j < S::kPerThread; ++j) {
    const int c = tid + j * S::kThreads;
    if (S::kExact || c < S::kChunks) {
#pragma unroll
      for (int e = 0; e < W; ++e) {
        const float zc = __fmul_rn(cap, th[j][e]);
        s += expf(zc - m);
        if (c * W + e == y) {
          zy = zc;
          owner = true;
        }
      }
    }
  }
  s = row_sum<S::kThreads>(s, scratch);
  const float lse = m + logf(s);
  if (owner) loss[row] = lse - zy;

  if constexpr (Backward) {
    nv_bf16* dr = dlogits + row * V;
#pragma unroll
    for (int j = 0; j < S::kPerThread; ++j) {
      const int c = tid + j * S::kThreads;
      if (S::kExact || c < S::kChunks) {
        float d[W];
#pragma unroll
        for (int e = 0; e < W; ++e) {
          const float t = th[j][e];
          const float prob = expf(__fmul_rn(cap, t) - lse);
          d[e] = dloss * (prob - (c * W + e == y ? 1.0f : 0.0f)) * (1.0f - t * t);
        }
        store_chunk<W>(dr + c * W, d);
      }
    }
  }
}

template <int V, int W, bool Backward>
void launch(float* loss, nv_bf16* dlogits, const nv_bf16* logits, const std::int32_t* targets, float cap, float dloss, std::int64_t n,
            cudaStream_t stream) {
  using S = RowShape<V, W>;
  const auto blocks = static_cast<unsigned>(ceil_div(n, static_cast<std::int64_t>(S::kRowsPerBlock)));
  softcap_cross_entropy<V, W, Backward><<<blocks, S::kBlockThreads, 0, stream>>>(loss, dlogits, logits, targets, cap, dloss, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

template <int V>
constexpr void check_shape() {
  static_assert(V >= 2, "softcap_cross_entropy: the vocabulary needs at least 2 entries");
  // A row lives in registers: at most 1024 lanes (64 registers each under the 1024-thread launch
  // bound), so V = 32768 puts 32 values in each lane; beyond that the kernel would spill.
  static_assert(V <= 32768, "softcap_cross_entropy: a row must fit in registers (V <= 32768)");
}

inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace ce_detail

// loss (n) fp32 = logsumexp(z') − z'[y] from logits (n, V) bf16 raw z (the head GEMM's output).
// Targets are validated on the host. 16-byte loads when V % 8 == 0 and logits is 16-byte aligned.
template <int V>
void softcap_cross_entropy_forward(float* loss, const nv_bf16* logits, const std::int32_t* targets, float cap, std::int64_t n,
                                   cudaStream_t stream) {
  ce_detail::check_shape<V>();
  if (n == 0) return;
  PGOLF_CHECK(cap > 0.0f, "softcap_cross_entropy_forward: cap must be positive, got " << cap);
  if constexpr (V % 8 == 0) {
    if (ce_detail::aligned16(logits)) {
      ce_detail::launch<V, 8, false>(loss, nullptr, logits, targets, cap, 0.0f, n, stream);
      return;
    }
  }
  ce_detail::launch<V, 1, false>(loss, nullptr, logits, targets, cap, 0.0f, n, stream);
}

// Training: loss (n) as above, and dlogits (n, V) bf16 = dloss · (softmax(z') − onehot(y)) · (1 − (z'/cap)²),
// in one pass over each row; dlogits may alias logits (in place).
template <int V>
void softcap_cross_entropy_forward_backward(float* loss, nv_bf16* dlogits, const nv_bf16* logits, const std::int32_t* targets, float cap,
                                            float dloss, std::int64_t n, cudaStream_t stream) {
  ce_detail::check_shape<V>();
  if (n == 0) return;
  PGOLF_CHECK(cap > 0.0f, "softcap_cross_entropy_forward_backward: cap must be positive, got " << cap);
  if constexpr (V % 8 == 0) {
    if (ce_detail::aligned16(logits) && ce_detail::aligned16(dlogits)) {
      ce_detail::launch<V, 8, true>(loss, dlogits, logits, targets, cap, dloss, n, stream);
      return;
    }
  }
  ce_detail::launch<V, 1, true>(loss, dlogits, logits, targets, cap, dloss, n, stream);
}

}  // namespace pgolf::cuda
