// Validation as the reference's eval_val: non-overlapping windows of TRAIN_SEQ_LEN over the
// validation stream, val_loss = mean token NLL (nats), val_bpb = Σ NLL / (ln 2 · Σ bytes) with the
// tokenizer byte tables. The reference sums per-batch means × counts in fp64; pgolf sums the
// per-token losses in fp64 (the same value up to float rounding of the batch means).
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/progress.hpp"
#include "pgolf/eval/bpb.hpp"

namespace pgolf::run {

struct EvalResult {
  double val_loss = 0;
  double val_bpb = 0;
  std::int64_t tokens = 0;
  std::int64_t bytes = 0;
  double seconds = 0;
};

// `losses_of(ids, targets, batch, seq, out)` fills per-token losses. The sequences are split
// contiguously over `world` ranks as the reference does; this process evaluates rank `rank`'s share.
template <class LossFn>
EvalResult evaluate(LossFn&& losses_of, std::span<const std::uint16_t> val_tokens, int seq_len, std::int64_t val_batch_size,
                    int world, int grad_accum, int eval_batch_seqs, const ByteLuts& luts, bool show_progress = true) {
  const std::int64_t local_batch_tokens = val_batch_size / (static_cast<std::int64_t>(world) * grad_accum);
  PGOLF_CHECK(local_batch_tokens >= seq_len, "VAL_BATCH_SIZE must provide at least one sequence per rank; got VAL_BATCH_SIZE="
                                                 << val_batch_size << ", WORLD_SIZE=" << world << ", GRAD_ACCUM_STEPS="
                                                 << grad_accum << ", TRAIN_SEQ_LEN=" << seq_len);
  const std::int64_t total_seqs = (static_cast<std::int64_t>(val_tokens.size()) - 1) / seq_len;
  PGOLF_CHECK(total_seqs > 0, "the validation split has fewer than TRAIN_SEQ_LEN+1=" << seq_len + 1 << " tokens");
  const int rank = 0;
  const std::int64_t seq_begin = total_seqs * rank / world, seq_end = total_seqs * (rank + 1) / world;
  const std::int64_t chunk = std::min<std::int64_t>(eval_batch_seqs, local_batch_tokens / seq_len);
  Stopwatch clock;
  Progress progress("eval", seq_end - seq_begin, "seqs", 30.0);
  BpbAccumulator acc;
  std::vector<std::int32_t> x, y;
  std::vector<float> losses;
  for (std::int64_t s0 = seq_begin; s0 < seq_end; s0 += chunk) {
    const std::int64_t s1 = std::min(seq_end, s0 + chunk), n = (s1 - s0) * seq_len;
    x.resize(static_cast<std::size_t>(n));
    y.resize(static_cast<std::size_t>(n));
    losses.resize(static_cast<std::size_t>(n));
    const std::uint16_t* src = val_tokens.data() + s0 * seq_len;
    for (std::int64_t i = 0; i < n; ++i) {
      x[i] = src[i];
      y[i] = src[i + 1];
    }
    losses_of(std::span<const std::int32_t>(x), std::span<const std::int32_t>(y), s1 - s0, static_cast<std::int64_t>(seq_len),
              std::span<float>(losses));
    for (std::int64_t i = 0; i < n; ++i) acc.add(losses[i], x[i], y[i], luts);
    if (show_progress) progress.update(s1 - seq_begin);
  }
  progress.finish();
  EvalResult r;
  r.val_loss = acc.val_loss();
  r.val_bpb = acc.val_bpb();
  r.tokens = acc.tokens();
  r.bytes = acc.bytes();
  r.seconds = clock.seconds();
  return r;
}

}  // namespace pgolf::run
