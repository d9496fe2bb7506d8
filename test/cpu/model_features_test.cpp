// The GPT with the records' switches: whole-model gradients against finite differences (double),
// parameter counts against closed-form formulas for the five seeds, and the initialisation schemes.
#include <gtest/gtest.h>

#include <map>
#include <numeric>

#include "configs/seed_a.hpp"
#include "configs/seed_b.hpp"
#include "configs/seed_c.hpp"
#include "configs/seed_d.hpp"
#include "configs/seed_e.hpp"
#include "gradcheck.hpp"
#include "tiny_seed_configs.hpp"
#include "pgolf/model/gpt_cpu.hpp"
#include "pgolf/model/init.hpp"

namespace pgolf {
namespace {

template <ModelConfig C>
void check_model_gradient(const char* what) {
  using L = ParamLayout<C>;
  std::vector<double> params(L::total);
  init_params<C>(std::span<double>(params), 7);
  // Perturb every parameter so that no path is dead (zero-initialised tables and projections included).
  const auto noise = testing::normal_vector(params.size(), 99, 0.3);
  for (std::size_t i = 0; i < params.size(); ++i) params[i] += noise[i];
  const int batch = 2, seq = 7;
  std::vector<std::int32_t> ids(batch * seq), targets(batch * seq);
  const RandomStream rng(5, 5);
  for (int i = 0; i < batch * seq; ++i) {
    ids[i] = static_cast<std::int32_t>(rng.below(2 * i, C.vocab_size));
    targets[i] = static_cast<std::int32_t>(rng.below(2 * i + 1, C.vocab_size));
  }
  ids[4] = C.bos_id;  // a BOS token inside the first sequence (the smear BOS fix acts there)
  cpu::Gpt<C, double> model;
  auto loss = [&] { return model.forward(params, ids, targets, batch, seq); };
  ASSERT_TRUE(std::isfinite(loss())) << what;
  std::vector<double> grads(L::total, 0.0);
  model.backward(params, grads, 1.0);
  for (const auto& s : L::specs()) {
    std::vector<double> sub(params.begin() + s.offset, params.begin() + s.offset + s.numel());
    std::vector<double> gsub(grads.begin() + s.offset, grads.begin() + s.offset + s.numel());
    auto f = [&] {
      std::copy(sub.begin(), sub.end(), params.begin() + s.offset);
      return loss();
    };
    testing::expect_gradient_matches(f, sub, gsub, (std::string(what) + " " + s.name()).c_str(), 6, 1e-5, 1e-5, 1e-8);
    std::copy(sub.begin(), sub.end(), params.begin() + s.offset);
  }
}


TEST(FeatureGradients, SeedA) { check_model_gradient<kTinyA>("seed A"); }
TEST(FeatureGradients, SeedB) { check_model_gradient<kTinyB>("seed B"); }
TEST(FeatureGradients, SeedC) { check_model_gradient<kTinyC>("seed C"); }
TEST(FeatureGradients, SeedD) { check_model_gradient<kTinyD>("seed D"); }
TEST(FeatureGradients, SeedE) { check_model_gradient<kTinyE>("seed E"); }

// The variants no seed uses (tiny_seed_configs.hpp).
TEST(FeatureGradients, PreNormSmearWithBosFixEngramBigramsOnlyOutputGate) { check_model_gradient<kVariant1>("variant 1"); }
TEST(FeatureGradients, InputGatedSmearFullGateSigmoidAlphaResidualWithVe) { check_model_gradient<kVariant2>("variant 2"); }
TEST(FeatureGradients, SparseGateGatedSkipsLambdaResidualWithVeXsaLeaky) { check_model_gradient<kVariant3>("variant 3"); }
TEST(FeatureGradients, UntiedHead) { check_model_gradient<kVariantUntied>("untied"); }

// ------------------------------------------------------------------------------------------
// Parameter counts: a closed-form formula per feature, independent of the layout code.
// ------------------------------------------------------------------------------------------
std::int64_t formula_count(const ModelConfig& c) {
  const std::int64_t d = c.model_dim, hd = d / c.num_heads, kv = c.num_kv_heads * hd, H = c.num_heads, L = c.num_layers;
  const std::int64_t hidden = c.mlp_hidden ? c.mlp_hidden : c.mlp_mult * d;
  const std::int64_t n_skip = std::min(L / 2, L - L / 2);
  const Features& f = c.features;
  std::int64_t block = d * d + 2 * kv * d + d * d + 2 * hidden * d + H + 2 * d + 2 * d;  // matrices, q_gain, scales, resid_mix
  if (f.value_residual == ValueResidual::lambda_mix) block += 2;
  if (f.attn_gate == AttnGate::headwise_bias) block += H * d + H;
  if (f.attn_gate == AttnGate::full) block += H * d;
  if (f.attn_gate == AttnGate::output_gate || f.attn_gate == AttnGate::sparse) block += H * f.gate_window;
  std::int64_t total = c.vocab_size * d + L * block + n_skip * d;
  if (f.skips == SkipConnection::sigmoid_gated) total += n_skip * d;
  if (!c.tie_embeddings) total += c.vocab_size * d;
  if (f.hash_embedding == HashEmbedding::bigram) total += 1 + f.hash_buckets * f.hash_dim + (f.hash_dim != d ? d * f.hash_dim : 0);
  if (f.hash_embedding == HashEmbedding::engram_lite) {
    const std::int64_t slots = 2 * f.engram_orders;
    total += d + slots * f.hash_buckets * f.hash_dim + (slots * f.hash_dim != d ? d * slots * f.hash_dim : 0);
  }
  if (f.smear == SmearGate::pre_norm || f.smear == SmearGate::post_norm) total += d;
  if (f.smear == SmearGate::input_gated) total += f.gate_window + 1;
  if (f.ve_layers) total += 1 + c.vocab_size * f.ve_dim + (f.ve_dim != kv ? kv * f.ve_dim : 0) + count_layers(f.ve_layers);
  if (f.value_residual == ValueResidual::sigmoid_alpha) total += L - 1;
  return total;
}

TEST(ParamCount, EverySeedMatchesTheFormula) {
  EXPECT_EQ(param_count<ModelConfig{}>, formula_count(ModelConfig{}));
  EXPECT_EQ(param_count<configs::kSeedA>, formula_count(configs::kSeedA));
  EXPECT_EQ(param_count<configs::kSeedB>, formula_count(configs::kSeedB));
  EXPECT_EQ(param_count<configs::kSeedC>, formula_count(configs::kSeedC));
  EXPECT_EQ(param_count<configs::kSeedD>, formula_count(configs::kSeedD));
  EXPECT_EQ(param_count<configs::kSeedE>, formula_count(configs::kSeedE));
  EXPECT_EQ(param_count<kTinyD>, formula_count(kTinyD));
  EXPECT_EQ(param_count<kTinyE>, formula_count(kTinyE));
  // Seed B as the record counts it: 10 × (786,432 + 1,572,864 + 8 + 2,048) + 524,288 + 5 × 512
  // + BigramHash (1 + 524,288 + 65,536) + SmearGate 512.
  EXPECT_EQ(param_count<configs::kSeedB>, 10 * (786'432 + 1'572'864 + 8 + 2'048) + 524'288 + 2'560 + 589'825 + 512);
}

// Seed A's record (PR #436) trains its whole BigramHash in the token embedding's Adam group; the
// canonical BigramHash (seed B) sends the projection to Muon and the scale to the scalar group.
// Only the embedding tables are bf16 tensors in the reference, whatever group trains them.
TEST(ParamLayout, HashEmbeddingGroupsFollowTheRecordAndOnlyTablesAreHeldInBf16) {
  std::map<std::string, ParamSpec> a, b, d;
  for (const auto& s : ParamLayout<configs::kSeedA>::specs()) a[s.name()] = s;
  for (const auto& s : ParamLayout<configs::kSeedB>::specs()) b[s.name()] = s;
  for (const auto& s : ParamLayout<configs::kSeedD>::specs()) d[s.name()] = s;
  for (const char* name : {"bigram.embed.weight", "bigram.proj.weight", "bigram.scale"}) {
    EXPECT_EQ(a.at(name).role, ParamRole::embedding) << name;
  }
  EXPECT_EQ(b.at("bigram.embed.weight").role, ParamRole::embedding);
  EXPECT_EQ(b.at("bigram.proj.weight").role, ParamRole::matrix);
  EXPECT_EQ(b.at("bigram.scale").role, ParamRole::scalar);
  EXPECT_EQ(d.at("bigram.ngram_gate").role, ParamRole::scalar);
  auto bf16_tensors = [](const std::map<std::string, ParamSpec>& by) {
    std::vector<std::string> names;
    for (const auto& [name, s] : by) {
      if (held_in_bf16_by_reference(s)) names.push_back(name);
    }
    return names;
  };
  EXPECT_EQ(bf16_tensors(a), (std::vector<std::string>{"bigram.embed.weight", "tok_emb.weight"}));
  EXPECT_EQ(bf16_tensors(b), (std::vector<std::string>{"bigram.embed.weight", "tok_emb.weight"}));
  EXPECT_EQ(bf16_tensors(d), (std::vector<std::string>{"bigram.embed.weight", "tok_emb.weight", "ve_shared.embed.weight"}));
}

TEST(ParamLayout, FeatureTensorsHaveTheRecordsNamesRolesAndControlFlags) {
  std::map<std::string, ParamSpec> by;
  for (const auto& s : ParamLayout<configs::kSeedD>::specs()) by[s.name()] = s;
  for (const char* name : {"skip_gates", "bigram.ngram_gate", "bigram.embed.weight", "bigram.proj.weight", "smear.gate", "ve_shared.scale",
                           "ve_shared.embed.weight", "ve_shared.proj.weight", "ve_layer_scales.0", "ve_layer_scales.1"}) {
    EXPECT_TRUE(by.count(name)) << name;
  }
  EXPECT_EQ(by.at("bigram.embed.weight").shape[0], 4 * 8192);
  EXPECT_EQ(by.at("bigram.embed.weight").role, ParamRole::embedding);
  EXPECT_EQ(by.at("bigram.proj.weight").role, ParamRole::matrix);
  EXPECT_EQ(by.at("ve_shared.proj.weight").role, ParamRole::matrix);
  EXPECT_EQ(by.at("ve_shared.embed.weight").role, ParamRole::embedding);
  EXPECT_TRUE(by.at("skip_gates").control);
  EXPECT_EQ(by.at("ve_shared.scale").rank, 0);
  EXPECT_EQ(by.at("ve_layer_scales.1").layer, 10);
  std::map<std::string, ParamSpec> e;
  for (const auto& s : ParamLayout<configs::kSeedE>::specs()) e[s.name()] = s;
  EXPECT_TRUE(e.count("blocks.3.attn.vr_lambda"));
  EXPECT_EQ(e.at("blocks.3.attn.attn_gate.weight").shape, (std::array<std::int64_t, 2>{8, 512}));
  EXPECT_TRUE(e.count("blocks.3.attn.attn_gate.bias"));
  EXPECT_TRUE(e.count("bigram.scale"));
  EXPECT_EQ(e.at("bigram.scale").rank, 0);
}

// ------------------------------------------------------------------------------------------
// Initialisation schemes.
// ------------------------------------------------------------------------------------------
template <ModelConfig C>
std::vector<float> initialised(std::uint64_t seed = 1) {
  std::vector<float> p(ParamLayout<C>::total);
  init_params<C>(std::span<float>(p), seed);
  return p;
}

TEST(InitSchemes, OrthoInitGivesOrthonormalRowsAndScaledProjections) {
  using S = ParamLayout<configs::kSeedB>;
  const auto p = initialised<configs::kSeedB>();
  // c_q (512×512) is orthogonal: Q Qᵀ = I.
  const float* q = p.data() + S::offset(3, BlockParam::c_q);
  for (int i : {0, 17, 511}) {
    for (int j : {0, 17, 300}) {
      double s = 0;
      for (int k = 0; k < 512; ++k) s += static_cast<double>(q[i * 512 + k]) * q[j * 512 + k];
      EXPECT_NEAR(s, i == j ? 1.0 : 0.0, 1e-5);
    }
  }
  // c_k (256×512, wide) has orthonormal rows; fc (1536×512, tall) orthonormal columns.
  const float* k = p.data() + S::offset(0, BlockParam::c_k);
  double kk = 0;
  for (int c = 0; c < 512; ++c) kk += static_cast<double>(k[5 * 512 + c]) * k[5 * 512 + c];
  EXPECT_NEAR(kk, 1.0, 1e-5);
  const float* fc = p.data() + S::offset(0, BlockParam::fc);
  double col = 0;
  for (int r = 0; r < 1536; ++r) col += static_cast<double>(fc[r * 512 + 9]) * fc[r * 512 + 9];
  EXPECT_NEAR(col, 1.0, 1e-5);
  // The bigram projection (512×128) is orthogonal and named *.proj: columns of norm 1/√(2L).
  const float* bp = p.data() + S::offset(GlobalParam::hash_proj);
  double bc = 0;
  for (int r = 0; r < 512; ++r) bc += static_cast<double>(bp[r * 128 + 3]) * bp[r * 128 + 3];
  EXPECT_NEAR(bc, 1.0 / (2.0 * 10), 1e-6);
  // Zero-init projections stay zero; the bigram table is zero (canonical BigramHash).
  EXPECT_EQ(p[S::offset(2, BlockParam::attn_proj) + 123], 0.0f);
  EXPECT_EQ(p[S::offset(GlobalParam::hash_embed) + 77], 0.0f);
  EXPECT_FLOAT_EQ(p[S::offset(GlobalParam::hash_scale)], 0.05f);
}

// The top eigenvalue of WᵀW by power iteration on the Gram matrix (independent of the SVD the init
// uses; enough iterations for the small eigen-gaps at the edge of a Gaussian matrix's spectrum).
double top_gram_eigenvalue(const float* w, int rows, int cols) {
  std::vector<float> gram(static_cast<std::size_t>(cols) * cols);
  cpu::gemm<float>(cpu::Trans::yes, cpu::Trans::no, cols, cols, rows, w, cols, w, cols, gram.data(), cols, false);
  std::vector<double> x(cols, 1.0), z(cols);
  double lambda = 0;
  for (int it = 0; it < 5000; ++it) {
    double norm = 0;
    for (int i = 0; i < cols; ++i) {
      double s = 0;
      for (int j = 0; j < cols; ++j) s += gram[i * cols + j] * x[j];
      z[i] = s;
      norm += s * s;
    }
    norm = std::sqrt(norm);
    lambda = norm;
    for (int i = 0; i < cols; ++i) x[i] = z[i] / norm;
  }
  return lambda;
}

TEST(InitSchemes, OvertoneSpectrumAndPhaseTransitionMix) {
  using S = ParamLayout<configs::kSeedA>;
  const auto p = initialised<configs::kSeedA>();
  // Overtone: the singular values of tok_emb become S_1 · k^(−1/2), so the eigenvalues of G = WᵀW
  // are λ_k = S_1² / k: the largest is kept (the plain normal init's), Σ λ_k = S_1² · H_512 and
  // Σ λ_k² = S_1⁴ · Σ 1/k².
  const float* w = p.data() + S::tok_emb;
  const double top = top_gram_eigenvalue(w, 1024, 512);
  std::vector<float> w0(1024 * 512);  // the same draws without the overtone step
  {
    ParamSpec emb;
    for (const auto& spec : ParamLayout<configs::kSeedA>::specs()) {
      if (spec.name() == "tok_emb.weight") emb = spec;
    }
    const RandomStream rng(1, init_stream_id(emb));
    for (int i = 0; i < 1024 * 512; ++i) w0[i] = static_cast<float>(0.005 * rng.normal(static_cast<std::uint64_t>(i)));
  }
  EXPECT_NEAR(top / top_gram_eigenvalue(w0.data(), 1024, 512), 1.0, 1e-4);
  double trace = 0, harmonic = 0, harmonic2 = 0;
  for (int i = 0; i < 1024 * 512; ++i) trace += static_cast<double>(w[i]) * w[i];
  for (int k = 1; k <= 512; ++k) {
    harmonic += 1.0 / k;
    harmonic2 += 1.0 / (static_cast<double>(k) * k);
  }
  EXPECT_NEAR(trace / (top * harmonic), 1.0, 1e-4);
  std::vector<float> gram(512 * 512);
  cpu::gemm<float>(cpu::Trans::yes, cpu::Trans::no, 512, 512, 1024, w, 512, w, 512, gram.data(), 512, false);
  double frob2 = 0;
  for (float g : gram) frob2 += static_cast<double>(g) * g;
  EXPECT_NEAR(frob2 / (top * top * harmonic2), 1.0, 1e-3);
  // Phase transition: resid_mix rows (φ_l, 1 − φ_l), φ_l = σ(3 (l/7 − 1/2)).
  for (int l : {0, 3, 7}) {
    const double phi = 1.0 / (1.0 + std::exp(-3.0 * (l / 7.0 - 0.5)));
    EXPECT_NEAR(p[S::offset(l, BlockParam::resid_mix)], phi, 1e-6);
    EXPECT_NEAR(p[S::offset(l, BlockParam::resid_mix) + 512], 1.0 - phi, 1e-6);
  }
  EXPECT_NEAR(p[S::offset(GlobalParam::hash_embed) + 1000], 0.0, 0.06);  // N(0, 0.01)
}

TEST(InitSchemes, MimeticValueOutputInit) {
  using S = ParamLayout<configs::kSeedD>;
  const auto p = initialised<configs::kSeedD>();
  const float* v = p.data() + S::offset(4, BlockParam::c_v);
  const float* o = p.data() + S::offset(4, BlockParam::attn_proj);
  // Query head 5 reads KV head 2 (group 2): O rows 5·64 .. 6·64 = −0.05 · V rows 2·64 .. 3·64.
  for (int r : {0, 31, 63}) {
    for (int c : {0, 200, 511}) EXPECT_FLOAT_EQ(o[(5 * 64 + r) * 512 + c], -0.05f * v[(2 * 64 + r) * 512 + c]);
  }
  EXPECT_EQ(p[S::offset(4, BlockParam::mlp_proj) + 9], 0.0f);
  EXPECT_EQ(p[S::offset(GlobalParam::hash_proj) + 9], 0.0f) << "EngramLite's projection is flagged zero-init";
}

}  // namespace
}  // namespace pgolf
