// The optimizer step of the baseline configuration (17.06M parameters: 54 Muon matrices in three
// shape groups of 18 — 512×512, 256×512 and 512×1024 after orientation — and 0.53M Adam
// parameters), and its parts:
//   OptimizerStep         one full CudaOptimizer::step (clipping off / GRAD_CLIP_NORM=0.3)
//   NewtonSchulz          the five NS steps alone (15 batched GEMMs per group), TFLOP/s of the GEMMs
//   NewtonSchulzGroup     one shape group's NS5 alone (which shape limits the throughput)
//   MuonElementwise       the non-GEMM Muon kernels: momentum + orientation + norms + scale + apply
//
//   build/bench/bench_cuda_optimizer --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "configs/baseline.hpp"
#include "cuda/cuda_bench_util.cuh"
#include "pgolf/core/philox.hpp"
#include "pgolf/model/param_layout.hpp"
#include "pgolf/ops/cuda/gemm.cuh"
#include "pgolf/optim/cuda/newton_schulz.cuh"
#include "pgolf/optim/cuda/optimizer.cuh"

namespace {

using pgolf::cuda::DeviceBuffer;
using pgolf::cuda::GemmEngine;
constexpr auto kC = pgolf::configs::kBaseline;
using Layout = pgolf::ParamLayout<kC>;

using pgolf::bench::random_f32;

std::vector<pgolf::cuda::NsInput> muon_matrices() {
  std::vector<pgolf::cuda::NsInput> out;
  for (const pgolf::ParamSpec& s : Layout::specs()) {
    if (s.role == pgolf::ParamRole::matrix) out.push_back({s.offset, s.shape[0], s.shape[1]});
  }
  return out;
}

// range(0): gradient clipping off (0) or at 0.3 (1).
void BM_OptimizerStep(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  pgolf::OptimizerOptions opt;
  if (state.range(0)) opt.grad_clip_norm = 0.3;
  GemmEngine engine;
  pgolf::cuda::CudaOptimizer<kC> optimizer(opt, engine);
  auto params = random_f32(Layout::total, 1, 0.02f);
  auto grads = random_f32(Layout::total, 2, 1e-3f);
  for (int i = 0; i < 3; ++i) optimizer.step(params.data(), grads.data(), 1.0, 0.95, nullptr);  // plans, warm-up
  pgolf::bench::time_launches(state, [&] { optimizer.step(params.data(), grads.data(), 1.0, 0.95, nullptr); });
  pgolf::bench::report_flops(state, optimizer.newton_schulz().flops(opt.muon_backend_steps));  // NS FLOPs over the whole step's time
  state.SetLabel(std::string(state.range(0) ? "clip 0.3, " : "no clipping, ") + pgolf::cuda::device_description());
}
BENCHMARK(BM_OptimizerStep)->Arg(0)->Arg(1)->ArgName("clip")->UseManualTime();

void BM_NewtonSchulz(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  GemmEngine engine;
  const auto mats = muon_matrices();
  pgolf::cuda::NewtonSchulzBatch ns(mats);
  auto grads = random_f32(Layout::total, 2, 1e-3f);
  ns.prepare(grads.data(), nullptr, 0.0f, nullptr, nullptr);
  // Plans, warm-up. Repeated calls iterate on the previous call's buffers (near-orthogonal
  // matrices, values O(1)): the same work as on a fresh input.
  for (int i = 0; i < 2; ++i) ns.iterate(engine, 5, nullptr);
  pgolf::bench::time_launches(state, [&] { ns.iterate(engine, 5, nullptr); });
  pgolf::bench::report_flops(state, ns.flops(5));
  state.SetLabel(std::to_string(ns.matrices()) + " matrices in " + std::to_string(ns.groups().size()) + " groups, " +
                 pgolf::cuda::device_description());
}
BENCHMARK(BM_NewtonSchulz)->UseManualTime();

// range(0): the shape group (0: 512×512, 1: 256×512, 2: 512×1024 in the baseline's order).
void BM_NewtonSchulzGroup(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  GemmEngine engine;
  const auto all = muon_matrices();
  pgolf::cuda::NewtonSchulzBatch probe(all);
  const auto& g = probe.groups().at(static_cast<std::size_t>(state.range(0)));
  std::vector<pgolf::cuda::NsInput> mats;
  for (const auto& in : all) {
    if (std::min(in.rows, in.cols) == g.m && std::max(in.rows, in.cols) == g.n) mats.push_back(in);
  }
  pgolf::cuda::NewtonSchulzBatch ns(mats);
  auto grads = random_f32(Layout::total, 2, 1e-3f);
  ns.prepare(grads.data(), nullptr, 0.0f, nullptr, nullptr);
  for (int i = 0; i < 2; ++i) ns.iterate(engine, 5, nullptr);
  pgolf::bench::time_launches(state, [&] { ns.iterate(engine, 5, nullptr); });
  pgolf::bench::report_flops(state, ns.flops(5));
  state.SetLabel(std::to_string(g.count) + " x " + std::to_string(g.m) + "x" + std::to_string(g.n) + ", " +
                 pgolf::cuda::device_description());
}
BENCHMARK(BM_NewtonSchulzGroup)->DenseRange(0, 2)->ArgName("group")->UseManualTime();

// prepare (momentum, bf16 orientation, norms, scale) + apply, without the GEMMs.
void BM_MuonElementwise(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  const auto mats = muon_matrices();
  pgolf::cuda::NewtonSchulzBatch ns(mats);
  auto grads = random_f32(Layout::total, 2, 1e-3f);
  auto params = random_f32(Layout::total, 1, 0.02f);
  DeviceBuffer<float> momentum(static_cast<std::size_t>(Layout::total), "momentum");
  momentum.zero();
  auto run = [&] {
    ns.prepare(grads.data(), momentum.data(), 0.95f, nullptr, nullptr);
    ns.apply(params.data(), 1e-6f, 1.0f, nullptr);
  };
  for (int i = 0; i < 2; ++i) run();
  double elems = 0;
  for (const auto& m : mats) elems += static_cast<double>(m.rows * m.cols);
  pgolf::bench::time_launches(state, run);
  // prepare: g, buf read + buf written (12 B) + bf16 X written (2 B); scale: X read + written (4 B);
  // apply: X read (2 B) + p read + written (8 B).
  pgolf::bench::report_bytes(state, elems * (12 + 2 + 4 + 2 + 8));
  pgolf::bench::report_device(state);
}
BENCHMARK(BM_MuonElementwise)->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
