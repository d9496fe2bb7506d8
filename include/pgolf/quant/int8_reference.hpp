// The reference's export quantization, "int8_clean_per_row_v1" (quantize_state_dict_int8, §1.8):
//   - float tensors with numel <= 65,536 pass through: fp32 when the name matches a control
//     pattern, else stored as fp16 (original dtype recorded);
//   - larger 2-D tensors: per row, clip = quantile(|W_row|, 0.9999984) (linear interpolation),
//     scale = max(clip / 127, 1/127), q = clamp(round(clamp(W, ±clip) / scale), −127, 127) as int8,
//     scale stored as fp16 (q is computed with the fp32 scale, as in the reference);
//   - larger tensors of another rank: one fp32 scale, clip = quantile(|W|, 0.9999984).
// Dequantization: W = q · float(scale[row]) (or · scale).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/core/parallel.hpp"
#include "pgolf/model/param_layout.hpp"

namespace pgolf {

inline constexpr std::int64_t kInt8KeepFloatMaxNumel = 65'536;  // INT8_KEEP_FLOAT_MAX_NUMEL
inline constexpr float kInt8ClipQuantile = 99.99984f / 100.0f;   // INT8_CLIP_PERCENTILE / 100 (float32, as torch casts q)
inline constexpr float kInt8MaxLevel = 127.0f;
inline constexpr char kInt8FormatTag[] = "int8_clean_per_row_v1";

enum class QuantKind : std::uint8_t { int8_per_row, int8_per_tensor, keep_f16, keep_f32 };

struct QuantizedTensor {
  std::string name;
  std::vector<std::int64_t> shape;
  QuantKind kind = QuantKind::keep_f32;
  std::vector<std::int8_t> q;        // int8 kinds
  std::vector<f16> row_scales;       // int8_per_row: one per row
  float tensor_scale = 1.0f;         // int8_per_tensor
  std::vector<f16> f16_values;       // keep_f16
  std::vector<float> f32_values;     // keep_f32

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  // Bytes of the stored values and scales (the reference's int8_payload_bytes accounting).
  std::int64_t payload_bytes() const {
    switch (kind) {
      case QuantKind::int8_per_row: return static_cast<std::int64_t>(q.size() + 2 * row_scales.size());
      case QuantKind::int8_per_tensor: return static_cast<std::int64_t>(q.size()) + 4;
      case QuantKind::keep_f16: return static_cast<std::int64_t>(2 * f16_values.size());
      case QuantKind::keep_f32: return static_cast<std::int64_t>(4 * f32_values.size());
    }
    return 0;
  }
};

// torch.quantile(x, q) with linear interpolation, evaluated in float32 as torch does for a
// float32 input: rank = q·(n−1), lerp between the order statistics around it.
inline float quantile_linear(std::vector<float>& values, float q) {
  const auto n = static_cast<std::int64_t>(values.size());
  PGOLF_CHECK(n > 0, "quantile of an empty tensor");
  const float rank = q * static_cast<float>(n - 1);
  const auto below = static_cast<std::int64_t>(std::floor(rank));
  const std::int64_t above = std::min(below + 1, n - 1);
  const float weight = rank - static_cast<float>(below);
  std::nth_element(values.begin(), values.begin() + below, values.end());
  const float lo = values[below];
  const float hi = above == below ? lo : *std::min_element(values.begin() + below + 1, values.end());
  // at::lerp: start + w·(end − start) for w < 0.5, else end − (end − start)·(1 − w).
  return weight < 0.5f ? lo + weight * (hi - lo) : hi - (hi - lo) * (1.0f - weight);
}

inline std::int8_t quantize_value(float w, float clip, float scale) {
  const float clipped = std::min(std::max(w, -clip), clip);
  const float r = std::nearbyint(clipped / scale);  // round half to even, as torch.round
  return static_cast<std::int8_t>(std::min(std::max(r, -kInt8MaxLevel), kInt8MaxLevel));
}

inline QuantizedTensor quantize_int8_reference(const ParamSpec& spec, std::span<const float> values) {
  QuantizedTensor t;
  t.name = spec.name();
  t.shape = spec.dims();
  PGOLF_CHECK_EQ(static_cast<std::int64_t>(values.size()), spec.numel(), "tensor " << t.name);
  if (spec.numel() <= kInt8KeepFloatMaxNumel) {
    if (spec.control) {
      t.kind = QuantKind::keep_f32;
      t.f32_values.assign(values.begin(), values.end());
    } else {
      t.kind = QuantKind::keep_f16;
      t.f16_values.reserve(values.size());
      for (float v : values) t.f16_values.push_back(f16::from_float(v));
    }
    return t;
  }
  t.q.resize(values.size());
  if (spec.rank == 2) {
    t.kind = QuantKind::int8_per_row;
    const std::int64_t rows = spec.shape[0], cols = spec.shape[1];
    t.row_scales.resize(static_cast<std::size_t>(rows));
    parallel_for(0, rows, 8, [&](std::int64_t r0, std::int64_t r1) {
      std::vector<float> abs_row(static_cast<std::size_t>(cols));
      for (std::int64_t r = r0; r < r1; ++r) {
        const float* w = values.data() + r * cols;
        for (std::int64_t c = 0; c < cols; ++c) abs_row[c] = std::fabs(w[c]);
        const float clip = quantile_linear(abs_row, kInt8ClipQuantile);
        const float scale = std::max(clip / kInt8MaxLevel, 1.0f / kInt8MaxLevel);
        for (std::int64_t c = 0; c < cols; ++c) t.q[r * cols + c] = quantize_value(w[c], clip, scale);
        t.row_scales[r] = f16::from_float(scale);
      }
    });
  } else {
    t.kind = QuantKind::int8_per_tensor;
    std::vector<float> abs_all(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) abs_all[i] = std::fabs(values[i]);
    const float clip = quantile_linear(abs_all, kInt8ClipQuantile);
    t.tensor_scale = clip > 0 ? clip / kInt8MaxLevel : 1.0f;
    for (std::size_t i = 0; i < values.size(); ++i) t.q[i] = quantize_value(values[i], clip, t.tensor_scale);
  }
  return t;
}

inline void dequantize(const QuantizedTensor& t, std::span<float> out) {
  PGOLF_CHECK_EQ(static_cast<std::int64_t>(out.size()), t.numel(), "dequantizing " << t.name);
  switch (t.kind) {
    case QuantKind::int8_per_row: {
      const std::int64_t rows = t.shape[0], cols = t.numel() / std::max<std::int64_t>(rows, 1);
      for (std::int64_t r = 0; r < rows; ++r) {
        const float s = t.row_scales[r].to_float();
        for (std::int64_t c = 0; c < cols; ++c) out[r * cols + c] = static_cast<float>(t.q[r * cols + c]) * s;
      }
      break;
    }
    case QuantKind::int8_per_tensor:
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(t.q[i]) * t.tensor_scale;
      break;
    case QuantKind::keep_f16:
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = t.f16_values[i].to_float();
      break;
    case QuantKind::keep_f32:
      std::copy(t.f32_values.begin(), t.f32_values.end(), out.begin());
      break;
  }
}

// Quantizes every tensor of a configuration's parameter buffer, in state_dict order.
template <ModelConfig C>
std::vector<QuantizedTensor> quantize_model_int8(std::span<const float> params) {
  static_assert(C.quant.matrix_bits == 8 && C.quant.embed_bits == 8,
                "only the reference's int8 export is implemented: set quant.matrix_bits = quant.embed_bits = 8");
  PGOLF_CHECK_EQ(static_cast<std::int64_t>(params.size()), ParamLayout<C>::total, "parameters of " << describe(C));
  std::vector<QuantizedTensor> out;
  for (const ParamSpec& s : ParamLayout<C>::specs()) {
    out.push_back(quantize_int8_reference(s, params.subspan(static_cast<std::size_t>(s.offset), static_cast<std::size_t>(s.numel()))));
  }
  return out;
}

template <ModelConfig C>
void dequantize_model(const std::vector<QuantizedTensor>& tensors, std::span<float> params) {
  PGOLF_CHECK_EQ(static_cast<std::int64_t>(params.size()), ParamLayout<C>::total, "parameters of " << describe(C));
  const auto specs = ParamLayout<C>::specs();
  PGOLF_CHECK_EQ(tensors.size(), specs.size(), "number of quantized tensors for " << describe(C));
  for (std::size_t i = 0; i < specs.size(); ++i) {
    PGOLF_CHECK_EQ(tensors[i].name, specs[i].name(), "quantized tensor " << i);
    dequantize(tensors[i], params.subspan(static_cast<std::size_t>(specs[i].offset), static_cast<std::size_t>(specs[i].numel())));
  }
}

}  // namespace pgolf
