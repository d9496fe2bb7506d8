// Seed A — "8L BigramHash(12288) + hyper-parameter search" (val_bpb 1.2392): 8 layers, width 512,
// GQA 8/4, MLP 4× ReLU², a BigramHash of 12,288 buckets with a 128-wide table projected to the model
// width, RoPE base 50,000, sequences of 2,048, tied embeddings; overtone embedding init with the
// phase-transition resid_mix. The record (openai/parameter-golf PR #436, records/track_non_record_16mb/
// 2026-03-22_1xH100_Systematic_HyperOpt_129exp) trains the BigramHash's table, projection and scale
// in the token embedding's Adam group. Its fp16 tied embedding, Muon weight decay (0.048), AdamW
// weight decay (0.01), gradient clip (0.3), QK_GAIN_INIT (1.0), learning rates and warmdown (3,000)
// are run-time or export settings, not model switches.
#pragma once

#include "pgolf/core/config.hpp"

namespace pgolf::configs {

inline constexpr ModelConfig kSeedA = [] {
  ModelConfig c;
  c.name = "seed_a";
  c.vocab_size = 1024;
  c.num_layers = 8;
  c.model_dim = 512;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.mlp_mult = 4;
  c.max_seq_len = 2048;
  c.rope_base = 50000.0f;
  c.features.hash_embedding = HashEmbedding::bigram;
  c.features.hash_buckets = 12288;
  c.features.hash_dim = 128;
  c.features.bigram_start = BigramStart::zero_prev;  // the record pads prev with 0 at position 0
  c.init.overtone_embedding = true;
  c.init.phase_resid_mix = true;
  // Without OrthoInit a zero table behind a zero projection never trains (the record's stays zero:
  // every gradient of it is zero): the table starts N(0, 0.01), as the first BigramHash did
  // (§2.1 v1), and the projection at zero.
  c.init.hash_table_init_std = 0.01f;
  c.groups.hash_embedding = HashEmbeddingGroups::embedding_adam;
  return c;
}();

}  // namespace pgolf::configs
