// Every CPU op: forward against a direct restatement of its formula, backward against finite
// differences in double precision, and the float GEMM against the double reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <vector>

#include "gradcheck.hpp"
#include "pgolf/ops/attention.hpp"
#include "pgolf/ops/channel_ops.hpp"
#include "pgolf/ops/embedding.hpp"
#include "pgolf/ops/gemm.hpp"
#include "pgolf/ops/rmsnorm.hpp"
#include "pgolf/ops/rope.hpp"
#include "pgolf/ops/softcap_cross_entropy.hpp"

namespace pgolf::cpu {
namespace {

using pgolf::testing::dot;
using pgolf::testing::expect_gradient_matches;
using pgolf::testing::normal_vector;

TEST(Gemm, FloatKernelMatchesDoubleReferenceForEveryTransposeAndEdgeShape) {
  for (Trans ta : {Trans::no, Trans::yes}) {
    for (Trans tb : {Trans::no, Trans::yes}) {
      for (auto [M, N, K] : {std::tuple{1, 1, 1}, {7, 17, 5}, {97, 263, 300}, {6, 16, 256}, {130, 40, 513}}) {
        const auto A = normal_vector(static_cast<std::size_t>(M) * K, 1), B = normal_vector(static_cast<std::size_t>(K) * N, 2);
        const auto C0 = normal_vector(static_cast<std::size_t>(M) * N, 3);
        std::vector<float> Af(A.begin(), A.end()), Bf(B.begin(), B.end());
        const std::int64_t lda = ta == Trans::no ? K : M, ldb = tb == Trans::no ? N : K;
        for (bool acc : {false, true}) {
          std::vector<double> Cd(C0);
          std::vector<float> Cf(C0.begin(), C0.end());
          gemm<double>(ta, tb, M, N, K, A.data(), lda, B.data(), ldb, Cd.data(), N, acc);
          gemm<float>(ta, tb, M, N, K, Af.data(), lda, Bf.data(), ldb, Cf.data(), N, acc);
          for (std::size_t i = 0; i < Cd.size(); ++i) {
            ASSERT_NEAR(Cf[i], Cd[i], 2e-5 * std::sqrt(static_cast<double>(K)) * 4 + 1e-5)
                << "M=" << M << " N=" << N << " K=" << K << " ta=" << int(ta) << " tb=" << int(tb) << " acc=" << acc;
          }
        }
      }
    }
  }
}

TEST(Gemm, DoubleReferenceIsTheTripleLoop) {
  const int M = 3, N = 4, K = 5;
  const auto A = normal_vector(M * K, 4), B = normal_vector(K * N, 5);
  std::vector<double> C(M * N);
  gemm<double>(Trans::no, Trans::no, M, N, K, A.data(), K, B.data(), N, C.data(), N, false);
  for (int i = 0; i < M; ++i) {
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += A[i * K + k] * B[k * N + j];
      EXPECT_DOUBLE_EQ(C[i * N + j], s);
    }
  }
}

TEST(Gemm, ResultDoesNotDependOnTheThreadCount) {
  const int M = 200, N = 300, K = 700;
  const auto A = normal_vector(M * K, 6), B = normal_vector(K * N, 7);
  std::vector<float> Af(A.begin(), A.end()), Bf(B.begin(), B.end()), C1(M * N), C2(M * N);
  gemm<float>(Trans::yes, Trans::no, M, N, K, Af.data(), M, Bf.data(), N, C1.data(), N, false);
  // Same call again: tiles are claimed dynamically, so a different thread may take each tile.
  gemm<float>(Trans::yes, Trans::no, M, N, K, Af.data(), M, Bf.data(), N, C2.data(), N, false);
  EXPECT_EQ(C1, C2);
}

TEST(RmsNorm, ForwardAndBackward) {
  constexpr int D = 12;
  const std::int64_t n = 5;
  auto x = normal_vector(n * D, 10);
  const auto w = normal_vector(n * D, 11);
  std::vector<double> y(n * D), rstd(n);
  auto f = [&] {
    rmsnorm_forward<D>(y.data(), rstd.data(), x.data(), n);
    return dot(y, w);
  };
  f();
  for (std::int64_t r = 0; r < n; ++r) {
    double ms = 0;
    for (int i = 0; i < D; ++i) ms += x[r * D + i] * x[r * D + i] / D;
    for (int i = 0; i < D; ++i) EXPECT_NEAR(y[r * D + i], x[r * D + i] / std::sqrt(ms + kRmsNormEps), 1e-12);
  }
  std::vector<double> dx(n * D, 0.0);
  rmsnorm_backward<D>(dx.data(), w.data(), x.data(), rstd.data(), n, false);
  expect_gradient_matches(f, x, dx, "rmsnorm dx");
  // In place and accumulate variants agree (recompute rstd: the check left it at a perturbed x).
  f();
  std::vector<double> g(w), acc(n * D, 1.0);
  rmsnorm_backward<D>(g.data(), g.data(), x.data(), rstd.data(), n, false);
  rmsnorm_backward<D>(acc.data(), w.data(), x.data(), rstd.data(), n, true);
  for (std::size_t i = 0; i < g.size(); ++i) {
    EXPECT_DOUBLE_EQ(g[i], dx[i]);
    EXPECT_DOUBLE_EQ(acc[i], dx[i] + 1.0);
  }
}

TEST(Embedding, ForwardGathersAndBackwardScattersDeterministically) {
  constexpr int D = 4;
  const int V = 6;
  const std::vector<std::int32_t> ids = {3, 1, 3, 5, 0, 3};
  const auto table = normal_vector(V * D, 12);
  std::vector<double> out(ids.size() * D);
  embedding_forward<D>(out.data(), table.data(), ids.data(), static_cast<std::int64_t>(ids.size()), V);
  for (std::size_t r = 0; r < ids.size(); ++r) {
    for (int i = 0; i < D; ++i) EXPECT_EQ(out[r * D + i], table[ids[r] * D + i]);
  }
  const auto g = normal_vector(ids.size() * D, 13);
  std::vector<double> dtable(V * D, 0.0);
  embedding_backward<D>(dtable.data(), g.data(), ids.data(), static_cast<std::int64_t>(ids.size()), V);
  for (int v = 0; v < V; ++v) {
    for (int i = 0; i < D; ++i) {
      double s = 0;
      for (std::size_t r = 0; r < ids.size(); ++r) if (ids[r] == v) s += g[r * D + i];
      EXPECT_DOUBLE_EQ(dtable[v * D + i], s);
    }
  }
  const std::vector<std::int32_t> bad = {0, 6};
  EXPECT_THROW(embedding_forward<D>(out.data(), table.data(), bad.data(), 2, V), Error);
}

TEST(Rope, MatchesTheHalfSplitFormulaAndBackwardIsTheTranspose) {
  constexpr int Hd = 8;
  const int heads = 2, batch = 2, seq = 5;
  const RopeTables<double> tab(seq, Hd, 10000.0);
  auto x = normal_vector(batch * seq * heads * Hd, 14);
  const auto x_orig = x;
  rope_forward<Hd, Hd>(x.data(), tab, batch, seq, heads);
  for (int b = 0; b < batch; ++b) {
    for (int t = 0; t < seq; ++t) {
      for (int h = 0; h < heads; ++h) {
        const std::size_t base = ((b * seq + t) * heads + h) * Hd;
        for (int j = 0; j < Hd / 2; ++j) {
          const double theta = t * std::pow(10000.0, -2.0 * j / Hd);
          const double a = x_orig[base + j], c = x_orig[base + j + Hd / 2];
          EXPECT_NEAR(x[base + j], a * std::cos(theta) + c * std::sin(theta), 1e-12);
          EXPECT_NEAR(x[base + j + Hd / 2], -a * std::sin(theta) + c * std::cos(theta), 1e-12);
        }
      }
    }
  }
  const auto w = normal_vector(x.size(), 15);
  std::vector<double> xin(x_orig), y;
  auto f = [&] {
    y = xin;
    rope_forward<Hd, Hd>(y.data(), tab, batch, seq, heads);
    return dot(y, w);
  };
  std::vector<double> g(w);
  rope_backward<Hd, Hd>(g.data(), tab, batch, seq, heads);
  expect_gradient_matches(f, xin, g, "rope dx");
}

TEST(Rope, PartialRotationPassesTheRestThrough) {
  constexpr int Hd = 8, Rd = 4;
  const RopeTables<double> tab(3, Rd, 10000.0);
  auto x = normal_vector(3 * Hd, 16);
  const auto orig = x;
  rope_forward<Hd, Rd>(x.data(), tab, 1, 3, 1);
  for (int t = 0; t < 3; ++t) {
    for (int i = Rd; i < Hd; ++i) EXPECT_EQ(x[t * Hd + i], orig[t * Hd + i]);
  }
}

TEST(ChannelOps, ResidMixScaledAddHeadGainRelu2Gradients) {
  constexpr int D = 6;
  const std::int64_t n = 300;  // spans two reduction chunks
  auto x = normal_vector(n * D, 20), x0 = normal_vector(n * D, 21), mix = normal_vector(2 * D, 22);
  const auto w = normal_vector(n * D, 23);
  std::vector<double> out(n * D);
  auto f_mix = [&] {
    resid_mix_forward<D>(out.data(), x.data(), x0.data(), mix.data(), n);
    return dot(out, w);
  };
  f_mix();
  std::vector<double> dx(n * D), dx0(n * D, 0.0), dmix(2 * D, 0.0);
  resid_mix_backward<D>(dx.data(), dx0.data(), dmix.data(), w.data(), x.data(), x0.data(), mix.data(), n);
  expect_gradient_matches(f_mix, x, dx, "resid_mix dx");
  expect_gradient_matches(f_mix, x0, dx0, "resid_mix dx0");
  expect_gradient_matches(f_mix, mix, dmix, "resid_mix dmix");

  auto a = normal_vector(n * D, 24), scale = normal_vector(D, 25);
  auto f_add = [&] {
    scaled_add_forward<D>(out.data(), x.data(), a.data(), scale.data(), n);
    return dot(out, w);
  };
  std::vector<double> da(n * D), dscale(D, 0.0);
  scaled_add_backward<D>(da.data(), dscale.data(), w.data(), a.data(), scale.data(), n, false);
  expect_gradient_matches(f_add, a, da, "scaled_add da");
  expect_gradient_matches(f_add, scale, dscale, "scaled_add dscale");

  constexpr int H = 3, Hd = 2;
  auto q = normal_vector(n * H * Hd, 26), gain = normal_vector(H, 27);
  std::vector<double> qo;
  auto f_gain = [&] {
    qo = q;
    head_gain_forward<H, Hd>(qo.data(), gain.data(), n);
    return dot(qo, w);
  };
  std::vector<double> dq(w), dgain(H, 0.0);
  head_gain_backward<H, Hd>(dq.data(), dgain.data(), q.data(), gain.data(), n);
  expect_gradient_matches(f_gain, q, dq, "head_gain dq");
  expect_gradient_matches(f_gain, gain, dgain, "head_gain dgain");

  auto u = normal_vector(n * D, 28);
  auto f_relu = [&] {
    relu2_forward(out.data(), u.data(), n * D);
    return dot(out, w);
  };
  std::vector<double> du(n * D);
  relu2_backward(du.data(), w.data(), u.data(), n * D);
  expect_gradient_matches(f_relu, u, du, "relu2 du");
}

TEST(Attention, ForwardMatchesNaiveSoftmaxAndBackwardMatchesFiniteDifferences) {
  constexpr int H = 4, Hkv = 2, Hd = 4;
  const int batch = 2, seq = 6;
  auto q = normal_vector(batch * seq * H * Hd, 30), k = normal_vector(batch * seq * Hkv * Hd, 31),
       v = normal_vector(batch * seq * Hkv * Hd, 32);
  std::vector<double> y(q.size()), lse(batch * H * seq);
  attention_forward<H, Hkv, Hd>(y.data(), lse.data(), q.data(), k.data(), v.data(), batch, seq);
  // Naive: full score matrix with the causal mask.
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < H; ++h) {
      const int kh = h / (H / Hkv);
      for (int i = 0; i < seq; ++i) {
        std::vector<double> p(i + 1);
        double z = 0;
        for (int j = 0; j <= i; ++j) {
          double s = 0;
          for (int d = 0; d < Hd; ++d) s += q[((b * seq + i) * H + h) * Hd + d] * k[((b * seq + j) * Hkv + kh) * Hd + d];
          p[j] = std::exp(s / std::sqrt(static_cast<double>(Hd)));
          z += p[j];
        }
        for (int d = 0; d < Hd; ++d) {
          double o = 0;
          for (int j = 0; j <= i; ++j) o += p[j] / z * v[((b * seq + j) * Hkv + kh) * Hd + d];
          EXPECT_NEAR(y[((b * seq + i) * H + h) * Hd + d], o, 1e-12);
        }
      }
    }
  }
  const auto w = normal_vector(y.size(), 33);
  auto f = [&] {
    attention_forward<H, Hkv, Hd>(y.data(), lse.data(), q.data(), k.data(), v.data(), batch, seq);
    return dot(y, w);
  };
  f();
  std::vector<double> dq(q.size()), dk(k.size()), dv(v.size());
  attention_backward<H, Hkv, Hd>(dq.data(), dk.data(), dv.data(), w.data(), y.data(), lse.data(), q.data(), k.data(), v.data(),
                                 batch, seq);
  expect_gradient_matches(f, q, dq, "attention dq");
  expect_gradient_matches(f, k, dk, "attention dk");
  expect_gradient_matches(f, v, dv, "attention dv");
}

TEST(SoftcapCrossEntropy, ForwardAndBackward) {
  constexpr int V = 7;
  const std::int64_t n = 4;
  const double cap = 3.0;  // small so that tanh is far from linear
  auto z = normal_vector(n * V, 40, 4.0);
  const std::vector<std::int32_t> y = {0, 6, 3, 3};
  std::vector<double> loss(n), lse(n), capped(z);
  softcap_cross_entropy_forward<V>(loss.data(), lse.data(), capped.data(), y.data(), n, cap);
  for (std::int64_t r = 0; r < n; ++r) {
    double s = 0;
    for (int i = 0; i < V; ++i) {
      EXPECT_NEAR(capped[r * V + i], cap * std::tanh(z[r * V + i] / cap), 1e-12);
      s += std::exp(cap * std::tanh(z[r * V + i] / cap));
    }
    EXPECT_NEAR(loss[r], std::log(s) - cap * std::tanh(z[r * V + y[r]] / cap), 1e-12);
  }
  const std::vector<double> dl = {0.5, -1.0, 2.0, 0.25};
  auto f = [&] {
    capped = z;
    softcap_cross_entropy_forward<V>(loss.data(), lse.data(), capped.data(), y.data(), n, cap);
    return dot(loss, dl);
  };
  f();
  std::vector<double> dz(n * V);
  softcap_cross_entropy_backward<V>(dz.data(), capped.data(), lse.data(), y.data(), dl.data(), n, cap);
  expect_gradient_matches(f, z, dz, "softcap ce dz");
  const std::vector<std::int32_t> bad = {0, 7, 1, 1};
  capped = z;
  EXPECT_THROW(softcap_cross_entropy_forward<V>(loss.data(), lse.data(), capped.data(), bad.data(), n, cap), Error);
}

// The reference's autocast rounding of the softcap (z/c, tanh, c·tanh each rounded to bf16), over
// every bf16 value z in [−256, 256]: the results are bf16 values, odd in z, and within the bound
// the three roundings allow. Each rounding is ≤ u = 2^-8 relative; the one of t = z/c reaches th
// through tanh' = 1 − th², and |t|·(1 − tanh² t) ≤ |tanh t| (2x ≤ sinh 2x), so |Δth| ≤ 2u·|th|
// and |Δz'| ≤ c·|Δth| + u·|z'| ≤ 3u·|z'| to first order; 3.05u leaves room for the second-order
// terms (3u², …). The largest error over these values is 2.14u, at z = 9.
TEST(SoftcapAutocast, RoundsLikeTheReferenceWithinThreeBf16Roundings) {
  constexpr float kCap = 30.0f;  // LOGIT_SOFTCAP
  constexpr double kUnitRoundoff = 1.0 / 256;  // bf16: 8 significant bits
  int checked = 0;
  for (std::uint32_t bits = 0; bits < 0x7f80u; ++bits) {  // every finite non-negative bf16
    const float z = bf16{static_cast<std::uint16_t>(bits)}.to_float();
    if (z > 256.0f) break;
    const AutocastSoftcap pos = autocast_softcap(z, kCap), neg = autocast_softcap(-z, kCap);
    ASSERT_EQ(pos.capped, round_to_bf16(pos.capped)) << "z = " << z;
    ASSERT_EQ(pos.th, round_to_bf16(pos.th)) << "z = " << z;
    ASSERT_EQ(neg.capped, -pos.capped) << "z = " << z;
    const double exact = kCap * std::tanh(static_cast<double>(z) / kCap);
    // (+1e-37: below the normal range bf16's absolute spacing, ≤ 2^-133 before the ×c, is what is left)
    ASSERT_LE(std::abs(pos.capped - exact), 3.05 * kUnitRoundoff * std::abs(exact) + 1e-37) << "z = " << z;
    ++checked;
  }
  EXPECT_GT(checked, 17000);  // all bf16 values in [0, 256]: 134 binades of 128 values, + zero and subnormals
}

// The autocast head against the fp32 oracle on the same bf16 logits: the loss moves by at most
// 2·max|Δz'| (lse and z'_y each by ≤ max|Δz'|), and the gradient stays within 4u = 2^-6 in L2
// over the batch; its entries are bf16 values. The gradient is four bf16 roundings deep (≤ u = 2^-8
// each) on top of p = exp(z' − lse), whose z' is up to 3u·|z'| off (up to ~0.1 absolute near the
// cap: up to ~10% in p). No entry-wise bound is useful; errors of random sign add in quadrature, and
// these rows give 0.93% (2.4u), under the 4u asserted. Rows: normal logits of std 8 (|z| up to ~40, past the softcap's knee), V = 1024.
TEST(SoftcapAutocast, ForwardAndBackwardCloseToTheFp32Oracle) {
  constexpr int V = 1024;
  constexpr std::int64_t n = 64;
  constexpr float kCap = 30.0f;
  const auto z64 = normal_vector(static_cast<std::size_t>(n * V), 77, 8.0);
  std::vector<float> z(z64.size());
  for (std::size_t i = 0; i < z.size(); ++i) z[i] = round_to_bf16(static_cast<float>(z64[i]));
  std::vector<std::int32_t> y(n);
  for (std::int64_t r = 0; r < n; ++r) y[r] = static_cast<std::int32_t>((r * 397 + 11) % V);
  const std::vector<float> dloss(n, 1.0f / static_cast<float>(n));  // the mean over the batch

  std::vector<float> loss_o(n), lse_o(n), capped_o(z), loss_a(n), lse_a(n), capped_a(z);
  softcap_cross_entropy_forward<V>(loss_o.data(), lse_o.data(), capped_o.data(), y.data(), n, kCap);
  softcap_cross_entropy_forward_autocast<V>(loss_a.data(), lse_a.data(), capped_a.data(), y.data(), n, kCap);
  for (std::int64_t r = 0; r < n; ++r) {
    float max_dz = 0;
    for (int i = 0; i < V; ++i) max_dz = std::max(max_dz, std::abs(capped_a[r * V + i] - capped_o[r * V + i]));
    EXPECT_GT(max_dz, 0.0f) << "row " << r;  // the roundings are there
    EXPECT_LE(std::abs(loss_a[r] - loss_o[r]), 2 * max_dz + 1e-5f) << "row " << r;
  }

  std::vector<float> dz_o(z.size()), dz_a(z.size());
  softcap_cross_entropy_backward<V>(dz_o.data(), capped_o.data(), lse_o.data(), y.data(), dloss.data(), n, kCap);
  softcap_cross_entropy_backward_autocast<V>(dz_a.data(), z.data(), capped_a.data(), lse_a.data(), y.data(), dloss.data(), n, kCap);
  double diff2 = 0, ref2 = 0;
  for (std::size_t i = 0; i < z.size(); ++i) {
    ASSERT_EQ(dz_a[i], round_to_bf16(dz_a[i])) << "entry " << i;
    diff2 += static_cast<double>(dz_a[i] - dz_o[i]) * (dz_a[i] - dz_o[i]);
    ref2 += static_cast<double>(dz_o[i]) * dz_o[i];
  }
  EXPECT_GT(diff2, 0.0);
  EXPECT_LT(std::sqrt(diff2 / ref2), 4.0 / 256) << "relative L2 difference of the gradients";
  std::printf("autocast vs fp32 softcap gradient: relative L2 difference %.3g\n", std::sqrt(diff2 / ref2));

  // In place (dz over z) gives the same bits.
  std::vector<float> inplace(z);
  softcap_cross_entropy_backward_autocast<V>(inplace.data(), inplace.data(), capped_a.data(), lse_a.data(), y.data(), dloss.data(), n,
                                             kCap);
  EXPECT_EQ(inplace, dz_a);
}

}  // namespace
}  // namespace pgolf::cpu
