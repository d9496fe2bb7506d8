// The fused logit softcap + cross-entropy (forward, and forward + backward in one pass) against
// cpu::softcap_cross_entropy_forward/backward in fp32 on the same bf16-rounded raw logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/core/philox.hpp"
#include "pgolf/ops/cuda/softcap_cross_entropy.cuh"
#include "pgolf/ops/softcap_cross_entropy.hpp"

namespace pgolf {
namespace {

using testing::all_close;
using testing::kBf16Eps;

constexpr float kCap = 30.0f;     // the reference's LOGIT_SOFTCAP
constexpr float kDloss = -0.37f;  // ≠ 1 (and negative) to check the scaling

// Tolerances.
//  loss: fp32 on both sides, magnitudes ≤ cap + log V ≈ 40 (ulp 3.8e-6). The GPU's Σ exp(z' − max)
//    is an fp32 sum of V terms ≤ 1 (≤ ~40 roundings deep: 32 per lane + a 5–10 level tree, relative
//    ≤ 2.4e-6, i.e. ≤ 2.4e-6 absolute in lse); z' differs by ≤ ~2 ulp of 30 from tanhf vs glibc's
//    tanhf and ≤ 1 ulp from z·(1/cap) vs z/cap (≤ 1.1e-5 for z'_y and again for the dominant terms
//    of lse); lse = m + log(s) and the final difference round once each (≤ 3.8e-6): ≲ 3e-5 in the
//    worst case, typically a few e-6. atol 5e-5.
constexpr double kLossAtol = 5e-5;
//  dlogits: bf16 output, one rounding (≤ 2^-8 relative: rtol kBf16Eps, plus kGradRtolFp32 below).
//   Besides that:
//   - non-target entries dloss·p·(1 − t²): p = exp(z' − lse) inherits the ≲ 3e-5 absolute error of
//     z' − lse as a relative error (kGradRtolFp32 = 3e-5); near |t| = 1 the two sides' t (the GPU's tanh
//     value, the CPU's z'/cap) may differ by a few ulp (6e-8 each), i.e. ≤ ~5e-7 absolute in 1 − t²,
//     times p ≤ 1: atol 1e-6·|dloss|.
//   - target entries dloss·(p − 1)·(1 − t²): when p → 1 the subtraction cancels and p's absolute error
//     (≲ 3e-5·p) is all that is left: atol 5e-5·|dloss|, checked on those n entries only.
constexpr double kGradRtolFp32 = 3e-5;
constexpr double kGradAtolOther = 1e-6;
constexpr double kGradAtolTarget = 5e-5;

struct Case {
  std::vector<float> logits;  // (n, V), bf16-rounded raw z
  std::vector<std::int32_t> targets;
  std::vector<float> loss, dlogits;  // the CPU oracle
};

// Normal logits (std 4) with every 7th row scaled by 250 (|z| up to ~3e3: the softcap saturates at
// ±30, tanh → ±1 exactly in fp32 for many entries); targets random, except every 5th row whose
// target is the row's argmax (loss → 0, p_y → 1: the cancelling case) and every 11th the argmin.
template <int V>
Case make_case(std::int64_t n) {
  Case c;
  c.logits = testing::normal_floats(static_cast<std::size_t>(n * V), 31, 4.0f);
  const RandomStream rng(20240520, 32);
  c.targets.resize(static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < n; ++r) {
    float* z = c.logits.data() + r * V;
    if (r % 7 == 3) {
      for (int i = 0; i < V; ++i) z[i] *= 250.0f;
    }
    if (r % 5 == 0) {
      c.targets[r] = static_cast<std::int32_t>(std::max_element(z, z + V) - z);
    } else if (r % 11 == 0) {
      c.targets[r] = static_cast<std::int32_t>(std::min_element(z, z + V) - z);
    } else {
      c.targets[r] = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(r), V));
    }
  }
  c.logits = testing::bf16_rounded(c.logits);

  std::vector<float> capped = c.logits, lse(static_cast<std::size_t>(n)), dloss(static_cast<std::size_t>(n), kDloss);
  c.loss.resize(static_cast<std::size_t>(n));
  c.dlogits.resize(capped.size());
  cpu::softcap_cross_entropy_forward<V>(c.loss.data(), lse.data(), capped.data(), c.targets.data(), n, kCap);
  cpu::softcap_cross_entropy_backward<V>(c.dlogits.data(), capped.data(), lse.data(), c.targets.data(), dloss.data(), n, kCap);
  return c;
}

// Splits a (n, V) gradient into the target entries and the others, for their two tolerances.
void split(const std::vector<float>& d, const std::vector<std::int32_t>& targets, int V, std::vector<float>& at_target,
           std::vector<float>& others) {
  at_target.clear();
  others.clear();
  for (std::size_t r = 0; r < targets.size(); ++r) {
    for (int i = 0; i < V; ++i) (i == targets[r] ? at_target : others).push_back(d[r * V + i]);
  }
}

template <int V>
void expect_gradients_close(const std::vector<float>& got, const Case& c, const char* what) {
  std::vector<float> got_t, got_o, want_t, want_o;
  split(got, c.targets, V, got_t, got_o);
  split(c.dlogits, c.targets, V, want_t, want_o);
  const double s = std::fabs(kDloss);
  EXPECT_TRUE(all_close(got_o, want_o, kGradAtolOther * s, kBf16Eps + kGradRtolFp32)) << what << ": non-target entries";
  EXPECT_TRUE(all_close(got_t, want_t, kGradAtolTarget * s, kBf16Eps + kGradRtolFp32)) << what << ": target entries";
}

template <int V>
void check_softcap_ce(std::int64_t n) {
  SCOPED_TRACE("V=" + std::to_string(V) + " n=" + std::to_string(n));
  const Case c = make_case<V>(n);
  cuda::DeviceBuffer<std::int32_t> d_targets(static_cast<std::size_t>(n), "targets");
  PGOLF_CUDA_CHECK(cudaMemcpy(d_targets.data(), c.targets.data(), c.targets.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
  auto d_logits = testing::to_device_bf16(c.logits, "logits");
  cuda::DeviceBuffer<float> d_loss(static_cast<std::size_t>(n), "loss"), d_loss2(static_cast<std::size_t>(n), "loss (training)");

  // Forward only.
  cuda::softcap_cross_entropy_forward<V>(d_loss.data(), d_logits.data(), d_targets.data(), kCap, n, nullptr);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> loss = testing::to_host_floats(d_loss);
  EXPECT_TRUE(all_close(loss, c.loss, kLossAtol, 0.0)) << "loss (forward)";

  // Forward + backward, out of place: the same loss bits as the forward, and the gradient.
  cuda::DeviceBuffer<cuda::nv_bf16> d_dlogits(static_cast<std::size_t>(n * V), "dlogits");
  cuda::softcap_cross_entropy_forward_backward<V>(d_loss2.data(), d_dlogits.data(), d_logits.data(), d_targets.data(), kCap, kDloss, n,
                                                  nullptr);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  EXPECT_EQ(testing::to_host_floats(d_loss2), loss) << "the training kernel's loss differs from the forward's";
  const std::vector<float> grad = testing::to_host_floats(d_dlogits);
  expect_gradients_close<V>(grad, c, "dlogits");

  // In place (dlogits == logits): the same bits as out of place.
  cuda::softcap_cross_entropy_forward_backward<V>(d_loss2.data(), d_logits.data(), d_logits.data(), d_targets.data(), kCap, kDloss, n,
                                                  nullptr);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  EXPECT_EQ(testing::to_host_floats(d_logits), grad) << "in place differs from out of place";

  // Logits one element off 16-byte alignment: the scalar path (other lane counts, so other sums).
  std::vector<float> shifted(c.logits.size() + 1, 0.0f);
  std::copy(c.logits.begin(), c.logits.end(), shifted.begin() + 1);
  auto d_shifted = testing::to_device_bf16(shifted, "logits (misaligned)");
  cuda::softcap_cross_entropy_forward_backward<V>(d_loss2.data(), d_shifted.data() + 1, d_shifted.data() + 1, d_targets.data(), kCap, kDloss,
                                                  n, nullptr);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  EXPECT_TRUE(all_close(testing::to_host_floats(d_loss2), c.loss, kLossAtol, 0.0)) << "loss (scalar path)";
  std::vector<float> grad_scalar = testing::to_host_floats(d_shifted);
  grad_scalar.erase(grad_scalar.begin());
  expect_gradients_close<V>(grad_scalar, c, "dlogits (scalar path)");
}

class SoftcapCrossEntropyGpu : public testing::GpuTest {};

TEST_F(SoftcapCrossEntropyGpu, Vocab64) {  // a warp per row, one 16-byte chunk per lane for 8 lanes
  check_softcap_ce<64>(1);
  check_softcap_ce<64>(1000);
}

TEST_F(SoftcapCrossEntropyGpu, Vocab1024) {  // the baseline: a warp per row, 32 values per lane
  check_softcap_ce<1024>(1);
  check_softcap_ce<1024>(1000);
}

TEST_F(SoftcapCrossEntropyGpu, Vocab8192) {  // a 256-lane block per row
  check_softcap_ce<8192>(1);
  check_softcap_ce<8192>(1000);
}

TEST(SoftcapCrossEntropyShape, LanesPerRow) {  // compile-time: how a row is spread over lanes
  static_assert(cuda::ce_detail::RowShape<1024, 8>::kThreads == 32 && cuda::ce_detail::RowShape<1024, 8>::kPerThread == 4);
  static_assert(cuda::ce_detail::RowShape<8192, 8>::kThreads == 256 && cuda::ce_detail::RowShape<8192, 8>::kPerThread == 4);
  static_assert(cuda::ce_detail::RowShape<64, 8>::kThreads == 32 && !cuda::ce_detail::RowShape<64, 8>::kExact);
  static_assert(cuda::ce_detail::RowShape<8192, 1>::kThreads == 1024 && cuda::ce_detail::RowShape<8192, 1>::kPerThread == 8);
  SUCCEED();
}

}  // namespace
}  // namespace pgolf
