// Optimizers and schedules against direct restatements of the reference's formulas.
#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.hpp"
#include "pgolf/model/init.hpp"
#include "pgolf/optim/newton_schulz.hpp"
#include "pgolf/optim/optimizer.hpp"
#include "pgolf/optim/schedule.hpp"

namespace pgolf {
namespace {

// Singular values of X via the eigenvalues of X Xᵀ (Jacobi rotations; small matrices only).
std::vector<double> singular_values(const std::vector<float>& X, int rows, int cols) {
  const int m = std::min(rows, cols);
  std::vector<double> A(m * m, 0.0);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < m; ++j) {
      double s = 0;
      for (int k = 0; k < std::max(rows, cols); ++k) {
        const double xi = rows <= cols ? X[i * cols + k] : X[k * cols + i];
        const double xj = rows <= cols ? X[j * cols + k] : X[k * cols + j];
        s += xi * xj;
      }
      A[i * m + j] = s;
    }
  }
  for (int sweep = 0; sweep < 50; ++sweep) {
    for (int p = 0; p < m; ++p) {
      for (int q = p + 1; q < m; ++q) {
        const double apq = A[p * m + q];
        if (std::fabs(apq) < 1e-15) continue;
        const double theta = (A[q * m + q] - A[p * m + p]) / (2 * apq);
        const double t = (theta >= 0 ? 1 : -1) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < m; ++k) {
          const double akp = A[k * m + p], akq = A[k * m + q];
          A[k * m + p] = c * akp - s * akq;
          A[k * m + q] = s * akp + c * akq;
        }
        for (int k = 0; k < m; ++k) {
          const double apk = A[p * m + k], aqk = A[q * m + k];
          A[p * m + k] = c * apk - s * aqk;
          A[q * m + k] = s * apk + c * aqk;
        }
      }
    }
  }
  std::vector<double> sv(m);
  for (int i = 0; i < m; ++i) sv[i] = std::sqrt(std::max(0.0, A[i * m + i]));
  return sv;
}

TEST(NewtonSchulz, OrthogonalisesWideAndTallMatrices) {
  for (auto [rows, cols] : {std::pair{24, 40}, {40, 24}, {32, 32}}) {
    const auto g = testing::normal_vector(rows * cols, 50);
    std::vector<float> G(g.begin(), g.end()), O(G.size());
    for (NsPrecision prec : {NsPrecision::fp32, NsPrecision::bf16}) {
      newton_schulz5(O.data(), G.data(), rows, cols, 5, prec);
      // The quintic drives singular values into a band around 1 (about [0.7, 1.2]), it does not
      // converge to exactly 1; the very smallest ones of a square Gaussian matrix (near 0) need
      // more than 5 steps, so 90% must be in the band and none above it.
      const auto sv = singular_values(O, rows, cols);
      int in_band = 0;
      for (double s : sv) {
        EXPECT_LT(s, 1.25) << rows << "x" << cols;
        in_band += s > 0.6;
      }
      EXPECT_GE(in_band, static_cast<int>(0.9 * sv.size())) << rows << "x" << cols;
    }
  }
}

TEST(NewtonSchulz, OneStepEqualsTheQuinticFormula) {
  const int rows = 3, cols = 5;
  const auto g = testing::normal_vector(rows * cols, 51);
  std::vector<float> G(g.begin(), g.end()), O(G.size());
  newton_schulz5(O.data(), G.data(), rows, cols, 1, NsPrecision::fp32);
  double norm = 0;
  for (double v : g) norm += v * v;
  norm = std::sqrt(norm) + 1e-7;
  std::vector<double> X(g);
  for (auto& v : X) v /= norm;
  double A[3][3] = {}, B[3][3] = {};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < cols; ++k) A[i][j] += X[i * cols + k] * X[j * cols + k];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      double aa = 0;
      for (int k = 0; k < 3; ++k) aa += A[i][k] * A[k][j];
      B[i][j] = -4.7750 * A[i][j] + 2.0315 * aa;
    }
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < cols; ++j) {
      double bx = 0;
      for (int k = 0; k < 3; ++k) bx += B[i][k] * X[k * cols + j];
      EXPECT_NEAR(O[i * cols + j], 3.4445 * X[i * cols + j] + bx, 2e-6);
    }
}

TEST(Schedule, LrMultiplierByIterationsAndByWallclock) {
  ScheduleOptions s;
  s.iterations = 100;
  s.warmdown_iters = 20;
  s.max_wallclock_seconds = 0;
  EXPECT_EQ(lr_multiplier(s, 0, 0), 1.0);
  EXPECT_EQ(lr_multiplier(s, 79, 0), 1.0);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 80, 0), 1.0);  // (100 − 80) / 20
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 90, 0), 0.5);
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 99, 0), 0.05);
  s.max_wallclock_seconds = 10;  // 10,000 ms cap, warmdown 20 steps
  // At step 100 after 9,000 ms: 90 ms/step, warmdown 1,800 ms, remaining 1,000 ms → 1000/1800.
  EXPECT_DOUBLE_EQ(lr_multiplier(s, 100, 9000), 1000.0 / 1800.0);
  EXPECT_EQ(lr_multiplier(s, 10, 900), 1.0);
  EXPECT_EQ(lr_multiplier(s, 200, 12000), 0.0);
  s.warmdown_iters = 0;
  EXPECT_EQ(lr_multiplier(s, 99, 9999), 1.0);
}

TEST(Schedule, MuonMomentumWarmup) {
  ScheduleOptions s;
  EXPECT_DOUBLE_EQ(muon_momentum_at(s, 0), 0.85);
  EXPECT_DOUBLE_EQ(muon_momentum_at(s, 250), 0.90);
  EXPECT_DOUBLE_EQ(muon_momentum_at(s, 500), 0.95);
  EXPECT_DOUBLE_EQ(muon_momentum_at(s, 5000), 0.95);
}

constexpr ModelConfig kOptTiny = [] {
  ModelConfig c;
  c.vocab_size = 16;
  c.num_layers = 2;
  c.model_dim = 8;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.max_seq_len = 4;
  return c;
}();

// The same with a BigramHash trained entirely in the embedding's Adam group (seed A's record):
// its projection, a matrix, goes through Adam at TIED_EMBED_LR instead of Muon.
constexpr ModelConfig kOptTinyHashInEmbeddingGroup = [] {
  ModelConfig c = kOptTiny;
  c.features.hash_embedding = HashEmbedding::bigram;
  c.features.hash_buckets = 9;
  c.features.hash_dim = 4;
  c.init.hash_table_init_std = 0.01f;
  c.groups.hash_embedding = HashEmbeddingGroups::embedding_adam;
  return c;
}();

template <ModelConfig C>
void expect_adam_and_muon_by_role() {
  using L = ParamLayout<C>;
  OptimizerOptions opt;
  opt.ns_precision = NsPrecision::fp32;
  Optimizer<C> o(opt);
  std::vector<float> p(L::total), p0;
  init_params<C>(std::span<float>(p), 11);
  p0 = p;
  std::vector<std::vector<float>> grads;
  for (int t = 0; t < 3; ++t) {
    const auto g = testing::normal_vector(L::total, 60 + t);
    grads.emplace_back(g.begin(), g.end());
  }
  const double mus[3] = {0.85, 0.86, 0.87}, muls[3] = {1.0, 0.5, 0.25};
  for (int t = 0; t < 3; ++t) {
    std::vector<float> g = grads[t];
    o.step(p, g, muls[t], mus[t]);
  }
  // Replay every tensor by hand in double.
  for (const auto& s : L::specs()) {
    const std::int64_t n = s.numel();
    std::vector<double> w(p0.begin() + s.offset, p0.begin() + s.offset + n), m(n, 0), v(n, 0), buf(n, 0);
    for (int t = 0; t < 3; ++t) {
      const double lr = o.base_lr(s.role) * muls[t];
      const float* g = grads[t].data() + s.offset;
      if (s.role == ParamRole::matrix) {
        std::vector<float> nest(n), upd(n);
        for (std::int64_t i = 0; i < n; ++i) {
          buf[i] = mus[t] * buf[i] + g[i];
          nest[i] = static_cast<float>(g[i] + mus[t] * buf[i]);
        }
        newton_schulz5(upd.data(), nest.data(), s.shape[0], s.shape[1], 5, NsPrecision::fp32);
        const double aspect = std::sqrt(std::max(1.0, static_cast<double>(s.shape[0]) / s.shape[1]));
        for (std::int64_t i = 0; i < n; ++i) w[i] -= lr * aspect * upd[i];
      } else {
        const int step = t + 1;
        for (std::int64_t i = 0; i < n; ++i) {
          m[i] = 0.9 * m[i] + 0.1 * g[i];
          v[i] = 0.95 * v[i] + 0.05 * g[i] * g[i];
          const double mhat_lr = lr / (1 - std::pow(0.9, step));
          const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(0.95, step)) + 1e-8;
          w[i] -= mhat_lr * m[i] / denom;
        }
      }
    }
    for (std::int64_t i = 0; i < n; ++i) ASSERT_NEAR(p[s.offset + i], w[i], 2e-6) << s.name() << "[" << i << "]";
  }
}

TEST(Optimizer, AdamMatchesTorchAdamFormulaAndMuonMatchesItsDefinition) { expect_adam_and_muon_by_role<kOptTiny>(); }

TEST(Optimizer, AHashEmbeddingInTheEmbeddingGroupTrainsItsProjectionWithAdam) {
  using L = ParamLayout<kOptTinyHashInEmbeddingGroup>;
  static_assert(L::has(GlobalParam::hash_proj));
  for (const ParamSpec& s : L::specs()) {
    if (!s.in_block && s.global == GlobalParam::hash_proj) {
      EXPECT_EQ(s.role, ParamRole::embedding);
    }
  }
  expect_adam_and_muon_by_role<kOptTinyHashInEmbeddingGroup>();
}

TEST(Optimizer, GradientClippingScalesToTheMaxNorm) {
  using L = ParamLayout<kOptTiny>;
  OptimizerOptions opt;
  opt.grad_clip_norm = 0.3;
  Optimizer<kOptTiny> o(opt);
  const auto gd = testing::normal_vector(L::total, 70);
  std::vector<float> g(gd.begin(), gd.end()), p(L::total, 0.0f);
  const double before = o.grad_norm(g);
  EXPECT_GT(before, 0.3);
  const double reported = o.step(p, g, 1.0, 0.95);
  EXPECT_DOUBLE_EQ(reported, before);
  EXPECT_NEAR(o.grad_norm(g), 0.3, 1e-6);
}

TEST(Optimizer, DecoupledWeightDecayShrinksParameters) {
  using L = ParamLayout<kOptTiny>;
  OptimizerOptions opt;
  opt.muon_weight_decay = 0.5;
  opt.adam_weight_decay = 0.5;
  opt.matrix_lr = opt.scalar_lr = opt.tied_embed_lr = 0.1;
  Optimizer<kOptTiny> o(opt);
  std::vector<float> p(L::total, 2.0f), g(L::total, 0.0f);
  o.step(p, g, 1.0, 0.95);
  // With a zero gradient the update is 0 (Adam: m = 0; Muon: NS(0) = 0) and only decay acts.
  for (float v : p) EXPECT_FLOAT_EQ(v, 2.0f * (1.0f - 0.1f * 0.5f));
}

}  // namespace
}  // namespace pgolf
