// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON
//   {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}}
// (padded with spaces to a multiple of 8), then the byte buffer the offsets index. pgolf writes
// the reference's state_dict names so that weights move between pgolf and PyTorch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/file.hpp"
#include "pgolf/core/json.hpp"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/io/dtype.hpp"

namespace pgolf::io {

inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;  // the reference implementation's limit
inline constexpr char kSafetensorsMetadataKey[] = "__metadata__";

struct SafeTensor {
  std::string name;
  DType dtype = DType::f32;
  std::vector<std::int64_t> shape;
  std::vector<std::uint8_t> data;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }

  // Values as float32 (from F32, F16, BF16 or F64).
  std::vector<float> to_float32() const {
    const auto n = static_cast<std::size_t>(numel());
    std::vector<float> out(n);
    switch (dtype) {
      case DType::f32: std::memcpy(out.data(), data.data(), n * 4); break;
      case DType::f64:
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(load_le<double>(data.data() + 8 * i));
        break;
      case DType::f16:
        for (std::size_t i = 0; i < n; ++i) out[i] = f16{load_le<std::uint16_t>(data.data() + 2 * i)}.to_float();
        break;
      case DType::bf16:
        for (std::size_t i = 0; i < n; ++i) out[i] = bf16{load_le<std::uint16_t>(data.data() + 2 * i)}.to_float();
        break;
      default: PGOLF_FAIL("tensor " << name << " has dtype " << dtype_name(dtype) << ", not a floating-point type");
    }
    return out;
  }
};

struct SafetensorsFile {
  std::vector<SafeTensor> tensors;
  std::map<std::string, std::string> metadata;
  std::string source;

  const SafeTensor& at(const std::string& name) const {
    for (const auto& t : tensors) {
      if (t.name == name) return t;
    }
    PGOLF_FAIL(source << ": no tensor named " << name);
  }
  bool contains(const std::string& name) const {
    return std::any_of(tensors.begin(), tensors.end(), [&](const SafeTensor& t) { return t.name == name; });
  }
};

inline void write_safetensors(const std::filesystem::path& path, const std::vector<SafeTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  json::Object header;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    const std::string ctx = "safetensors " + path.string() + ": tensor " + t.name;
    PGOLF_CHECK(t.name != kSafetensorsMetadataKey && !header.contains(t.name), ctx << ": duplicate or reserved name");
    json::Array shape;
    std::int64_t n = 1;
    for (auto d : t.shape) {
      PGOLF_CHECK(d >= 0, ctx << ": negative dimension");
      shape.emplace_back(d);
      n *= d;
    }
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(t.data.size()), n * dtype_size(t.dtype), ctx << ": data bytes");
    header[t.name] = json::Value(json::Object{
        {"dtype", json::Value(std::string(safetensors_dtype_name(t.dtype)))},
        {"shape", json::Value(std::move(shape))},
        {"data_offsets", json::Value(json::Array{json::Value(static_cast<std::int64_t>(offset)),
                                                 json::Value(static_cast<std::int64_t>(offset + t.data.size()))})}});
    offset += t.data.size();
  }
  if (!metadata.empty()) {
    json::Object meta;
    for (const auto& [k, v] : metadata) meta[k] = json::Value(v);
    header[kSafetensorsMetadataKey] = json::Value(std::move(meta));
  }
  std::string text = json::dump(json::Value(std::move(header)));
  while (text.size() % 8 != 0) text += ' ';
  const auto n = static_cast<std::uint64_t>(text.size());
  write_file_atomic(path, [&](const ByteSink& sink) {
    sink(&n, sizeof n);
    sink(text.data(), text.size());
    for (const auto& t : tensors) sink(t.data.data(), t.data.size());
  });
}

inline SafetensorsFile parse_safetensors(std::span<const std::uint8_t> bytes, const std::string& name) {
  const std::string ctx = "safetensors " + name;
  PGOLF_CHECK(bytes.size() >= 8, ctx << ": file of " << bytes.size() << " bytes is too short");
  const auto n = load_le<std::uint64_t>(bytes.data());
  PGOLF_CHECK(n <= kMaxSafetensorsHeader && n <= bytes.size() - 8,
              ctx << ": header length " << n << " is larger than the file (" << bytes.size() << " bytes) or the 100 MB limit");
  json::Value header;
  try {
    header = json::parse(std::string_view(reinterpret_cast<const char*>(bytes.data() + 8), static_cast<std::size_t>(n)));
  } catch (const Error& e) {
    PGOLF_FAIL(ctx << ": invalid header: " << e.what());
  }
  PGOLF_CHECK(header.is_object(), ctx << ": the header is not a JSON object");
  const std::span<const std::uint8_t> buffer = bytes.subspan(static_cast<std::size_t>(8 + n));
  SafetensorsFile f;
  f.source = name;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
  try {
    for (const auto& [key, v] : header.as_object()) {
      if (key == kSafetensorsMetadataKey) {
        for (const auto& [mk, mv] : v.as_object()) f.metadata[mk] = mv.as_string();
        continue;
      }
      const std::string tctx = ctx + ": tensor " + key;
      SafeTensor t;
      t.name = key;
      t.dtype = parse_safetensors_dtype(v.at("dtype").as_string(), tctx);
      std::uint64_t numel = 1;
      for (const auto& d : v.at("shape").as_array()) {
        const std::int64_t dim = d.as_int();
        PGOLF_CHECK(dim >= 0, tctx << ": negative dimension");
        PGOLF_CHECK(dim == 0 || numel <= (1ull << 48) / static_cast<std::uint64_t>(dim), tctx << ": shape too large");
        numel *= static_cast<std::uint64_t>(dim);
        t.shape.push_back(dim);
      }
      const auto& off = v.at("data_offsets").as_array();
      PGOLF_CHECK(off.size() == 2, tctx << ": data_offsets must have two entries");
      const std::int64_t b = off[0].as_int(), e = off[1].as_int();
      PGOLF_CHECK(b >= 0 && e >= b && static_cast<std::uint64_t>(e) <= buffer.size(),
                  tctx << ": data_offsets [" << b << ", " << e << "] outside the " << buffer.size() << "-byte buffer");
      PGOLF_CHECK_EQ(static_cast<std::uint64_t>(e - b), numel * dtype_size(t.dtype), tctx << ": byte size for its shape and dtype");
      t.data.assign(buffer.begin() + b, buffer.begin() + e);
      ranges.emplace_back(b, e);
      f.tensors.push_back(std::move(t));
    }
  } catch (const Error& e) {
    if (std::string(e.what()).find(ctx) != std::string::npos) throw;
    PGOLF_FAIL(ctx << ": malformed header: " << e.what());
  }
  std::sort(ranges.begin(), ranges.end());
  std::uint64_t covered = 0;
  for (const auto& [b, e] : ranges) {
    PGOLF_CHECK(b == covered, ctx << ": tensor data overlap or leave a hole at byte " << covered);
    covered = e;
  }
  PGOLF_CHECK_EQ(covered, static_cast<std::uint64_t>(buffer.size()), ctx << ": bytes of tensor data vs the buffer");
  return f;
}

inline SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) PGOLF_FAIL("safetensors " << path.string() << " does not exist");
  const auto bytes = read_file(path);
  return parse_safetensors(bytes, path.string());
}

}  // namespace pgolf::io
