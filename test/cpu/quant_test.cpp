// The reference's int8 export quantization.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "gradcheck.hpp"
#include "pgolf/model/init.hpp"
#include "pgolf/quant/int8_reference.hpp"

namespace pgolf {
namespace {

TEST(Quantile, LinearInterpolationLikeTorch) {
  std::vector<float> v = {5, 1, 4, 2, 3};
  EXPECT_FLOAT_EQ(quantile_linear(v, 0.5f), 3.0f);
  v = {5, 1, 4, 2, 3};
  EXPECT_FLOAT_EQ(quantile_linear(v, 0.1f), 1.4f);  // rank 0.4 between 1 and 2
  v = {5, 1, 4, 2, 3};
  EXPECT_FLOAT_EQ(quantile_linear(v, 1.0f), 5.0f);
  v = {7};
  EXPECT_FLOAT_EQ(quantile_linear(v, kInt8ClipQuantile), 7.0f);
  // 512 values: rank = q·511 = 510.99918…, so the clip is just below the maximum.
  std::vector<float> w(512);
  for (int i = 0; i < 512; ++i) w[i] = static_cast<float>(i);
  const float q = quantile_linear(w, kInt8ClipQuantile);
  EXPECT_GT(q, 510.99f);
  EXPECT_LT(q, 511.0f);
}

TEST(Int8Reference, PerRowQuantizationFollowsTheFormula) {
  const ParamSpec spec = layout_detail::block_spec(BlockParam::fc, 0, 2, 300, 256, ParamRole::matrix, ParamInit::zeros);
  auto vd = testing::normal_vector(300 * 256, 80, 0.02);
  vd[5] = 0.5;  // an outlier in row 0: clipped at the row's quantile
  std::vector<float> values(vd.begin(), vd.end());
  const auto t = quantize_int8_reference(spec, values);
  ASSERT_EQ(t.kind, QuantKind::int8_per_row);
  ASSERT_EQ(t.row_scales.size(), 300u);
  for (int r = 0; r < 300; ++r) {
    std::vector<float> a(values.begin() + r * 256, values.begin() + (r + 1) * 256);
    for (auto& x : a) x = std::fabs(x);
    const float clip = quantile_linear(a, kInt8ClipQuantile);
    const float scale = std::max(clip / 127.0f, 1.0f / 127.0f);
    EXPECT_EQ(t.row_scales[r].bits, f16::from_float(scale).bits);
    for (int c = 0; c < 256; ++c) {
      const float x = std::min(std::max(values[r * 256 + c], -clip), clip);
      ASSERT_EQ(t.q[r * 256 + c], static_cast<std::int8_t>(std::nearbyint(x / scale)));
    }
  }
  // Small weights (|w| << 1) all hit the 1/127 scale floor: the reference's int8 grid is coarse
  // there, which is why its trained weights must grow beyond it to be represented well.
  EXPECT_EQ(t.row_scales[0].to_float(), round_to_f16(1.0f / 127.0f));
  std::vector<float> back(values.size());
  dequantize(t, back);
  for (std::size_t i = 0; i < back.size(); ++i) EXPECT_NEAR(back[i], values[i], 0.5f / 127 + 1e-3) << i;
}

TEST(Int8Reference, SmallTensorsPassThroughAsFp16OrFp32ForControlNames) {
  const ParamSpec vec = layout_detail::block_spec(BlockParam::attn_scale, 0, 1, 512, 0, ParamRole::scalar, ParamInit::ones, 0, true);
  const ParamSpec emb = layout_detail::global_spec(GlobalParam::tok_emb, 2, 64, 64, ParamRole::embedding, ParamInit::zeros);
  std::vector<float> v(512, 1.2345678f), e(4096, 0.1f);
  const auto tv = quantize_int8_reference(vec, v);
  EXPECT_EQ(tv.kind, QuantKind::keep_f32);
  EXPECT_EQ(tv.f32_values[0], 1.2345678f);
  const auto te = quantize_int8_reference(emb, e);
  EXPECT_EQ(te.kind, QuantKind::keep_f16);
  EXPECT_EQ(te.payload_bytes(), 2 * 4096);
  std::vector<float> back(4096);
  dequantize(te, back);
  EXPECT_EQ(back[7], round_to_f16(0.1f));
}

TEST(Int8Reference, WholeModelRoundTripAndBaselinePayloadSize) {
  constexpr ModelConfig base{};
  std::vector<float> p(ParamLayout<base>::total);
  init_params<base>(std::span<float>(p), 1337);
  const auto q = quantize_model_int8<base>(p);
  std::int64_t payload = 0;
  for (const auto& t : q) payload += t.payload_bytes();
  // The reference's log for its baseline: payload 17,178,912 bytes. Same tensors, same rule:
  // int8 values for 17,049,600 params, fp16 row scales, fp32 control tensors.
  EXPECT_EQ(payload, 17'178'912);
  std::vector<float> back(p.size());
  dequantize_model<base>(q, back);
  for (std::size_t i = 0; i < p.size(); i += 1013) EXPECT_NEAR(back[i], p[i], 1.0f / 127);
}

}  // namespace
}  // namespace pgolf
