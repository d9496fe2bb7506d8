// The CUDA attention-stage feature kernels (ops/cuda/features_attention.cuh) against the CPU oracle
// (ops/features.hpp): XSA forward/backward and the per-head attention gates in their four forms,
// run in fp32 on the CPU on the same bf16-rounded inputs the GPU reads.
//
// Tolerances are per-element bounds derived from the kernels' arithmetic (helper `within`); a
// wrong formula, a wrong head or channel, or a lost term shows up as an error of the size of the
// term itself, orders of magnitude over these bounds. u = 2^-24 is the fp32 unit roundoff.
//   - A dot product of k terms summed in any order is off the exact value by at most k·u·Σ|terms|;
//     both the CPU (sequential) and the GPU (per-lane runs + butterfly) obey that bound, so their
//     difference is at most twice it. The same holds for the norm ‖v‖² (relative k·u, halved by
//     the square root).
//   - σ(z) in fp32 (expf within 2 ulp, one addition, one IEEE division) is within 4u·σ of exact
//     on either side; σ'(z) = σ(1 − σ) then has relative error <= 8u·(1 + e^|z|) (1 − σ cancels
//     for large z: its relative error is σ/(1 − σ) = e^z times that of σ), doubled for two sides.
//   - bf16 outputs: the GPU rounds its fp32 value x once; round-to-nearest-even to 8 significant
//     bits moves x by at most 2^-8/(1 + 2^-8)·|x|, so |got − want| <= kBf16Eps·|want| + 2·(fp32
//     bound on |x − want|) with kBf16Eps = 2^-8. This is rigorous but tight by nature: expect an
//     error/bound ratio close to 1 for bf16 outputs (the rounding alone can use ~99% of it).
//   - Parameter gradients (dW, dbias): per-row terms dz·h summed over the rows of a chunk in fp32
//     by one thread (<= kReduceRows terms), the row groups of a chunk combined in order (<= 32),
//     the chunks added in fp64 and rounded once: depth <= kReduceRows + 40 roundings of u on
//     Σ|terms|, plus the propagated error of each dz (its own bound times |h|), plus the two final
//     roundings onto the initial value.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/core/config.hpp"
#include "pgolf/ops/cuda/features_attention.cuh"
#include "pgolf/ops/features.hpp"

namespace pgolf {
namespace {

using cuda::nv_bf16;
using testing::bf16_rounded;
using testing::kBf16Eps;
using testing::normal_floats;
using testing::same_bits;
using testing::to_device_bf16;
using testing::to_device_f32;
using testing::to_host_floats;
using testing::within;

using testing::kU;  // fp32 unit roundoff

class FeaturesAttentionGpu : public testing::GpuTest {};

// ============================================================================== XSA
// One parity case: forward and backward of XSA on n tokens. The values sit in rows of ldv
// elements starting at column v_col (ldv = Hkv·Hd, v_col = 0: packed; the model's case is the
// q|k|v GEMM output, ldv = (H + 2·Hkv)·Hd, v_col = (H + Hkv)·Hd; an odd ldv takes the kernels'
// one-element path for v). Token 0's KV head 0 is a zero vector (v̂ = 0: the 1e-12 clamp, no
// NaN), token 1's last KV head has norm ~1e-13 (< 1e-12: clamped, v̂ is not a unit vector and the
// backward takes the clamped branch dv = dû/eps). in_place: out == y and dy == dout.
template <int H, int Hkv, int Hd>
void check_xsa(std::int64_t n, std::int64_t ldv, std::int64_t v_col, bool in_place) {
  SCOPED_TRACE(::testing::Message() << "XSA H=" << H << " Hkv=" << Hkv << " Hd=" << Hd << " n=" << n << " ldv=" << ldv
                                    << " v_col=" << v_col << (in_place ? " in place" : ""));
  constexpr int QD = H * Hd, KD = Hkv * Hd, G = H / Hkv;
  ASSERT_GE(ldv, v_col + KD);
  const auto nq = static_cast<std::size_t>(n * QD), nk = static_cast<std::size_t>(n * KD);

  const auto y = bf16_rounded(normal_floats(nq, 101));
  auto vstore = normal_floats(static_cast<std::size_t>(n * ldv), 102);
  for (std::int64_t r = 0; r < n; ++r) {  // norms vary from token to token
    for (std::int64_t c = 0; c < ldv; ++c) vstore[r * ldv + c] *= 0.25f + 0.5f * static_cast<float>(r % 5);
  }
  for (int d = 0; d < Hd; ++d) {
    vstore[v_col + d] = 0.0f;                                                           // token 0, KV head 0: zero
    if (n > 1) vstore[ldv + v_col + (Hkv - 1) * Hd + d] = 1e-14f * vstore[ldv + v_col + (Hkv - 1) * Hd + d];  // token 1: tiny
  }
  vstore = bf16_rounded(vstore);
  std::vector<float> v(nk);  // the packed values the oracle reads
  for (std::int64_t r = 0; r < n; ++r) std::copy_n(vstore.begin() + r * ldv + v_col, KD, v.begin() + r * KD);
  const auto dout = bf16_rounded(normal_floats(nq, 103));
  const auto dv0 = normal_floats(nk, 104, 0.5f);  // dv accumulates onto the attention's dv

  std::vector<float> want_out(nq), want_dy(nq), want_dv = dv0;
  cpu::xsa_forward<H, Hkv, Hd>(want_out.data(), y.data(), v.data(), n);
  cpu::xsa_backward<H, Hkv, Hd>(want_dy.data(), want_dv.data(), dout.data(), y.data(), v.data(), n);

  // Bounds (file comment): per (token, KV head), with û the unit value (in double). One side's
  // error: 1/‖v‖ and û carry (Hd/2 + 4)u relative error (‖v‖² is a sum of Hd positive terms; sqrt
  // halves it), y·û and dout·û (1.5·Hd + 4)u·Σ|terms|; so out and dy are within (2·Hd + 10)u of
  // Σ|y·û|·|û_d| + 2u·|y_d|, and dv (which goes through dû, the second projection dû·û and 1/‖v‖
  // once more) within (2·Hd + 2G + 10)u·A_d + (4·Hd + 2G + 20)u·B·|û_d|, times 1/‖v‖, with
  // A_d = Σ_h (Σ|y_h·û|·|dout_hd| + Σ|dout_h·û|·|y_hd|) >= |dû_d| and B = Σ_d A_d·|û_d| >= |dû·û|.
  // cx, cb cover both sides with margin.
  constexpr double cx = 2.0 * Hd + 16, cb = 8.0 * Hd + 4.0 * G + 48;
  std::vector<double> b_out(nq), b_dy(nq), b_dv(nk);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int k = 0; k < Hkv; ++k) {
      const float* vk = v.data() + (r * Hkv + k) * Hd;
      double nn = 0;
      for (int d = 0; d < Hd; ++d) nn += static_cast<double>(vk[d]) * vk[d];
      const double inv = 1.0 / std::max(std::sqrt(nn), 1e-12);
      std::vector<double> uh(Hd), A(Hd, 0.0);
      for (int d = 0; d < Hd; ++d) uh[d] = std::fabs(vk[d] * inv);
      for (int g = 0; g < G; ++g) {
        const std::size_t base = static_cast<std::size_t>((r * H + k * G + g) * Hd);
        double S = 0, Gs = 0;
        for (int d = 0; d < Hd; ++d) {
          S += std::fabs(y[base + d]) * uh[d];
          Gs += std::fabs(dout[base + d]) * uh[d];
        }
        for (int d = 0; d < Hd; ++d) {
          const double e_out = cx * kU * (std::fabs(y[base + d]) + uh[d] * S);
          const double e_dy = cx * kU * (std::fabs(dout[base + d]) + uh[d] * Gs);
          b_out[base + d] = kBf16Eps * std::fabs(want_out[base + d]) + 2 * e_out;
          b_dy[base + d] = kBf16Eps * std::fabs(want_dy[base + d]) + 2 * e_dy;
          A[d] += S * std::fabs(dout[base + d]) + Gs * std::fabs(y[base + d]);
        }
      }
      double B = 0;
      for (int d = 0; d < Hd; ++d) B += A[d] * uh[d];
      for (int d = 0; d < Hd; ++d) {
        const std::size_t i = static_cast<std::size_t>((r * Hkv + k) * Hd + d);
        b_dv[i] = cb * kU * inv * (A[d] + uh[d] * B) + 2 * kU * (std::fabs(dv0[i]) + std::fabs(want_dv[i]));
      }
    }
  }

  auto d_y = to_device_bf16(y, "y");
  auto d_v = to_device_bf16(vstore, "v rows");
  auto d_dout = to_device_bf16(dout, "dout");
  auto d_dv = to_device_f32(dv0, "dv");
  cuda::DeviceBuffer<nv_bf16> d_out(in_place ? 0 : nq, "out"), d_dy(in_place ? 0 : nq, "dy");
  const nv_bf16* vp = d_v.data() + v_col;
  // The backward first: in place it overwrites dout, the forward overwrites y.
  nv_bf16* dy = in_place ? d_dout.data() : d_dy.data();
  cuda::xsa_backward<H, Hkv, Hd>(dy, d_dv.data(), d_dout.data(), d_y.data(), vp, ldv, n, nullptr);
  const auto got_dy = in_place ? to_host_floats(d_dout) : to_host_floats(d_dy);
  nv_bf16* out = in_place ? d_y.data() : d_out.data();
  cuda::xsa_forward<H, Hkv, Hd>(out, d_y.data(), vp, ldv, n, nullptr);
  const auto got_out = in_place ? to_host_floats(d_y) : to_host_floats(d_out);
  const auto got_dv = to_host_floats(d_dv);

  EXPECT_TRUE(within(got_out, want_out, b_out, QD)) << "XSA forward: out";
  EXPECT_TRUE(within(got_dy, want_dy, b_dy, QD)) << "XSA backward: dy";
  EXPECT_TRUE(within(got_dv, want_dv, b_dv, KD)) << "XSA backward: dv";
  // The zero value vector: v̂ = 0, so out = y, dy = dout and dv unchanged, exactly.
  for (int g = 0; g < G; ++g) {
    for (int d = 0; d < Hd; ++d) {
      EXPECT_EQ(got_out[g * Hd + d], y[g * Hd + d]) << "zero v: out must equal y (head " << g << ", dim " << d << ")";
      EXPECT_EQ(got_dy[g * Hd + d], dout[g * Hd + d]) << "zero v: dy must equal dout (head " << g << ", dim " << d << ")";
    }
  }
  for (int d = 0; d < Hd; ++d) EXPECT_EQ(got_dv[d], dv0[d]) << "zero v: dv must be unchanged (dim " << d << ")";
}

TEST_F(FeaturesAttentionGpu, XsaMatchesCpuRealSizes) {
  constexpr int H = 8, Hkv = 4, Hd = 64;
  check_xsa<H, Hkv, Hd>(1000, Hkv * Hd, 0, false);                          // packed v
  check_xsa<H, Hkv, Hd>(1000, (H + 2 * Hkv) * Hd, (H + Hkv) * Hd, true);    // v inside the q|k|v rows, in place
  check_xsa<H, Hkv, Hd>(333, (H + 2 * Hkv) * Hd + 1, (H + Hkv) * Hd, false);  // odd stride: one-element v accesses
  check_xsa<H, Hkv, Hd>(1, Hkv * Hd, 0, true);
}

TEST_F(FeaturesAttentionGpu, XsaMatchesCpuTinySizes) {
  constexpr int H = 4, Hkv = 2, Hd = 4;
  check_xsa<H, Hkv, Hd>(37, Hkv * Hd, 0, false);
  check_xsa<H, Hkv, Hd>(37, (H + 2 * Hkv) * Hd, (H + Hkv) * Hd, true);
  check_xsa<H, Hkv, Hd>(5, 11, 2, false);  // stride 11, values at column 2: misaligned
}

TEST_F(FeaturesAttentionGpu, XsaMatchesCpuOtherGroupSizes) {
  check_xsa<8, 1, 64>(500, 64, 0, false);                // multi-query: 8 query heads share one KV head
  check_xsa<8, 1, 64>(77, (8 + 2) * 64, (8 + 1) * 64, true);
  check_xsa<4, 4, 4>(100, 16, 0, false);                 // one query head per KV head
  check_xsa<4, 4, 4>(37, (4 + 8) * 4, (4 + 4) * 4, true);
}

// ============================================================================== gates
struct GateSpec {
  AttnGate kind;
  bool bias;
  cpu::GateForm form;
  float scale;
};

GateSpec gate_spec(AttnGate kind, float sparse_scale) {
  switch (kind) {
    case AttnGate::headwise_bias: return {kind, true, cpu::GateForm::sigmoid, 1.0f};
    case AttnGate::output_gate: return {kind, false, cpu::GateForm::twice_sigmoid, 1.0f};
    case AttnGate::sparse: return {kind, false, cpu::GateForm::sigmoid, sparse_scale};
    default: return {kind, false, cpu::GateForm::sigmoid, 1.0f};  // full
  }
}

const char* gate_name(AttnGate kind) {
  switch (kind) {
    case AttnGate::headwise_bias: return "headwise_bias";
    case AttnGate::output_gate: return "output_gate";
    case AttnGate::full: return "full";
    case AttnGate::sparse: return "sparse";
    default: return "none";
  }
}

// Forward and backward of one gate form on n tokens. h (n, D), W (H, Win) ~ N(0, 1/Win) so that
// W·h ~ N(0, 1), the bias 4 ± 0.5 (the records' init is 4); dh, dW and dbias start nonzero (they
// accumulate). in_place: y_out == y_in and dy_in == dy.
template <int D, int H, int Hd, int Win>
void check_gate(AttnGate kind, std::int64_t n, bool in_place, float sparse_scale = 1.0f) {
  const GateSpec spec = gate_spec(kind, sparse_scale);
  SCOPED_TRACE(::testing::Message() << "gate " << gate_name(kind) << " D=" << D << " H=" << H << " Hd=" << Hd << " Win=" << Win
                                    << " scale=" << spec.scale << " n=" << n << (in_place ? " in place" : ""));
  constexpr int QD = H * Hd;
  const auto nq = static_cast<std::size_t>(n * QD), nd = static_cast<std::size_t>(n * D), nz = static_cast<std::size_t>(n * H);
  const double mult = spec.form == cpu::GateForm::twice_sigmoid ? 2.0 : 1.0;

  const auto h = bf16_rounded(normal_floats(nd, 201));
  const auto W = normal_floats(static_cast<std::size_t>(H * Win), 202, 1.0f / std::sqrt(static_cast<float>(Win)));
  auto bias = normal_floats(H, 203, 0.5f);
  for (auto& b : bias) b += 4.0f;
  const auto y_in = bf16_rounded(normal_floats(nq, 204));
  const auto dy = bf16_rounded(normal_floats(nq, 205));
  const auto dh0 = normal_floats(nd, 206, 0.5f);
  const auto dW0 = normal_floats(static_cast<std::size_t>(H * Win), 207, 3.0f);
  const auto db0 = normal_floats(H, 208, 3.0f);
  const float* bias_p = spec.bias ? bias.data() : nullptr;

  std::vector<float> want_y = y_in, want_z(nz);
  cpu::head_gate_forward<D, H, Hd, Win>(want_y.data(), want_z.data(), h.data(), W.data(), bias_p, spec.scale, spec.form, n);
  std::vector<float> want_dyin = dy, want_dh = dh0, want_dW = dW0, want_db = db0;
  cpu::head_gate_backward<D, H, Hd, Win>(want_dyin.data(), want_dh.data(), want_dW.data(), spec.bias ? want_db.data() : nullptr,
                                         y_in.data(), want_z.data(), h.data(), W.data(), spec.scale, spec.form, n);

  // ---- bounds (file comment)
  std::vector<double> b_z(nz), b_y(nq), b_dyin(nq), b_dh(nd, 0.0), b_dW(static_cast<std::size_t>(H * Win)), b_db(H);
  std::vector<double> dz(nz), e_dz(nz);
  constexpr double kDepth = cuda::kReduceRows + 40;
  for (std::int64_t r = 0; r < n; ++r) {
    for (int hh = 0; hh < H; ++hh) {
      const std::size_t u = static_cast<std::size_t>(r * H + hh);
      double pz = spec.bias ? std::fabs(bias[hh]) : 0.0;
      for (int i = 0; i < Win; ++i) pz += std::fabs(static_cast<double>(W[hh * Win + i]) * h[r * D + i]);
      const double ez = std::fabs(spec.scale) * (Win + 8) * kU * pz;  // one side
      const double zz = want_z[u], s = 1.0 / (1.0 + std::exp(-zz)), sp = s * (1.0 - s);
      b_z[u] = 2 * ez + kU * std::fabs(zz);
      const double dg_err_g = mult * (sp * 2 * ez + 8 * kU * s);  // |Δg| (forward)
      double dg = 0, pdg = 0;
      for (int d = 0; d < Hd; ++d) {
        const std::size_t i = u * Hd + d;
        b_y[i] = kBf16Eps * std::fabs(want_y[i]) + 2 * (std::fabs(y_in[i]) * dg_err_g + 2 * kU * std::fabs(want_y[i]));
        b_dyin[i] = kBf16Eps * std::fabs(want_dyin[i]) + 2 * (std::fabs(dy[i]) * mult * 8 * kU * s + 2 * kU * std::fabs(want_dyin[i]));
        dg += static_cast<double>(dy[i]) * y_in[i];
        pdg += std::fabs(static_cast<double>(dy[i]) * y_in[i]);
      }
      dz[u] = dg * mult * sp * spec.scale;
      const double rel_sp = 16 * kU * (1 + std::exp(std::fabs(zz)));
      e_dz[u] = mult * std::fabs(spec.scale) * sp * ((Hd + 8) * kU * 2 * pdg + std::fabs(dg) * rel_sp) + 8 * kU * std::fabs(dz[u]);
    }
    for (int i = 0; i < Win; ++i) {
      double prop = 0, mag = std::fabs(dh0[r * D + i]);
      for (int hh = 0; hh < H; ++hh) {
        prop += e_dz[r * H + hh] * std::fabs(W[hh * Win + i]);
        mag += std::fabs(dz[r * H + hh] * W[hh * Win + i]);
      }
      b_dh[r * D + i] = prop + (H + 8) * kU * mag + kU * std::fabs(want_dh[r * D + i]);
    }
    // columns >= Win: bound 0, dh must be untouched
  }
  for (int hh = 0; hh < H; ++hh) {
    double pb = 0, mb = 0;
    for (std::int64_t r = 0; r < n; ++r) {
      pb += e_dz[r * H + hh];
      mb += std::fabs(dz[r * H + hh]);
    }
    b_db[hh] = pb + kDepth * kU * mb + 2 * kU * (std::fabs(db0[hh]) + std::fabs(want_db[hh]));
    for (int i = 0; i < Win; ++i) {
      double p = 0, m = 0;
      for (std::int64_t r = 0; r < n; ++r) {
        p += e_dz[r * H + hh] * std::fabs(h[r * D + i]);
        m += std::fabs(dz[r * H + hh] * h[r * D + i]);
      }
      const std::size_t k = static_cast<std::size_t>(hh * Win + i);
      b_dW[k] = p + kDepth * kU * m + 2 * kU * (std::fabs(dW0[k]) + std::fabs(want_dW[k]));
    }
  }

  // ---- forward
  auto d_h = to_device_bf16(h, "h");
  auto d_W = to_device_f32(W, "W");
  auto d_bias = to_device_f32(bias, "bias");
  auto d_yin = to_device_bf16(y_in, "y_in");
  cuda::DeviceBuffer<nv_bf16> d_yout(in_place ? 0 : nq, "y_out");
  cuda::DeviceBuffer<float> d_z(nz, "z");
  nv_bf16* yout = in_place ? d_yin.data() : d_yout.data();
  cuda::head_gate_forward<D, H, Hd, Win>(yout, d_z.data(), d_yin.data(), d_h.data(), d_W.data(), spec.bias ? d_bias.data() : nullptr,
                                         spec.scale, spec.form, n, nullptr);
  const auto got_y = in_place ? to_host_floats(d_yin) : to_host_floats(d_yout);
  EXPECT_TRUE(within(to_host_floats(d_z), want_z, b_z, H)) << "gate forward: z";
  EXPECT_TRUE(within(got_y, want_y, b_y, QD)) << "gate forward: y_out";

  // ---- backward, from the oracle's z (so that it is checked on exactly the oracle's inputs)
  auto d_yin2 = to_device_bf16(y_in, "y_in");
  auto d_zc = to_device_f32(want_z, "z");
  auto d_dy = to_device_bf16(dy, "dy");
  auto d_dh = to_device_f32(dh0, "dh");
  auto d_dW = to_device_f32(dW0, "dW");
  auto d_db = to_device_f32(db0, "dbias");
  cuda::DeviceBuffer<nv_bf16> d_dyin(in_place ? 0 : nq, "dy_in");
  cuda::DeviceBuffer<std::uint8_t> scratch(static_cast<std::size_t>(cuda::head_gate_backward_scratch_bytes<H, Win>(n)), "scratch");
  nv_bf16* dyin = in_place ? d_dy.data() : d_dyin.data();
  cuda::head_gate_backward<D, H, Hd, Win>(dyin, d_dh.data(), d_dW.data(), spec.bias ? d_db.data() : nullptr, d_dy.data(), d_yin2.data(),
                                          d_zc.data(), d_h.data(), d_W.data(), spec.scale, spec.form, n, scratch.data(), nullptr);
  const auto got_dyin = in_place ? to_host_floats(d_dy) : to_host_floats(d_dyin);
  EXPECT_TRUE(within(got_dyin, want_dyin, b_dyin, QD)) << "gate backward: dy_in";
  EXPECT_TRUE(within(to_host_floats(d_dh), want_dh, b_dh, D)) << "gate backward: dh (columns >= Win must be untouched)";
  EXPECT_TRUE(within(to_host_floats(d_dW), want_dW, b_dW, Win)) << "gate backward: dW";
  if (spec.bias) {
    EXPECT_TRUE(within(to_host_floats(d_db), want_db, b_db, H)) << "gate backward: dbias";
  } else {
    EXPECT_TRUE(same_bits(to_host_floats(d_db), db0)) << "gate backward: dbias is null for this form; the buffer must be untouched";
  }
}

TEST_F(FeaturesAttentionGpu, HeadwiseBiasGateMatchesCpu) {
  check_gate<512, 8, 64, 512>(AttnGate::headwise_bias, 1000, false);
  check_gate<512, 8, 64, 512>(AttnGate::headwise_bias, 300, true);
  check_gate<16, 4, 4, 16>(AttnGate::headwise_bias, 37, false);
  check_gate<16, 4, 4, 16>(AttnGate::headwise_bias, 2, true);
}

TEST_F(FeaturesAttentionGpu, FullGateMatchesCpu) {
  check_gate<512, 8, 64, 512>(AttnGate::full, 1000, true);
  check_gate<16, 4, 4, 16>(AttnGate::full, 600, false);  // 3 chunks, the last partial
  check_gate<1024, 8, 128, 1024>(AttnGate::full, 300, false);  // window >= 1024: the backward's multi-pass layout
}

TEST_F(FeaturesAttentionGpu, OutputGateMatchesCpu) {  // 2σ, window 12
  check_gate<512, 8, 64, 12>(AttnGate::output_gate, 1000, false);
  check_gate<512, 8, 64, 12>(AttnGate::output_gate, 257, true);
  check_gate<512, 8, 64, 128>(AttnGate::output_gate, 300, false);  // backward: 32 column threads x 8 row groups
  check_gate<512, 8, 64, 13>(AttnGate::output_gate, 300, true);    // a window of odd width
  check_gate<16, 4, 4, 12>(AttnGate::output_gate, 37, true);
}

TEST_F(FeaturesAttentionGpu, SparseGateMatchesCpu) {  // σ(s·W h[:12]), s != 1
  check_gate<512, 8, 64, 12>(AttnGate::sparse, 1000, true, 2.5f);
  check_gate<512, 8, 64, 12>(AttnGate::sparse, 300, false, -0.75f);
  check_gate<16, 4, 4, 12>(AttnGate::sparse, 600, false, 2.5f);
}

// ============================================================================== determinism
// Parameter gradients (and everything else) are bit-identical from run to run at the real size.
template <int Win>
void check_gate_determinism(bool with_bias) {
  SCOPED_TRACE(::testing::Message() << "gate backward determinism, Win=" << Win << (with_bias ? " with bias" : ""));
  constexpr int D = 512, H = 8, Hd = 64;
  constexpr std::int64_t n = 65536;
  const auto nq = static_cast<std::size_t>(n * H * Hd), nd = static_cast<std::size_t>(n * D);
  auto d_h = to_device_bf16(normal_floats(nd, 301), "h");
  auto d_W = to_device_f32(normal_floats(H * Win, 302, 0.05f), "W");
  auto d_yin = to_device_bf16(normal_floats(nq, 303), "y_in");
  auto d_dy = to_device_bf16(normal_floats(nq, 304), "dy");
  auto d_z = to_device_f32(normal_floats(static_cast<std::size_t>(n * H), 305, 2.0f), "z");
  const auto dh0 = normal_floats(nd, 306);
  cuda::DeviceBuffer<nv_bf16> dyin(nq, "dy_in");
  cuda::DeviceBuffer<float> dW(H * Win, "dW"), db(H, "dbias");
  cuda::DeviceBuffer<std::uint8_t> scratch(static_cast<std::size_t>(cuda::head_gate_backward_scratch_bytes<H, Win>(n)), "scratch");
  std::vector<float> first_dW, first_db, first_dh;
  for (int run = 0; run < 2; ++run) {
    auto d_dh = to_device_f32(dh0, "dh");
    dW.zero();
    db.zero();
    cuda::head_gate_backward<D, H, Hd, Win>(dyin.data(), d_dh.data(), dW.data(), with_bias ? db.data() : nullptr, d_dy.data(), d_yin.data(),
                                            d_z.data(), d_h.data(), d_W.data(), 1.0f, cpu::GateForm::sigmoid, n, scratch.data(), nullptr);
    auto gW = to_host_floats(dW), gb = to_host_floats(db), gh = to_host_floats(d_dh);
    if (run == 0) {
      first_dW = std::move(gW);
      first_db = std::move(gb);
      first_dh = std::move(gh);
    } else {
      EXPECT_TRUE(same_bits(gW, first_dW)) << "dW";
      EXPECT_TRUE(same_bits(gb, first_db)) << "dbias";
      EXPECT_TRUE(same_bits(gh, first_dh)) << "dh";
    }
  }
}

TEST_F(FeaturesAttentionGpu, GateGradientsAreBitwiseReproducible) {
  check_gate_determinism<512>(true);
  check_gate_determinism<12>(false);
}

TEST_F(FeaturesAttentionGpu, XsaBackwardIsBitwiseReproducible) {
  constexpr int H = 8, Hkv = 4, Hd = 64;
  constexpr std::int64_t n = 65536, ldv = (H + 2 * Hkv) * Hd;
  const auto nq = static_cast<std::size_t>(n * H * Hd);
  auto d_y = to_device_bf16(normal_floats(nq, 311), "y");
  auto d_v = to_device_bf16(normal_floats(static_cast<std::size_t>(n * ldv), 312), "qkv");
  auto d_dout = to_device_bf16(normal_floats(nq, 313), "dout");
  cuda::DeviceBuffer<nv_bf16> dy(nq, "dy");
  cuda::DeviceBuffer<float> dv(static_cast<std::size_t>(n * Hkv * Hd), "dv");
  std::vector<float> first_dy, first_dv;
  for (int run = 0; run < 2; ++run) {
    dv.zero();
    cuda::xsa_backward<H, Hkv, Hd>(dy.data(), dv.data(), d_dout.data(), d_y.data(), d_v.data() + (H + Hkv) * Hd, ldv, n, nullptr);
    auto a = to_host_floats(dy), b = to_host_floats(dv);
    if (run == 0) {
      first_dy = std::move(a);
      first_dv = std::move(b);
    } else {
      EXPECT_TRUE(same_bits(a, first_dy)) << "dy";
      EXPECT_TRUE(same_bits(b, first_dv)) << "dv";
    }
  }
}

// ============================================================================== host-only checks (no GPU needed)
TEST(FeaturesAttentionCuda, TilingsOfTheRealAndTinySizes) {
  using L64 = cuda::feat::HeadTiling<64>;
  static_assert(L64::kTph == 8 && L64::kE == 8 && L64::kVec == 8 && L64::kVecF32 == 4, "Hd = 64: 8 lanes, one 16-byte bf16 access each");
  using L4 = cuda::feat::HeadTiling<4>;
  static_assert(L4::kTph == 1 && L4::kE == 4 && L4::kVec == 4, "Hd = 4: one lane per head");
  using Full = cuda::feat::GateTiling<512, 8, 64, 512>;
  static_assert(Full::kZLanes == 32 && Full::kZV == 4 && Full::kCV == 2 && Full::kColThreads == 256 && Full::kRowGroups == 1,
                "full window: a warp per token for z; 256 column threads, one row group");
  using Narrow = cuda::feat::GateTiling<512, 8, 64, 12>;
  static_assert(Narrow::kZLanes == 4 && Narrow::kZV == 4 && Narrow::kCV == 4 && Narrow::kColThreads == 3 && Narrow::kRowGroups == 32,
                "window 12: 4 lanes per token for z; 3 column threads x 32 row groups");
  using Tiny = cuda::feat::GateTiling<16, 4, 4, 12>;
  static_assert(Tiny::kZV == 4 && Tiny::kZPacks == 3 && Tiny::kZRagged, "D = 16, window 12: 3 packs of 4 over 4 lanes");
  SUCCEED();
}

TEST(FeaturesAttentionCuda, ScratchSizes) {
  EXPECT_EQ((cuda::head_gate_backward_scratch_bytes<8, 512>(0)), 0);
  EXPECT_EQ((cuda::head_gate_backward_scratch_bytes<8, 512>(1)), (8 * 512 + 8) * 4);
  EXPECT_EQ((cuda::head_gate_backward_scratch_bytes<8, 512>(256)), (8 * 512 + 8) * 4);
  EXPECT_EQ((cuda::head_gate_backward_scratch_bytes<8, 512>(257)), 2 * (8 * 512 + 8) * 4);
  EXPECT_EQ((cuda::head_gate_backward_scratch_bytes<8, 12>(65536)), 256 * (8 * 12 + 8) * 4);
}

TEST(FeaturesAttentionCuda, HostDeviceHelpersMatchTheOracle) {
  // The clamp: 1 / max(‖v‖, 1e-12).
  EXPECT_EQ(cuda::feat::xsa_inv_norm(0.0f), 1.0f / 1e-12f);
  EXPECT_EQ(cuda::feat::xsa_inv_norm(4.0f), 0.5f);
  EXPECT_EQ(cuda::feat::xsa_inv_norm(1e-26f), 1.0f / 1e-12f);  // ‖v‖ = 1e-13 < 1e-12
  EXPECT_EQ(cuda::feat::gate_multiplier(cpu::GateForm::sigmoid), 1.0f);
  EXPECT_EQ(cuda::feat::gate_multiplier(cpu::GateForm::twice_sigmoid), 2.0f);
  for (const float z : {-20.0f, -4.0f, -0.5f, 0.0f, 0.25f, 4.0f, 30.0f}) EXPECT_EQ(cuda::feat::sigmoid(z), cpu::sigmoid(z)) << "z = " << z;
}

TEST(FeaturesAttentionCuda, BadArgumentsAreRejectedBeforeAnyLaunch) {
  auto* fake = reinterpret_cast<nv_bf16*>(std::uintptr_t{256});
  auto* fake_f = reinterpret_cast<float*>(std::uintptr_t{256});
  auto* odd = reinterpret_cast<nv_bf16*>(std::uintptr_t{256 + 2});  // 1 element past an aligned base
  // ldv narrower than Hkv·Hd.
  EXPECT_THROW((cuda::xsa_forward<8, 4, 64>(fake, fake, fake, 255, 10, nullptr)), Error);
  EXPECT_THROW((cuda::xsa_backward<8, 4, 64>(fake, fake_f, fake, fake, fake, 100, 10, nullptr)), Error);
  // y must allow the 16-byte accesses (v may be misaligned: it has a fallback).
  EXPECT_THROW((cuda::xsa_forward<8, 4, 64>(fake, odd, fake, 256, 10, nullptr)), Error);
  EXPECT_THROW((cuda::head_gate_forward<512, 8, 64, 12>(odd, fake_f, fake, fake, fake_f, nullptr, 1.0f, cpu::GateForm::sigmoid, 10, nullptr)),
               Error);
  // The backward without scratch says how much it needs.
  try {
    cuda::head_gate_backward<512, 8, 64, 512>(fake, fake_f, fake_f, nullptr, fake, fake, fake_f, fake, fake_f, 1.0f, cpu::GateForm::sigmoid,
                                              1000, nullptr, nullptr);
    FAIL() << "expected pgolf::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_gate_backward_scratch_bytes"), std::string::npos) << e.what();
  }
}

TEST(FeaturesAttentionCuda, EmptyInputsLaunchNothing) {
  EXPECT_NO_THROW((cuda::xsa_forward<8, 4, 64>(nullptr, nullptr, nullptr, 256, 0, nullptr)));
  EXPECT_NO_THROW((cuda::xsa_backward<4, 2, 4>(nullptr, nullptr, nullptr, nullptr, nullptr, 8, 0, nullptr)));
  EXPECT_NO_THROW((cuda::head_gate_forward<16, 4, 4, 12>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1.0f,
                                                         cpu::GateForm::twice_sigmoid, 0, nullptr)));
  EXPECT_NO_THROW((cuda::head_gate_backward<16, 4, 4, 16>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                          1.0f, cpu::GateForm::sigmoid, 0, nullptr, nullptr)));
}

}  // namespace
}  // namespace pgolf
