// Moving weights between pgolf and files: the int8+zstd artifact (the reference's export) and
// safetensors (PyTorch interchange, reference state_dict names).
#pragma once

#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/io/artifact.hpp"
#include "pgolf/io/safetensors.hpp"
#include "pgolf/model/param_layout.hpp"
#include "pgolf/quant/int8_reference.hpp"

namespace pgolf::run {

struct ExportReport {
  std::int64_t file_bytes = 0;      // the artifact on disk
  std::int64_t raw_bytes = 0;       // uncompressed payload
  std::int64_t payload_bytes = 0;   // values + scales, the reference's int8_payload_bytes
  std::int64_t baseline_bytes = 0;  // fp32 bytes of the same tensors
  double payload_ratio = 0;         // baseline_bytes / payload_bytes
};

template <class T>
std::vector<std::uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<std::uint8_t> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

template <class T>
std::vector<T> from_bytes(const std::vector<std::uint8_t>& b, const std::string& what) {
  PGOLF_CHECK(b.size() % sizeof(T) == 0, what << ": " << b.size() << " bytes is not a whole number of elements");
  std::vector<T> out(b.size() / sizeof(T));
  if (!b.empty()) std::memcpy(out.data(), b.data(), b.size());
  return out;
}

inline io::ArtifactTensor to_artifact_tensor(const QuantizedTensor& q) {
  io::ArtifactTensor t;
  t.name = q.name;
  t.shape = q.shape;
  t.orig_dtype = io::DType::f32;
  switch (q.kind) {
    case QuantKind::int8_per_row:
      t.dtype = io::DType::i8;
      t.scheme = io::QuantScheme::per_row;
      t.bits = 8;
      t.scale_dtype = io::DType::f16;
      t.data = as_bytes(q.q);
      t.scales = as_bytes(q.row_scales);
      break;
    case QuantKind::int8_per_tensor:
      t.dtype = io::DType::i8;
      t.scheme = io::QuantScheme::per_tensor;
      t.bits = 8;
      t.scale_dtype = io::DType::f32;
      t.data = as_bytes(q.q);
      t.scales = as_bytes(std::vector<float>{q.tensor_scale});
      break;
    case QuantKind::keep_f16:
      t.dtype = io::DType::f16;
      t.scheme = io::QuantScheme::none;
      t.data = as_bytes(q.f16_values);
      break;
    case QuantKind::keep_f32:
      t.dtype = io::DType::f32;
      t.scheme = io::QuantScheme::none;
      t.data = as_bytes(q.f32_values);
      break;
  }
  return t;
}

inline QuantizedTensor from_artifact_tensor(const io::ArtifactTensor& t, const std::string& file) {
  QuantizedTensor q;
  q.name = t.name;
  q.shape = t.shape;
  const std::string what = file + ": tensor " + t.name;
  if (t.scheme == io::QuantScheme::per_row) {
    PGOLF_CHECK(t.dtype == io::DType::i8 && t.bits == 8 && t.scale_dtype == io::DType::f16,
                what << " is not an int8 per-row tensor with fp16 scales");
    q.kind = QuantKind::int8_per_row;
    q.q = from_bytes<std::int8_t>(t.data, what);
    q.row_scales = from_bytes<f16>(t.scales, what);
    PGOLF_CHECK(!q.shape.empty() && static_cast<std::int64_t>(q.row_scales.size()) == q.shape[0], what << ": one scale per row expected");
  } else if (t.scheme == io::QuantScheme::per_tensor) {
    PGOLF_CHECK(t.dtype == io::DType::i8 && t.scale_dtype == io::DType::f32, what << " is not an int8 per-tensor tensor");
    q.kind = QuantKind::int8_per_tensor;
    q.q = from_bytes<std::int8_t>(t.data, what);
    const auto s = from_bytes<float>(t.scales, what);
    PGOLF_CHECK(s.size() == 1, what << ": one scale expected");
    q.tensor_scale = s[0];
  } else if (t.dtype == io::DType::f16) {
    q.kind = QuantKind::keep_f16;
    q.f16_values = from_bytes<f16>(t.data, what);
  } else {
    PGOLF_CHECK(t.dtype == io::DType::f32, what << ": unsupported stored dtype");
    q.kind = QuantKind::keep_f32;
    q.f32_values = from_bytes<float>(t.data, what);
  }
  const std::int64_t stored = q.kind == QuantKind::keep_f16 ? static_cast<std::int64_t>(q.f16_values.size())
                              : q.kind == QuantKind::keep_f32 ? static_cast<std::int64_t>(q.f32_values.size())
                                                              : static_cast<std::int64_t>(q.q.size());
  PGOLF_CHECK_EQ(stored, q.numel(), what << ": element count vs shape");
  return q;
}

// Quantizes the parameters with the reference's int8 scheme and writes the artifact atomically.
template <ModelConfig C>
ExportReport export_int8_artifact(const std::filesystem::path& path, std::span<const float> params, int zstd_level,
                                  std::vector<std::pair<std::string, std::string>> metadata = {}) {
  const auto quantized = quantize_model_int8<C>(params);
  io::Artifact art;
  art.config_fingerprint = fingerprint(C);
  art.config_description = describe(C);
  art.metadata = std::move(metadata);
  art.metadata.insert(art.metadata.begin(), {"quant_format", kInt8FormatTag});
  ExportReport rep;
  for (const auto& q : quantized) {
    rep.payload_bytes += q.payload_bytes();
    rep.baseline_bytes += 4 * q.numel();
    art.tensors.push_back(to_artifact_tensor(q));
  }
  const io::ArtifactInfo info = io::write_artifact(path, art, zstd_level);
  rep.file_bytes = static_cast<std::int64_t>(info.file_bytes);
  rep.raw_bytes = static_cast<std::int64_t>(info.raw_payload_bytes);
  rep.payload_ratio = static_cast<double>(rep.baseline_bytes) / static_cast<double>(std::max<std::int64_t>(rep.payload_bytes, 1));
  return rep;
}

// Reads an artifact made for configuration C and dequantizes it into `params`.
template <ModelConfig C>
void load_int8_artifact(const std::filesystem::path& path, std::span<float> params) {
  const io::Artifact art = io::read_artifact_for(path, C);
  std::vector<QuantizedTensor> tensors;
  for (const auto& t : art.tensors) tensors.push_back(from_artifact_tensor(t, path.string()));
  dequantize_model<C>(tensors, params);
}

// Writes the parameters as float32 safetensors with the reference's state_dict names.
template <ModelConfig C>
void write_weights_safetensors(const std::filesystem::path& path, std::span<const float> params) {
  std::vector<io::SafeTensor> tensors;
  for (const ParamSpec& s : ParamLayout<C>::specs()) {
    io::SafeTensor t;
    t.name = s.name();
    t.dtype = io::DType::f32;
    t.shape = s.dims();
    t.data.resize(static_cast<std::size_t>(s.numel()) * sizeof(float));
    std::memcpy(t.data.data(), params.data() + s.offset, t.data.size());
    tensors.push_back(std::move(t));
  }
  io::write_safetensors(path, tensors, {{"pgolf_config", describe(C)}});
}

// Reads float32 (or bf16/fp16, converted) weights by reference name; every tensor of C must be there.
template <ModelConfig C>
void read_weights_safetensors(const std::filesystem::path& path, std::span<float> params) {
  const auto file = io::read_safetensors(path);
  for (const ParamSpec& s : ParamLayout<C>::specs()) {
    const io::SafeTensor& t = file.at(s.name());
    const std::vector<std::int64_t> shape = s.dims();
    if (t.shape != shape) {
      auto text = [](const std::vector<std::int64_t>& v) {
        std::string r = "(";
        for (std::size_t i = 0; i < v.size(); ++i) r += (i ? ", " : "") + std::to_string(v[i]);
        return r + ")";
      };
      PGOLF_FAIL(path.string() << ": tensor " << s.name() << " has shape " << text(t.shape) << " but configuration " << describe(C)
                               << " needs " << text(shape));
    }
    const std::vector<float> v = t.to_float32();
    std::copy(v.begin(), v.end(), params.begin() + s.offset);
  }
}

}  // namespace pgolf::run
