// Throughput of the CPU backend: GEMM (GFLOP/s) on the shapes of the shipped configurations,
// causal attention, and a whole training step of the small and baseline models (tokens/s).
#include <benchmark/benchmark.h>

#include <vector>

#include "configs/baseline.hpp"
#include "configs/small.hpp"
#include "pgolf/core/philox.hpp"
#include "pgolf/model/gpt_cpu.hpp"
#include "pgolf/model/init.hpp"
#include "pgolf/ops/attention.hpp"
#include "pgolf/ops/gemm.hpp"

namespace {

std::vector<float> random_vector(std::size_t n, std::uint64_t stream) {
  std::vector<float> v(n);
  const pgolf::RandomStream rng(1, stream);
  for (std::size_t i = 0; i < n; ++i) v[i] = rng.normal(i);
  return v;
}

// Args: M, N, K, transA, transB. Reports FLOP/s (2·M·N·K per call).
void BM_Gemm(benchmark::State& state) {
  const auto M = state.range(0), N = state.range(1), K = state.range(2);
  const auto ta = static_cast<pgolf::cpu::Trans>(state.range(3)), tb = static_cast<pgolf::cpu::Trans>(state.range(4));
  const auto A = random_vector(M * K, 1), B = random_vector(K * N, 2);
  std::vector<float> C(M * N);
  for (auto _ : state) {
    pgolf::cpu::gemm<float>(ta, tb, M, N, K, A.data(), ta == pgolf::cpu::Trans::no ? K : M, B.data(),
                            tb == pgolf::cpu::Trans::no ? N : K, C.data(), N, false);
    benchmark::DoNotOptimize(C.data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate);
}
// Linear layers of the small config on 4096 tokens (forward x·Wᵀ, dX, dW) and of the baseline on 2048.
BENCHMARK(BM_Gemm)->ArgNames({"M", "N", "K", "tA", "tB"})
    ->Args({4096, 128, 128, 0, 1})->Args({4096, 256, 128, 0, 1})->Args({4096, 1024, 128, 0, 1})
    ->Args({4096, 128, 256, 0, 0})->Args({256, 128, 4096, 1, 0})
    ->Args({2048, 512, 512, 0, 1})->Args({2048, 1024, 512, 0, 1})->Args({512, 512, 2048, 1, 0})
    ->Unit(benchmark::kMillisecond);

template <int H, int Hkv, int Hd>
void BM_Attention(benchmark::State& state) {
  const std::int64_t batch = state.range(0), seq = state.range(1);
  const auto q = random_vector(batch * seq * H * Hd, 3), k = random_vector(batch * seq * Hkv * Hd, 4),
             v = random_vector(batch * seq * Hkv * Hd, 5);
  std::vector<float> y(q.size()), lse(batch * H * seq), dq(q.size()), dk(k.size()), dv(v.size());
  const bool with_backward = state.range(2) != 0;
  for (auto _ : state) {
    pgolf::cpu::attention_forward<H, Hkv, Hd>(y.data(), lse.data(), q.data(), k.data(), v.data(), batch, seq);
    if (with_backward) {
      pgolf::cpu::attention_backward<H, Hkv, Hd>(dq.data(), dk.data(), dv.data(), y.data(), y.data(), lse.data(), q.data(),
                                                 k.data(), v.data(), batch, seq);
    }
    benchmark::DoNotOptimize(y.data());
  }
  // Causal: about half of the T² score matrix; 2 GEMM-like products forward (QKᵀ, PV), 4 more backward.
  const double flops = (with_backward ? 3.0 : 1.0) * 2.0 * 2.0 * batch * H * (seq * (seq + 1) / 2.0) * Hd;
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Attention<4, 2, 32>)->ArgNames({"batch", "seq", "bwd"})->Args({16, 256, 0})->Args({16, 256, 1})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Attention<8, 4, 64>)->ArgNames({"batch", "seq", "bwd"})->Args({2, 1024, 0})->Args({2, 1024, 1})->Unit(benchmark::kMillisecond);

// One micro-batch forward + backward of a whole model; tokens/s.
template <pgolf::ModelConfig C>
void BM_TrainStep(benchmark::State& state) {
  const std::int64_t batch = state.range(0), seq = state.range(1);
  std::vector<float> params(pgolf::ParamLayout<C>::total), grads(params.size());
  pgolf::init_params<C>(std::span<float>(params), 1337);
  std::vector<std::int32_t> ids(batch * seq), targets(batch * seq);
  const pgolf::RandomStream rng(2, 2);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<std::int32_t>(rng.below(2 * i, C.vocab_size));
    targets[i] = static_cast<std::int32_t>(rng.below(2 * i + 1, C.vocab_size));
  }
  pgolf::cpu::Gpt<C, float> model;
  for (auto _ : state) {
    benchmark::DoNotOptimize(model.forward(params, ids, targets, batch, seq));
    model.backward(params, grads, 1.0f);
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(batch * seq), benchmark::Counter::kIsIterationInvariantRate);
  // 6·N FLOPs per token for the weight matrices (forward + backward), as MFU estimates count them.
  state.counters["FLOP/s(6N)"] = benchmark::Counter(6.0 * pgolf::param_count<C> * batch * seq, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_TrainStep<pgolf::configs::kSmall>)->ArgNames({"batch", "seq"})->Args({16, 256})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TrainStep<pgolf::configs::kBaseline>)->ArgNames({"batch", "seq"})->Args({2, 1024})->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
