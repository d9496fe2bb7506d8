// The fused per-head q/k RMSNorm + RoPE + q_gain against the CPU oracle: cpu::rmsnorm_forward<Hd>,
// cpu::rope_forward and cpu::head_gain_forward (and their backwards) chained as gpt_cpu.hpp's
// block_forward/block_backward do, in fp32 on the same bf16-rounded inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/ops/channel_ops.hpp"
#include "pgolf/ops/cuda/qk_norm_rope.cuh"
#include "pgolf/ops/rmsnorm.hpp"
#include "pgolf/ops/rope.hpp"

namespace pgolf {
namespace {

using testing::all_close;
using testing::kBf16Eps;

constexpr int kMaxSeq = 1024;
constexpr double kRopeBase = 10000.0;

// Columns [c0, c0 + width) of a (rows, ld) matrix, packed.
std::vector<float> columns(const std::vector<float>& m, std::int64_t rows, std::int64_t ld, std::int64_t c0, std::int64_t width) {
  std::vector<float> out(static_cast<std::size_t>(rows * width));
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < width; ++c) out[r * width + c] = m[r * ld + c0 + c];
  }
  return out;
}

double rms(const std::vector<float>& v) {
  double s = 0;
  for (const float x : v) s += static_cast<double>(x) * x;
  return v.empty() ? 0.0 : std::sqrt(s / static_cast<double>(v.size()));
}

// One forward + backward parity check. ld_extra = 0 is the model's layout (ld = H·Hd + 2·Hkv·Hd:
// q, k, v side by side, 16-byte aligned rows); ld_extra = 1 makes every row misaligned, which
// takes the scalar (2-byte access) fallback of both kernels.
template <int H, int Hkv, int Hd, int Rd>
void check_qk_norm_rope(std::int64_t batch, std::int64_t seq, std::int64_t ld_extra) {
  SCOPED_TRACE("H=" + std::to_string(H) + " Hkv=" + std::to_string(Hkv) + " Hd=" + std::to_string(Hd) + " Rd=" + std::to_string(Rd) +
               " batch=" + std::to_string(batch) + " seq=" + std::to_string(seq) + " ld_extra=" + std::to_string(ld_extra));
  constexpr int QD = H * Hd, KD = Hkv * Hd;
  const std::int64_t n = batch * seq;
  const std::int64_t ld = QD + 2 * KD + ld_extra;

  // q_raw/k_raw with a per-row scale between 0.3 and 3.3, so that rstd varies around 1.
  std::vector<float> qkv = testing::normal_floats(static_cast<std::size_t>(n * ld), 11);
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t c = 0; c < ld; ++c) qkv[r * ld + c] *= 0.3f + 0.5f * static_cast<float>(r % 7);
  }
  qkv = testing::bf16_rounded(qkv);
  std::vector<float> gain(H);
  for (int h = 0; h < H; ++h) gain[h] = 1.5f + 0.125f * static_cast<float>(h) - (h % 2 ? 0.75f : 0.0f);

  // ---------------------------------------------------------------- CPU oracle, forward
  const cpu::RopeTables<float> tab(kMaxSeq, Rd, kRopeBase);
  const std::vector<float> q_raw = columns(qkv, n, ld, 0, QD), k_raw = columns(qkv, n, ld, QD, KD);
  std::vector<float> q_rot(q_raw.size()), q_rstd(static_cast<std::size_t>(n * H)), k(k_raw.size()), k_rstd(static_cast<std::size_t>(n * Hkv));
  cpu::rmsnorm_forward<Hd>(q_rot.data(), q_rstd.data(), q_raw.data(), n * H);
  cpu::rmsnorm_forward<Hd>(k.data(), k_rstd.data(), k_raw.data(), n * Hkv);
  cpu::rope_forward<Hd, Rd>(q_rot.data(), tab, batch, seq, H);
  cpu::rope_forward<Hd, Rd>(k.data(), tab, batch, seq, Hkv);
  std::vector<float> q = q_rot;
  cpu::head_gain_forward<H, Hd>(q.data(), gain.data(), n);

  // ---------------------------------------------------------------- GPU forward
  const cuda::DeviceRopeTables rope(kMaxSeq, Rd, kRopeBase);
  auto d_qkv = testing::to_device_bf16(qkv, "qkv");
  auto d_gain = testing::to_device_f32(gain, "q_gain");
  cuda::DeviceBuffer<cuda::nv_bf16> d_q(static_cast<std::size_t>(n * QD), "q"), d_k(static_cast<std::size_t>(n * KD), "k");
  cuda::DeviceBuffer<float> d_q_rstd(static_cast<std::size_t>(n * H), "q_rstd"), d_k_rstd(static_cast<std::size_t>(n * Hkv), "k_rstd");
  cuda::qk_norm_rope_forward<H, Hkv, Hd, Rd>(d_q.data(), d_k.data(), d_q_rstd.data(), d_k_rstd.data(), d_qkv.data(), ld, d_gain.data(), rope,
                                             batch, seq, nullptr);
  PGOLF_CUDA_CHECK(cudaGetLastError());

  // Tolerances of the forward. q and k are bf16 (one rounding: ≤ 2^-8 relative, rtol = kBf16Eps;
  // the fp32 differences below, which may push a value across a rounding boundary, are in atol). atol 3e-5
  // covers the fp32 differences between the two formulas (rstd from a float vs a double sum, FMA
  // contraction in a·cos + b·sin): ~1e-7 relative to |a| + |b| ≤ ~10 here, far below one bf16 ulp of
  // an O(1) value (2^-8), so it cannot hide a wrong pairing, table entry or gain.
  EXPECT_TRUE(all_close(testing::to_host_floats(d_q), q, 3e-5, kBf16Eps)) << "q";
  EXPECT_TRUE(all_close(testing::to_host_floats(d_k), k, 3e-5, kBf16Eps)) << "k";
  // rstd: the GPU sums Hd squares in fp32 (≤ ~11 roundings deep: 8 per lane + a 3-level butterfly,
  // relative ≤ 11·2^-24 ≈ 7e-7, halved by the square root) then sqrtf and two divisions (correctly
  // rounded); the CPU sums in double and rounds once. 2e-6 relative is about 3x that bound.
  EXPECT_TRUE(all_close(testing::to_host_floats(d_q_rstd), q_rstd, 0.0, 2e-6)) << "q_rstd";
  EXPECT_TRUE(all_close(testing::to_host_floats(d_k_rstd), k_rstd, 0.0, 2e-6)) << "k_rstd";

  // ---------------------------------------------------------------- CPU oracle, backward
  const std::vector<float> dq = testing::bf16_rounded(testing::normal_floats(static_cast<std::size_t>(n * QD), 12));
  const std::vector<float> dk = testing::bf16_rounded(testing::normal_floats(static_cast<std::size_t>(n * KD), 13, 0.5f));
  std::vector<float> dgain(H);
  for (int h = 0; h < H; ++h) dgain[h] = 0.25f * static_cast<float>(h + 1);  // the backward adds to it
  std::vector<float> gq = dq, gk = dk, dgain_cpu = dgain;
  cpu::head_gain_backward<H, Hd>(gq.data(), dgain_cpu.data(), q_rot.data(), gain.data(), n);
  cpu::rope_backward<Hd, Rd>(gq.data(), tab, batch, seq, H);
  cpu::rope_backward<Hd, Rd>(gk.data(), tab, batch, seq, Hkv);
  cpu::rmsnorm_backward<Hd>(gq.data(), gq.data(), q_raw.data(), q_rstd.data(), n * H, false);
  cpu::rmsnorm_backward<Hd>(gk.data(), gk.data(), k_raw.data(), k_rstd.data(), n * Hkv, false);
  // Σ |dq ⊙ rope(rms_norm(q_raw))| per head: the scale of dgain's rounding error.
  std::vector<double> dgain_abs(H, 0.0);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int h = 0; h < H; ++h) {
      for (int i = 0; i < Hd; ++i) dgain_abs[h] += std::fabs(static_cast<double>(dq[(r * H + h) * Hd + i]) * q_rot[(r * H + h) * Hd + i]);
    }
  }

  // ---------------------------------------------------------------- GPU backward
  constexpr float kSentinel = 7.0f;  // v columns (and the padding column) must keep it
  const std::vector<float> sentinel(static_cast<std::size_t>(n * ld), kSentinel);
  auto d_dqkv = testing::to_device_bf16(sentinel, "d_qkv");
  auto d_dq = testing::to_device_bf16(dq, "dq");
  auto d_dk = testing::to_device_bf16(dk, "dk");
  auto d_q_rstd_cpu = testing::to_device_f32(q_rstd, "q_rstd (CPU)");  // the CPU's rstd: isolates the backward
  auto d_k_rstd_cpu = testing::to_device_f32(k_rstd, "k_rstd (CPU)");
  auto d_dgain = testing::to_device_f32(dgain, "dgain");
  cuda::DeviceBuffer<float> scratch(static_cast<std::size_t>(cuda::qk_norm_rope_scratch_size<H>(n)), "scratch");
  ASSERT_EQ(cuda::qk_norm_rope_scratch_size<H>(n), (n + 63) / 64 * H);  // H floats per 64-row chunk
  cuda::qk_norm_rope_backward<H, Hkv, Hd, Rd>(d_dqkv.data(), ld, d_dgain.data(), d_dq.data(), d_dk.data(), d_qkv.data(), ld,
                                              d_q_rstd_cpu.data(), d_k_rstd_cpu.data(), d_gain.data(), rope, batch, seq, scratch.data(),
                                              nullptr);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> got_dqkv = testing::to_host_floats(d_dqkv);

  // d q_raw, d k_raw: bf16 outputs (rtol 2^-8 as above). dx = rstd·dy − rstd³/Hd·x·Σ dy·x: the GPU's
  // fp32 head dot (≤ ~11 roundings of terms summing to ~Hd·E|dy·x|) versus the CPU's double dot
  // changes the second term by ~1e-6 of the gradient's scale (rstd·|dy| with |x·rstd| ≤ ~4);
  // atol = 5e-5 · rms(expected) is >10x that and still ~100x below a bf16 ulp of a typical value.
  const std::vector<float> got_dq = columns(got_dqkv, n, ld, 0, QD), got_dk = columns(got_dqkv, n, ld, QD, KD);
  EXPECT_TRUE(all_close(got_dq, gq, 5e-5 * rms(gq), kBf16Eps)) << "d q_raw";
  EXPECT_TRUE(all_close(got_dk, gk, 5e-5 * rms(gk), kBf16Eps)) << "d k_raw";
  std::int64_t touched = 0;
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t c = QD + KD; c < ld; ++c) touched += got_dqkv[r * ld + c] != kSentinel;
  }
  EXPECT_EQ(touched, 0) << "the backward wrote outside the q and k columns of d_qkv";

  // dgain: the GPU adds each 64-row chunk's terms in fp32 (a lane's chain over ~13 rows, a 3-level
  // butterfly over a head's 8 products, 5 per-row partials: ≲ 70 roundings, ≤ 4.2e-6 · Σ|terms|)
  // and the chunks in double; the CPU sums in double. Tolerance 1e-5 · Σ|terms| (+ 1e-6 absolute).
  const std::vector<float> got_dgain = testing::to_host_floats(d_dgain);
  for (int h = 0; h < H; ++h) {
    EXPECT_NEAR(got_dgain[h], dgain_cpu[h], 1e-5 * dgain_abs[h] + 1e-6) << "dgain[" << h << "] (Σ|terms| = " << dgain_abs[h] << ")";
  }

  // Determinism: the same backward again, from the same dgain, gives the same bits.
  auto d_dgain2 = testing::to_device_f32(dgain, "dgain (second run)");
  cuda::qk_norm_rope_backward<H, Hkv, Hd, Rd>(d_dqkv.data(), ld, d_dgain2.data(), d_dq.data(), d_dk.data(), d_qkv.data(), ld,
                                              d_q_rstd_cpu.data(), d_k_rstd_cpu.data(), d_gain.data(), rope, batch, seq, scratch.data(),
                                              nullptr);
  const std::vector<float> again = testing::to_host_floats(d_dgain2);
  for (int h = 0; h < H; ++h) EXPECT_EQ(float_to_bits(again[h]), float_to_bits(got_dgain[h])) << "dgain[" << h << "] not deterministic";
  EXPECT_EQ(testing::to_host_floats(d_dqkv), got_dqkv) << "d_qkv not deterministic";
}

class QkNormRopeGpu : public testing::GpuTest {};

TEST_F(QkNormRopeGpu, FullRotaryBaselineHeads) {  // H=8, Hkv=4, Hd=64, all 64 dims rotate
  for (const std::int64_t seq : {1, 37, 1024}) check_qk_norm_rope<8, 4, 64, 64>(2, seq, 0);
  check_qk_norm_rope<8, 4, 64, 64>(2, 37, 1);
}

TEST_F(QkNormRopeGpu, PartialRotary16Of64) {  // partial RoPE: dims [0, 16) rotate, [16, 64) pass through
  for (const std::int64_t seq : {1, 37, 1024}) check_qk_norm_rope<8, 4, 64, 16>(2, seq, 0);
  check_qk_norm_rope<8, 4, 64, 16>(2, 37, 1);
}

TEST_F(QkNormRopeGpu, TinyHeadsRotateInsideOneLane) {  // Hd = 4: one lane per head
  for (const std::int64_t seq : {1, 37, 1024}) check_qk_norm_rope<4, 2, 4, 4>(2, seq, 0);
  check_qk_norm_rope<4, 2, 4, 4>(2, 37, 1);
}

TEST_F(QkNormRopeGpu, RejectsTablesOfTheWrongShape) {
  const cuda::DeviceRopeTables rope(16, 16, kRopeBase);
  cuda::DeviceBuffer<cuda::nv_bf16> buf(64 * 1024, "buffer");
  cuda::DeviceBuffer<float> f(1024, "floats");
  // Rotary dims differ from the kernel's, then seq longer than the tables.
  EXPECT_THROW((cuda::qk_norm_rope_forward<8, 4, 64, 64>(buf.data(), buf.data(), f.data(), f.data(), buf.data(), 1024, f.data(), rope, 1, 4,
                                                         nullptr)),
               Error);
  EXPECT_THROW((cuda::qk_norm_rope_forward<8, 4, 64, 16>(buf.data(), buf.data(), f.data(), f.data(), buf.data(), 1024, f.data(), rope, 1, 17,
                                                         nullptr)),
               Error);
}

TEST(QkNormRopeLayout, LanesPerHead) {  // compile-time: how heads are spread over lanes
  using Full = cuda::qk_detail::HeadLayout<64, 64>;
  static_assert(Full::kE == 8 && Full::kTph == 8 && Full::kCross && Full::kOff == 4 && Full::kRotChunks == 8);
  using Partial = cuda::qk_detail::HeadLayout<64, 16>;
  static_assert(Partial::kE == 8 && Partial::kTph == 8 && Partial::kCross && Partial::kOff == 1 && Partial::kRotChunks == 2);
  using Tiny = cuda::qk_detail::HeadLayout<4, 4>;
  static_assert(Tiny::kE == 4 && Tiny::kTph == 1 && !Tiny::kCross);
  SUCCEED();
}

}  // namespace
}  // namespace pgolf
