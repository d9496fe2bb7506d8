// Memory-bound kernels around attention and the head, at the baseline shapes (N = 64 × 1024 tokens):
// the fused q/k RMSNorm + RoPE + q_gain, the token embedding and its deterministic backward, and the
// fused softcap + cross-entropy. Each reports GB/s from the bytes stated next to it (DRAM traffic
// that cannot be avoided: every input read once, every output written once; small tables that
// stay in cache are left out, as noted).
//
//   build/bench/bench_cuda_head --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "cuda/cuda_bench_util.cuh"
#include "pgolf/core/philox.hpp"
#include "pgolf/ops/cuda/embedding.cuh"
#include "pgolf/ops/cuda/qk_norm_rope.cuh"
#include "pgolf/ops/cuda/softcap_cross_entropy.cuh"

namespace {

using pgolf::cuda::DeviceBuffer;
using pgolf::cuda::nv_bf16;

constexpr std::int64_t kBatch = 64, kSeq = 1024, kN = kBatch * kSeq;
constexpr int kH = 8, kHkv = 4, kHd = 64, kD = 512, kVocab = 1024;

using pgolf::bench::random_bf16;
using pgolf::bench::random_f32;

// Token ids: uniform, or Zipf(s = 1) over the vocabulary (p(rank k) ∝ 1/k: the most frequent id
// takes ~13% of the positions, ~8,700 of 65,536, a harsher head than real text) with the ranks
// shuffled over the ids by a fixed permutation, so frequent ids are not simply the small ones.
DeviceBuffer<std::int32_t> token_ids(std::int64_t n, int vocab, bool zipf) {
  const pgolf::RandomStream rng(1234, 99);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  if (!zipf) {
    for (std::int64_t i = 0; i < n; ++i) ids[i] = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(i), static_cast<std::uint32_t>(vocab)));
  } else {
    std::vector<double> cdf(static_cast<std::size_t>(vocab));
    double acc = 0;
    for (int k = 0; k < vocab; ++k) cdf[k] = acc += 1.0 / (k + 1);
    std::vector<std::int32_t> perm(static_cast<std::size_t>(vocab));
    std::iota(perm.begin(), perm.end(), 0);
    for (int k = vocab - 1; k > 0; --k) {
      std::swap(perm[k], perm[rng.below(static_cast<std::uint64_t>(n + k), static_cast<std::uint32_t>(k + 1))]);
    }
    for (std::int64_t i = 0; i < n; ++i) {
      const double u = rng.uniform(static_cast<std::uint64_t>(i)) * acc;
      const auto k = std::min<std::ptrdiff_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin(), vocab - 1);
      ids[i] = perm[k];
    }
  }
  DeviceBuffer<std::int32_t> d(ids.size(), "bench ids");
  d.upload(ids);
  return d;
}

template <int Rd>
void BM_QkNormRopeForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  constexpr std::int64_t ld = kH * kHd + 2 * kHkv * kHd;
  auto qkv = random_bf16(kN * ld, 1);
  auto gain = random_f32(kH, 2);
  const pgolf::cuda::DeviceRopeTables rope(static_cast<int>(kSeq), Rd, 10000.0);
  DeviceBuffer<nv_bf16> q(kN * kH * kHd, "q"), k(kN * kHkv * kHd, "k");
  DeviceBuffer<float> q_rstd(kN * kH, "q_rstd"), k_rstd(kN * kHkv, "k_rstd");
  auto run = [&] {
    pgolf::cuda::qk_norm_rope_forward<kH, kHkv, kHd, Rd>(q.data(), k.data(), q_rstd.data(), k_rstd.data(), qkv.data(), ld, gain.data(), rope,
                                                          kBatch, kSeq, nullptr);
  };
  pgolf::bench::time_launches(state, run);
  // Bytes: q and k columns of qkv read (N·(H+Hkv)·Hd bf16), q and k written (the same), the rstds
  // written (N·(H+Hkv) fp32). The RoPE tables (2 × 1024 × Rd/2 fp32, ≤ 256 KiB) stay in L2.
  constexpr double elems = static_cast<double>(kN) * (kH + kHkv) * kHd;
  pgolf::bench::report_bytes(state, 2 * elems * 2 + static_cast<double>(kN) * (kH + kHkv) * 4);
  pgolf::bench::report_device(state);
}

template <int Rd>
void BM_QkNormRopeBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  constexpr std::int64_t ld = kH * kHd + 2 * kHkv * kHd;
  auto qkv = random_bf16(kN * ld, 1);
  auto gain = random_f32(kH, 2);
  auto dq = random_bf16(kN * kH * kHd, 3);
  auto dk = random_bf16(kN * kHkv * kHd, 4);
  auto q_rstd = random_f32(kN * kH, 5);
  auto k_rstd = random_f32(kN * kHkv, 6);
  DeviceBuffer<nv_bf16> d_qkv(kN * ld, "d_qkv");
  DeviceBuffer<float> dgain(kH, "dgain"), scratch(pgolf::cuda::qk_norm_rope_scratch_size<kH>(kN), "scratch");
  dgain.zero();
  const pgolf::cuda::DeviceRopeTables rope(static_cast<int>(kSeq), Rd, 10000.0);
  auto run = [&] {
    pgolf::cuda::qk_norm_rope_backward<kH, kHkv, kHd, Rd>(d_qkv.data(), ld, dgain.data(), dq.data(), dk.data(), qkv.data(), ld, q_rstd.data(),
                                                           k_rstd.data(), gain.data(), rope, kBatch, kSeq, scratch.data(), nullptr);
  };
  pgolf::bench::time_launches(state, run);
  // Bytes: dq, dk read, the q and k columns of qkv read, d q_raw and d k_raw written (3 × N·(H+Hkv)·Hd
  // bf16), the rstds read (N·(H+Hkv) fp32). The dgain partials (N/256 × H fp32) are negligible.
  constexpr double elems = static_cast<double>(kN) * (kH + kHkv) * kHd;
  pgolf::bench::report_bytes(state, 3 * elems * 2 + static_cast<double>(kN) * (kH + kHkv) * 4);
  pgolf::bench::report_device(state);
}

void BM_EmbeddingForward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto table = random_f32(std::int64_t{kVocab} * kD, 7);
  auto ids = token_ids(kN, kVocab, state.range(0) != 0);
  DeviceBuffer<float> out(kN * kD, "embeddings");
  pgolf::cuda::embedding_forward<kD>(out.data(), table.data(), ids.data(), kN, nullptr);
  pgolf::bench::time_launches(state, [&] { pgolf::cuda::embedding_forward<kD>(out.data(), table.data(), ids.data(), kN, nullptr); });
  // Bytes: out written (N·D fp32) and the ids read (N int32); the gathered rows come from the 2 MiB
  // table, which stays in L2, so they are not counted.
  pgolf::bench::report_bytes(state, static_cast<double>(kN) * kD * 4 + static_cast<double>(kN) * 4);
  state.SetLabel(std::string(state.range(0) ? "zipf ids, " : "uniform ids, ") + pgolf::cuda::device_description());
}

void BM_EmbeddingGradPrepare(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto ids = token_ids(kN, kVocab, state.range(0) != 0);
  pgolf::cuda::EmbeddingGradPlan plan(kN, kVocab);
  plan.prepare(ids.data(), kN, nullptr);
  pgolf::bench::time_launches(state, [&] { plan.prepare(ids.data(), kN, nullptr); });
  // Bytes: (reported for scale only; a sort is launch- and pass-bound at this size) the ids read and
  // the sorted ids and positions written once: 3 × N int32.
  pgolf::bench::report_bytes(state, 3.0 * static_cast<double>(kN) * 4);
  state.SetLabel(std::string(state.range(0) ? "zipf ids, " : "uniform ids, ") + pgolf::cuda::device_description());
}

void BM_EmbeddingBackward(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto ids = token_ids(kN, kVocab, state.range(0) != 0);
  auto dout = random_f32(kN * kD, 8);
  DeviceBuffer<float> dtable(static_cast<std::size_t>(kVocab) * kD, "dtable");
  dtable.zero();
  pgolf::cuda::EmbeddingGradPlan plan(kN, kVocab);
  plan.prepare(ids.data(), kN, nullptr);
  pgolf::cuda::embedding_backward<kD>(dtable.data(), dout.data(), plan, nullptr);
  pgolf::bench::time_launches(state, [&] { pgolf::cuda::embedding_backward<kD>(dtable.data(), dout.data(), plan, nullptr); });
  // Bytes: dout read (N·D fp32), the sorted positions read (N int32), dtable read and written
  // (2 × V·D fp32; every id occurs at these sizes, or nearly).
  pgolf::bench::report_bytes(state, static_cast<double>(kN) * kD * 4 + static_cast<double>(kN) * 4 + 2.0 * kVocab * kD * 4);
  state.SetLabel(std::string(state.range(0) ? "zipf ids, " : "uniform ids, ") + pgolf::cuda::device_description());
}

template <int V, bool Backward>
void BM_SoftcapCrossEntropy(benchmark::State& state) {
  if (!pgolf::bench::require_gpu(state)) return;
  auto logits = random_bf16(kN * V, 9, 8.0f);
  DeviceBuffer<nv_bf16> dlogits(static_cast<std::size_t>(kN) * V, "dlogits");
  auto targets = token_ids(kN, V, true);
  DeviceBuffer<float> loss(kN, "loss");
  auto run = [&] {
    if constexpr (Backward) {
      pgolf::cuda::softcap_cross_entropy_forward_backward<V>(loss.data(), dlogits.data(), logits.data(), targets.data(), 30.0f,
                                                             1.0f / static_cast<float>(kN), kN, nullptr);
    } else {
      pgolf::cuda::softcap_cross_entropy_forward<V>(loss.data(), logits.data(), targets.data(), 30.0f, kN, nullptr);
    }
  };
  pgolf::bench::time_launches(state, run);
  // Bytes: the logits read (N·V bf16), dlogits written (N·V bf16, training only), targets read and
  // losses written (N int32 + N fp32).
  const double row_bytes = static_cast<double>(V) * 2 * (Backward ? 2 : 1) + 8;
  pgolf::bench::report_bytes(state, static_cast<double>(kN) * row_bytes);
  pgolf::bench::report_device(state);
}

BENCHMARK(BM_QkNormRopeForward<64>)->Name("QkNormRopeForward/N=65536/H=8/Hkv=4/Hd=64/Rd=64")->UseManualTime();
BENCHMARK(BM_QkNormRopeForward<16>)->Name("QkNormRopeForward/N=65536/H=8/Hkv=4/Hd=64/Rd=16")->UseManualTime();
BENCHMARK(BM_QkNormRopeBackward<64>)->Name("QkNormRopeBackward/N=65536/H=8/Hkv=4/Hd=64/Rd=64")->UseManualTime();
BENCHMARK(BM_QkNormRopeBackward<16>)->Name("QkNormRopeBackward/N=65536/H=8/Hkv=4/Hd=64/Rd=16")->UseManualTime();
BENCHMARK(BM_EmbeddingForward)->Name("EmbeddingForward/N=65536/D=512/V=1024/zipf")->Arg(0)->Arg(1)->UseManualTime();
BENCHMARK(BM_EmbeddingGradPrepare)->Name("EmbeddingGradPrepare/N=65536/V=1024/zipf")->Arg(0)->Arg(1)->UseManualTime();
BENCHMARK(BM_EmbeddingBackward)->Name("EmbeddingBackward/N=65536/D=512/V=1024/zipf")->Arg(0)->Arg(1)->UseManualTime();
BENCHMARK(BM_SoftcapCrossEntropy<1024, false>)->Name("SoftcapCrossEntropyForward/N=65536/V=1024")->UseManualTime();
BENCHMARK(BM_SoftcapCrossEntropy<1024, true>)->Name("SoftcapCrossEntropyForwardBackward/N=65536/V=1024")->UseManualTime();
BENCHMARK(BM_SoftcapCrossEntropy<8192, true>)->Name("SoftcapCrossEntropyForwardBackward/N=65536/V=8192")->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
