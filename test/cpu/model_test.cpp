// The CPU GPT: parameter layout and count, initialisation, and the whole-model backward against
// finite differences in double precision on tiny configurations.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "gradcheck.hpp"
#include "pgolf/model/gpt_cpu.hpp"
#include "pgolf/model/init.hpp"

namespace pgolf {
namespace {

constexpr ModelConfig kTiny = [] {
  ModelConfig c;
  c.name = "tiny";
  c.vocab_size = 32;
  c.num_layers = 3;  // 1 encoder + 2 decoder blocks: one skip connection, one decoder block without
  c.model_dim = 16;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.mlp_mult = 2;
  c.max_seq_len = 8;
  c.logit_softcap = 5.0f;  // small, so the softcap's curvature is exercised
  return c;
}();

constexpr ModelConfig kTinyUntied = [] {
  ModelConfig c = kTiny;
  c.name = "tiny-untied";
  c.tie_embeddings = false;
  c.num_layers = 4;
  c.num_kv_heads = 4;
  return c;
}();

TEST(ParamLayout, BaselineHasTheReferenceCount) {
  static_assert(param_count<ModelConfig{}> == 17'059'912, "the reference baseline has 17,059,912 parameters");
  // emb 524,288 + 9 × 1,837,064 + skip 2,048 (§1.4)
  using L = ParamLayout<ModelConfig{}>;
  EXPECT_EQ(L::offset(1, BlockParam::attn_scale) - L::offset(0, BlockParam::attn_scale), 1'837'064);
}

template <ModelConfig C>
void expect_layout_consistent() {
  const auto specs = ParamLayout<C>::specs();
  std::int64_t next = 0;
  std::set<std::string> names;
  for (const auto& s : specs) {
    EXPECT_EQ(s.offset, next) << s.name() << " is not contiguous with its predecessor";
    next += s.numel();
    EXPECT_TRUE(names.insert(s.name()).second) << "duplicate " << s.name();
  }
  EXPECT_EQ(next, ParamLayout<C>::total);
}

TEST(ParamLayout, ContiguousUniqueAndNamedAsTheReferenceStateDict) {
  expect_layout_consistent<ModelConfig{}>();
  expect_layout_consistent<kTiny>();
  expect_layout_consistent<kTinyUntied>();
  const auto specs = ParamLayout<ModelConfig{}>::specs();
  std::vector<std::string> first;
  for (int i = 0; i < 12; ++i) first.push_back(specs[i].name());
  const std::vector<std::string> expected = {
      "skip_weights", "tok_emb.weight", "blocks.0.attn_scale", "blocks.0.mlp_scale", "blocks.0.resid_mix",
      "blocks.0.attn.q_gain", "blocks.0.attn.c_q.weight", "blocks.0.attn.c_k.weight", "blocks.0.attn.c_v.weight",
      "blocks.0.attn.proj.weight", "blocks.0.mlp.fc.weight", "blocks.0.mlp.proj.weight"};
  EXPECT_EQ(first, expected);
  EXPECT_EQ(specs.back().name(), "blocks.8.mlp.proj.weight");
  EXPECT_EQ(ParamLayout<kTinyUntied>::specs().back().name(), "lm_head.weight");
  // Roles: Muon gets exactly the 2-D block matrices that match no control pattern.
  for (const auto& s : specs) {
    const bool is_matrix = s.rank == 2 && s.in_block && !s.control;
    EXPECT_EQ(s.role == ParamRole::matrix, is_matrix) << s.name();
  }
}

TEST(Init, FollowsTheReferenceDistributionsAndIsReproducible) {
  using L = ParamLayout<ModelConfig{}>;
  std::vector<float> p(L::total), p2(L::total);
  init_params<ModelConfig{}>(std::span<float>(p), 1337);
  init_params<ModelConfig{}>(std::span<float>(p2), 1337);
  EXPECT_EQ(p, p2);
  std::map<std::string, ParamSpec> by_name;
  for (const auto& s : L::specs()) by_name[s.name()] = s;
  auto stats = [&](const std::string& name) {
    const auto& s = by_name.at(name);
    double sum = 0, sq = 0, mx = 0;
    for (std::int64_t i = 0; i < s.numel(); ++i) {
      const double v = p[s.offset + i];
      sum += v;
      sq += v * v;
      mx = std::max(mx, std::fabs(v));
    }
    return std::tuple{sum / s.numel(), std::sqrt(sq / s.numel()), mx};
  };
  auto [emb_mean, emb_std, emb_max] = stats("tok_emb.weight");
  EXPECT_NEAR(emb_mean, 0.0, 1e-4);
  EXPECT_NEAR(emb_std, 0.005, 1e-4);
  auto [q_mean, q_rms, q_max] = stats("blocks.3.attn.c_q.weight");
  const double bound = 1.0 / std::sqrt(512.0);
  EXPECT_LE(q_max, bound);
  EXPECT_NEAR(q_rms, bound / std::sqrt(3.0), 2e-4);  // uniform(−b, b) has rms b/√3
  EXPECT_EQ(std::get<2>(stats("blocks.3.attn.proj.weight")), 0.0);
  EXPECT_EQ(std::get<2>(stats("blocks.3.mlp.proj.weight")), 0.0);
  const auto& mix = by_name.at("blocks.2.resid_mix");
  EXPECT_EQ(p[mix.offset], 1.0f);
  EXPECT_EQ(p[mix.offset + 512], 0.0f);
  EXPECT_EQ(p[by_name.at("blocks.2.attn.q_gain").offset], 1.5f);
  EXPECT_EQ(p[by_name.at("skip_weights").offset + 100], 1.0f);
  std::vector<float> other(L::total);
  init_params<ModelConfig{}>(std::span<float>(other), 1338);
  EXPECT_NE(p, other);
}

template <ModelConfig C>
void check_model_gradient() {
  using L = ParamLayout<C>;
  std::vector<double> params(L::total);
  init_params<C>(std::span<double>(params), 7);
  // Perturb every parameter so that no path is dead (zero-initialised projections included).
  const auto noise = testing::normal_vector(params.size(), 99, 0.3);
  for (std::size_t i = 0; i < params.size(); ++i) params[i] += noise[i];
  const int batch = 2, seq = 7;
  std::vector<std::int32_t> ids(batch * seq), targets(batch * seq);
  const RandomStream rng(5, 5);
  for (int i = 0; i < batch * seq; ++i) {
    ids[i] = static_cast<std::int32_t>(rng.below(2 * i, C.vocab_size));
    targets[i] = static_cast<std::int32_t>(rng.below(2 * i + 1, C.vocab_size));
  }
  cpu::Gpt<C, double> model;
  auto loss = [&] { return model.forward(params, ids, targets, batch, seq); };
  const double l0 = loss();
  EXPECT_TRUE(std::isfinite(l0));
  std::vector<double> grads(L::total, 0.0);
  model.backward(params, grads, 1.0);
  // Check a few coordinates of every tensor.
  for (const auto& s : L::specs()) {
    std::vector<double> sub(params.begin() + s.offset, params.begin() + s.offset + s.numel());
    std::vector<double> gsub(grads.begin() + s.offset, grads.begin() + s.offset + s.numel());
    auto f = [&] {
      std::copy(sub.begin(), sub.end(), params.begin() + s.offset);
      return loss();
    };
    testing::expect_gradient_matches(f, sub, gsub, s.name().c_str(), 6, 1e-6, 1e-5, 1e-9);
    std::copy(sub.begin(), sub.end(), params.begin() + s.offset);
  }
  // loss_scale multiplies and backward accumulates.
  loss();
  std::vector<double> g2(grads);
  model.backward(params, g2, 0.5);
  for (std::size_t i = 0; i < grads.size(); i += 97) EXPECT_NEAR(g2[i], 1.5 * grads[i], 1e-12 + 1e-9 * std::fabs(grads[i]));
}

TEST(GptCpu, WholeModelGradientMatchesFiniteDifferencesTied) { check_model_gradient<kTiny>(); }
TEST(GptCpu, WholeModelGradientMatchesFiniteDifferencesUntied) { check_model_gradient<kTinyUntied>(); }

TEST(GptCpu, RejectsBadShapesAndTokens) {
  std::vector<float> params(ParamLayout<kTiny>::total);
  init_params<kTiny>(std::span<float>(params), 1);
  cpu::Gpt<kTiny, float> model;
  std::vector<std::int32_t> ids(9, 1), targets(9, 1);
  EXPECT_THROW(model.forward(params, ids, targets, 1, 9), Error);  // longer than max_seq_len 8
  ids.resize(8);
  targets.resize(8);
  ids[3] = 32;
  EXPECT_THROW(model.forward(params, ids, targets, 1, 8), Error);
  ids[3] = 1;
  targets[0] = -1;
  EXPECT_THROW(model.forward(params, ids, targets, 1, 8), Error);
}

TEST(GptCpu, InitialLossIsNearLogVocab) {
  // With the reference init (zero output projections, tiny tied embedding) the logits start near 0.
  std::vector<float> params(ParamLayout<kTiny>::total);
  init_params<kTiny>(std::span<float>(params), 3);
  cpu::Gpt<kTiny, float> model;
  std::vector<std::int32_t> ids(16), targets(16);
  for (int i = 0; i < 16; ++i) {
    ids[i] = i % 32;
    targets[i] = (i * 7) % 32;
  }
  EXPECT_NEAR(model.forward(params, ids, targets, 2, 8), std::log(32.0), 0.01);
}

}  // namespace
}  // namespace pgolf
