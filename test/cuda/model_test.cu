// The whole GPU model against the CPU oracle: loss, per-token losses and every parameter's
// gradient for the same weights and batch; a few training steps side by side; run-to-run
// determinism; and the configuration check that runs without a GPU.
//
// Tolerances. The CPU computes in fp32; the GPU follows the reference's autocast: bf16 GEMM inputs,
// bf16 q/k/v, attention output, branch outputs and logits (each one rounding, relative error at
// most 2^-8), fp32 residual stream and fp32 gradient accumulation. The weights given to both are
// bf16-representable, so the GEMM inputs are the same numbers and the differences come from the
// bf16 activations alone. One layer chains about ten such roundings, partly cancelling; the
// gradients of a tensor are sums over all tokens of products of these, so their relative L2 error
// is a few bf16 units (measured figures are printed by each test; the bounds below leave room over
// them, and stay an order of magnitude under what a wrong formula would give — a missing factor or
// a transposed operand shows up as O(1) relative error).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "../cpu/tiny_seed_configs.hpp"
#include "configs/baseline.hpp"
#include "configs/seed_a.hpp"
#include "configs/seed_b.hpp"
#include "configs/seed_c.hpp"
#include "configs/seed_d.hpp"
#include "configs/seed_e.hpp"
#include "cuda_test_util.cuh"
#include "pgolf/model/gpt_cpu.hpp"
#include "pgolf/run/cpu_backend.hpp"
#include "pgolf/run/cuda_backend.cuh"

namespace pgolf {
namespace {

using testing::all_close;
using testing::relative_l2_error;

// Head dim 32 (tensor-core attention), U-Net skips over 4 layers, GQA 4/2.
constexpr ModelConfig kGpuSmall = [] {
  ModelConfig c;
  c.name = "gpu-small";
  c.vocab_size = 256;
  c.num_layers = 4;
  c.model_dim = 128;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_seq_len = 128;
  return c;
}();

// nvcc 13 rejects `ParamLayout<kGpuSmall>::...` inside a (non-template) function body: the
// layout is named at namespace scope.
using SmallLayout = ParamLayout<kGpuSmall>;

// Head dim 8 (the simple attention path), untied head, and the switches the CUDA model supports:
// partial RoPE, LN scale, LeakyReLU².
constexpr ModelConfig kGpuSwitches = [] {
  ModelConfig c;
  c.name = "gpu-switches";
  c.vocab_size = 128;
  c.num_layers = 3;
  c.model_dim = 32;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_seq_len = 64;
  c.tie_embeddings = false;
  c.features.rope_dims = 4;
  c.features.ln_scale = true;
  c.features.activation = Activation::leaky_relu2;
  c.features.leaky_slope = 0.5f;
  return c;
}();

// Initial weights of C from `seed`, every value rounded to bf16 so that the GPU's bf16 weight copy
// holds the same numbers as the CPU's fp32 weights. Zero-initialised tensors (output projections,
// the head, hash tables, gates) are given small random values: with zeros, many gradients would be
// exactly zero and the comparison would test little.
template <ModelConfig C>
std::vector<float> test_weights(std::uint64_t seed) {
  std::vector<float> p(ParamLayout<C>::total);
  init_params<C>(std::span<float>(p), seed);
  const auto noise = testing::normal_floats(p.size(), seed + 7, 0.02f);
  for (const ParamSpec& s : ParamLayout<C>::specs()) {
    if (s.zero_init || s.init == ParamInit::zeros || s.role == ParamRole::head) {
      for (std::int64_t i = 0; i < s.numel(); ++i) p[s.offset + i] = noise[s.offset + i];
    }
  }
  return testing::bf16_rounded(p);
}

template <ModelConfig C>
std::vector<std::int32_t> random_tokens(std::size_t n, std::uint64_t stream) {
  const RandomStream rng(99, stream);
  std::vector<std::int32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<std::int32_t>(rng.below(i, C.vocab_size));
  return t;
}

std::vector<float> download(const float* device, std::size_t n) {
  std::vector<float> h(n);
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  PGOLF_CUDA_CHECK(cudaMemcpy(h.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost));
  return h;
}

// Loss, per-token losses and every gradient of one batch, GPU vs CPU.
template <ModelConfig C>
void expect_gradients_match(std::int64_t batch, std::int64_t seq, double max_grad_rel_l2) {
  const auto w = test_weights<C>(5);
  const std::int64_t n = batch * seq;
  const auto ids = random_tokens<C>(n, 1), targets = random_tokens<C>(n, 2);

  cpu::Gpt<C, float> ref;
  std::vector<float> ref_grads(w.size(), 0.0f), ref_tok(n);
  const double ref_loss = ref.forward(w, ids, targets, batch, seq, ref_tok);
  ref.backward(w, ref_grads);

  run::CudaBackend<C> gpu(OptimizerOptions{});
  gpu.write_params(w);
  gpu.zero_grads();
  gpu.forward_backward(ids, targets, batch, seq, 1.0f);
  const double gpu_loss = gpu.step_loss();
  const auto gpu_grads = download(gpu.device_grads(), w.size());
  std::vector<float> gpu_tok(n);
  gpu.token_losses(ids, targets, batch, seq, gpu_tok);

  std::printf("%s B=%lld T=%lld: loss cpu %.6f gpu %.6f\n", std::string(C.name.view()).c_str(), static_cast<long long>(batch),
              static_cast<long long>(seq), ref_loss, gpu_loss);
  // The mean of N per-token losses, each within a few bf16 units of log-probability.
  EXPECT_NEAR(gpu_loss, ref_loss, 4e-3 * ref_loss);
  EXPECT_LT(relative_l2_error(gpu_tok, ref_tok), 1e-2);
  // Tensors of 1 to 3 elements (hash_scale, ve_scale, smear_lambda, vrl_alpha, vr_lambda, ...) are
  // each one sum over N·width terms of both signs: its exact value can land near zero while the bf16
  // noise of the sum does not, so |g − r| / |r| has a heavy tail and a per-tensor relative bound
  // would fail correct kernels now and then. They are pooled and each element is bounded relative
  // to max(|r_i|, the pool's rms): a wrong wire (buffer, sign, missing σ') is still off by ~|r_i|.
  double global_sq = 0;
  for (float r : ref_grads) global_sq += static_cast<double>(r) * r;
  const double global_norm = std::sqrt(global_sq);
  std::vector<std::pair<std::string, std::pair<float, float>>> pooled;  // name, (gpu, cpu)
  for (const ParamSpec& s : ParamLayout<C>::specs()) {
    const std::span<const float> g(gpu_grads.data() + s.offset, static_cast<std::size_t>(s.numel()));
    const std::span<const float> r(ref_grads.data() + s.offset, static_cast<std::size_t>(s.numel()));
    if (s.numel() <= 3) {
      for (std::int64_t i = 0; i < s.numel(); ++i) pooled.push_back({s.name() + "[" + std::to_string(i) + "]", {g[i], r[i]}});
      continue;
    }
    double r_sq = 0, g_sq = 0;
    for (std::size_t i = 0; i < r.size(); ++i) {
      r_sq += static_cast<double>(r[i]) * r[i];
      g_sq += static_cast<double>(g[i]) * g[i];
    }
    if (r_sq == 0) {  // an exactly zero CPU gradient: the GPU's must be zero up to noise
      std::printf("  %-28s cpu gradient 0, gpu norm %.2e\n", s.name().c_str(), std::sqrt(g_sq));
      EXPECT_LE(std::sqrt(g_sq), 1e-6 * global_norm) << s.name() << ": the CPU gradient is exactly zero";
      continue;
    }
    const double err = relative_l2_error(g, r);
    std::printf("  %-28s rel L2 err %.2e\n", s.name().c_str(), err);
    EXPECT_LT(err, max_grad_rel_l2) << s.name();
  }
  if (!pooled.empty()) {
    double pool_sq = 0;
    for (const auto& [name, gr] : pooled) pool_sq += static_cast<double>(gr.second) * gr.second;
    const double pool_rms = std::sqrt(pool_sq / static_cast<double>(pooled.size()));
    for (const auto& [name, gr] : pooled) {
      const double err = std::fabs(static_cast<double>(gr.first) - gr.second);
      const double scale = std::max(std::fabs(static_cast<double>(gr.second)), pool_rms);
      std::printf("  %-28s gpu %.6e cpu %.6e (pool rms %.2e)\n", name.c_str(), gr.first, gr.second, pool_rms);
      EXPECT_LE(err, max_grad_rel_l2 * scale) << name << " (pool rms " << pool_rms << ")";
    }
  }
}

class GpuModel : public testing::GpuTest {};

TEST_F(GpuModel, SmallConfigurationLossAndGradientsMatchTheCpu) { expect_gradients_match<kGpuSmall>(3, 100, 3e-2); }

TEST_F(GpuModel, SwitchesConfigurationLossAndGradientsMatchTheCpu) { expect_gradients_match<kGpuSwitches>(2, 64, 3e-2); }

TEST_F(GpuModel, BaselineConfigurationLossAndGradientsMatchTheCpu) { expect_gradients_match<configs::kBaseline>(2, 1024, 3e-2); }

// Every feature switch, at the tiny widths of the CPU feature tests (head dim 4: the simple
// attention path) — the five seeds' feature sets and the variants no seed uses.
TEST_F(GpuModel, TinySeedFeatureSetsMatchTheCpu) {
  expect_gradients_match<kTinyA>(3, 8, 3e-2);
  expect_gradients_match<kTinyB>(3, 8, 3e-2);
  expect_gradients_match<kTinyC>(3, 8, 3e-2);
  expect_gradients_match<kTinyD>(3, 8, 3e-2);
  expect_gradients_match<kTinyE>(3, 8, 3e-2);
}

TEST_F(GpuModel, TinyFeatureVariantsMatchTheCpu) {
  expect_gradients_match<kVariant1>(3, 8, 3e-2);
  expect_gradients_match<kVariant2>(3, 8, 3e-2);
  expect_gradients_match<kVariant3>(3, 8, 3e-2);
  expect_gradients_match<kVariantUntied>(3, 8, 3e-2);
}

// The five seed configurations at full width (the real kernel shapes: head dim 64 on tensor cores,
// gate window 12, hash and value-embedding tables of the records), on short sequences.
TEST_F(GpuModel, SeedConfigurationsMatchTheCpu) {
  expect_gradients_match<configs::kSeedA>(2, 128, 3e-2);
  expect_gradients_match<configs::kSeedB>(2, 128, 3e-2);
  expect_gradients_match<configs::kSeedC>(2, 128, 3e-2);
  expect_gradients_match<configs::kSeedD>(2, 128, 3e-2);
  expect_gradients_match<configs::kSeedE>(2, 128, 3e-2);
}

// Three optimizer steps of two accumulated micro-batches, GPU vs CPU: the losses and the weights
// stay together (bf16 Newton–Schulz on both sides, rounded at the same points; the GEMMs' summation
// order differs, so the Muon updates differ at the bf16 level).
//
// Adam's first step is lr·sign(g) (bias-corrected m̂/√v̂ = g/|g| while eps is far below |g|): an
// element whose gradient is within the GPU–CPU difference of zero may take opposite steps, an O(1)
// difference in a small tensor. Such elements (step-1 gradient signs differ) are left out of the Adam
// tensors' comparison, and must be rare. The tied embedding's rate is lowered from 0.05 to 0.005: at
// 0.05 the first step moves every tok_emb entry by ten times its init std, and the larger logits
// that follow scale up the bf16 logit error (seed_training_test.cpp documents the same spike).
TEST_F(GpuModel, TrainingStepsFollowTheCpu) {
  constexpr std::int64_t kBatch = 4, kSeq = 64, kAccum = 2;
  const auto w = test_weights<kGpuSmall>(11);
  OptimizerOptions opt;
  opt.tied_embed_lr = 0.005;
  std::vector<char> sign_differs(w.size(), 0);
  run::CpuBackend<kGpuSmall> cpu_backend(opt);
  run::CudaBackend<kGpuSmall> gpu(opt);
  cpu_backend.write_params(w);
  gpu.write_params(w);
  for (int step = 0; step < 3; ++step) {
    cpu_backend.zero_grads();
    gpu.zero_grads();
    for (int m = 0; m < kAccum; ++m) {
      const auto ids = random_tokens<kGpuSmall>(kBatch * kSeq, 100 + 2 * (step * kAccum + m));
      const auto targets = random_tokens<kGpuSmall>(kBatch * kSeq, 101 + 2 * (step * kAccum + m));
      cpu_backend.forward_backward(ids, targets, kBatch, kSeq, 1.0f / kAccum);
      gpu.forward_backward(ids, targets, kBatch, kSeq, 1.0f / kAccum);
    }
    const double lc = cpu_backend.step_loss(), lg = gpu.step_loss();
    std::printf("step %d: loss cpu %.6f gpu %.6f\n", step, lc, lg);
    EXPECT_NEAR(lg, lc, 1e-2 * lc) << "step " << step;
    if (step == 0) {
      const auto gg = download(gpu.device_grads(), w.size());
      const auto gc = cpu_backend.grads();
      for (std::size_t i = 0; i < w.size(); ++i) sign_differs[i] = (gg[i] > 0) != (gc[i] > 0) || (gg[i] < 0) != (gc[i] < 0);
    }
    cpu_backend.optimizer_step(1.0, 0.85);
    gpu.optimizer_step(1.0, 0.85);
  }
  std::vector<float> pc(w.size()), pg(w.size());
  cpu_backend.read_params(pc);
  gpu.read_params(pg);
  std::int64_t adam_elements = 0, left_out = 0;
  for (const ParamSpec& s : SmallLayout::specs()) {
    // The change of each tensor over the three steps must agree; comparing the weights themselves
    // would hide a wrong update under the unchanged initial values.
    const bool adam = s.role != ParamRole::matrix;
    std::vector<float> dc, dg;
    for (std::int64_t i = 0; i < s.numel(); ++i) {
      if (adam && sign_differs[s.offset + i]) {
        ++left_out;
        continue;
      }
      dc.push_back(pc[s.offset + i] - w[s.offset + i]);
      dg.push_back(pg[s.offset + i] - w[s.offset + i]);
    }
    if (adam) adam_elements += s.numel();
    const double err = relative_l2_error(dg, dc);
    std::printf("  %-28s update rel L2 err %.2e\n", s.name().c_str(), err);
    EXPECT_LT(err, 0.1) << s.name();
  }
  std::printf("  Adam elements with opposite step-1 gradient signs: %lld of %lld\n", static_cast<long long>(left_out),
              static_cast<long long>(adam_elements));
  EXPECT_LT(left_out * 100, adam_elements) << "more than 1% of the Adam gradients disagree in sign";
}

// Same seed, same data: the same bits (deterministic kernels, fixed reduction orders).
TEST_F(GpuModel, TrainingIsBitwiseDeterministic) {
  auto run_once = [] {
    run::CudaBackend<kGpuSmall> gpu(OptimizerOptions{});
    gpu.init(1337, InitOptions{});
    std::vector<double> losses;
    for (int step = 0; step < 3; ++step) {
      gpu.zero_grads();
      gpu.forward_backward(random_tokens<kGpuSmall>(4 * 64, 7 + step), random_tokens<kGpuSmall>(4 * 64, 70 + step), 4, 64, 1.0f);
      losses.push_back(gpu.step_loss());
      gpu.optimizer_step(1.0, 0.9);
    }
    std::vector<float> p(SmallLayout::total);
    gpu.read_params(p);
    return std::pair{losses, p};
  };
  const auto [l1, p1] = run_once();
  const auto [l2, p2] = run_once();
  EXPECT_EQ(l1, l2);
  EXPECT_TRUE(p1 == p2) << "weights differ between two identical runs";
}

// The GPU initialisation is the CPU's, with the embedding tables (held_in_bf16_by_reference:
// tok_emb, hash and value embeddings) held in bf16 as the reference holds its nn.Embedding tables;
// write_params rounds them too, and nothing else.
template <ModelConfig C>
void expect_bf16_embedding_tables(std::uint64_t seed) {
  using L = ParamLayout<C>;
  run::CudaBackend<C> gpu(OptimizerOptions{});
  gpu.init(seed, InitOptions{});
  std::vector<float> pg(L::total), pc(L::total);
  gpu.read_params(pg);
  init_params<C>(std::span<float>(pc), seed);
  int tables = 0;
  for (const ParamSpec& s : L::specs()) {
    const bool table = held_in_bf16_by_reference(s);
    tables += table ? 1 : 0;
    for (std::int64_t i = 0; i < s.numel(); ++i) {
      const float want = table ? bf16::from_float(pc[s.offset + i]).to_float() : pc[s.offset + i];
      ASSERT_EQ(pg[s.offset + i], want) << "init: " << s.name() << "[" << i << "]";
    }
  }
  EXPECT_EQ(tables, 1 + (C.features.hash_embedding != HashEmbedding::none ? 1 : 0) + (C.features.ve_layers != 0 ? 1 : 0));
  // Values that are not bf16 numbers (as a dequantized artifact holds) through write_params.
  const auto noise = testing::normal_floats(static_cast<std::size_t>(L::total), seed + 1, 0.05f);
  gpu.write_params(noise);
  gpu.read_params(pg);
  for (const ParamSpec& s : L::specs()) {
    const bool table = held_in_bf16_by_reference(s);
    for (std::int64_t i = 0; i < s.numel(); ++i) {
      const float want = table ? bf16::from_float(noise[s.offset + i]).to_float() : noise[s.offset + i];
      ASSERT_EQ(pg[s.offset + i], want) << "write_params: " << s.name() << "[" << i << "]";
    }
  }
}

TEST_F(GpuModel, EmbeddingTablesAreHeldInBf16) {
  expect_bf16_embedding_tables<kGpuSmall>(42);
  expect_bf16_embedding_tables<kTinyB>(43);  // BigramHash table
  expect_bf16_embedding_tables<kTinyD>(44);  // EngramLite tables and a value embedding
}

// Runs everywhere: every shipped configuration runs on the GPU.
TEST(GpuModelConfig, EveryShippedConfigurationIsSupported) {
  for (const ModelConfig& c : {configs::kBaseline, configs::kSeedA, configs::kSeedB, configs::kSeedC, configs::kSeedD, configs::kSeedE}) {
    EXPECT_EQ(cuda::cuda_unsupported_features(c), "") << describe(c);
  }
  EXPECT_TRUE(cuda::kCudaSupported<configs::kSeedD>);
}

}  // namespace
}  // namespace pgolf
