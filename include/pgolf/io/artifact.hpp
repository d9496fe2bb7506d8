// The artifact: pgolf's compressed, self-describing file of model weights (docs/formats.md).
//
//   "PGOLFART"                         8 bytes, magic
//   u32 format_version                 1
//   u64 config_fingerprint             fingerprint(ModelConfig)
//   str config_description             describe(ModelConfig)            (str = u32 length + UTF-8)
//   u32 n_metadata, n × (str key, str value)
//   u32 n_tensors, n × tensor entry:
//       str name; u8 dtype, u8 scheme, u8 bits, u8 scale_dtype, u8 orig_dtype, u8 rank, u16 zero;
//       i64 dims[rank]; u64 data_offset, data_bytes, scales_offset, scales_bytes
//   u64 raw_payload_bytes, u64 compressed_payload_bytes
//   compressed payload                 one zstd frame (level 22 by default) of the raw payload
//   u32 crc32c                         CRC-32C of every preceding byte
// Offsets are into the decompressed payload. All integers little-endian.
#pragma once

#include <cstdint>
#include <filesystem>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pgolf/core/config.hpp"
#include "pgolf/core/error.hpp"
#include "pgolf/core/file.hpp"
#include "pgolf/core/hash.hpp"
#include "pgolf/io/byte_reader.hpp"
#include "pgolf/io/dtype.hpp"
#include "pgolf/io/zstd.hpp"

namespace pgolf::io {

inline constexpr char kArtifactMagic[8] = {'P', 'G', 'O', 'L', 'F', 'A', 'R', 'T'};
inline constexpr std::uint32_t kArtifactVersion = 1;
// Parser limits: far beyond any real artifact, small enough that a corrupted count cannot make the
// reader allocate without bound.
inline constexpr std::uint32_t kMaxArtifactString = 1u << 20;
inline constexpr std::uint32_t kMaxArtifactEntries = 1u << 20;
inline constexpr int kMaxTensorRank = 8;
inline constexpr std::uint64_t kMaxPayloadBytes = 1ull << 36;

enum class QuantScheme : std::uint8_t { none = 0, per_row = 1, per_tensor = 2 };

struct ArtifactTensor {
  std::string name;
  DType dtype = DType::f32;           // storage type of `data`
  std::vector<std::int64_t> shape;
  QuantScheme scheme = QuantScheme::none;
  int bits = 0;                       // quantization bits (0: not quantized)
  DType scale_dtype = DType::f32;     // type of `scales` (per_row: one per row; per_tensor: one)
  DType orig_dtype = DType::f32;      // type to restore when dequantizing
  std::vector<std::uint8_t> data, scales;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

struct Artifact {
  std::uint64_t config_fingerprint = 0;
  std::string config_description;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::vector<ArtifactTensor> tensors;

  const ArtifactTensor& tensor(const std::string& name, const std::string& file = "artifact") const {
    for (const auto& t : tensors) {
      if (t.name == name) return t;
    }
    PGOLF_FAIL(file << ": no tensor named " << name);
  }
  const std::string* meta(const std::string& key) const {
    for (const auto& [k, v] : metadata) {
      if (k == key) return &v;
    }
    return nullptr;
  }
};

struct ArtifactInfo {
  std::uint64_t file_bytes = 0;
  std::uint64_t raw_payload_bytes = 0;
  std::uint64_t compressed_payload_bytes = 0;
};

namespace detail {

// Checks a tensor entry's sizes against its shape and scheme; returns its element count.
inline std::uint64_t checked_numel(const ArtifactTensor& t, const std::string& ctx) {
  PGOLF_CHECK(t.shape.size() <= static_cast<std::size_t>(kMaxTensorRank), ctx << ": rank " << t.shape.size() << " above " << kMaxTensorRank);
  std::uint64_t n = 1;
  for (auto d : t.shape) {
    PGOLF_CHECK(d >= 0, ctx << ": negative dimension " << d);
    if (d != 0 && n > kMaxPayloadBytes / static_cast<std::uint64_t>(d)) PGOLF_FAIL(ctx << ": shape is too large");
    n *= static_cast<std::uint64_t>(d);
  }
  return n;
}

inline std::uint64_t expected_scale_count(const ArtifactTensor& t, const std::string& ctx) {
  switch (t.scheme) {
    case QuantScheme::none: return 0;
    case QuantScheme::per_tensor: return 1;
    case QuantScheme::per_row:
      PGOLF_CHECK(!t.shape.empty(), ctx << ": per-row quantization of a scalar");
      return static_cast<std::uint64_t>(t.shape[0]);
  }
  PGOLF_FAIL(ctx << ": unknown quantization scheme " << static_cast<int>(t.scheme));
}

inline void validate_tensor(const ArtifactTensor& t, std::uint64_t data_bytes, std::uint64_t scale_bytes, const std::string& ctx) {
  const std::uint64_t n = checked_numel(t, ctx);
  PGOLF_CHECK_EQ(data_bytes, n * dtype_size(t.dtype), ctx << ": data bytes for shape and dtype " << dtype_name(t.dtype));
  PGOLF_CHECK_EQ(scale_bytes, expected_scale_count(t, ctx) * dtype_size(t.scale_dtype), ctx << ": scale bytes");
  PGOLF_CHECK(t.bits >= 0 && t.bits <= 64, ctx << ": bits " << t.bits);
  PGOLF_CHECK(t.scheme == QuantScheme::none || t.bits > 0, ctx << ": a quantized tensor needs its bit width");
}

}  // namespace detail

inline ArtifactInfo write_artifact(const std::filesystem::path& path, const Artifact& a, int zstd_level = kDefaultZstdLevel) {
  std::vector<std::uint8_t> payload;
  std::vector<std::uint8_t> header(kArtifactMagic, kArtifactMagic + 8);  // (insert into an empty vector trips GCC 12's -Wstringop-overflow)
  append_le(header, kArtifactVersion);
  append_le(header, a.config_fingerprint);
  append_string(header, a.config_description);
  PGOLF_CHECK_LE(a.metadata.size(), kMaxArtifactEntries, "artifact " << path.string() << ": metadata entries");
  append_le(header, static_cast<std::uint32_t>(a.metadata.size()));
  for (const auto& [k, v] : a.metadata) {
    append_string(header, k);
    append_string(header, v);
  }
  PGOLF_CHECK_LE(a.tensors.size(), kMaxArtifactEntries, "artifact " << path.string() << ": tensors");
  append_le(header, static_cast<std::uint32_t>(a.tensors.size()));
  std::set<std::string> names;
  for (const auto& t : a.tensors) {
    const std::string ctx = "artifact " + path.string() + ": tensor " + t.name;
    PGOLF_CHECK(names.insert(t.name).second, ctx << " appears twice");
    PGOLF_CHECK(t.name.size() <= kMaxArtifactString, ctx << ": name too long");
    detail::validate_tensor(t, t.data.size(), t.scales.size(), ctx);
    append_string(header, t.name);
    for (std::uint8_t v : {static_cast<std::uint8_t>(t.dtype), static_cast<std::uint8_t>(t.scheme), static_cast<std::uint8_t>(t.bits),
                           static_cast<std::uint8_t>(t.scale_dtype), static_cast<std::uint8_t>(t.orig_dtype),
                           static_cast<std::uint8_t>(t.shape.size())}) {
      header.push_back(v);
    }
    append_le(header, std::uint16_t{0});
    for (auto d : t.shape) append_le(header, d);
    append_le(header, static_cast<std::uint64_t>(payload.size()));
    append_le(header, static_cast<std::uint64_t>(t.data.size()));
    payload.insert(payload.end(), t.data.begin(), t.data.end());
    append_le(header, static_cast<std::uint64_t>(payload.size()));
    append_le(header, static_cast<std::uint64_t>(t.scales.size()));
    payload.insert(payload.end(), t.scales.begin(), t.scales.end());
  }
  const auto compressed = zstd_compress(payload, zstd_level);
  append_le(header, static_cast<std::uint64_t>(payload.size()));
  append_le(header, static_cast<std::uint64_t>(compressed.size()));
  std::uint32_t crc = crc32c(header.data(), header.size());
  crc = crc32c(compressed.data(), compressed.size(), crc);
  write_file_atomic(path, [&](const ByteSink& sink) {
    sink(header.data(), header.size());
    sink(compressed.data(), compressed.size());
    sink(&crc, sizeof crc);
  });
  return ArtifactInfo{header.size() + compressed.size() + sizeof crc, payload.size(), compressed.size()};
}

// Parses an artifact held in memory; `name` is used in messages.
inline Artifact parse_artifact(std::span<const std::uint8_t> bytes, const std::string& name) {
  const std::string ctx = "artifact " + name;
  constexpr std::size_t kMinBytes = 8 + 4 + 4;
  if (bytes.size() < kMinBytes) PGOLF_FAIL(ctx << ": " << bytes.size() << " bytes is too short to be an artifact");
  if (!std::equal(kArtifactMagic, kArtifactMagic + 8, bytes.begin())) PGOLF_FAIL(ctx << ": not a pgolf artifact (bad magic)");
  const auto version = load_le<std::uint32_t>(bytes.data() + 8);
  if (version != kArtifactVersion) {
    PGOLF_FAIL(ctx << ": format version " << version << " is not supported (this pgolf reads version " << kArtifactVersion << ")");
  }
  const auto stored_crc = load_le<std::uint32_t>(bytes.data() + bytes.size() - 4);
  const std::uint32_t crc = crc32c(bytes.data(), bytes.size() - 4);
  if (crc != stored_crc) PGOLF_FAIL(ctx << ": checksum mismatch (the file is truncated or corrupted)");

  ByteReader r(bytes.first(bytes.size() - 4), ctx);
  r.read_bytes(12, "magic and version");
  Artifact a;
  a.config_fingerprint = r.read<std::uint64_t>("config fingerprint");
  a.config_description = r.read_string("config description", kMaxArtifactString);
  const auto n_meta = r.read<std::uint32_t>("metadata count");
  PGOLF_CHECK_LE(n_meta, kMaxArtifactEntries, ctx << ": metadata count");
  for (std::uint32_t i = 0; i < n_meta; ++i) {
    std::string k = r.read_string("metadata key", kMaxArtifactString);
    std::string v = r.read_string("metadata value", kMaxArtifactString);
    a.metadata.emplace_back(std::move(k), std::move(v));
  }
  const auto n_tensors = r.read<std::uint32_t>("tensor count");
  PGOLF_CHECK_LE(n_tensors, kMaxArtifactEntries, ctx << ": tensor count");
  struct Extent {
    std::uint64_t data_off, data_bytes, scale_off, scale_bytes;
  };
  std::vector<Extent> extents;
  std::set<std::string> names;
  for (std::uint32_t i = 0; i < n_tensors; ++i) {
    ArtifactTensor t;
    t.name = r.read_string("tensor name", kMaxArtifactString);
    const std::string tctx = ctx + ": tensor " + t.name;
    PGOLF_CHECK(names.insert(t.name).second, tctx << " appears twice");
    t.dtype = dtype_from_code(r.read<std::uint8_t>("dtype"), tctx);
    const auto scheme = r.read<std::uint8_t>("scheme");
    PGOLF_CHECK_LE(scheme, 2, tctx << ": quantization scheme code");
    t.scheme = static_cast<QuantScheme>(scheme);
    t.bits = r.read<std::uint8_t>("bits");
    t.scale_dtype = dtype_from_code(r.read<std::uint8_t>("scale dtype"), tctx);
    t.orig_dtype = dtype_from_code(r.read<std::uint8_t>("original dtype"), tctx);
    const auto rank = r.read<std::uint8_t>("rank");
    PGOLF_CHECK_LE(rank, kMaxTensorRank, tctx << ": rank");
    PGOLF_CHECK_EQ(r.read<std::uint16_t>("reserved"), 0, tctx << ": reserved field");
    for (int d = 0; d < rank; ++d) t.shape.push_back(r.read<std::int64_t>("dimension"));
    Extent e{r.read<std::uint64_t>("data offset"), r.read<std::uint64_t>("data bytes"), r.read<std::uint64_t>("scales offset"),
             r.read<std::uint64_t>("scale bytes")};
    detail::validate_tensor(t, e.data_bytes, e.scale_bytes, tctx);
    a.tensors.push_back(std::move(t));
    extents.push_back(e);
  }
  const auto raw_bytes = r.read<std::uint64_t>("payload size");
  const auto compressed_bytes = r.read<std::uint64_t>("compressed payload size");
  PGOLF_CHECK_LE(raw_bytes, kMaxPayloadBytes, ctx << ": payload size");
  PGOLF_CHECK_EQ(compressed_bytes, static_cast<std::uint64_t>(r.remaining()), ctx << ": compressed payload size vs file size");
  // The payload is the tensors' data and scales back to back, in table order: checking that
  // layout bounds every size by the table before anything is allocated.
  std::uint64_t next = 0;
  for (std::size_t i = 0; i < extents.size(); ++i) {
    const Extent& e = extents[i];
    const bool layout_ok = e.data_off == next && e.scale_off == e.data_off + e.data_bytes;
    PGOLF_CHECK(layout_ok, ctx << ": tensor " << a.tensors[i].name << " is not where the table places it in the payload");
    next = e.scale_off + e.scale_bytes;
  }
  PGOLF_CHECK_EQ(raw_bytes, next, ctx << ": payload size vs the tensor table");
  const auto payload = zstd_decompress(r.read_bytes(static_cast<std::size_t>(compressed_bytes), "payload"), raw_bytes, ctx);
  for (std::size_t i = 0; i < extents.size(); ++i) {
    const Extent& e = extents[i];
    a.tensors[i].data.assign(payload.begin() + static_cast<std::ptrdiff_t>(e.data_off),
                             payload.begin() + static_cast<std::ptrdiff_t>(e.data_off + e.data_bytes));
    a.tensors[i].scales.assign(payload.begin() + static_cast<std::ptrdiff_t>(e.scale_off),
                               payload.begin() + static_cast<std::ptrdiff_t>(e.scale_off + e.scale_bytes));
  }
  return a;
}

inline Artifact read_artifact(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) PGOLF_FAIL("artifact " << path.string() << " does not exist");
  const auto bytes = read_file(path);
  return parse_artifact(bytes, path.string());
}

// Reads an artifact and checks that it was made for `expected`.
inline Artifact read_artifact_for(const std::filesystem::path& path, const ModelConfig& expected) {
  Artifact a = read_artifact(path);
  if (a.config_fingerprint != fingerprint(expected)) {
    PGOLF_FAIL("artifact " << path.string() << " was made for configuration " << a.config_description << " (fingerprint "
                           << a.config_fingerprint << "), but this binary is configuration " << describe(expected)
                           << " (fingerprint " << fingerprint(expected) << ")");
  }
  return a;
}

}  // namespace pgolf::io
