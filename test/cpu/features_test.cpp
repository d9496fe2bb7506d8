// The records' feature kernels: forward against the formula, backward against finite differences.
#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.hpp"
#include "pgolf/ops/features.hpp"

namespace pgolf::cpu {
namespace {

using pgolf::testing::dot;
using pgolf::testing::expect_gradient_matches;
using pgolf::testing::normal_vector;

TEST(HashIndices, BigramMatchesTorchInt32Semantics) {
  const std::vector<std::int32_t> ids = {5, 1000, 3, 65535, 1, 7};
  std::vector<std::int32_t> out(6);
  bigram_hash_indices(out.data(), ids.data(), 2, 3, 4096);
  const int mod = 4095;
  auto h = [&](std::int64_t cur, std::int64_t prev) {
    // torch: int32 products wrap, XOR, then Python-style % (non-negative for a positive modulus).
    const auto a = static_cast<std::int32_t>(static_cast<std::uint32_t>(cur) * 36313u);
    const auto b = static_cast<std::int32_t>(static_cast<std::uint32_t>(prev) * 27191u);
    const std::int64_t x = a ^ b;
    return static_cast<std::int32_t>(((x % mod) + mod) % mod);
  };
  EXPECT_EQ(out[0], mod);
  EXPECT_EQ(out[1], h(1000, 5));
  EXPECT_EQ(out[2], h(3, 1000));
  EXPECT_EQ(out[3], mod);  // a new sequence starts
  EXPECT_EQ(out[4], h(1, 65535));  // 65535 · 27191 overflows int32: the wrap matters
  EXPECT_EQ(out[5], h(7, 1));
  for (auto v : out) EXPECT_TRUE(v >= 0 && v < 4096);
  // PR #436 (seed A) pads prev with 0: a sequence's first token hashes as (36313·cur) mod M, and
  // bucket M is never used; every other position is the canonical one.
  std::vector<std::int32_t> padded(6);
  bigram_hash_indices(padded.data(), ids.data(), 2, 3, 4096, BigramStart::zero_prev);
  EXPECT_EQ(padded[0], h(5, 0));
  EXPECT_EQ(padded[3], h(65535, 0));  // 65535 · 36313 wraps too
  EXPECT_NE(padded[3], mod);
  for (int i : {1, 2, 4, 5}) EXPECT_EQ(padded[i], out[i]) << i;
}

TEST(HashIndices, EngramMatchesTheRecordsFormulas) {
  const std::vector<std::int32_t> ids = {11, 22, 33};
  std::vector<std::int32_t> out(12);
  const int B = 8192;
  engram_indices(out.data(), ids.data(), 1, 3, B, 2);
  const std::int64_t cur = 33, prev = 22, pp = 11;
  EXPECT_EQ(out[8], (prev * 1009 + cur) % B);
  EXPECT_EQ(out[9], ((prev * 2719 + 314159) ^ (cur * 3137)) % B + B);
  EXPECT_EQ(out[10], ((pp * 36313) ^ (prev * 27191) ^ (cur * 4903)) % B + 2 * B);
  EXPECT_EQ(out[11], ((pp * 7919) ^ (prev * 4391) ^ (cur * 6151)) % B + 3 * B);
  EXPECT_EQ(out[0], 11 % B);  // prev = pp = 0 at the start
  EXPECT_EQ(out[6], ((0 * 36313) ^ (11 * 27191) ^ (22 * 4903)) % B + 2 * B);
}

std::vector<std::uint8_t> blocked_mask(std::int64_t batch, std::int64_t seq, const std::vector<int>& extra) {
  std::vector<std::uint8_t> m(batch * seq, 0);
  for (std::int64_t b = 0; b < batch; ++b) m[b * seq] = 1;
  for (int e : extra) m[e] = 1;
  return m;
}

TEST(SmearGate, ConstantGateFormsAndGradients) {
  constexpr int D = 5;
  const std::int64_t batch = 2, seq = 150;  // 300 rows: two reduction chunks
  const std::int64_t n = batch * seq;
  const auto blocked = blocked_mask(batch, seq, {7, 200});  // BOS tokens at 7 and 200
  for (bool post : {false, true}) {
    auto x = normal_vector(n * D, 1), w = normal_vector(D, 2);
    const auto gout = normal_vector(n * D, 3);
    std::vector<double> out(n * D);
    smear_forward<D>(out.data(), x.data(), w.data(), blocked.data(), n, post);
    for (std::int64_t r : {std::int64_t{0}, std::int64_t{7}, std::int64_t{8}, std::int64_t{150}, std::int64_t{151}}) {
      for (int i = 0; i < D; ++i) {
        const double g = 1 / (1 + std::exp(-w[i]));
        const double prev = blocked[r] ? 0.0 : x[(r - 1) * D + i];
        const double expect = post ? (1 - g) * x[r * D + i] + g * prev : g * x[r * D + i] + (1 - g) * prev;
        EXPECT_NEAR(out[r * D + i], expect, 1e-12);
      }
    }
    auto f = [&] {
      smear_forward<D>(out.data(), x.data(), w.data(), blocked.data(), n, post);
      return dot(out, gout);
    };
    std::vector<double> dx(n * D), dw(D, 0.0);
    smear_backward<D>(dx.data(), dw.data(), gout.data(), x.data(), w.data(), blocked.data(), n, post);
    expect_gradient_matches(f, x, dx, post ? "post-norm smear dx" : "pre-norm smear dx");
    expect_gradient_matches(f, w, dw, post ? "post-norm smear dw" : "pre-norm smear dw");
  }
}

TEST(SmearGate, InputGatedFormAndGradients) {
  constexpr int D = 6, Win = 3;
  const std::int64_t batch = 2, seq = 140, n = batch * seq;
  const auto blocked = blocked_mask(batch, seq, {20});
  auto x = normal_vector(n * D, 4), W = normal_vector(Win, 5), lambda = std::vector<double>{0.7};
  const auto gout = normal_vector(n * D, 6);
  std::vector<double> out(n * D), z(n);
  auto f = [&] {
    smear_input_forward<D, Win>(out.data(), z.data(), x.data(), W.data(), lambda.data(), blocked.data(), n);
    return dot(out, gout);
  };
  f();
  const std::int64_t r = 33;
  double zz = 0;
  for (int i = 0; i < Win; ++i) zz += W[i] * x[r * D + i];
  const double g = 0.7 / (1 + std::exp(-zz));
  EXPECT_NEAR(out[r * D + 2], x[r * D + 2] + g * x[(r - 1) * D + 2], 1e-12);
  EXPECT_EQ(out[20 * D + 1], x[20 * D + 1]) << "no smear into a BOS token";
  std::vector<double> dx(n * D), dW(Win, 0.0), dl(1, 0.0);
  smear_input_backward<D, Win>(dx.data(), dW.data(), dl.data(), gout.data(), x.data(), z.data(), W.data(), lambda.data(), blocked.data(), n);
  expect_gradient_matches(f, x, dx, "input smear dx");
  expect_gradient_matches(f, W, dW, "input smear dW");
  expect_gradient_matches(f, lambda, dl, "input smear dlambda");
}

TEST(GatedSkip, LerpAndGradients) {
  constexpr int D = 4;
  const std::int64_t n = 300;
  auto x = normal_vector(n * D, 7), s = normal_vector(n * D, 8), w = normal_vector(D, 9), g = normal_vector(D, 10);
  const auto gout = normal_vector(n * D, 11);
  std::vector<double> out(n * D);
  auto f = [&] {
    gated_skip_forward<D>(out.data(), x.data(), s.data(), w.data(), g.data(), n);
    return dot(out, gout);
  };
  f();
  const double sg = 1 / (1 + std::exp(-g[1]));
  EXPECT_NEAR(out[5 * D + 1], w[1] * s[5 * D + 1] + sg * (x[5 * D + 1] - w[1] * s[5 * D + 1]), 1e-12);
  std::vector<double> dx(n * D), ds(n * D, 0.0), dw(D, 0.0), dg(D, 0.0);
  gated_skip_backward<D>(dx.data(), ds.data(), dw.data(), dg.data(), gout.data(), x.data(), s.data(), w.data(), g.data(), n);
  expect_gradient_matches(f, x, dx, "gated skip dx");
  expect_gradient_matches(f, s, ds, "gated skip ds");
  expect_gradient_matches(f, w, dw, "gated skip dw");
  expect_gradient_matches(f, g, dg, "gated skip dg");
}

TEST(Xsa, RemovesTheOwnValueComponentAndGradients) {
  constexpr int H = 4, Hkv = 2, Hd = 5;
  const std::int64_t n = 7;
  auto y = normal_vector(n * H * Hd, 12), v = normal_vector(n * Hkv * Hd, 13);
  const auto gout = normal_vector(y.size(), 14);
  std::vector<double> out(y.size());
  xsa_forward<H, Hkv, Hd>(out.data(), y.data(), v.data(), n);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int h = 0; h < H; ++h) {  // the result is orthogonal to its KV head's value
      double d = 0;
      for (int i = 0; i < Hd; ++i) d += out[(r * H + h) * Hd + i] * v[(r * Hkv + h / 2) * Hd + i];
      EXPECT_NEAR(d, 0.0, 1e-12);
    }
  }
  auto f = [&] {
    xsa_forward<H, Hkv, Hd>(out.data(), y.data(), v.data(), n);
    return dot(out, gout);
  };
  std::vector<double> dy(y.size()), dv(v.size(), 0.0);
  xsa_backward<H, Hkv, Hd>(dy.data(), dv.data(), gout.data(), y.data(), v.data(), n);
  expect_gradient_matches(f, y, dy, "xsa dy");
  expect_gradient_matches(f, v, dv, "xsa dv");
}

template <int Win>
void check_gate(GateForm form, bool with_bias, double scale, const char* what) {
  constexpr int D = 8, Heads = 2, Hd = 3;
  const std::int64_t n = 260;
  auto h = normal_vector(n * D, 15), W = normal_vector(Heads * Win, 16), b = normal_vector(Heads, 17), y = normal_vector(n * Heads * Hd, 18);
  const auto gout = normal_vector(y.size(), 19);
  std::vector<double> out(y.size()), z(n * Heads);
  auto f = [&] {
    out = y;
    head_gate_forward<D, Heads, Hd, Win>(out.data(), z.data(), h.data(), W.data(), with_bias ? b.data() : nullptr, scale, form, n);
    return dot(out, gout);
  };
  f();
  double zz = with_bias ? b[1] : 0.0;
  for (int i = 0; i < Win; ++i) zz += W[Win + i] * h[3 * D + i];
  const double g = (form == GateForm::twice_sigmoid ? 2.0 : 1.0) / (1 + std::exp(-scale * zz));
  EXPECT_NEAR(out[(3 * Heads + 1) * Hd + 2], g * y[(3 * Heads + 1) * Hd + 2], 1e-12) << what;
  std::vector<double> dy(gout), dh(n * D, 0.0), dW(Heads * Win, 0.0), db(Heads, 0.0);
  head_gate_backward<D, Heads, Hd, Win>(dy.data(), dh.data(), dW.data(), with_bias ? db.data() : nullptr, y.data(), z.data(), h.data(), W.data(),
                                        scale, form, n);
  expect_gradient_matches(f, y, dy, what);
  expect_gradient_matches(f, h, dh, what);
  expect_gradient_matches(f, W, dW, what);
  if (with_bias) expect_gradient_matches(f, b, db, what);
}

TEST(AttentionGates, EveryVariantAndItsGradients) {
  check_gate<8>(GateForm::sigmoid, true, 1.0, "headwise_bias");
  check_gate<8>(GateForm::sigmoid, false, 1.0, "full");
  check_gate<3>(GateForm::twice_sigmoid, false, 1.0, "output_gate");
  check_gate<3>(GateForm::sigmoid, false, 0.5, "sparse");
}

TEST(LeakyRelu2, FormulaAndGradient) {
  const std::int64_t n = 1000;
  auto u = normal_vector(n, 20);
  const auto gout = normal_vector(n, 21);
  std::vector<double> y(n);
  leaky_relu2_forward(y.data(), u.data(), n, 0.3);
  for (std::int64_t i = 0; i < n; ++i) EXPECT_NEAR(y[i], u[i] > 0 ? u[i] * u[i] : 0.09 * u[i] * u[i], 1e-12);
  auto f = [&] {
    leaky_relu2_forward(y.data(), u.data(), n, 0.3);
    return dot(y, gout);
  };
  std::vector<double> du(n);
  leaky_relu2_backward(du.data(), gout.data(), u.data(), n, 0.3);
  expect_gradient_matches(f, u, du, "leaky relu² du");
}

}  // namespace
}  // namespace pgolf::cpu
