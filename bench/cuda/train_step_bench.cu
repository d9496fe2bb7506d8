// End-to-end training throughput of the CUDA backend: whole optimizer steps (the reference's
// 524,288 tokens per step as 8 accumulated micro-batches of 64 × 1,024 tokens for the baseline;
// the records' 786,432 tokens of sequences of 2,048 for the five seeds), reporting tokens per
// second and model FLOPs utilisation.
//
// Model FLOPs per token (forward): 2 × (the matrix weights a token passes through: every block's
// c_q, c_k, c_v, proj, fc, mlp.proj and the V × D head) + causal attention 2 × 2 × D × (T + 1)/2
// per layer (q·kᵀ and p·v over the average causal context). Training counts 3× the forward
// (backward = 2× forward), the usual MFU convention, whatever a kernel recomputes.
// MFU = achieved model FLOP/s / peak dense bf16 FLOP/s of the GPU: PGOLF_PEAK_TFLOPS (default
// 989.4, the H100 SXM and H200 datasheet figure).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <vector>

#include "configs/baseline.hpp"
#include "configs/seed_a.hpp"
#include "configs/seed_b.hpp"
#include "configs/seed_c.hpp"
#include "configs/seed_d.hpp"
#include "configs/seed_e.hpp"
#include "configs/small.hpp"
#include "cuda_bench_util.cuh"
#include "pgolf/core/philox.hpp"
#include "pgolf/run/cuda_backend.cuh"

namespace pgolf {
namespace {

template <ModelConfig C>
double model_flops_per_token(std::int64_t seq) {
  using Layout = ParamLayout<C>;
  double matrix_weights = static_cast<double>(C.vocab_size) * C.model_dim;  // the head
  for (const ParamSpec& s : Layout::specs()) {
    // Muon's matrices, and a hash projection wherever it trains (seed A: in the embedding's Adam group).
    const bool projection = s.role == ParamRole::matrix || (!s.in_block && s.global == GlobalParam::hash_proj);
    if (projection) matrix_weights += static_cast<double>(s.numel());
  }
  const double attention = 2.0 * 2.0 * C.model_dim * (static_cast<double>(seq) + 1.0) / 2.0 * C.num_layers;
  return 3.0 * (2.0 * matrix_weights + attention);
}

double peak_flops() {
  const char* env = std::getenv("PGOLF_PEAK_TFLOPS");
  return (env ? std::atof(env) : 989.4) * 1e12;
}

template <ModelConfig C>
void BM_TrainStep(benchmark::State& state) {
  if (!bench::require_gpu(state)) return;
  const std::int64_t batch = state.range(0), seq = state.range(1), accum = state.range(2);
  run::CudaBackend<C> backend(OptimizerOptions{});
  backend.init(1337, InitOptions{});
  const RandomStream rng(2024, 1);
  std::vector<std::int32_t> ids(batch * seq), targets(batch * seq);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<std::int32_t>(rng.below(2 * i, C.vocab_size));
    targets[i] = static_cast<std::int32_t>(rng.below(2 * i + 1, C.vocab_size));
  }
  auto step = [&] {
    backend.zero_grads();
    for (std::int64_t m = 0; m < accum; ++m) backend.forward_backward(ids, targets, batch, seq, 1.0f / static_cast<float>(accum));
    benchmark::DoNotOptimize(backend.step_loss());  // the loop's one synchronisation (log + NaN guard)
    backend.optimizer_step(1.0, 0.95);
  };
  step();  // allocation, cuBLASLt plans (time_launches adds one more warm-up step)
  bench::time_launches(state, step, backend.stream());
  const double tokens = static_cast<double>(batch * seq * accum);
  state.counters["tokens/s"] = benchmark::Counter(tokens * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  const double flops = tokens * model_flops_per_token<C>(seq);
  bench::report_flops(state, flops);
  state.counters["MFU"] =
      benchmark::Counter(flops / peak_flops() * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["activation_GiB"] = static_cast<double>(backend.activation_bytes()) / (1u << 30);
  bench::report_device(state);
}

// Fixed iteration counts: each call builds a backend (initialises and uploads the weights, allocates
// the activations), and Google Benchmark's automatic count would call the function once per trial
// (1, 10, ... iterations), paying that several times. After two untimed warm-up steps, 3 timed
// steps of 0.3–0.6 s each.
// The reference's baseline step: 524,288 tokens = 8 × (64 × 1,024).
BENCHMARK(BM_TrainStep<configs::kBaseline>)->Args({64, 1024, 8})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
// One micro-batch per step (where the optimizer's share shows).
BENCHMARK(BM_TrainStep<configs::kBaseline>)->Args({64, 1024, 1})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
// The five seeds at the records' batch: 786,432 tokens = 8 × (48 × 2,048).
BENCHMARK(BM_TrainStep<configs::kSeedA>)->Args({48, 2048, 8})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_TrainStep<configs::kSeedB>)->Args({48, 2048, 8})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_TrainStep<configs::kSeedC>)->Args({48, 2048, 8})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_TrainStep<configs::kSeedD>)->Args({48, 2048, 8})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK(BM_TrainStep<configs::kSeedE>)->Args({48, 2048, 8})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(3);
// The README's small model.
BENCHMARK(BM_TrainStep<configs::kSmall>)->Args({64, 256, 1})->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(20);

}  // namespace
}  // namespace pgolf

BENCHMARK_MAIN();
