// Tokenizer-agnostic bits per byte (the reference's build_sentencepiece_luts + eval_val).
//
// Three tables indexed by token id: base_bytes (UTF-8 bytes of the piece without its leading
// "▁"; 1 for a byte-fallback piece; 0 for control/unknown/unused ids), has_leading_space (the piece
// starts with "▁") and is_boundary (control/unknown/unused ids and ids beyond the tokenizer).
// A scored target y with previous token x counts
//   bytes(x, y) = base_bytes[y] + (has_leading_space[y] && !is_boundary[x])
// (the space a "▁" stands for is not charged right after a boundary such as BOS), and
//   val_loss = Σ nll / N        val_bpb = Σ nll / (ln 2 · Σ bytes) = (val_loss / ln 2) · (N / Σ bytes).
// This header knows nothing of SentencePiece: data/tokenizer.hpp builds the tables.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "pgolf/core/error.hpp"

namespace pgolf {

struct ByteLuts {
  std::vector<std::int16_t> base_bytes;
  std::vector<std::uint8_t> has_leading_space;
  std::vector<std::uint8_t> is_boundary;

  std::size_t size() const { return base_bytes.size(); }
};

inline int token_bytes(std::int32_t prev, std::int32_t target, const ByteLuts& luts) {
  return luts.base_bytes[static_cast<std::size_t>(target)] +
         ((luts.has_leading_space[static_cast<std::size_t>(target)] && !luts.is_boundary[static_cast<std::size_t>(prev)]) ? 1 : 0);
}

// fp64 sums of token losses, token count and byte count.
class BpbAccumulator {
 public:
  void add(double nll, std::int32_t prev, std::int32_t target, const ByteLuts& luts) {
    nll_sum_ += nll;
    ++tokens_;
    bytes_ += token_bytes(prev, target, luts);
  }
  void merge(const BpbAccumulator& o) {
    nll_sum_ += o.nll_sum_;
    tokens_ += o.tokens_;
    bytes_ += o.bytes_;
  }

  std::int64_t tokens() const { return tokens_; }
  std::int64_t bytes() const { return bytes_; }
  double nll_sum() const { return nll_sum_; }
  double val_loss() const { return tokens_ ? nll_sum_ / static_cast<double>(tokens_) : 0.0; }
  double val_bpb() const {
    PGOLF_CHECK(bytes_ > 0, "bits per byte over zero bytes");
    const double bits_per_token = val_loss() / std::numbers::ln2;
    return bits_per_token * (static_cast<double>(tokens_) / static_cast<double>(bytes_));
  }

 private:
  double nll_sum_ = 0;
  std::int64_t tokens_ = 0;
  std::int64_t bytes_ = 0;
};

}  // namespace pgolf
