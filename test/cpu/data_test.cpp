// Token shards and the reference's stream semantics.
#include <gtest/gtest.h>

#include <fstream>
#include <numeric>

#include "pgolf/data/shard.hpp"
#include "pgolf/data/token_stream.hpp"
#include "test_paths.hpp"

namespace pgolf {
namespace {

using testing::TempDir;

std::vector<std::uint16_t> iota_tokens(std::size_t n, std::uint16_t start) {
  std::vector<std::uint16_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void write_raw(const std::filesystem::path& p, const std::vector<std::int32_t>& header, const std::vector<std::uint16_t>& tokens,
               std::size_t truncate_to = SIZE_MAX) {
  std::string bytes(reinterpret_cast<const char*>(header.data()), header.size() * 4);
  bytes.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
  if (truncate_to < bytes.size()) bytes.resize(truncate_to);
  std::ofstream(p, std::ios::binary) << bytes;
}

TEST(Shard, RoundTripInTheReferenceLayout) {
  TempDir dir("shard");
  const auto tokens = iota_tokens(1000, 7);
  write_shard(dir / "a.bin", tokens);
  EXPECT_EQ(size_of_file(dir / "a.bin"), 1024u + 2000u);
  const auto raw = read_file(dir / "a.bin");
  EXPECT_EQ(load_le<std::int32_t>(raw.data()), 20240520);
  EXPECT_EQ(load_le<std::int32_t>(raw.data() + 4), 1);
  EXPECT_EQ(load_le<std::int32_t>(raw.data() + 8), 1000);
  for (std::size_t i = 12; i < 1024; ++i) ASSERT_EQ(raw[i], 0) << "header byte " << i;
  EXPECT_EQ(load_le<std::uint16_t>(raw.data() + 1024), 7);
  const Shard s(dir / "a.bin");
  ASSERT_EQ(s.size(), 1000u);
  EXPECT_TRUE(std::equal(tokens.begin(), tokens.end(), s.tokens().begin()));
  write_shard(dir / "empty.bin", {});
  EXPECT_EQ(Shard(dir / "empty.bin").size(), 0u);
}

TEST(Shard, EveryBadInputIsAClearErrorNamingTheFile) {
  TempDir dir("shard_bad");
  std::vector<std::int32_t> h(256, 0);
  h[0] = kShardMagic;
  h[1] = kShardVersion;
  h[2] = 10;
  const auto tokens = iota_tokens(10, 0);
  struct Case {
    std::string file, expect;
  };
  std::vector<Case> cases;
  write_raw(dir / "short_header.bin", h, {}, 100);
  cases.push_back({"short_header.bin", "shorter than the 1024-byte header"});
  auto bad_magic = h;
  bad_magic[0] = 12345;
  write_raw(dir / "magic.bin", bad_magic, tokens);
  cases.push_back({"magic.bin", "wrong magic number"});
  auto bad_version = h;
  bad_version[1] = 2;
  write_raw(dir / "version.bin", bad_version, tokens);
  cases.push_back({"version.bin", "unsupported shard version"});
  auto negative = h;
  negative[2] = -5;
  write_raw(dir / "negative.bin", negative, tokens);
  cases.push_back({"negative.bin", "negative token count"});
  write_raw(dir / "truncated.bin", h, tokens, 1024 + 15);
  cases.push_back({"truncated.bin", "(truncated)"});
  auto too_few = h;
  too_few[2] = 4;
  write_raw(dir / "mismatch.bin", too_few, tokens);
  cases.push_back({"mismatch.bin", "must be 1032 bytes, but it is 1044 bytes"});
  cases.push_back({"missing.bin", "does not exist"});
  for (const auto& c : cases) {
    const std::string msg = error_of([&] { Shard s(dir / c.file); });
    EXPECT_NE(msg.find(c.file), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.file << ": " << msg;
  }
  write_shard(dir / "vocab.bin", iota_tokens(10, 1020));
  const std::string msg = error_of([&] { TokenStream s((dir / "vocab.bin").string(), 1024); });
  EXPECT_NE(msg.find("vocab.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("token id 1024 at position 4"), std::string::npos) << msg;
  EXPECT_NE(msg.find("vocab size 1024"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { list_shards((dir / "nothing_*.bin").string()); }).find("no files match"), std::string::npos);
}

TEST(Shard, ListShardsSortsLikePython) {
  TempDir dir("list");
  for (const char* n : {"x_000010.bin", "x_000002.bin", "x_000001.bin"}) write_shard(dir / n, std::vector<std::uint16_t>{1});
  const auto files = list_shards((dir / "x_*.bin").string());
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].filename(), "x_000001.bin");
  EXPECT_EQ(files[2].filename(), "x_000010.bin");
}

// The reference restated: shards concatenated and repeated forever; each micro-step takes
// world·(local+1) tokens; rank r reads its span.
struct ReferenceStream {
  std::vector<std::uint16_t> all;
  std::size_t pos = 0;
  std::vector<std::uint16_t> take(std::size_t n) {
    std::vector<std::uint16_t> out;
    for (std::size_t i = 0; i < n; ++i) out.push_back(all[(pos + i) % all.size()]);
    pos += n;
    return out;
  }
};

TEST(TokenStream, LoaderFollowsTheReferenceAcrossShardsRanksAndWraps) {
  TempDir dir("stream");
  ReferenceStream ref;
  std::uint16_t next = 0;
  for (int s = 0; s < 3; ++s) {
    const auto t = iota_tokens(97 + 31 * s, next);
    next = static_cast<std::uint16_t>(next + t.size());
    char name[32];
    std::snprintf(name, sizeof name, "fineweb_train_%06d.bin", s);
    write_shard(dir / name, t);
    ref.all.insert(ref.all.end(), t.begin(), t.end());
  }
  const std::string pattern = (dir / "fineweb_train_*.bin").string();
  const int world = 3, accum = 2, seq = 4;
  const std::int64_t global = 48;  // local = 48 / 6 = 8 tokens: 2 rows of 4
  std::vector<DistributedTokenLoader> ranks;
  for (int r = 0; r < world; ++r) ranks.emplace_back(pattern, r, world);
  for (int step = 0; step < 40; ++step) {  // wraps the 390-token stream several times
    const auto chunk = ref.take(world * 9);
    for (int r = 0; r < world; ++r) {
      const TokenBatch b = ranks[r].next_batch(global, seq, accum);
      ASSERT_EQ(b.rows, 2);
      for (int i = 0; i < 8; ++i) {
        ASSERT_EQ(b.x[i], chunk[r * 9 + i]) << "step " << step << " rank " << r << " i " << i;
        ASSERT_EQ(b.y[i], chunk[r * 9 + i + 1]);
      }
    }
  }
}

TEST(TokenStream, PositionSaveAndRestoreContinuesIdentically) {
  TempDir dir("resume");
  write_shard(dir / "t_000000.bin", iota_tokens(50, 0));
  write_shard(dir / "t_000001.bin", iota_tokens(70, 100));
  const std::string pattern = (dir / "t_*.bin").string();
  DistributedTokenLoader a(pattern, 0, 1);
  for (int i = 0; i < 7; ++i) a.next_batch(12, 3, 1);
  const StreamPosition p = a.position();
  DistributedTokenLoader b(pattern, 0, 1);
  b.set_position(p);
  for (int i = 0; i < 20; ++i) {
    const auto x = a.next_batch(12, 3, 1), y = b.next_batch(12, 3, 1);
    ASSERT_EQ(x.x, y.x);
    ASSERT_EQ(x.y, y.y);
  }
  EXPECT_THROW(b.set_position(StreamPosition{5, 0}), Error);
  EXPECT_THROW(b.set_position(StreamPosition{0, 51}), Error);
  EXPECT_NE(error_of([&] { a.next_batch(10, 3, 1); }).find("TRAIN_SEQ_LEN=3"), std::string::npos);
}

TEST(TokenStream, ValidationTokensAreTruncatedToWholeSequences) {
  TempDir dir("val");
  write_shard(dir / "fineweb_val_000000.bin", iota_tokens(10, 0));
  write_shard(dir / "fineweb_val_000001.bin", iota_tokens(13, 10));
  const auto v = load_validation_tokens((dir / "fineweb_val_*.bin").string(), 5);
  ASSERT_EQ(v.size(), 21u);  // (23 − 1) / 5 · 5 + 1
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], i);
  const std::string msg = error_of([&] { load_validation_tokens((dir / "fineweb_val_*.bin").string(), 40); });
  EXPECT_NE(msg.find("Validation split is too short for TRAIN_SEQ_LEN=40"), std::string::npos) << msg;
  write_shard(dir / "empty_val_000000.bin", {});
  EXPECT_NE(error_of([&] { load_validation_tokens((dir / "empty_val_*.bin").string(), 4); }).find("too short"), std::string::npos);
}

}  // namespace
}  // namespace pgolf
