// Host-only tests of the core layer: errors, configuration, tensors, 16-bit types, RNG, hashes,
// files, the thread pool.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <numeric>
#include <unistd.h>

#include "pgolf/core/config.hpp"
#include "pgolf/core/error.hpp"
#include "pgolf/core/file.hpp"
#include "pgolf/core/hash.hpp"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/core/parallel.hpp"
#include "pgolf/core/philox.hpp"
#include "pgolf/core/tensor.hpp"

namespace pgolf {
namespace {

TEST(Error, CheckEqNamesContextExpectationAndValue) {
  const int magic = 12345;
  try {
    PGOLF_CHECK_EQ(magic, 20240520, "shard data/x.bin");
    FAIL() << "no exception";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("shard data/x.bin"), std::string::npos) << msg;
    EXPECT_NE(msg.find("magic == 20240520 (20240520)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("got 12345"), std::string::npos) << msg;
    EXPECT_NE(msg.find("core_test.cpp"), std::string::npos) << msg;
  }
}

TEST(Error, CheckPassesSilently) {
  EXPECT_NO_THROW(PGOLF_CHECK(1 + 1 == 2, "arithmetic"));
  EXPECT_THROW(PGOLF_CHECK(1 + 1 == 3, "arithmetic"), Error);
  EXPECT_THROW(PGOLF_CHECK_LT(5, 3, ""), Error);
}

constexpr ModelConfig kSmall = [] {
  ModelConfig c;
  c.name = "small";
  c.num_layers = 4;
  c.model_dim = 128;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  return c;
}();

TEST(Config, DimsFollowTheReferenceDefaults) {
  using D = Dims<ModelConfig{}>;
  static_assert(D::head_dim == 64 && D::kv_dim == 256 && D::group == 2 && D::hidden == 1024);
  static_assert(D::n_enc == 4 && D::n_dec == 5 && D::n_skip == 4);
  using S = Dims<kSmall>;
  static_assert(S::head_dim == 32 && S::kv_dim == 64 && S::n_enc == 2 && S::n_dec == 2 && S::n_skip == 2);
  EXPECT_EQ(kSmall.name.view(), "small");
}

TEST(Config, DescriptionAndFingerprint) {
  const ModelConfig base{};
  EXPECT_EQ(describe_architecture(base),
            "vocab=1024 layers=9 dim=512 heads=8 kv_heads=4 mlp_mult=2 max_seq=1024 tied=1 rope_base=10000 "
            "softcap=30 quant.matrix_bits=8 quant.embed_bits=8");
  EXPECT_NE(fingerprint(base), fingerprint(kSmall));
  ModelConfig renamed = base;
  renamed.name = "other";
  EXPECT_EQ(fingerprint(base), fingerprint(renamed)) << "the name is not part of the architecture";
  ModelConfig softcap = base;
  softcap.logit_softcap = 20.0f;
  EXPECT_NE(fingerprint(base), fingerprint(softcap));
  EXPECT_NE(describe(base).find("'custom'"), std::string::npos);
  // The initialisation and the optimizer groups are logged but leave the fingerprint alone.
  EXPECT_EQ(describe_init(base), "reference");
  EXPECT_EQ(describe_groups(base), "canonical");
  ModelConfig seed_a_like = base;
  seed_a_like.features.hash_embedding = HashEmbedding::bigram;
  seed_a_like.features.hash_buckets = 12288;
  const std::uint64_t canonical_fingerprint = fingerprint(seed_a_like);
  seed_a_like.init.overtone_embedding = true;
  seed_a_like.init.hash_table_init_std = 0.01f;
  seed_a_like.groups.hash_embedding = HashEmbeddingGroups::embedding_adam;
  EXPECT_EQ(describe_init(seed_a_like), "overtone_embedding hash_table_init_std=0.01");
  EXPECT_EQ(describe_groups(seed_a_like), "hash_embedding=embedding_adam");
  EXPECT_EQ(fingerprint(seed_a_like), canonical_fingerprint);
}

TEST(Tensor, ViewExtentsIndexAndShapeCheck) {
  HostBuffer<float> buf(3 * 8);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buf.data()) % kHostAlignment, 0u);
  using V = View<float, Extents<dyn, 8>>;
  static_assert(V::rank == 2 && Extents<dyn, 8>::num_dynamic == 1 && Extents<dyn, 8>::static_product == 8);
  V v = V::over(buf.span(), 3);
  EXPECT_EQ(v.extent(0), 3);
  EXPECT_EQ(v.extent(1), 8);
  EXPECT_EQ(v.stride(0), 8);
  v(2, 5) = 7.0f;
  EXPECT_EQ(buf[2 * 8 + 5], 7.0f);
  EXPECT_THROW(V::over(buf.span(), 4), Error);
  View<const float, Extents<dyn, 8>> cv = v;
  EXPECT_EQ(cv(2, 5), 7.0f);
  using V4 = View<float, Extents<dyn, dyn, 4, 2>>;
  HostBuffer<float> b4(2 * 3 * 4 * 2);
  V4 v4(b4.data(), 2, 3);
  EXPECT_EQ(v4.size(), 48);
  v4(1, 2, 3, 1) = 1.0f;
  EXPECT_EQ(b4[((1 * 3 + 2) * 4 + 3) * 2 + 1], 1.0f);
}

TEST(HostBuffer, CopyIsDeepAndZeroed) {
  HostBuffer<int> a(5);
  EXPECT_EQ(std::accumulate(a.begin(), a.end(), 0), 0);
  a[1] = 4;
  HostBuffer<int> b = a;
  b[1] = 9;
  EXPECT_EQ(a[1], 4);
  EXPECT_EQ(b[1], 9);
}

TEST(NumericTypes, F16MatchesTheCompilersFloat16OnEveryValueAndManyFloats) {
  // Every half value round-trips exactly.
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const f16 x{static_cast<std::uint16_t>(h)};
    const float f = x.to_float();
    _Float16 ref;
    std::memcpy(&ref, &x.bits, 2);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(static_cast<float>(ref)));
      continue;
    }
    ASSERT_EQ(float_to_bits(f), float_to_bits(static_cast<float>(ref))) << h;
    ASSERT_EQ(f16::from_float(f).bits, h) << h;
  }
  // Float -> half rounding agrees with the compiler's conversion (round to nearest even), across
  // normal, subnormal, overflow and tie cases: a sweep over float bit patterns.
  for (std::uint64_t u = 0; u <= 0xffffffffull; u += 4093) {
    const float f = bits_to_float(static_cast<std::uint32_t>(u));
    if (std::isnan(f)) continue;
    const auto ref = static_cast<_Float16>(f);
    std::uint16_t ref_bits;
    std::memcpy(&ref_bits, &ref, 2);
    ASSERT_EQ(f16::from_float(f).bits, ref_bits) << "float bits " << u;
  }
  EXPECT_EQ(f16::from_float(65519.0f).bits, 0x7bff);  // rounds down to 65504
  EXPECT_EQ(f16::from_float(65520.0f).bits, 0x7c00);  // tie to even: infinity
}

TEST(NumericTypes, Bf16RoundsToNearestEven) {
  EXPECT_EQ(bf16::from_float(1.0f).bits, 0x3f80);
  // 1 + 2^-8 is exactly half way between 1 and 1 + 2^-7: ties to even -> 1.
  EXPECT_EQ(bf16::from_float(1.0f + 1.0f / 256).bits, 0x3f80);
  // 1 + 3·2^-8 is half way between 1+2^-7 (odd) and 1+2^-6 (even): rounds up.
  EXPECT_EQ(bf16::from_float(1.0f + 3.0f / 256).bits, 0x3f82);
  EXPECT_EQ(bf16::from_float(-2.5f).to_float(), -2.5f);
  EXPECT_TRUE(std::isnan(bf16::from_float(std::nanf("")).to_float()));
  // Against a direct oracle: of the two bf16 neighbours of f, the nearer one, ties to the even one.
  for (std::uint64_t u = 0; u < 0x7f800000ull; u += 997) {
    const float f = bits_to_float(static_cast<std::uint32_t>(u));
    const auto lo = static_cast<std::uint32_t>(u) & 0xffff0000u, hi = lo + 0x10000u;
    // The neighbour above the largest finite bf16 is 2^128 (which rounds to infinity).
    const double vhi = hi == 0x7f800000u ? std::ldexp(1.0, 128) : static_cast<double>(bits_to_float(hi));
    const double dlo = static_cast<double>(f) - bits_to_float(lo), dhi = vhi - f;
    const std::uint32_t expect = (dlo < dhi || (dlo == dhi && ((lo >> 16) & 1u) == 0)) ? lo : hi;
    ASSERT_EQ(static_cast<std::uint32_t>(bf16::from_float(f).bits) << 16, expect) << "float bits " << u;
  }
}

TEST(Philox, MatchesTheRandom123KnownAnswers) {
  // Known-answer vectors of philox4x32_10 from Random123's kat_vectors.
  auto check = [](Philox4x32::Block ctr, std::uint32_t k0, std::uint32_t k1, Philox4x32::Block expect) {
    const auto out = Philox4x32::generate(ctr, k0, k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], expect.v[i]) << "word " << i;
  };
  check({{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}});
  check({{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}}, 0xffffffffu, 0xffffffffu,
        {{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}});
  check({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0xa4093822u, 0x299f31d0u,
        {{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}});
}

TEST(Philox, StreamsAreIndependentAndDistributionsRight) {
  const RandomStream a(1337, 0), b(1337, 1), c(1338, 0);
  EXPECT_NE(a.uniform(0), b.uniform(0));
  EXPECT_NE(a.uniform(0), c.uniform(0));
  EXPECT_EQ(a.normal(12345), RandomStream(1337, 0).normal(12345));
  constexpr int n = 200000;
  double su = 0, su2 = 0, sn = 0, sn2 = 0, sn4 = 0;
  float umin = 1, umax = 0;
  for (int i = 0; i < n; ++i) {
    const double u = a.uniform(i);
    umin = std::min(umin, static_cast<float>(u));
    umax = std::max(umax, static_cast<float>(u));
    su += u;
    su2 += u * u;
    const double z = a.normal(i);
    sn += z;
    sn2 += z * z;
    sn4 += z * z * z * z;
  }
  EXPECT_GT(umin, 0.0f);
  EXPECT_LT(umax, 1.0f);
  EXPECT_NEAR(su / n, 0.5, 0.005);
  EXPECT_NEAR(su2 / n - 0.25, 1.0 / 12, 0.003);
  EXPECT_NEAR(sn / n, 0.0, 0.01);
  EXPECT_NEAR(sn2 / n, 1.0, 0.01);
  EXPECT_NEAR(sn4 / n, 3.0, 0.06);  // kurtosis of a normal
  std::vector<int> hist(10, 0);
  for (int i = 0; i < n; ++i) ++hist[a.below(i, 10)];
  for (int h : hist) EXPECT_NEAR(h, n / 10, n / 100);
}

TEST(Hash, KnownVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("6789", 4, crc32c("12345", 5)), 0xE3069283u);
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);
}

TEST(File, AtomicWriteReplacesAndFailedWriteKeepsTheOldFile) {
  const auto dir = std::filesystem::temp_directory_path() / ("pgolf_core_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "f.bin";
  write_text_file_atomic(path, "first");
  EXPECT_EQ(read_text_file(path), "first");
  EXPECT_THROW(write_file_atomic(path, [](const ByteSink& sink) {
                 sink("partial", 7);
                 PGOLF_FAIL("producer failed half way");
               }),
               Error);
  EXPECT_EQ(read_text_file(path), "first");
  for (const auto& e : std::filesystem::directory_iterator(dir)) EXPECT_EQ(e.path().filename(), "f.bin") << "temp file left behind";
  MappedFile m(path);
  EXPECT_EQ(std::string(m.bytes().begin(), m.bytes().end()), "first");
  try {
    read_file(dir / "missing.bin");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.bin"), std::string::npos);
  }
  std::filesystem::remove_all(dir);
}

TEST(Parallel, ForCoversEveryIndexOnceAndSumIsThreadCountIndependent) {
  std::vector<int> hits(10007, 0);
  parallel_for(0, 10007, 100, [&](std::int64_t b, std::int64_t e) {
    for (auto i = b; i < e; ++i) ++hits[i];
  });
  for (int h : hits) ASSERT_EQ(h, 1);
  auto sum = [](std::int64_t b, std::int64_t e) {
    float s = 0;
    for (auto i = b; i < e; ++i) s += 1.0f / static_cast<float>(i + 1);
    return s;
  };
  const float s1 = parallel_sum<float>(100000, 1000, sum);
  ThreadPool single(1);
  std::vector<float> parts(100);
  single.run(100, [&](std::int64_t c) { parts[c] = sum(c * 1000, (c + 1) * 1000); });
  float s2 = 0;
  for (float p : parts) s2 += p;
  EXPECT_EQ(s1, s2);
  EXPECT_THROW(parallel_for(0, 100, 1, [](std::int64_t b, std::int64_t) { PGOLF_CHECK(b != 50, "chunk 50"); }), Error);
}

}  // namespace
}  // namespace pgolf
