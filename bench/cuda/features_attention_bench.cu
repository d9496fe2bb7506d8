// The attention-stage feature kernels (ops/cuda/features_attention.cuh, ops/cuda/scalar_ops.cuh) at
// the records' size: N = 65,536 tokens of a micro-batch, D = 512, H = 8 query heads, Hkv = 4 KV
// heads of Hd = 64; the values v are the 256-column slice of the q|k|v GEMM output (row stride
// 1,024). All are memory-bound: each reports GB/s from the bytes it must move (every input read
// once, every output written once; W, bias and the per-chunk partial sums are left out, they are
// < 1% of the traffic) and `of_peak`, the fraction of the H100 SXM's ~3.35 TB/s. The tensors are
// 32–128 MiB, the model's own sizes. The smallest working sets (AddScaledValues, CopyRowsValues:
// about 67 MB) are not far above the 50 MB L2, so repeated iterations may find part of them there
// and read above DRAM bandwidth; the others are DRAM numbers.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <type_traits>

#include "cuda/cuda_bench_util.cuh"
#include "pgolf/core/config.hpp"
#include "pgolf/ops/cuda/features_attention.cuh"
#include "pgolf/ops/cuda/scalar_ops.cuh"

namespace {

using pgolf::AttnGate;
using pgolf::cuda::DeviceBuffer;
using pgolf::cuda::nv_bf16;
using pgolf::bench::filled;
using pgolf::bench::time_memory_bound;

constexpr int kD = 512, kH = 8, kHkv = 4, kHd = 64;
constexpr int kQD = kH * kHd, kKD = kHkv * kHd, kQkvLd = kQD + 2 * kKD;
constexpr std::int64_t kN = 65536;

// ------------------------------------------------------------------------------ XSA
// Reads y (N·512 bf16) and v (N·256 bf16 out of the q|k|v rows), writes out (N·512 bf16):
// 2,560 bytes per token.
void BM_XsaForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto y = filled<nv_bf16>(kN * kQD, "y");
  auto qkv = filled<nv_bf16>(kN * kQkvLd, "qkv");
  DeviceBuffer<nv_bf16> out(static_cast<std::size_t>(kN * kQD), "out");
  const nv_bf16* v = qkv.data() + kQD + kKD;
  time_memory_bound(state, 2560.0 * kN, [&] { pgolf::cuda::xsa_forward<kH, kHkv, kHd>(out.data(), y.data(), v, kQkvLd, kN, nullptr); });
}
BENCHMARK(BM_XsaForward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads dout, y (N·512 bf16 each) and v (N·256 bf16), reads and writes dv (N·256 fp32), writes dy
// (N·512 bf16): 1,024·3 + 512 + 1,024·2 = 5,632 bytes per token.
void BM_XsaBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto y = filled<nv_bf16>(kN * kQD, "y");
  auto dout = filled<nv_bf16>(kN * kQD, "dout");
  auto qkv = filled<nv_bf16>(kN * kQkvLd, "qkv");
  auto dv = filled<float>(kN * kKD, "dv");
  DeviceBuffer<nv_bf16> dy(static_cast<std::size_t>(kN * kQD), "dy");
  const nv_bf16* v = qkv.data() + kQD + kKD;
  time_memory_bound(state, 5632.0 * kN, [&] {
    pgolf::cuda::xsa_backward<kH, kHkv, kHd>(dy.data(), dv.data(), dout.data(), y.data(), v, kQkvLd, kN, nullptr);
  });
}
BENCHMARK(BM_XsaBackward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ------------------------------------------------------------------------------ gates
template <AttnGate Kind>
struct Gate {
  static constexpr int kWin = (Kind == AttnGate::output_gate || Kind == AttnGate::sparse) ? 12 : kD;
  static constexpr bool kBias = Kind == AttnGate::headwise_bias;
  static constexpr pgolf::cuda::GateForm kForm =
      Kind == AttnGate::output_gate ? pgolf::cuda::GateForm::twice_sigmoid : pgolf::cuda::GateForm::sigmoid;
  static constexpr float kScale = Kind == AttnGate::sparse ? 2.5f : 1.0f;
};

// Reads h[:, :Win] (2·Win bytes) and y_in (1,024), writes y_out (1,024) and z (32) per token:
// 2,080 + 2·Win bytes (3,104 for Win = 512, 2,104 for Win = 12).
template <AttnGate Kind>
void BM_GateForward(benchmark::State& state) {
  using G = Gate<Kind>;
  if (!pgolf::bench::require_gpu(state)) return;
  auto h = filled<nv_bf16>(kN * kD, "h");
  auto y_in = filled<nv_bf16>(kN * kQD, "y_in");
  auto W = filled<float>(kH * G::kWin, "W");
  auto bias = filled<float>(kH, "bias");
  DeviceBuffer<nv_bf16> y_out(static_cast<std::size_t>(kN * kQD), "y_out");
  DeviceBuffer<float> z(static_cast<std::size_t>(kN * kH), "z");
  time_memory_bound(state, (2080.0 + 2.0 * G::kWin) * kN, [&] {
    pgolf::cuda::head_gate_forward<kD, kH, kHd, G::kWin>(y_out.data(), z.data(), y_in.data(), h.data(), W.data(),
                                                         G::kBias ? bias.data() : nullptr, G::kScale, G::kForm, kN, nullptr);
  });
}
BENCHMARK_TEMPLATE(BM_GateForward, AttnGate::headwise_bias)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GateForward, AttnGate::full)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GateForward, AttnGate::output_gate)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GateForward, AttnGate::sparse)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads dy and y_in (1,024 bytes each), z (32), h[:, :Win] (2·Win), reads and writes dh[:, :Win]
// (8·Win), writes dy_in (1,024) per token: 3,104 + 10·Win bytes (8,224 for Win = 512, 3,224 for
// Win = 12). Includes the add_partials launches of dW (and dbias).
template <AttnGate Kind>
void BM_GateBackward(benchmark::State& state) {
  using G = Gate<Kind>;
  if (!pgolf::bench::require_gpu(state)) return;
  auto h = filled<nv_bf16>(kN * kD, "h");
  auto y_in = filled<nv_bf16>(kN * kQD, "y_in");
  auto dy = filled<nv_bf16>(kN * kQD, "dy");
  auto z = filled<float>(kN * kH, "z");
  auto dh = filled<float>(kN * kD, "dh");
  auto W = filled<float>(kH * G::kWin, "W");
  auto dW = filled<float>(kH * G::kWin, "dW");
  auto dbias = filled<float>(kH, "dbias");
  DeviceBuffer<nv_bf16> dy_in(static_cast<std::size_t>(kN * kQD), "dy_in");
  DeviceBuffer<std::uint8_t> scratch(static_cast<std::size_t>(pgolf::cuda::head_gate_backward_scratch_bytes<kH, G::kWin>(kN)), "scratch");
  time_memory_bound(state, (3104.0 + 10.0 * G::kWin) * kN, [&] {
    pgolf::cuda::head_gate_backward<kD, kH, kHd, G::kWin>(dy_in.data(), dh.data(), dW.data(), G::kBias ? dbias.data() : nullptr, dy.data(),
                                                          y_in.data(), z.data(), h.data(), W.data(), G::kScale, G::kForm, kN,
                                                          scratch.data(), nullptr);
  });
}
BENCHMARK_TEMPLATE(BM_GateBackward, AttnGate::headwise_bias)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GateBackward, AttnGate::full)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GateBackward, AttnGate::output_gate)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_TEMPLATE(BM_GateBackward, AttnGate::sparse)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ------------------------------------------------------------------------------ scalar ops (value residual / embedding)
// v += σ(α)·v0 on the N × 256 values, bf16, in place: reads v and v0, writes v: 6 bytes per value.
void BM_AddScaledValues(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto v = filled<nv_bf16>(kN * kKD, "v");
  auto v0 = filled<nv_bf16>(kN * kKD, "v0");
  auto alpha = filled<float>(1, "alpha");
  time_memory_bound(state, 6.0 * kN * kKD, [&] {
    pgolf::cuda::add_scaled(v.data(), v.data(), alpha.data(), pgolf::cuda::ScalarMap::sigmoid, v0.data(), kN * kKD, nullptr);
  });
}
BENCHMARK(BM_AddScaledValues)->UseManualTime()->Unit(benchmark::kMicrosecond);

// d α += σ'(α)·Σ gv·v0 over N × 256 values, gv fp32, v0 bf16: 6 bytes per value.
void BM_DotAddValues(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto gv = filled<float>(kN * kKD, "gv");
  auto v0 = filled<nv_bf16>(kN * kKD, "v0");
  auto alpha = filled<float>(1, "alpha");
  auto dalpha = filled<float>(1, "dalpha");
  DeviceBuffer<std::uint8_t> scratch(static_cast<std::size_t>(pgolf::cuda::dot_add_scratch_bytes(kN * kKD)), "scratch");
  time_memory_bound(state, 6.0 * kN * kKD, [&] {
    pgolf::cuda::dot_add(dalpha.data(), gv.data(), v0.data(), kN * kKD, alpha.data(), pgolf::cuda::ScalarMap::sigmoid, scratch.data(),
                         nullptr);
  });
}
BENCHMARK(BM_DotAddValues)->UseManualTime()->Unit(benchmark::kMicrosecond);

// v (N × 256 bf16) out of the q|k|v rows into a packed buffer: 4 bytes per value.
void BM_CopyRowsValues(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto qkv = filled<nv_bf16>(kN * kQkvLd, "qkv");
  DeviceBuffer<nv_bf16> v(static_cast<std::size_t>(kN * kKD), "v");
  time_memory_bound(state, 4.0 * kN * kKD,
              [&] { pgolf::cuda::copy_rows(v.data(), kKD, qkv.data() + kQD + kKD, kQkvLd, kN, kKD, false, nullptr); });
}
BENCHMARK(BM_CopyRowsValues)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
