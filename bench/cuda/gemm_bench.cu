// The baseline's training GEMMs through GemmEngine (cuBLASLt, bf16 in, fp32 accumulation), at
// N = 64 × 1024 = 65,536 tokens, d = 512, kv = 256, MLP hidden 1024, vocabulary 1024. These figures
// decide whether hand-written GEMMs are ever worth it: compare with the H100's dense bf16 peak
// (~989 TFLOP/s SXM) and with what cuBLASLt reaches on large square problems (the "square" rows).
//
//   layer      in → out       forward y = x·Wᵀ   backward input dx = dy·W   backward weight dW += dyᵀ·x
//   qkv        512 → 1024     (c_q 512 + c_k 256 + c_v 256 outputs as one GEMM)
//   proj       512 → 512
//   fc         512 → 1024
//   mlp proj   1024 → 512
//   head       512 → 1024     (tied: W = tok_emb; logits in fp32)
//
// Forward and backward-input outputs are bf16 (the head's logits fp32); the weight gradients
// accumulate into fp32 (beta = 1), as the training step does.
//
//   build/bench/bench_cuda_gemm --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/cuda_bench_util.cuh"
#include "pgolf/core/philox.hpp"
#include "pgolf/ops/cuda/gemm.cuh"

namespace {

using pgolf::cuda::DeviceBuffer;
using pgolf::cuda::GemmEngine;
using pgolf::cuda::nv_bf16;
using pgolf::cuda::OutType;

constexpr std::int64_t kN = 64 * 1024;

struct Layer {
  const char* name;
  std::int64_t in, out;
  bool fp32_forward;  // the head's logits
};
constexpr Layer kLayers[] = {
    {"qkv", 512, 1024, false}, {"proj", 512, 512, false}, {"fc", 512, 1024, false}, {"mlp_proj", 1024, 512, false}, {"head", 512, 1024, true},
};
constexpr const char* kPassNames[] = {"forward", "backward_input", "backward_weight"};

using pgolf::bench::random_bf16;

// range(0): layer, range(1): pass (0 forward, 1 backward input, 2 backward weight).
void BM_TrainingGemm(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  const Layer& L = kLayers[state.range(0)];
  const int pass = static_cast<int>(state.range(1));
  GemmEngine engine;
  auto x = random_bf16(kN * L.in, 1);
  auto dy = random_bf16(kN * L.out, 2);
  auto W = random_bf16(L.out * L.in, 3);
  DeviceBuffer<float> y32, dW;
  DeviceBuffer<nv_bf16> y16, dx;
  if (pass == 0 && L.fp32_forward) y32 = DeviceBuffer<float>(static_cast<std::size_t>(kN * L.out), "y (fp32)");
  if (pass == 0 && !L.fp32_forward) y16 = DeviceBuffer<nv_bf16>(static_cast<std::size_t>(kN * L.out), "y (bf16)");
  if (pass == 1) dx = DeviceBuffer<nv_bf16>(static_cast<std::size_t>(kN * L.in), "dx (bf16)");
  if (pass == 2) {
    dW = DeviceBuffer<float>(static_cast<std::size_t>(L.out * L.in), "dW (fp32)");
    dW.zero();
  }
  auto run = [&] {
    switch (pass) {
      case 0:
        if (L.fp32_forward) engine.linear_forward(y32.data(), OutType::f32, x.data(), W.data(), kN, L.in, L.out, nullptr);
        else engine.linear_forward(y16.data(), OutType::bf16, x.data(), W.data(), kN, L.in, L.out, nullptr);
        break;
      case 1: engine.linear_backward_input(dx.data(), OutType::bf16, dy.data(), W.data(), kN, L.in, L.out, false, nullptr); break;
      default: engine.linear_backward_weight(dW.data(), dy.data(), x.data(), kN, L.in, L.out, nullptr); break;
    }
  };
  for (int i = 0; i < 3; ++i) run();  // plan creation + warm-up
  pgolf::bench::time_launches(state, [&] { run(); });
  pgolf::bench::report_flops(state, 2.0 * static_cast<double>(kN) * static_cast<double>(L.in) * static_cast<double>(L.out));
  state.SetLabel(std::string(L.name) + " " + kPassNames[pass] + " (" + std::to_string(L.in) + "->" + std::to_string(L.out) + "), " +
                 pgolf::cuda::device_description());
}
BENCHMARK(BM_TrainingGemm)->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1, 2}})->ArgNames({"layer", "pass"})->UseManualTime();

// A large square bf16 GEMM: what cuBLASLt reaches when the shape is not the limit.
void BM_SquareGemm(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  const std::int64_t n = state.range(0);
  GemmEngine engine;
  auto A = random_bf16(n * n, 4), B = random_bf16(n * n, 5);
  DeviceBuffer<nv_bf16> D(static_cast<std::size_t>(n * n), "D");
  auto run = [&] {
    engine.gemm(pgolf::cuda::Trans::no, pgolf::cuda::Trans::yes, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, nullptr, D.data(), n,
                OutType::bf16, nullptr);
  };
  for (int i = 0; i < 3; ++i) run();  // plan creation + warm-up
  pgolf::bench::time_launches(state, run);
  pgolf::bench::report_flops(state, 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n));
  pgolf::bench::report_device(state);
}
BENCHMARK(BM_SquareGemm)->Arg(4096)->Arg(8192)->ArgName("n")->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
