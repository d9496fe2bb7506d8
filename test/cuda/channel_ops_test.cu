// The CUDA per-channel and activation kernels (ops/cuda/channel_ops.cuh) against the CPU oracle
// (ops/channel_ops.hpp, ops/features.hpp).
//
// Tolerances are bounds derived from the kernels' arithmetic, per element (helper `within`):
//   u = 2^-24 is the fp32 unit roundoff; an fp32 result of one or two operations differs from the
//   CPU's by a few u of the operands' magnitudes. A column sum over rows is accumulated in fp32
//   within each chunk of kReduceRows rows, each term going through at most kGroupRows (the
//   thread's own rows) + kRowGroups (the in-order combination of the row groups) additions, so its
//   error is <= (kGroupRows + kRowGroups + 1)·u·Σ|terms| (the standard bound for any summation
//   order, +1 for the product's rounding); the chunks are added in double (negligible) and the
//   result rounded to float once on each side (2u·|result|). The CPU sums each chunk of
//   cpu::kChannelGrain rows in double but adds the chunks into the float gradient one by one
//   (reduce_rows_into), so its own error is up to (its chunk count)·u·(|d0| + Σ|terms|).
//   bf16 outputs are a correctly rounded fp32 value: relative error <= kBf16Eps = 2^-8 (8
//   significant bits); where a bound is kBf16Eps alone, both sides compute the same fp32 value.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/ops/channel_ops.hpp"
#include "pgolf/ops/cuda/channel_ops.cuh"
#include "pgolf/ops/features.hpp"

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

// The bound of a GPU column sum dst = d0 + Σ_r p(r, i) against the CPU's (see the file comment).
// abs_sum[i] = Σ_r |p(r, i)| over the n rows.
template <int D>
std::vector<double> column_sum_bound(std::span<const double> abs_sum, std::span<const float> want, std::span<const float> d0,
                                     std::int64_t n) {
  using C = cuda::rowwise::ColumnTiling<D>;
  constexpr double depth = C::kGroupRows + C::kRowGroups + 1;
  const double cpu_chunks = static_cast<double>((n + cpu::kChannelGrain - 1) / cpu::kChannelGrain);
  std::vector<double> b(want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    b[i] = depth * kU * abs_sum[i] + 2 * kU * (std::fabs(want[i]) + std::fabs(d0[i])) + cpu_chunks * kU * (abs_sum[i] + std::fabs(d0[i]));
  }
  return b;
}

class ChannelOpsGpu : public testing::GpuTest {};

// ------------------------------------------------------------------------------ scaled_add_forward
template <int D, class A>
void check_scaled_add_forward(std::int64_t n, bool in_place) {
  constexpr bool kBf16 = std::is_same_v<A, cuda::nv_bf16>;
  SCOPED_TRACE(::testing::Message() << "D = " << D << ", n = " << n << ", a " << (kBf16 ? "bf16" : "fp32") << (in_place ? ", out == x" : ""));
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto x = normal_floats(nd, 21, 2.0f);
  auto a = normal_floats(nd, 22);
  if (kBf16) a = bf16_rounded(a);  // the GPU reads a as bf16: the oracle gets the same values
  const auto scale = normal_floats(D, 23, 0.5f);
  std::vector<float> want(nd);
  cpu::scaled_add_forward<D>(want.data(), x.data(), a.data(), scale.data(), n);
  // x + s·a: two roundings on the CPU, one (FMA) or two on the GPU: 4u·(|x| + |s·a|).
  std::vector<double> bound(nd);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int i = 0; i < D; ++i) bound[r * D + i] = 4 * kU * (std::fabs(x[r * D + i]) + std::fabs(static_cast<double>(scale[i]) * a[r * D + i]));
  }

  auto d_x = to_device_f32(x, "x");
  auto d_scale = to_device_f32(scale, "scale");
  cuda::DeviceBuffer<float> d_out(in_place ? 0 : nd, "out");
  float* out = in_place ? d_x.data() : d_out.data();
  if constexpr (kBf16) {
    auto d_a = to_device_bf16(a, "a");
    cuda::scaled_add_forward<D>(out, d_x.data(), d_a.data(), d_scale.data(), n, nullptr);
    PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  } else {
    auto d_a = to_device_f32(a, "a");
    cuda::scaled_add_forward<D>(out, d_x.data(), d_a.data(), d_scale.data(), n, nullptr);
    PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  }
  const auto got = in_place ? to_host_floats(d_x) : to_host_floats(d_out);
  EXPECT_TRUE(within(got, want, bound, D));
}

TEST_F(ChannelOpsGpu, ScaledAddForwardMatchesCpu) {
  check_scaled_add_forward<16, float>(3, false);
  check_scaled_add_forward<48, cuda::nv_bf16>(1000, true);
  check_scaled_add_forward<512, cuda::nv_bf16>(65536, true);  // x_out = x_mid + mlp_scale ⊙ mlp_out
  check_scaled_add_forward<512, float>(1000, false);          // x += skip_weight ⊙ skip
  check_scaled_add_forward<18, cuda::nv_bf16>(1000, false);    // 2-wide packs, 9 packs on 16 lanes
  check_scaled_add_forward<33, float>(1000, true);             // odd D: 1-wide packs
}

// ------------------------------------------------------------------------------ scaled_add_backward
template <int D, class A, class DA>
void check_scaled_add_backward(std::int64_t n, bool accumulate) {
  constexpr bool kBf16A = std::is_same_v<A, cuda::nv_bf16>, kBf16DA = std::is_same_v<DA, cuda::nv_bf16>;
  SCOPED_TRACE(::testing::Message() << "D = " << D << ", n = " << n << ", a " << (kBf16A ? "bf16" : "fp32") << ", da "
                                    << (kBf16DA ? "bf16" : "fp32") << ", accumulate = " << accumulate);
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto dout = normal_floats(nd, 31);
  auto a = normal_floats(nd, 32, 0.7f);
  if (kBf16A) a = bf16_rounded(a);
  const auto scale = normal_floats(D, 33, 0.5f);
  const auto da0 = accumulate ? normal_floats(nd, 34) : std::vector<float>(nd, 0.0f);
  const auto ds0 = normal_floats(D, 35, 10.0f);  // dscale accumulates onto earlier micro-batches
  std::vector<float> want_da = da0, want_ds = ds0;
  cpu::scaled_add_backward<D>(want_da.data(), want_ds.data(), dout.data(), a.data(), scale.data(), n, accumulate);

  // da: fp32: (old +) s·dout, one or two roundings per side: 4u·(|old| + |s·dout|); bf16: one
  // rounding of that fp32 value.
  std::vector<double> da_bound(nd), abs_sum(D, 0.0);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int i = 0; i < D; ++i) {
      const std::size_t k = r * D + i;
      const double sd = std::fabs(static_cast<double>(scale[i]) * dout[k]);
      da_bound[k] = kBf16DA ? kBf16Eps * std::fabs(want_da[k]) : 4 * kU * (std::fabs(da0[k]) + sd);
      abs_sum[i] += std::fabs(static_cast<double>(dout[k]) * a[k]);
    }
  }

  auto d_dout = to_device_f32(dout, "dout");
  auto d_scale = to_device_f32(scale, "scale");
  auto d_ds = to_device_f32(ds0, "dscale");
  cuda::DeviceBuffer<float> scratch(static_cast<std::size_t>(cuda::column_partials_size(n, D)), "scratch");
  std::vector<float> got_da;
  auto run = [&](const auto& d_a) {
    if constexpr (kBf16DA) {
      cuda::DeviceBuffer<cuda::nv_bf16> d_da(nd, "da");
      cuda::scaled_add_backward<D>(d_da.data(), d_ds.data(), d_dout.data(), d_a.data(), d_scale.data(), n, accumulate, scratch.data(),
                                   nullptr);
      got_da = to_host_floats(d_da);
    } else {
      auto d_da = to_device_f32(da0, "da");
      cuda::scaled_add_backward<D>(d_da.data(), d_ds.data(), d_dout.data(), d_a.data(), d_scale.data(), n, accumulate, scratch.data(),
                                   nullptr);
      got_da = to_host_floats(d_da);
    }
  };
  if constexpr (kBf16A) {
    run(to_device_bf16(a, "a"));
  } else {
    run(to_device_f32(a, "a"));
  }
  const auto got_ds = to_host_floats(d_ds);
  EXPECT_TRUE(within(got_da, want_da, da_bound, D)) << "da";
  EXPECT_TRUE(within(got_ds, want_ds, column_sum_bound<D>(abs_sum, want_ds, ds0, n), D)) << "dscale";
}

TEST_F(ChannelOpsGpu, ScaledAddBackwardMatchesCpu) {
  check_scaled_add_backward<16, float, float>(3, true);
  check_scaled_add_backward<48, cuda::nv_bf16, cuda::nv_bf16>(1000, false);
  check_scaled_add_backward<512, cuda::nv_bf16, cuda::nv_bf16>(1, false);
  check_scaled_add_backward<512, cuda::nv_bf16, cuda::nv_bf16>(65536, false);  // attn/mlp branch: d mlp_out feeds a GEMM
  check_scaled_add_backward<512, float, float>(1000, true);                    // U-Net skip: d skip accumulates
  check_scaled_add_backward<512, float, float>(65536, false);
  check_scaled_add_backward<18, cuda::nv_bf16, cuda::nv_bf16>(1000, false);  // 2-wide packs
  check_scaled_add_backward<18, float, float>(77, true);
  check_scaled_add_backward<33, float, float>(1000, true);                   // 1-wide packs
}

// ------------------------------------------------------------------------------ resid_mix_backward
template <int D>
void check_resid_mix_backward(std::int64_t n, bool alias) {
  SCOPED_TRACE(::testing::Message() << "D = " << D << ", n = " << n << (alias ? ", dx == dout" : ""));
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto dout = normal_floats(nd, 41);
  const auto x = normal_floats(nd, 42, 2.0f);
  const auto x0 = normal_floats(nd, 43);
  auto mix = normal_floats(2 * D, 44, 0.3f);
  for (int i = 0; i < D; ++i) mix[i] += 1.0f;
  const auto dx0_init = normal_floats(nd, 45, 0.5f);
  const auto dmix0 = normal_floats(2 * D, 46, 10.0f);
  std::vector<float> want_dx(nd), want_dx0 = dx0_init, want_dmix = dmix0;
  cpu::resid_mix_backward<D>(want_dx.data(), want_dx0.data(), want_dmix.data(), dout.data(), x.data(), x0.data(), mix.data(), n);

  // dx = m0·dout: one rounding on each side (u·|dx|: equal unless the GPU's product differs);
  // dx0 += m1·dout: 4u·(|dx0| + |m1·dout|) as for scaled_add.
  std::vector<double> dx_bound(nd), dx0_bound(nd), abs_sum(2 * D, 0.0);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int i = 0; i < D; ++i) {
      const std::size_t k = r * D + i;
      dx_bound[k] = kU * std::fabs(want_dx[k]);
      dx0_bound[k] = 4 * kU * (std::fabs(dx0_init[k]) + std::fabs(static_cast<double>(mix[D + i]) * dout[k]));
      abs_sum[i] += std::fabs(static_cast<double>(dout[k]) * x[k]);
      abs_sum[D + i] += std::fabs(static_cast<double>(dout[k]) * x0[k]);
    }
  }

  auto d_dout = to_device_f32(dout, "dout");
  auto d_x = to_device_f32(x, "x");
  auto d_x0 = to_device_f32(x0, "x0");
  auto d_mix = to_device_f32(mix, "mix");
  auto d_dx0 = to_device_f32(dx0_init, "dx0");
  auto d_dmix = to_device_f32(dmix0, "dmix");
  cuda::DeviceBuffer<float> d_dx(alias ? 0 : nd, "dx");
  cuda::DeviceBuffer<float> scratch(static_cast<std::size_t>(cuda::column_partials_size(n, 2 * D)), "scratch");
  float* dx = alias ? d_dout.data() : d_dx.data();
  cuda::resid_mix_backward<D>(dx, d_dx0.data(), d_dmix.data(), d_dout.data(), d_x.data(), d_x0.data(), d_mix.data(), n, scratch.data(),
                              nullptr);
  const auto got_dx = alias ? to_host_floats(d_dout) : to_host_floats(d_dx);
  EXPECT_TRUE(within(got_dx, want_dx, dx_bound, D)) << "dx";
  EXPECT_TRUE(within(to_host_floats(d_dx0), want_dx0, dx0_bound, D)) << "dx0";
  // dmix is (2, D): column sum bounds for both halves (ColumnTiling<D> for each).
  EXPECT_TRUE(within(to_host_floats(d_dmix), want_dmix, column_sum_bound<D>(abs_sum, want_dmix, dmix0, n), D)) << "dmix";
}

TEST_F(ChannelOpsGpu, ResidMixBackwardMatchesCpu) {
  check_resid_mix_backward<16>(3, false);
  check_resid_mix_backward<48>(1000, true);
  check_resid_mix_backward<512>(65536, true);  // the model's use: gx becomes d x_in in place
  check_resid_mix_backward<512>(1000, false);
  check_resid_mix_backward<18>(1000, true);  // 2-wide packs
  check_resid_mix_backward<33>(77, false);   // 1-wide packs
}

// ------------------------------------------------------------------------------ determinism
TEST_F(ChannelOpsGpu, ParameterGradientsAreBitwiseReproducible) {
  constexpr int D = 512;
  constexpr std::int64_t n = 65536;
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  auto d_dout = to_device_f32(normal_floats(nd, 51), "dout");
  auto d_a = to_device_bf16(normal_floats(nd, 52), "a");
  auto d_x = to_device_f32(normal_floats(nd, 53), "x");
  auto d_x0 = to_device_f32(normal_floats(nd, 54), "x0");
  auto d_scale = to_device_f32(normal_floats(D, 55), "scale");
  auto d_mix = to_device_f32(normal_floats(2 * D, 56), "mix");
  cuda::DeviceBuffer<cuda::nv_bf16> da(nd, "da");
  cuda::DeviceBuffer<float> dscale(D, "dscale"), dmix(2 * D, "dmix"), dx(nd, "dx"), dx0(nd, "dx0");
  cuda::DeviceBuffer<float> scratch(static_cast<std::size_t>(cuda::column_partials_size(n, 2 * D)), "scratch");
  std::vector<float> first_ds, first_dmix;
  for (int run = 0; run < 2; ++run) {
    dscale.zero();
    dmix.zero();
    dx0.zero();
    cuda::scaled_add_backward<D>(da.data(), dscale.data(), d_dout.data(), d_a.data(), d_scale.data(), n, false, scratch.data(), nullptr);
    cuda::resid_mix_backward<D>(dx.data(), dx0.data(), dmix.data(), d_dout.data(), d_x.data(), d_x0.data(), d_mix.data(), n,
                                scratch.data(), nullptr);
    auto ds = to_host_floats(dscale), dm = to_host_floats(dmix);
    if (run == 0) {
      first_ds = std::move(ds);
      first_dmix = std::move(dm);
    } else {
      EXPECT_TRUE(same_bits(ds, first_ds)) << "dscale";
      EXPECT_TRUE(same_bits(dm, first_dmix)) << "dmix";
    }
  }
}

// ------------------------------------------------------------------------------ MLP activations
// Both sides compute in fp32 from the same bf16 values with the same operations (products only,
// no additions that an FMA could fuse), and the GPU rounds the fp32 result to bf16 once: the GPU
// output is the oracle's fp32 result rounded to bf16, exactly (rtol 0). For power-of-two slopes
// the fp32 values are even exact (8-bit significand products fit in 24 bits).
template <Activation Act>
void check_activation(std::int64_t count, float slope, int offset, bool in_place) {
  SCOPED_TRACE(::testing::Message() << (Act == Activation::relu2 ? "relu2" : "leaky_relu2") << ", count = " << count
                                    << ", slope = " << slope << ", element offset = " << offset << (in_place ? ", du == dr" : ""));
  const std::size_t total = static_cast<std::size_t>(count) + offset;
  const auto u = bf16_rounded(normal_floats(total, 61, 2.0f));
  const auto dr = bf16_rounded(normal_floats(total, 62));
  std::vector<float> r(total, 0.0f), du(total, 0.0f);
  if constexpr (Act == Activation::relu2) {
    cpu::relu2_forward(r.data() + offset, u.data() + offset, count);
    cpu::relu2_backward(du.data() + offset, dr.data() + offset, u.data() + offset, count);
  } else {
    cpu::leaky_relu2_forward(r.data() + offset, u.data() + offset, count, slope);
    cpu::leaky_relu2_backward(du.data() + offset, dr.data() + offset, u.data() + offset, count, slope);
  }
  const auto want_r = bf16_rounded(r), want_du = bf16_rounded(du);

  auto d_u = to_device_bf16(u, "u");
  auto d_dr = to_device_bf16(dr, "dr");
  cuda::DeviceBuffer<cuda::nv_bf16> d_r(total, "r"), d_du(in_place ? 0 : total, "du");
  // Elements before `offset` are not touched by the kernels: compare them as written (zeros).
  PGOLF_CUDA_CHECK(cudaMemset(d_r.data(), 0, d_r.bytes()));
  if (!in_place) PGOLF_CUDA_CHECK(cudaMemset(d_du.data(), 0, d_du.bytes()));
  cuda::nv_bf16* du_ptr = in_place ? d_dr.data() : d_du.data();
  cuda::mlp_activation_forward<Act>(d_r.data() + offset, d_u.data() + offset, count, slope, nullptr);
  cuda::mlp_activation_backward<Act>(du_ptr + offset, d_dr.data() + offset, d_u.data() + offset, count, slope, nullptr);
  auto got_r = to_host_floats(d_r);
  auto got_du = in_place ? to_host_floats(d_dr) : to_host_floats(d_du);
  if (in_place) std::fill_n(got_du.begin(), offset, 0.0f);  // d_dr keeps its inputs before `offset`
  EXPECT_TRUE(all_close(got_r, want_r, 0, 0)) << "forward";
  EXPECT_TRUE(all_close(got_du, want_du, 0, 0)) << "backward";
}

TEST_F(ChannelOpsGpu, ActivationsMatchCpuExactly) {
  for (const bool in_place : {false, true}) {
    check_activation<Activation::relu2>(65536 * 8 + 5, 0.0f, 0, in_place);  // 16-byte vectors plus a tail of 5
    check_activation<Activation::relu2>(1000, 0.0f, 1, in_place);           // misaligned by one element: scalar path
    check_activation<Activation::leaky_relu2>(65536 * 8 + 5, 0.5f, 0, in_place);
    check_activation<Activation::leaky_relu2>(3, 0.5f, 3, in_place);
    check_activation<Activation::leaky_relu2>(4099, 0.3f, 0, in_place);  // a slope whose products round: still the same ops
  }
}

// ------------------------------------------------------------------------------ host-side checks (no GPU needed)
TEST(ChannelOpsCuda, Bf16GradientIsNotAccumulated) {
  // The check runs before any CUDA call; the pointers are never dereferenced.
  try {
    cuda::scaled_add_backward<512, cuda::nv_bf16, cuda::nv_bf16>(nullptr, nullptr, nullptr, nullptr, nullptr, 10, true, nullptr, nullptr);
    FAIL() << "expected pgolf::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bf16 da"), std::string::npos) << e.what();
  }
}

TEST(ChannelOpsCuda, MisalignedPointersAreRejected) {
  auto* bad = reinterpret_cast<float*>(std::uintptr_t{256 + 4});
  EXPECT_THROW(cuda::scaled_add_forward<512>(bad, bad, bad, bad, 10, nullptr), Error);
  EXPECT_THROW(cuda::resid_mix_backward<512>(bad, bad, nullptr, bad, bad, bad, bad, 10, nullptr, nullptr), Error);
  // D = 18 uses 2-element vectors: a float pointer must be 8-byte aligned.
  EXPECT_THROW(cuda::scaled_add_forward<18>(bad, bad, bad, bad, 10, nullptr), Error);
}

TEST(ChannelOpsCuda, EmptyInputsLaunchNothing) {
  EXPECT_NO_THROW((cuda::scaled_add_forward<512, float>(nullptr, nullptr, nullptr, nullptr, 0, nullptr)));
  EXPECT_NO_THROW((cuda::scaled_add_backward<512, float, float>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, true, nullptr, nullptr)));
  EXPECT_NO_THROW(cuda::resid_mix_backward<16>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::mlp_activation_forward<Activation::relu2>(nullptr, nullptr, 0, 0.0f, nullptr));
  EXPECT_NO_THROW(cuda::mlp_activation_backward<Activation::leaky_relu2>(nullptr, nullptr, nullptr, 0, 0.5f, nullptr));
}

}  // namespace
}  // namespace pgolf
