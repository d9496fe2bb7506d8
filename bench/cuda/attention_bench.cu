// Causal grouped-query attention (ops/cuda/attention.cuh) at the training shapes:
//   baseline  B = 64, T = 1024, H = 8, Hkv = 4, Hd = 64   (65,536 tokens per micro-batch)
//   seeds     B = 32, T = 2048, H = 8, Hkv = 4, Hd = 64
// in the model's layout (q, k, v slices of one qkv row; dq, dk, dv into one dqkv row), for the
// tensor-core kernels, and for the simple kernels at a small size only (B = 4, T = 256).
//
// TFLOP/s count useful causal FLOPs, the same count as bench/pytorch/attention_sdpa.py (run it on
// the same GPU to put PyTorch's SDPA — FlashAttention-2 — next to these rows):
//   forward  = 4·B·H·Hd·T(T+1)/2     two GEMMs (Q·Kᵀ, P·V), 2 FLOPs per multiply-add, over the
//                                    T(T+1)/2 (query, key) pairs with key <= query
//   backward = 2.5 × forward         FlashAttention-2's five GEMMs (S recomputed, dP = dY·Vᵀ,
//                                    dV = Pᵀ·dY, dK = dSᵀ·Q, dQ = dS·K) against the forward's two;
//                                    the deterministic dQ kernel's recomputation of S and dP (two
//                                    more GEMMs) is not counted
//   forward + backward = 3.5 × forward
//
//   build/bench/bench_cuda_attention --benchmark_counters_tabular=true
//   python3 bench/pytorch/attention_sdpa.py
#include <benchmark/benchmark.h>

#include <cstdint>

#include "cuda/cuda_bench_util.cuh"
#include "pgolf/core/philox.hpp"
#include "pgolf/ops/cuda/attention.cuh"

namespace {

using pgolf::cuda::DeviceBuffer;
using pgolf::cuda::nv_bf16;

double forward_flops(std::int64_t B, int H, std::int64_t T, int Hd) {
  return 4.0 * static_cast<double>(B) * H * Hd * static_cast<double>(T) * static_cast<double>(T + 1) / 2.0;
}

using pgolf::bench::random_bf16;

enum class Pass { forward, backward, forward_backward };

// The buffers of one attention layer of the model: qkv (N, (H + 2·Hkv)·Hd), y and dy (N, H·Hd),
// lse (B, H, T), dqkv like qkv, and the backward's scratch.
template <int H, int Hkv, int Hd>
struct Layer {
  static constexpr std::int64_t QW = std::int64_t{H} * Hd, KW = std::int64_t{Hkv} * Hd, LD = QW + 2 * KW;
  std::int64_t B, T, N;
  DeviceBuffer<nv_bf16> qkv, y, dy, dqkv;
  DeviceBuffer<float> lse;
  DeviceBuffer<std::uint8_t> scratch;

  Layer(std::int64_t b, std::int64_t t)
      : B(b),
        T(t),
        N(b * t),
        qkv(random_bf16(N * LD, 1, 1.0f, "qkv")),
        y(static_cast<std::size_t>(N * QW), "y"),
        dy(random_bf16(N * QW, 2, 1.0f, "dy")),
        dqkv(static_cast<std::size_t>(N * LD), "dqkv"),
        lse(static_cast<std::size_t>(b * H * t), "lse"),
        scratch(pgolf::cuda::attention_backward_scratch_bytes<H, Hkv, Hd>(b, t), "attention scratch") {}

  template <bool Simple>
  void forward() {
    if constexpr (Simple) {
      pgolf::cuda::attention_forward_simple<H, Hkv, Hd>(y.data(), QW, lse.data(), qkv.data(), LD, qkv.data() + QW, LD, qkv.data() + QW + KW, LD,
                                                        B, T, nullptr);
    } else {
      pgolf::cuda::attention_forward<H, Hkv, Hd>(y.data(), QW, lse.data(), qkv.data(), LD, qkv.data() + QW, LD, qkv.data() + QW + KW, LD, B,
                                                 T, nullptr);
    }
  }
  template <bool Simple>
  void backward() {
    nv_bf16* g = dqkv.data();
    const nv_bf16* x = qkv.data();
    if constexpr (Simple) {
      pgolf::cuda::attention_backward_simple<H, Hkv, Hd>(g, LD, g + QW, LD, g + QW + KW, LD, dy.data(), QW, y.data(), QW, lse.data(), x, LD,
                                                         x + QW, LD, x + QW + KW, LD, B, T, scratch.data(), nullptr);
    } else {
      pgolf::cuda::attention_backward<H, Hkv, Hd>(g, LD, g + QW, LD, g + QW + KW, LD, dy.data(), QW, y.data(), QW, lse.data(), x, LD, x + QW,
                                                  LD, x + QW + KW, LD, B, T, scratch.data(), nullptr);
    }
  }
};

// range(0) = B, range(1) = T.
template <int H, int Hkv, int Hd, bool Simple, Pass P>
void BM_Attention(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  Layer<H, Hkv, Hd> layer(state.range(0), state.range(1));
  layer.template forward<Simple>();  // warm-up; y and lse for the backward
  if (P != Pass::forward) layer.template backward<Simple>();
  pgolf::bench::time_launches(state, [&] {
    if (P != Pass::backward) layer.template forward<Simple>();
    if (P != Pass::forward) layer.template backward<Simple>();
  });
  const double f = forward_flops(layer.B, H, layer.T, Hd);
  pgolf::bench::report_flops(state, P == Pass::forward ? f : P == Pass::backward ? 2.5 * f : 3.5 * f);
  pgolf::bench::report_device(state);
}

// clang-format off
#define PGOLF_ATTN_BENCH(NAME, SIMPLE, PASS)                                                                     \
  BENCHMARK_TEMPLATE(BM_Attention, 8, 4, 64, SIMPLE, PASS)->Name(NAME)->ArgNames({"B", "T"})->UseManualTime()   \
      ->Unit(benchmark::kMillisecond)
PGOLF_ATTN_BENCH("AttentionForward/tensor_core/H:8/Hkv:4/Hd:64", false, Pass::forward)->Args({64, 1024})->Args({32, 2048});
PGOLF_ATTN_BENCH("AttentionBackward/tensor_core/H:8/Hkv:4/Hd:64", false, Pass::backward)->Args({64, 1024})->Args({32, 2048});
PGOLF_ATTN_BENCH("AttentionForwardBackward/tensor_core/H:8/Hkv:4/Hd:64", false, Pass::forward_backward)->Args({64, 1024})->Args({32, 2048});
PGOLF_ATTN_BENCH("AttentionForward/simple/H:8/Hkv:4/Hd:64", true, Pass::forward)->Args({4, 256});
PGOLF_ATTN_BENCH("AttentionForwardBackward/simple/H:8/Hkv:4/Hd:64", true, Pass::forward_backward)->Args({4, 256});
// The tensor-core path at the simple path's size, for the comparison.
PGOLF_ATTN_BENCH("AttentionForwardBackward/tensor_core/H:8/Hkv:4/Hd:64", false, Pass::forward_backward)->Args({4, 256});
// clang-format on

}  // namespace

BENCHMARK_MAIN();
