// The CUDA RMSNorm kernels (ops/cuda/rmsnorm.cuh) against the CPU oracle (ops/rmsnorm.hpp and
// ops/channel_ops.hpp composed for the fused kernels).
//
// Tolerances are bounds derived from the kernels' arithmetic, per element (helper `within`):
//   u = 2^-24 is the fp32 unit roundoff. A sum of k fp32 terms has |error| <= (k−1)·u·Σ|terms|
//   for any order of additions; the kernels add each term at most kPerLane·kVec (within a lane)
//   + log2(kLanes) (the shuffle tree) times: `sum_depth<D>()`. bf16 outputs are the fp32 value
//   rounded once to nearest: relative error <= kBf16Eps = 2^-8 (8 significant bits), plus the fp32
//   error before the rounding (the rstd_rtol and row terms of each bound).
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/ops/channel_ops.hpp"
#include "pgolf/ops/cuda/rmsnorm.cuh"
#include "pgolf/ops/rmsnorm.hpp"

namespace pgolf {
namespace {

using testing::all_close;
using testing::bf16_rounded;
using testing::kBf16Eps;
using testing::normal_floats;
using testing::to_device_bf16;
using testing::to_device_f32;
using testing::same_bits;
using testing::to_host_floats;
using testing::within;

using testing::kU;  // fp32 unit roundoff

// Additions a term of the kernels' row sums goes through at most (see the file comment).
template <int D>
constexpr double sum_depth() {
  using T = cuda::rowwise::RowTiling<D>;
  return T::kPerLane * T::kVec + std::bit_width(static_cast<unsigned>(T::kLanes)) - 1;
}

// Relative error bound of a GPU rstd against the CPU's (which sums in double and rounds once):
// half the relative error of Σx² (√), plus the roundings of /D, +eps, sqrt, 1/x and the CPU's.
template <int D>
constexpr double rstd_rtol() {
  return 0.5 * (sum_depth<D>() + 1) * kU + 5 * kU;
}

// Relative error bound of the rstd of rows whose values x carry absolute errors xb (an fp32 row
// produced by an earlier operation in the kernel): d(Σx²) <= 2·Σ|x|·xb, so d rstd / rstd <=
// Σ|x|·xb / Σx², on top of rstd_rtol<D>().
template <int D>
std::vector<double> row_rtol_from_inputs(std::span<const float> x, std::span<const double> xb, std::int64_t n) {
  std::vector<double> r(static_cast<std::size_t>(n));
  for (std::int64_t row = 0; row < n; ++row) {
    double num = 0, den = 0;
    for (int i = 0; i < D; ++i) {
      num += std::fabs(x[row * D + i]) * xb[row * D + i];
      den += static_cast<double>(x[row * D + i]) * x[row * D + i];
    }
    r[row] = rstd_rtol<D>() + (den > 0 ? num / den : 0.0);
  }
  return r;
}

// The bf16 output h of a fused kernel: rounding (2^-8 relative), the row's rstd error, and the
// fp32 error xb of its input scaled by factor·rstd.
template <int D>
std::vector<double> h_bound(std::span<const float> h_want, std::span<const double> xb, std::span<const double> row_rtol,
                            std::span<const float> rstd, float factor, std::int64_t n) {
  std::vector<double> b(h_want.size());
  for (std::int64_t row = 0; row < n; ++row) {
    for (int i = 0; i < D; ++i) {
      const std::size_t k = row * D + i;
      b[k] = (kBf16Eps + 2 * row_rtol[row] + 4 * kU) * std::fabs(h_want[k]) + std::fabs(factor) * rstd[row] * xb[k];
    }
  }
  return b;
}

class RmsNormGpu : public testing::GpuTest {};

// ------------------------------------------------------------------------------ rmsnorm_forward
// Rows whose mean square is comparable to or below eps (FLT_EPSILON, as torch's F.rms_norm with
// eps=None): every 4th row is zero (rstd = 1/√eps exactly up to rounding), every 4th + 1 is scaled
// by 1e-4 (mean square ~3e-8 < eps = 1.2e-7), so a wrong or missing eps changes rstd by far more
// than the tolerance. The other rows are the usual normal values.
std::vector<float> rows_with_tiny_norms(std::vector<float> x, int d) {
  const std::size_t n = x.size() / static_cast<std::size_t>(d);
  for (std::size_t r = 0; r < n; ++r) {
    for (int i = 0; i < d; ++i) {
      float& v = x[r * d + i];
      if (r % 4 == 0) v = 0.0f;
      if (r % 4 == 1) v *= 1e-4f;
    }
  }
  return x;
}

template <int D, class Out>
void check_forward(std::int64_t n, float factor, bool in_place = false, bool tiny_rows = false) {
  SCOPED_TRACE(::testing::Message() << "D = " << D << ", n = " << n << ", factor = " << factor << (in_place ? ", y == x" : "")
                                    << (tiny_rows ? ", rows with tiny norms" : ""));
  auto x = normal_floats(static_cast<std::size_t>(n) * D, 1, 1.7f);
  if (tiny_rows) x = rows_with_tiny_norms(std::move(x), D);
  std::vector<float> want(x.size()), want_rstd(static_cast<std::size_t>(n));
  cpu::rmsnorm_forward<D>(want.data(), want_rstd.data(), x.data(), n);
  for (auto& v : want) v *= factor;

  auto d_x = to_device_f32(x, "x");
  cuda::DeviceBuffer<Out> d_y(in_place ? 0 : x.size(), "y");
  cuda::DeviceBuffer<float> d_rstd(static_cast<std::size_t>(n), "rstd");
  Out* y = nullptr;
  if constexpr (std::is_same_v<Out, float>) {
    y = in_place ? d_x.data() : d_y.data();
  } else {
    y = d_y.data();
  }
  cuda::rmsnorm_forward<D, Out>(y, d_rstd.data(), d_x.data(), factor, n, nullptr);
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = in_place ? to_host_floats(d_x) : to_host_floats(d_y);
  const auto got_rstd = to_host_floats(d_rstd);

  EXPECT_TRUE(all_close(got_rstd, want_rstd, 0, rstd_rtol<D>())) << "rstd";
  // y = x·(s·factor): the rstd error and two roundings on each side.
  const double y_rtol = std::is_same_v<Out, float> ? rstd_rtol<D>() + 4 * kU : kBf16Eps + rstd_rtol<D>();
  EXPECT_TRUE(all_close(got, want, 0, y_rtol)) << "y";
}

TEST_F(RmsNormGpu, ForwardMatchesCpu) {
  check_forward<4, float>(1000, 1.0f);      // head dim 4 of the test configs: one lane per row, 32 rows per warp
  check_forward<16, float>(3, 1.0f);        // 4 lanes per row, 8 rows per warp, most of the block idle
  check_forward<33, float>(1000, 0.5f);     // odd D: scalar accesses, 32 lanes with a ragged second pack
  check_forward<48, cuda::nv_bf16>(1000, 0.70710678f);  // 12 packs on 16 lanes (ragged)
  check_forward<512, cuda::nv_bf16>(1, 1.0f);
  check_forward<512, cuda::nv_bf16>(65536, 0.57735027f);  // the baseline's size, LN scale of layer 2
  check_forward<512, float>(1000, 1.0f);
}

// eps: zero rows and rows below eps (see rows_with_tiny_norms); the widths 4, 2 and 1.
TEST_F(RmsNormGpu, ForwardWithEpsDominatedRows) {
  check_forward<512, float>(64, 1.0f, false, true);
  check_forward<512, cuda::nv_bf16>(64, 1.0f, false, true);
  check_forward<18, float>(64, 1.0f, false, true);
  check_forward<33, float>(64, 1.0f, false, true);
  // rstd of a zero row is 1/√FLT_EPSILON, whatever the other rows hold.
  std::vector<float> zero(512, 0.0f);
  auto d_x = to_device_f32(zero, "zero row");
  cuda::DeviceBuffer<float> d_y(zero.size(), "y"), d_rstd(1, "rstd");
  cuda::rmsnorm_forward<512, float>(d_y.data(), d_rstd.data(), d_x.data(), 1.0f, 1, nullptr);
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  const double want = 1.0 / std::sqrt(static_cast<double>(FLT_EPSILON));
  EXPECT_NEAR(to_host_floats(d_rstd)[0], want, 4 * kU * want);
}

// D = 18: 2-wide packs (8-byte fp32 and 4-byte bf16 accesses), 9 packs on 16 lanes (ragged).
TEST_F(RmsNormGpu, TwoWidePacks) {
  check_forward<18, float>(1000, 1.0f);
  check_forward<18, cuda::nv_bf16>(1000, 0.5f);
  check_forward<18, float>(7, 1.0f, true);
}

TEST_F(RmsNormGpu, ForwardInPlace) {
  check_forward<512, float>(1000, 0.5f, true);
  check_forward<33, float>(3, 2.0f, true);
}

// ------------------------------------------------------------------------------ rmsnorm_backward
template <int D>
void check_backward(std::int64_t n, float factor, bool accumulate, bool alias, bool tiny_rows = false) {
  SCOPED_TRACE(::testing::Message() << "D = " << D << ", n = " << n << ", factor = " << factor << ", accumulate = " << accumulate
                                    << (alias ? ", dx == dy" : "") << (tiny_rows ? ", rows with tiny norms" : ""));
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto x = tiny_rows ? rows_with_tiny_norms(normal_floats(nd, 2, 1.3f), D) : normal_floats(nd, 2, 1.3f);
  const auto dy = normal_floats(nd, 3, 0.8f);
  const auto old = accumulate ? normal_floats(nd, 4) : std::vector<float>(nd, 0.0f);
  std::vector<float> y(nd), rstd(static_cast<std::size_t>(n));
  cpu::rmsnorm_forward<D>(y.data(), rstd.data(), x.data(), n);
  // The oracle: the gradient of y·factor is the gradient of y at factor·dy.
  std::vector<float> dyf(nd);
  for (std::size_t i = 0; i < nd; ++i) dyf[i] = factor * dy[i];
  std::vector<float> want = old;
  cpu::rmsnorm_backward<D>(want.data(), dyf.data(), x.data(), rstd.data(), n, accumulate);

  // dx = f·s·dy − f·c·x (+ old), c = s³/D·Σ(dy·x). The first term is exact up to a few roundings
  // on each side (6u); c's fp32 dot product errs by <= (sum_depth + 1)·u·Σ|dy·x| (plus a few
  // roundings, 12u in all), which scales |x|; the final subtraction and addition round once each,
  // on both sides (2u·|want| + 2u·|old|). Twice that for margin.
  std::vector<double> bound(nd);
  for (std::int64_t r = 0; r < n; ++r) {
    double abs_dot = 0;
    for (int i = 0; i < D; ++i) abs_dot += std::fabs(static_cast<double>(dy[r * D + i]) * x[r * D + i]);
    const double s = rstd[r], c_abs = std::fabs(factor) * s * s * s / D * abs_dot;
    for (int i = 0; i < D; ++i) {
      const std::size_t k = r * D + i;
      bound[k] = 2 * kU *
                 (6 * std::fabs(factor * s * dy[k]) + (sum_depth<D>() + 12) * c_abs * std::fabs(x[k]) + 2 * std::fabs(want[k]) +
                  2 * std::fabs(old[k]));
    }
  }

  auto d_x = to_device_f32(x, "x");
  auto d_dy = to_device_f32(dy, "dy");
  auto d_rstd = to_device_f32(rstd, "rstd");
  auto d_dx = to_device_f32(old, "dx");
  float* dx = alias ? d_dy.data() : d_dx.data();
  cuda::rmsnorm_backward<D>(dx, d_dy.data(), d_x.data(), d_rstd.data(), factor, n, accumulate, nullptr);
  const auto got = alias ? to_host_floats(d_dy) : to_host_floats(d_dx);
  EXPECT_TRUE(within(got, want, bound, D));
}

TEST_F(RmsNormGpu, BackwardMatchesCpu) {
  check_backward<4>(1000, 1.0f, false, false);
  check_backward<16>(3, 1.0f, true, false);
  check_backward<33>(1000, 0.5f, true, false);
  check_backward<48>(1000, 1.0f, false, true);
  check_backward<512>(1, 1.0f, false, false);
  check_backward<512>(65536, 0.57735027f, true, false);  // the model's accumulation into the residual gradient
  check_backward<512>(1000, 0.70710678f, false, true);
  check_backward<18>(1000, 1.0f, true, false);  // 2-wide packs
  check_backward<18>(5, 0.5f, false, true);
  check_backward<512>(64, 1.0f, false, false, true);  // eps-dominated rows: the backward's rstd is the forward's
  check_backward<18>(64, 1.0f, true, false, true);
  check_backward<2048>(100, 1.0f, true, false);  // rows over 1024 values: the old dx is read in the store loop
  check_backward<2048>(100, 0.5f, false, true);
}

// ------------------------------------------------------------------------------ resid_mix_rmsnorm_forward
template <int D>
void check_resid_mix_rmsnorm(std::int64_t n, float factor, bool alias) {
  SCOPED_TRACE(::testing::Message() << "D = " << D << ", n = " << n << ", factor = " << factor << (alias ? ", x_mix == x" : ""));
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto x = normal_floats(nd, 5, 2.0f);
  const auto x0 = normal_floats(nd, 6);
  auto mix = normal_floats(2 * D, 7, 0.3f);
  for (int i = 0; i < D; ++i) mix[i] += 1.0f;  // resid_mix starts at (1, 0)
  std::vector<float> xm(nd), y(nd), rstd(static_cast<std::size_t>(n));
  cpu::resid_mix_forward<D>(xm.data(), x.data(), x0.data(), mix.data(), n);
  cpu::rmsnorm_forward<D>(y.data(), rstd.data(), xm.data(), n);
  for (auto& v : y) v *= factor;

  // x_mix = m0·x + m1·x0: three roundings on the CPU, two or three (FMA) on the GPU, each at most
  // u of |m0·x| + |m1·x0|: 4u·(|m0·x| + |m1·x0|) covers the difference.
  std::vector<double> xb(nd);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int i = 0; i < D; ++i) {
      const std::size_t k = r * D + i;
      xb[k] = 4 * kU * (std::fabs(static_cast<double>(mix[i]) * x[k]) + std::fabs(static_cast<double>(mix[D + i]) * x0[k]));
    }
  }
  const auto row_rtol = row_rtol_from_inputs<D>(xm, xb, n);

  auto d_x = to_device_f32(x, "x");
  auto d_x0 = to_device_f32(x0, "x0");
  auto d_mix = to_device_f32(mix, "mix");
  cuda::DeviceBuffer<float> d_xm(alias ? 0 : nd, "x_mix"), d_rstd(static_cast<std::size_t>(n), "rstd");
  cuda::DeviceBuffer<cuda::nv_bf16> d_h(nd, "h");
  float* x_mix = alias ? d_x.data() : d_xm.data();
  cuda::resid_mix_rmsnorm_forward<D>(x_mix, d_h.data(), d_rstd.data(), d_x.data(), d_x0.data(), d_mix.data(), factor, n, nullptr);
  const auto got_xm = alias ? to_host_floats(d_x) : to_host_floats(d_xm);
  const auto got_h = to_host_floats(d_h);
  const auto got_rstd = to_host_floats(d_rstd);

  EXPECT_TRUE(within(got_xm, xm, xb, D)) << "x_mix";
  std::vector<double> rstd_b(static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < n; ++r) rstd_b[r] = row_rtol[r] * rstd[r];
  EXPECT_TRUE(within(got_rstd, rstd, rstd_b, 1)) << "rstd";
  EXPECT_TRUE(within(got_h, y, h_bound<D>(y, xb, row_rtol, rstd, factor, n), D)) << "h";
}

TEST_F(RmsNormGpu, ResidMixRmsNormMatchesCpu) {
  check_resid_mix_rmsnorm<16>(3, 1.0f, false);
  check_resid_mix_rmsnorm<48>(1000, 0.70710678f, false);
  check_resid_mix_rmsnorm<512>(65536, 0.57735027f, false);
  check_resid_mix_rmsnorm<512>(1000, 1.0f, true);
}

// ------------------------------------------------------------------------------ scaled_add_rmsnorm_forward
template <int D>
void check_scaled_add_rmsnorm(std::int64_t n, float factor, bool in_place) {
  SCOPED_TRACE(::testing::Message() << "D = " << D << ", n = " << n << ", factor = " << factor << (in_place ? ", out == x" : ""));
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto x = normal_floats(nd, 8, 2.0f);
  const auto a = bf16_rounded(normal_floats(nd, 9, 0.5f));  // the GPU reads a as bf16
  const auto scale = normal_floats(D, 10, 0.5f);
  std::vector<float> out(nd), y(nd), rstd(static_cast<std::size_t>(n));
  cpu::scaled_add_forward<D>(out.data(), x.data(), a.data(), scale.data(), n);
  cpu::rmsnorm_forward<D>(y.data(), rstd.data(), out.data(), n);
  for (auto& v : y) v *= factor;

  // out = x + s·a: two roundings on the CPU, one or two on the GPU: 4u·(|x| + |s·a|).
  std::vector<double> ob(nd);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int i = 0; i < D; ++i) {
      const std::size_t k = r * D + i;
      ob[k] = 4 * kU * (std::fabs(x[k]) + std::fabs(static_cast<double>(scale[i]) * a[k]));
    }
  }
  const auto row_rtol = row_rtol_from_inputs<D>(out, ob, n);

  auto d_x = to_device_f32(x, "x");
  auto d_a = to_device_bf16(a, "a");
  auto d_scale = to_device_f32(scale, "scale");
  cuda::DeviceBuffer<float> d_out(in_place ? 0 : nd, "out"), d_rstd(static_cast<std::size_t>(n), "rstd");
  cuda::DeviceBuffer<cuda::nv_bf16> d_h(nd, "h");
  float* o = in_place ? d_x.data() : d_out.data();
  cuda::scaled_add_rmsnorm_forward<D>(o, d_h.data(), d_rstd.data(), d_x.data(), d_a.data(), d_scale.data(), factor, n, nullptr);
  const auto got_out = in_place ? to_host_floats(d_x) : to_host_floats(d_out);
  const auto got_h = to_host_floats(d_h);
  const auto got_rstd = to_host_floats(d_rstd);

  EXPECT_TRUE(within(got_out, out, ob, D)) << "out";
  std::vector<double> rstd_b(static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < n; ++r) rstd_b[r] = row_rtol[r] * rstd[r];
  EXPECT_TRUE(within(got_rstd, rstd, rstd_b, 1)) << "rstd";
  EXPECT_TRUE(within(got_h, y, h_bound<D>(y, ob, row_rtol, rstd, factor, n), D)) << "h";
}

TEST_F(RmsNormGpu, ScaledAddRmsNormMatchesCpu) {
  check_scaled_add_rmsnorm<16>(1000, 1.0f, false);
  check_scaled_add_rmsnorm<48>(3, 2.0f, true);
  check_scaled_add_rmsnorm<512>(3, 1.0f, false);
  check_scaled_add_rmsnorm<512>(65536, 0.5f, true);  // the model's x_mid = x_mix + attn_scale ⊙ attn_out, in place
}

// ------------------------------------------------------------------------------ determinism
TEST_F(RmsNormGpu, TwoRunsGiveTheSameBits) {
  constexpr int D = 512;
  constexpr std::int64_t n = 65536;
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  auto d_x = to_device_f32(normal_floats(nd, 11), "x");
  auto d_x0 = to_device_f32(normal_floats(nd, 12), "x0");
  auto d_dy = to_device_f32(normal_floats(nd, 13), "dy");
  auto d_mix = to_device_f32(normal_floats(2 * D, 14), "mix");
  cuda::DeviceBuffer<float> xm(nd, "x_mix"), rstd(n, "rstd"), dx(nd, "dx");
  cuda::DeviceBuffer<cuda::nv_bf16> h(nd, "h");
  std::vector<float> first_h, first_rstd, first_dx;
  for (int run = 0; run < 2; ++run) {
    dx.zero();
    cuda::resid_mix_rmsnorm_forward<D>(xm.data(), h.data(), rstd.data(), d_x.data(), d_x0.data(), d_mix.data(), 0.5f, n, nullptr);
    cuda::rmsnorm_backward<D>(dx.data(), d_dy.data(), xm.data(), rstd.data(), 0.5f, n, true, nullptr);
    auto hh = to_host_floats(h), rr = to_host_floats(rstd), dd = to_host_floats(dx);
    if (run == 0) {
      first_h = std::move(hh);
      first_rstd = std::move(rr);
      first_dx = std::move(dd);
    } else {
      EXPECT_TRUE(same_bits(hh, first_h)) << "h";
      EXPECT_TRUE(same_bits(rr, first_rstd)) << "rstd";
      EXPECT_TRUE(same_bits(dd, first_dx)) << "dx";
    }
  }
}

// ------------------------------------------------------------------------------ host-side checks (no GPU needed)
TEST(RmsNormCuda, ZeroRowsLaunchNothing) {
  EXPECT_NO_THROW((cuda::rmsnorm_forward<512, cuda::nv_bf16>(nullptr, nullptr, nullptr, 1.0f, 0, nullptr)));
  EXPECT_NO_THROW(cuda::rmsnorm_backward<512>(nullptr, nullptr, nullptr, nullptr, 1.0f, 0, false, nullptr));
  EXPECT_NO_THROW(cuda::resid_mix_rmsnorm_forward<16>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1.0f, 0, nullptr));
  EXPECT_NO_THROW(cuda::scaled_add_rmsnorm_forward<16>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1.0f, 0, nullptr));
}

TEST(RmsNormCuda, MisalignedPointersAreRejectedWithAMessage) {
  // A float pointer 4 bytes past an aligned base: the D = 512 kernels read 16-byte vectors. The
  // check runs before any CUDA call, so this needs no GPU (the pointer is never dereferenced).
  auto* bad = reinterpret_cast<float*>(std::uintptr_t{256 + 4});
  try {
    cuda::rmsnorm_forward<512, float>(bad, nullptr, nullptr, 1.0f, 10, nullptr);
    FAIL() << "expected pgolf::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("16-byte aligned"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda::rmsnorm_backward<512>(bad, bad, bad, nullptr, 1.0f, 10, false, nullptr), Error);
  // Odd D reads single floats: any float pointer is accepted there.
  EXPECT_NO_THROW((cuda::rmsnorm_forward<33, float>(bad, nullptr, bad, 1.0f, 0, nullptr)));
  // In-place backward is only allowed when not accumulating.
  auto* good = reinterpret_cast<float*>(std::uintptr_t{256});
  EXPECT_THROW(cuda::rmsnorm_backward<16>(good, good, good, nullptr, 1.0f, 10, true, nullptr), Error);
}

}  // namespace
}  // namespace pgolf
