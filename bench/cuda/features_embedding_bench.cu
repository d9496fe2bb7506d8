// The embedding-stage feature kernels (ops/cuda/features_embedding.cuh) at the records' size:
// N = 65,536 tokens (64 × 1,024), D = 512, input-gated smear window 12. All are memory-bound;
// each reports GB/s from the bytes it must move (every (N, D) input read once, every output
// written once; per-channel parameters, partial sums, and the per-token mask and gate_z are left
// out where they are < 1% of the traffic) and `of_peak`, the fraction of the H100 SXM's ~3.35 TB/s
// HBM3 bandwidth. E = N·D = 33.5 M values; an fp32 (N, D) tensor is 128 MiB, larger than the
// 50 MiB L2, so these are DRAM numbers. The smears also read row i − 1 (forward) or i + 1
// (backward) of a tensor they already stream; those second reads come from L2 and are not counted.
// The index kernels move little (N ids) and show launch-level times.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "cuda/cuda_bench_util.cuh"
#include "pgolf/ops/cuda/features_embedding.cuh"

namespace {

using pgolf::cuda::DeviceBuffer;
using pgolf::cuda::nv_bf16;
using pgolf::bench::filled;
using pgolf::bench::time_memory_bound;

constexpr int kD = 512;
constexpr int kWin = 12;
constexpr std::int64_t kBatch = 64, kSeq = 1024;
constexpr std::int64_t kN = kBatch * kSeq;
constexpr std::int64_t kElems = kN * kD;
constexpr double kE = static_cast<double>(kElems);

// Token ids in [0, 1024) with a BOS (1) every 97 tokens, and the smear mask with the BOS fix.
DeviceBuffer<std::int32_t> make_ids() {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(kN));
  for (std::int64_t i = 0; i < kN; ++i) ids[static_cast<std::size_t>(i)] = i % 97 == 0 ? 1 : static_cast<std::int32_t>((i * 7919) % 1024);
  DeviceBuffer<std::int32_t> d(ids.size(), "ids");
  d.upload(ids);
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}
DeviceBuffer<std::uint8_t> make_mask() {
  auto ids = make_ids();
  DeviceBuffer<std::uint8_t> m(static_cast<std::size_t>(kN), "blocked");
  pgolf::cuda::smear_blocked_mask(m.data(), ids.data(), kBatch, kSeq, true, 1, nullptr);
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  return m;
}
DeviceBuffer<std::uint8_t> make_scratch() {
  return DeviceBuffer<std::uint8_t>(pgolf::cuda::embedding_features_scratch_bytes<kD, kWin>(kN), "scratch");
}

// ------------------------------------------------------------------------------ indices and mask
// Reads ids (4 B per token, the previous token's from cache), writes one int32 per token.
void BM_BigramHashIndices(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto ids = make_ids();
  DeviceBuffer<std::int32_t> out(static_cast<std::size_t>(kN), "indices");
  time_memory_bound(state, 8.0 * kN, [&] { pgolf::cuda::bigram_hash_indices(out.data(), ids.data(), kBatch, kSeq, 12288, nullptr); });
}
BENCHMARK(BM_BigramHashIndices)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads ids (4 B per token), writes 4 int32 per token (EngramLite, 2 orders × 2 heads).
void BM_EngramIndices(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto ids = make_ids();
  DeviceBuffer<std::int32_t> out(static_cast<std::size_t>(kN) * 4, "indices");
  time_memory_bound(state, 20.0 * kN, [&] { pgolf::cuda::engram_indices(out.data(), ids.data(), kBatch, kSeq, 8192, 2, nullptr); });
}
BENCHMARK(BM_EngramIndices)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads ids (4 B), writes the mask (1 B) per token.
void BM_SmearBlockedMask(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto ids = make_ids();
  DeviceBuffer<std::uint8_t> mask(static_cast<std::size_t>(kN), "blocked");
  time_memory_bound(state, 5.0 * kN, [&] { pgolf::cuda::smear_blocked_mask(mask.data(), ids.data(), kBatch, kSeq, true, 1, nullptr); });
}
BENCHMARK(BM_SmearBlockedMask)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ------------------------------------------------------------------------------ hash-embedding adds
// EngramLite e += σ(gate) ⊙ z: reads e (4 B) and z (2 B), writes e (4 B) per element: 10 B.
void BM_SigmoidGatedAddForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto e = filled<float>(kElems, "e");
  auto z = filled<nv_bf16>(kElems, "z");
  auto gate = filled<float>(kD, "gate");
  time_memory_bound(state, 10.0 * kE, [&] { pgolf::cuda::sigmoid_gated_add_forward<kD>(e.data(), z.data(), gate.data(), kN, nullptr); });
}
BENCHMARK(BM_SigmoidGatedAddForward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads de (4 B) and z (2 B), writes dz (2 B) per element: 8 B; then the chunk partials are added
// (included in the time).
void BM_SigmoidGatedAddBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto de = filled<float>(kElems, "de");
  auto z = filled<nv_bf16>(kElems, "z");
  auto gate = filled<float>(kD, "gate");
  auto dgate = filled<float>(kD, "dgate");
  DeviceBuffer<nv_bf16> dz(kElems, "dz");
  auto scratch = make_scratch();
  time_memory_bound(state, 8.0 * kE, [&] {
    pgolf::cuda::sigmoid_gated_add_backward<kD>(dz.data(), dgate.data(), de.data(), z.data(), gate.data(), kN,
                                                reinterpret_cast<float*>(scratch.data()), nullptr);
  });
}
BENCHMARK(BM_SigmoidGatedAddBackward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// BigramHash e += scale · z: 10 B per element, as above.
void BM_ScalarScaledAddForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto e = filled<float>(kElems, "e");
  auto z = filled<nv_bf16>(kElems, "z");
  auto scale = filled<float>(1, "scale");
  time_memory_bound(state, 10.0 * kE, [&] { pgolf::cuda::scalar_scaled_add_forward<kD>(e.data(), z.data(), scale.data(), kN, nullptr); });
}
BENCHMARK(BM_ScalarScaledAddForward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads de (4 B) and z (2 B), writes dz (2 B) per element: 8 B; plus the scalar's final sum.
void BM_ScalarScaledAddBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto de = filled<float>(kElems, "de");
  auto z = filled<nv_bf16>(kElems, "z");
  auto scale = filled<float>(1, "scale");
  auto dscale = filled<float>(1, "dscale");
  DeviceBuffer<nv_bf16> dz(kElems, "dz");
  auto scratch = make_scratch();
  time_memory_bound(state, 8.0 * kE, [&] {
    pgolf::cuda::scalar_scaled_add_backward<kD>(dz.data(), dscale.data(), de.data(), z.data(), scale.data(), kN, scratch.data(), nullptr);
  });
}
BENCHMARK(BM_ScalarScaledAddBackward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ------------------------------------------------------------------------------ SmearGate
// Reads x (4 B; row i − 1 again from L2), writes out (4 B) per element: 8 B; mask 1 B per token.
void BM_SmearForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto x = filled<float>(kElems, "x");
  auto w = filled<float>(kD, "w");
  auto mask = make_mask();
  DeviceBuffer<float> out(kElems, "out");
  time_memory_bound(state, 8.0 * kE + kN,
              [&] { pgolf::cuda::smear_forward<kD>(out.data(), x.data(), w.data(), mask.data(), kN, true, nullptr); });
}
BENCHMARK(BM_SmearForward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads dout and x (4 B each; rows i + 1 / i − 1 again from L2), writes dx (4 B): 12 B per element.
void BM_SmearBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto dout = filled<float>(kElems, "dout");
  auto x = filled<float>(kElems, "x");
  auto w = filled<float>(kD, "w");
  auto dw = filled<float>(kD, "dw");
  auto mask = make_mask();
  DeviceBuffer<float> dx(kElems, "dx");
  auto scratch = make_scratch();
  time_memory_bound(state, 12.0 * kE + kN, [&] {
    pgolf::cuda::smear_backward<kD>(dx.data(), dw.data(), dout.data(), x.data(), w.data(), mask.data(), kN, true,
                                    reinterpret_cast<float*>(scratch.data()), nullptr);
  });
}
BENCHMARK(BM_SmearBackward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Input-gated: reads x (4 B), writes out (4 B) per element; gate_z 4 B and the mask 1 B per token.
void BM_SmearInputForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto x = filled<float>(kElems, "x");
  auto W = filled<float>(kWin, "W");
  auto lambda = filled<float>(1, "lambda");
  auto mask = make_mask();
  DeviceBuffer<float> out(kElems, "out"), gate_z(kN, "gate_z");
  time_memory_bound(state, 8.0 * kE + 5.0 * kN, [&] {
    pgolf::cuda::smear_input_forward<kD, kWin>(out.data(), gate_z.data(), x.data(), W.data(), lambda.data(), mask.data(), kN, nullptr);
  });
}
BENCHMARK(BM_SmearInputForward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads dout and x (4 B each), writes dx (4 B) per element: 12 B; gate_z 4 B and the mask 1 B per token.
void BM_SmearInputBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto dout = filled<float>(kElems, "dout");
  auto x = filled<float>(kElems, "x");
  auto gate_z = filled<float>(kN, "gate_z");
  auto W = filled<float>(kWin, "W");
  auto lambda = filled<float>(1, "lambda");
  auto dW = filled<float>(kWin, "dW");
  auto dlambda = filled<float>(1, "dlambda");
  auto mask = make_mask();
  DeviceBuffer<float> dx(kElems, "dx");
  auto scratch = make_scratch();
  time_memory_bound(state, 12.0 * kE + 5.0 * kN, [&] {
    pgolf::cuda::smear_input_backward<kD, kWin>(dx.data(), dW.data(), dlambda.data(), dout.data(), x.data(), gate_z.data(), W.data(),
                                                lambda.data(), mask.data(), kN, scratch.data(), nullptr);
  });
}
BENCHMARK(BM_SmearInputBackward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// ------------------------------------------------------------------------------ U-Net gated skip
// Reads x and s, writes out (in place over x) (4 B each): 12 B per element.
void BM_GatedSkipForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto x = filled<float>(kElems, "x");
  auto s = filled<float>(kElems, "s");
  auto w = filled<float>(kD, "w");
  auto g = filled<float>(kD, "g");
  time_memory_bound(state, 12.0 * kE,
              [&] { pgolf::cuda::gated_skip_forward<kD>(x.data(), x.data(), s.data(), w.data(), g.data(), kN, nullptr); });
}
BENCHMARK(BM_GatedSkipForward)->UseManualTime()->Unit(benchmark::kMicrosecond);

// Reads dout, x, s, ds and writes ds and dx (in place over dout) (4 B each): 24 B per element.
void BM_GatedSkipBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto dout = filled<float>(kElems, "dout");
  auto x = filled<float>(kElems, "x");
  auto s = filled<float>(kElems, "s");
  auto ds = filled<float>(kElems, "ds");
  auto w = filled<float>(kD, "w");
  auto g = filled<float>(kD, "g");
  auto dw = filled<float>(kD, "dw");
  auto dg = filled<float>(kD, "dg");
  auto scratch = make_scratch();
  time_memory_bound(state, 24.0 * kE, [&] {
    pgolf::cuda::gated_skip_backward<kD>(dout.data(), ds.data(), dw.data(), dg.data(), dout.data(), x.data(), s.data(), w.data(), g.data(),
                                         kN, reinterpret_cast<float*>(scratch.data()), nullptr);
  });
}
BENCHMARK(BM_GatedSkipBackward)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
