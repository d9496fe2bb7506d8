// Token shards in exactly the reference's binary format (data/download_hf_docs_and_tokenize.py
// write_datafile; train_gpt.py load_data_shard):
//   header: 256 little-endian int32 (1,024 bytes): [0] = 20240520 (magic), [1] = 1 (version),
//           [2] = number of tokens, the rest zero;
//   payload: that many little-endian uint16 token ids.
// A shard's size must be exactly 1,024 + 2 · tokens bytes.
#pragma once

#include <glob.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/file.hpp"

namespace pgolf {

inline constexpr std::int32_t kShardMagic = 20240520;      // DATAFILE_MAGIC
inline constexpr std::int32_t kShardVersion = 1;           // DATAFILE_VERSION
inline constexpr std::size_t kShardHeaderInts = 256;
inline constexpr std::size_t kShardHeaderBytes = kShardHeaderInts * sizeof(std::int32_t);
inline constexpr std::int64_t kShardMaxTokens = (std::int64_t{1} << 31) - 1;  // write_datafile: "token count too large"

// A memory-mapped, validated shard.
class Shard {
 public:
  Shard() = default;
  explicit Shard(const std::filesystem::path& path) : file_(open_checked(path)) {
    tokens_ = std::span<const std::uint16_t>(reinterpret_cast<const std::uint16_t*>(file_.bytes().data() + kShardHeaderBytes),
                                             static_cast<std::size_t>(load_le<std::int32_t>(file_.bytes().data() + 8)));
  }

  const std::filesystem::path& path() const { return file_.path(); }
  std::span<const std::uint16_t> tokens() const { return tokens_; }
  std::size_t size() const { return tokens_.size(); }

 private:
  static MappedFile open_checked(const std::filesystem::path& path) {
    if (!std::filesystem::exists(path)) PGOLF_FAIL("shard " << path.string() << " does not exist");
    MappedFile f(path);
    const auto b = f.bytes();
    const std::string ctx = "shard " + path.string();
    if (b.size() < kShardHeaderBytes) {
      PGOLF_FAIL(ctx << ": file is " << b.size() << " bytes, shorter than the " << kShardHeaderBytes << "-byte header");
    }
    const auto magic = load_le<std::int32_t>(b.data());
    const auto version = load_le<std::int32_t>(b.data() + 4);
    const auto count = load_le<std::int32_t>(b.data() + 8);
    PGOLF_CHECK_EQ(magic, kShardMagic, ctx << ": not a token shard (wrong magic number)");
    PGOLF_CHECK_EQ(version, kShardVersion, ctx << ": unsupported shard version");
    PGOLF_CHECK_GE(count, 0, ctx << ": negative token count in the header");
    const std::uint64_t expected = kShardHeaderBytes + 2ull * static_cast<std::uint64_t>(count);
    if (b.size() != expected) {
      PGOLF_FAIL(ctx << ": size mismatch: the header declares " << count << " tokens, so the file must be " << expected
                     << " bytes, but it is " << b.size() << " bytes" << (b.size() < expected ? " (truncated)" : ""));
    }
    return f;
  }

  MappedFile file_;
  std::span<const std::uint16_t> tokens_;
};

// Fails, naming the file, the position and the id, if a token is not below vocab_size.
inline void check_tokens_in_vocab(std::span<const std::uint16_t> tokens, int vocab_size, const std::string& source) {
  const auto it = std::find_if(tokens.begin(), tokens.end(), [&](std::uint16_t t) { return t >= vocab_size; });
  if (it != tokens.end()) {
    PGOLF_FAIL(source << ": token id " << *it << " at position " << (it - tokens.begin()) << " is not below the model's vocab size "
                      << vocab_size << " (a shard made with another tokenizer?)");
  }
}

// Writes a shard atomically (temp file + rename).
inline void write_shard(const std::filesystem::path& path, std::span<const std::uint16_t> tokens) {
  PGOLF_CHECK_LE(static_cast<std::int64_t>(tokens.size()), kShardMaxTokens, "shard " << path.string() << ": too many tokens");
  std::vector<std::int32_t> header(kShardHeaderInts, 0);
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<std::int32_t>(tokens.size());
  write_file_atomic(path, [&](const ByteSink& sink) {
    sink(header.data(), kShardHeaderBytes);
    sink(tokens.data(), tokens.size() * sizeof(std::uint16_t));
  });
}

// The files matching a glob pattern in sorted order (Python's sorted(glob.glob(pattern))).
inline std::vector<std::filesystem::path> list_shards(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> names;
  if (rc == 0) {
    for (std::size_t i = 0; i < g.gl_pathc; ++i) names.emplace_back(g.gl_pathv[i]);
  }
  ::globfree(&g);
  if (rc == GLOB_NOMATCH || names.empty()) PGOLF_FAIL("no files match " << pattern);
  if (rc != 0) PGOLF_FAIL("cannot list files matching " << pattern << " (glob error " << rc << ")");
  std::sort(names.begin(), names.end());  // byte order, as Python sorts str
  return {names.begin(), names.end()};
}

}  // namespace pgolf
