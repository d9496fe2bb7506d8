// The artifact container: round trips, configuration mismatch, truncation, corruption fuzzing.
#include <gtest/gtest.h>

#include <cstring>

#include "pgolf/core/philox.hpp"
#include "pgolf/io/artifact.hpp"
#include "pgolf/io/zstd.hpp"
#include "test_paths.hpp"

namespace pgolf::io {
namespace {

using testing::TempDir;

ModelConfig config_a() {
  ModelConfig c;
  c.name = "a";
  c.num_layers = 4;
  return c;
}
ModelConfig config_b() {
  ModelConfig c;
  c.name = "b";
  c.num_layers = 5;
  return c;
}

ArtifactTensor make_tensor(const std::string& name, DType dtype, std::vector<std::int64_t> shape, QuantScheme scheme, std::uint64_t seed) {
  ArtifactTensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.scheme = scheme;
  t.bits = scheme == QuantScheme::none ? 0 : 8;
  t.scale_dtype = scheme == QuantScheme::per_row ? DType::f16 : DType::f32;
  t.orig_dtype = DType::f32;
  t.data.resize(static_cast<std::size_t>(t.numel()) * dtype_size(dtype));
  const RandomStream rng(seed, 1);
  for (std::size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<std::uint8_t>(rng.below(i, i % 3 == 0 ? 256 : 8));
  const std::size_t scales = scheme == QuantScheme::per_row ? static_cast<std::size_t>(t.shape[0]) : scheme == QuantScheme::per_tensor ? 1 : 0;
  t.scales.resize(scales * dtype_size(t.scale_dtype));
  for (std::size_t i = 0; i < t.scales.size(); ++i) t.scales[i] = static_cast<std::uint8_t>(rng.below(1000 + i, 256));
  return t;
}

Artifact sample_artifact() {
  Artifact a;
  a.config_fingerprint = fingerprint(config_a());
  a.config_description = describe(config_a());
  a.metadata = {{"quant_format", "int8_clean_per_row_v1"}, {"train_steps", "123"}};
  a.tensors.push_back(make_tensor("tok_emb.weight", DType::i8, {64, 32}, QuantScheme::per_row, 1));
  a.tensors.push_back(make_tensor("blocks.0.attn_scale", DType::f32, {32}, QuantScheme::none, 2));
  a.tensors.push_back(make_tensor("blocks.0.mlp.fc.weight", DType::f16, {16, 8}, QuantScheme::none, 3));
  a.tensors.push_back(make_tensor("vec", DType::i8, {100}, QuantScheme::per_tensor, 4));
  a.tensors.push_back(make_tensor("bf", DType::bf16, {3, 2, 2}, QuantScheme::none, 5));
  a.tensors.push_back(make_tensor("scalar", DType::i64, {}, QuantScheme::none, 6));
  return a;
}

void expect_same(const Artifact& x, const Artifact& y) {
  EXPECT_EQ(x.config_fingerprint, y.config_fingerprint);
  EXPECT_EQ(x.config_description, y.config_description);
  EXPECT_EQ(x.metadata, y.metadata);
  ASSERT_EQ(x.tensors.size(), y.tensors.size());
  for (std::size_t i = 0; i < x.tensors.size(); ++i) {
    const auto &a = x.tensors[i], &b = y.tensors[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.dtype, b.dtype);
    EXPECT_EQ(a.shape, b.shape);
    EXPECT_EQ(a.scheme, b.scheme);
    EXPECT_EQ(a.bits, b.bits);
    EXPECT_EQ(a.scale_dtype, b.scale_dtype);
    EXPECT_EQ(a.orig_dtype, b.orig_dtype);
    EXPECT_EQ(a.data, b.data);
    EXPECT_EQ(a.scales, b.scales);
  }
}

TEST(Artifact, RoundTripsEveryDtypeAndScheme) {
  TempDir dir("artifact");
  const Artifact a = sample_artifact();
  const ArtifactInfo info = write_artifact(dir / "m.ptz", a);
  EXPECT_EQ(info.file_bytes, size_of_file(dir / "m.ptz"));
  EXPECT_LT(info.compressed_payload_bytes, info.raw_payload_bytes);
  expect_same(read_artifact(dir / "m.ptz"), a);
  expect_same(read_artifact_for(dir / "m.ptz", config_a()), a);
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) EXPECT_EQ(e.path().filename(), "m.ptz");
  EXPECT_EQ(*read_artifact(dir / "m.ptz").meta("train_steps"), "123");
}

TEST(Artifact, AnotherConfigurationIsRejectedNamingBoth) {
  TempDir dir("artifact_cfg");
  write_artifact(dir / "m.ptz", sample_artifact());
  try {
    read_artifact_for(dir / "m.ptz", config_b());
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("m.ptz"), std::string::npos) << msg;
    EXPECT_NE(msg.find(describe(config_a())), std::string::npos) << msg;
    EXPECT_NE(msg.find(describe(config_b())), std::string::npos) << msg;
  }
}

TEST(Artifact, WriterRejectsInconsistentTensors) {
  TempDir dir("artifact_w");
  Artifact a = sample_artifact();
  a.tensors[0].data.pop_back();
  EXPECT_THROW(write_artifact(dir / "x.ptz", a), Error);
  a = sample_artifact();
  a.tensors[0].scales.push_back(0);
  EXPECT_THROW(write_artifact(dir / "x.ptz", a), Error);
  a = sample_artifact();
  a.tensors[1].name = a.tensors[0].name;
  EXPECT_THROW(write_artifact(dir / "x.ptz", a), Error);
  EXPECT_FALSE(std::filesystem::exists(dir / "x.ptz"));
}

TEST(Artifact, TruncationAtEveryLengthIsAnError) {
  TempDir dir("artifact_trunc");
  write_artifact(dir / "m.ptz", sample_artifact());
  const auto bytes = read_file(dir / "m.ptz");
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    try {
      parse_artifact(std::span(bytes).first(n), "m.ptz");
      ADD_FAILURE() << "a file truncated to " << n << " of " << bytes.size() << " bytes was accepted";
    } catch (const Error& e) {
      ASSERT_NE(std::string(e.what()).find("m.ptz"), std::string::npos) << e.what();
    }
  }
}

// Random corruption: every load either fails with pgolf::Error or (when the damage is undone by
// chance, which cannot happen with a flipped byte) returns the original content. Never a crash.
TEST(Artifact, FuzzedCorruptionsAreAlwaysCleanErrors) {
  TempDir dir("artifact_fuzz");
  write_artifact(dir / "m.ptz", sample_artifact());
  const auto original = read_file(dir / "m.ptz");
  const RandomStream rng(99, 7);
  int errors = 0;
  constexpr int kIterations = 4000;
  for (int it = 0; it < kIterations; ++it) {
    auto bytes = original;
    const int flips = 1 + static_cast<int>(rng.below(3 * it, 4));
    for (int f = 0; f < flips; ++f) {
      const auto pos = rng.below(3 * it + 1 + 1000000 * f, static_cast<std::uint32_t>(bytes.size()));
      bytes[pos] ^= static_cast<std::uint8_t>(1 + rng.below(3 * it + 2 + 1000000 * f, 255));
    }
    try {
      parse_artifact(bytes, "fuzz");
      ADD_FAILURE() << "corrupted artifact accepted at iteration " << it;
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_EQ(errors, kIterations);
}

// The same with the checksum recomputed, so that the corruption reaches the parser's own checks
// (sizes, counts, offsets, codes) instead of stopping at the CRC.
TEST(Artifact, FuzzedHeadersWithValidChecksumsAreCleanErrorsOrIdenticalContent) {
  TempDir dir("artifact_fuzz2");
  const Artifact a = sample_artifact();
  write_artifact(dir / "m.ptz", a);
  const auto original = read_file(dir / "m.ptz");
  const RandomStream rng(1234, 8);
  int accepted = 0, rejected = 0;
  for (int it = 0; it < 4000; ++it) {
    auto bytes = original;
    // Three in four corruptions hit the first 600 bytes (the header and tensor table).
    const std::size_t limit = it % 4 == 0 ? bytes.size() - 4 : std::min<std::size_t>(bytes.size() - 4, 600);
    const auto pos = rng.below(2 * it, static_cast<std::uint32_t>(limit));
    bytes[pos] = static_cast<std::uint8_t>(rng.below(2 * it + 1, 256));
    const std::uint32_t crc = crc32c(bytes.data(), bytes.size() - 4);
    std::memcpy(bytes.data() + bytes.size() - 4, &crc, 4);
    try {
      parse_artifact(bytes, "fuzz");
      ++accepted;  // a change the format tolerates (a metadata character, a data byte, a reserved zstd bit)
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 1000);
  EXPECT_EQ(accepted + rejected, 4000);
}

TEST(Artifact, BadMagicVersionAndMissingFile) {
  TempDir dir("artifact_misc");
  write_artifact(dir / "m.ptz", sample_artifact());
  auto bytes = read_file(dir / "m.ptz");
  auto v2 = bytes;
  v2[8] = 2;
  const std::uint32_t crc = crc32c(v2.data(), v2.size() - 4);
  std::memcpy(v2.data() + v2.size() - 4, &crc, 4);
  try {
    parse_artifact(v2, "v2.ptz");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("format version 2 is not supported"), std::string::npos) << e.what();
  }
  bytes[0] = 'X';
  try {
    parse_artifact(bytes, "magic.ptz");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a pgolf artifact"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_artifact(dir / "missing.ptz"), Error);
}

TEST(Zstd, RoundTripAndErrors) {
  std::vector<std::uint8_t> data(100000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>((i * i) % 251);
  const auto z = zstd_compress(data, 22);
  EXPECT_LT(z.size(), data.size());
  EXPECT_EQ(zstd_decompress(z, data.size(), "t"), data);
  EXPECT_THROW(zstd_decompress(z, data.size() + 1, "t"), Error);
  auto bad = z;
  bad[bad.size() / 2] ^= 0xFF;
  try {
    const auto out = zstd_decompress(bad, data.size(), "t");
    EXPECT_NE(out, data);  // zstd has no checksum of its own here: the artifact's CRC catches this
  } catch (const Error&) {
  }
  EXPECT_THROW(zstd_decompress(std::vector<std::uint8_t>{1, 2, 3}, 3, "t"), Error);
  EXPECT_THROW(zstd_compress(data, 30), Error);
}

}  // namespace
}  // namespace pgolf::io
