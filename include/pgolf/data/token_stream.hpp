// The reference's stream semantics (train_gpt.py TokenStream, DistributedTokenLoader,
// load_validation_tokens):
//   - shards are read in sorted glob order from shard 0, sequentially, wrapping forever;
//   - each micro-step takes one contiguous chunk of world·(local+1) tokens, local =
//     global_tokens / (world · grad_accum), and rank r uses chunk[r·(local+1), (r+1)·(local+1)):
//     x = span[:-1], y = span[1:] as (local/seq, seq);
//   - validation = all val shards concatenated, truncated to ((N−1)/seq)·seq + 1 tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/data/shard.hpp"

namespace pgolf {

// Where a stream stands: which shard, and the next token inside it. Saved in checkpoints.
struct StreamPosition {
  std::int64_t file_index = 0;
  std::int64_t offset = 0;
  bool operator==(const StreamPosition&) const = default;
};

class TokenStream {
 public:
  // vocab_size > 0 checks every shard's tokens when the shard is opened.
  explicit TokenStream(const std::string& pattern, int vocab_size = 0)
      : files_(list_shards(pattern)), vocab_size_(vocab_size) {
    open(0);
  }

  // Appends the next n tokens to out.
  void take(std::int64_t n, std::vector<std::uint16_t>& out) {
    std::int64_t remaining = n;
    std::int64_t empty_files_in_a_row = 0;
    while (remaining > 0) {
      const std::int64_t avail = static_cast<std::int64_t>(shard_.size()) - pos_.offset;
      if (avail <= 0) {
        if (++empty_files_in_a_row > static_cast<std::int64_t>(files_.size())) {
          PGOLF_FAIL("every shard matching the training pattern is empty (" << files_.front().string() << ", ...)");
        }
        open((pos_.file_index + 1) % static_cast<std::int64_t>(files_.size()));
        continue;
      }
      empty_files_in_a_row = 0;
      const std::int64_t k = std::min(remaining, avail);
      const auto t = shard_.tokens().subspan(static_cast<std::size_t>(pos_.offset), static_cast<std::size_t>(k));
      out.insert(out.end(), t.begin(), t.end());
      pos_.offset += k;
      remaining -= k;
    }
  }

  StreamPosition position() const { return pos_; }
  void set_position(const StreamPosition& p) {
    PGOLF_CHECK(p.file_index >= 0 && p.file_index < static_cast<std::int64_t>(files_.size()),
                "stream position: shard index " << p.file_index << " but " << files_.size() << " shards match");
    open(p.file_index);
    PGOLF_CHECK(p.offset >= 0 && p.offset <= static_cast<std::int64_t>(shard_.size()),
                "stream position: offset " << p.offset << " beyond the " << shard_.size() << " tokens of " << files_[p.file_index].string());
    pos_.offset = p.offset;
  }
  const std::vector<std::filesystem::path>& files() const { return files_; }

 private:
  void open(std::int64_t index) {
    shard_ = Shard(files_[static_cast<std::size_t>(index)]);
    if (vocab_size_ > 0) check_tokens_in_vocab(shard_.tokens(), vocab_size_, "shard " + shard_.path().string());
    pos_ = StreamPosition{index, 0};
  }

  std::vector<std::filesystem::path> files_;
  int vocab_size_ = 0;
  Shard shard_;
  StreamPosition pos_;
};

struct TokenBatch {
  std::vector<std::int32_t> x, y;  // (rows, seq) row-major
  std::int64_t rows = 0, seq = 0;
};

class DistributedTokenLoader {
 public:
  DistributedTokenLoader(const std::string& pattern, int rank, int world_size, int vocab_size = 0)
      : rank_(rank), world_(world_size), stream_(pattern, vocab_size) {
    PGOLF_CHECK(world_size > 0 && rank >= 0 && rank < world_size, "rank " << rank << " of world size " << world_size);
  }

  TokenBatch next_batch(std::int64_t global_tokens, int seq_len, int grad_accum_steps) {
    const std::int64_t local = global_tokens / (static_cast<std::int64_t>(world_) * grad_accum_steps);
    PGOLF_CHECK(local > 0 && seq_len > 0 && local % seq_len == 0,
                "TRAIN_BATCH_TOKENS=" << global_tokens << " / (WORLD_SIZE=" << world_ << " x GRAD_ACCUM_STEPS=" << grad_accum_steps
                                      << ") = " << local << " tokens per rank and micro-step, which must be a positive multiple of TRAIN_SEQ_LEN="
                                      << seq_len);
    const std::int64_t span = local + 1;
    chunk_.clear();
    stream_.take(span * world_, chunk_);
    TokenBatch b;
    b.rows = local / seq_len;
    b.seq = seq_len;
    b.x.resize(static_cast<std::size_t>(local));
    b.y.resize(static_cast<std::size_t>(local));
    const std::uint16_t* s = chunk_.data() + rank_ * span;
    for (std::int64_t i = 0; i < local; ++i) {
      b.x[i] = s[i];
      b.y[i] = s[i + 1];
    }
    return b;
  }

  StreamPosition position() const { return stream_.position(); }
  void set_position(const StreamPosition& p) { stream_.set_position(p); }
  const std::vector<std::filesystem::path>& files() const { return stream_.files(); }

 private:
  int rank_, world_;
  TokenStream stream_;
  std::vector<std::uint16_t> chunk_;
};

// All validation shards concatenated and truncated to whole sequences plus one target token.
inline std::vector<std::uint16_t> load_validation_tokens(const std::string& pattern, int seq_len) {
  std::vector<std::uint16_t> tokens;
  for (const auto& f : list_shards(pattern)) {
    const Shard s(f);
    tokens.insert(tokens.end(), s.tokens().begin(), s.tokens().end());
  }
  const std::int64_t usable = tokens.empty() ? 0 : (static_cast<std::int64_t>(tokens.size()) - 1) / seq_len * seq_len;
  if (usable <= 0) {
    PGOLF_FAIL("Validation split is too short for TRAIN_SEQ_LEN=" << seq_len << ": the shards matching " << pattern << " hold "
                                                                  << tokens.size() << " tokens");
  }
  tokens.resize(static_cast<std::size_t>(usable + 1));
  return tokens;
}

}  // namespace pgolf
