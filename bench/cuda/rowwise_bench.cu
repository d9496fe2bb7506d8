// The row-wise and element-wise kernels of a transformer block (ops/cuda/rmsnorm.cuh,
// ops/cuda/channel_ops.cuh) at the baseline's size: N = 65,536 rows (tokens of a micro-batch),
// D = 512, MLP hidden 65,536 × 1024. All are memory-bound: each reports GB/s from the bytes it
// must move (every input read once, every output written once; per-channel vectors and partial
// sums are left out, they are < 1% of the traffic) and `of_peak`, the fraction of the H100 SXM's
// ~3.35 TB/s HBM3 bandwidth. Buffers are 128 MiB each, larger than the 50 MiB L2, so the
// numbers are DRAM numbers.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "cuda/cuda_bench_util.cuh"
#include "pgolf/ops/cuda/channel_ops.cuh"
#include "pgolf/ops/cuda/rmsnorm.cuh"

namespace {

using pgolf::cuda::DeviceBuffer;
using pgolf::cuda::nv_bf16;
using pgolf::bench::filled;
using pgolf::bench::time_memory_bound;

constexpr int kD = 512;
constexpr std::int64_t kN = 65536;
constexpr std::int64_t kElems = kN * kD;
constexpr std::int64_t kHidden = kN * 1024;  // MLP hidden layer of the baseline (mlp_mult 2)


// ------------------------------------------------------------------------------ RMSNorm
// Reads x (4 B), writes y (2 B) per element; rstd 4 B per row.
void BM_RmsNormForwardBf16(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto x = filled<float>(kElems, "x");
  DeviceBuffer<nv_bf16> y(kElems, "y");
  DeviceBuffer<float> rstd(kN, "rstd");
  time_memory_bound(state, 6.0 * kElems + 4.0 * kN,
              [&] { pgolf::cuda::rmsnorm_forward<kD, nv_bf16>(y.data(), rstd.data(), x.data(), 0.5f, kN, nullptr); });
}
BENCHMARK(BM_RmsNormForwardBf16)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads dy, x, dx (4 B each) and writes dx (4 B) per element; reads rstd 4 B per row.
void BM_RmsNormBackwardAccumulate(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto x = filled<float>(kElems, "x");
  auto dy = filled<float>(kElems, "dy");
  auto dx = filled<float>(kElems, "dx");
  auto rstd = filled<float>(kN, "rstd");
  time_memory_bound(state, 16.0 * kElems + 4.0 * kN, [&] {
    pgolf::cuda::rmsnorm_backward<kD>(dx.data(), dy.data(), x.data(), rstd.data(), 0.5f, kN, true, nullptr);
  });
}
BENCHMARK(BM_RmsNormBackwardAccumulate)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads x, x0 (4 B each), writes x_mix (4 B) and h (2 B) per element; rstd 4 B per row.
void BM_ResidMixRmsNormForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto x = filled<float>(kElems, "x");
  auto x0 = filled<float>(kElems, "x0");
  auto mix = filled<float>(2 * kD, "mix");
  DeviceBuffer<float> x_mix(kElems, "x_mix"), rstd(kN, "rstd");
  DeviceBuffer<nv_bf16> h(kElems, "h");
  time_memory_bound(state, 14.0 * kElems + 4.0 * kN, [&] {
    pgolf::cuda::resid_mix_rmsnorm_forward<kD>(x_mix.data(), h.data(), rstd.data(), x.data(), x0.data(), mix.data(), 0.5f, kN, nullptr);
  });
}
BENCHMARK(BM_ResidMixRmsNormForward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads x (4 B) and a (2 B), writes out (4 B, in place) and h (2 B) per element; rstd 4 B per row.
void BM_ScaledAddRmsNormForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto x = filled<float>(kElems, "x");
  auto a = filled<nv_bf16>(kElems, "a");
  auto scale = filled<float>(kD, "scale");
  DeviceBuffer<float> rstd(kN, "rstd");
  DeviceBuffer<nv_bf16> h(kElems, "h");
  time_memory_bound(state, 12.0 * kElems + 4.0 * kN, [&] {
    pgolf::cuda::scaled_add_rmsnorm_forward<kD>(x.data(), h.data(), rstd.data(), x.data(), a.data(), scale.data(), 0.5f, kN, nullptr);
  });
}
BENCHMARK(BM_ScaledAddRmsNormForward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ------------------------------------------------------------------------------ channel ops
// Reads x (4 B) and a (2 B), writes out (4 B, in place) per element.
void BM_ScaledAddForwardBf16(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto x = filled<float>(kElems, "x");
  auto a = filled<nv_bf16>(kElems, "a");
  auto scale = filled<float>(kD, "scale");
  time_memory_bound(state, 10.0 * kElems,
              [&] { pgolf::cuda::scaled_add_forward<kD>(x.data(), x.data(), a.data(), scale.data(), kN, nullptr); });
}
BENCHMARK(BM_ScaledAddForwardBf16)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads dout (4 B) and a (2 B), writes da (2 B) per element; then the partial sums are added
// (add_partials, included in the time).
void BM_ScaledAddBackwardBf16(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto dout = filled<float>(kElems, "dout");
  auto a = filled<nv_bf16>(kElems, "a");
  auto scale = filled<float>(kD, "scale");
  auto dscale = filled<float>(kD, "dscale");
  DeviceBuffer<nv_bf16> da(kElems, "da");
  DeviceBuffer<float> scratch(static_cast<std::size_t>(pgolf::cuda::column_partials_size(kN, kD)), "scratch");
  time_memory_bound(state, 8.0 * kElems, [&] {
    pgolf::cuda::scaled_add_backward<kD>(da.data(), dscale.data(), dout.data(), a.data(), scale.data(), kN, false, scratch.data(), nullptr);
  });
}
BENCHMARK(BM_ScaledAddBackwardBf16)->UseManualTime()->Unit(benchmark::kMicrosecond);

// U-Net skip: reads dout, a, da (4 B each), writes da (4 B) per element.
void BM_ScaledAddBackwardF32Accumulate(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto dout = filled<float>(kElems, "dout");
  auto a = filled<float>(kElems, "a");
  auto da = filled<float>(kElems, "da");
  auto scale = filled<float>(kD, "scale");
  auto dscale = filled<float>(kD, "dscale");
  DeviceBuffer<float> scratch(static_cast<std::size_t>(pgolf::cuda::column_partials_size(kN, kD)), "scratch");
  time_memory_bound(state, 16.0 * kElems, [&] {
    pgolf::cuda::scaled_add_backward<kD>(da.data(), dscale.data(), dout.data(), a.data(), scale.data(), kN, true, scratch.data(), nullptr);
  });
}
BENCHMARK(BM_ScaledAddBackwardF32Accumulate)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads dout, x, x0, dx0 (4 B each), writes dx (in place over dout) and dx0 (4 B each) per element.
void BM_ResidMixBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto dout = filled<float>(kElems, "dout");
  auto x = filled<float>(kElems, "x");
  auto x0 = filled<float>(kElems, "x0");
  auto dx0 = filled<float>(kElems, "dx0");
  auto mix = filled<float>(2 * kD, "mix");
  auto dmix = filled<float>(2 * kD, "dmix");
  DeviceBuffer<float> scratch(static_cast<std::size_t>(pgolf::cuda::column_partials_size(kN, 2 * kD)), "scratch");
  time_memory_bound(state, 24.0 * kElems, [&] {
    pgolf::cuda::resid_mix_backward<kD>(dout.data(), dx0.data(), dmix.data(), dout.data(), x.data(), x0.data(), mix.data(), kN,
                                        scratch.data(), nullptr);
  });
}
BENCHMARK(BM_ResidMixBackward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ------------------------------------------------------------------------------ MLP activation
// Forward: reads u, writes r (2 B each) per hidden value. Backward: reads dr and u, writes du
// (in place over dr) (2 B each).
template <pgolf::Activation Act>
void BM_ActivationForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto u = filled<nv_bf16>(kHidden, "u");
  DeviceBuffer<nv_bf16> r(kHidden, "r");
  time_memory_bound(state, 4.0 * kHidden, [&] { pgolf::cuda::mlp_activation_forward<Act>(r.data(), u.data(), kHidden, 0.5f, nullptr); });
}
template <pgolf::Activation Act>
void BM_ActivationBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto u = filled<nv_bf16>(kHidden, "u");
  auto dr = filled<nv_bf16>(kHidden, "dr");
  time_memory_bound(state, 6.0 * kHidden,
              [&] { pgolf::cuda::mlp_activation_backward<Act>(dr.data(), dr.data(), u.data(), kHidden, 0.5f, nullptr); });
}
BENCHMARK(BM_ActivationForward<pgolf::Activation::relu2>)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ActivationBackward<pgolf::Activation::relu2>)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ActivationForward<pgolf::Activation::leaky_relu2>)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ActivationBackward<pgolf::Activation::leaky_relu2>)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
