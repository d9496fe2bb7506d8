// Seed B — "10L Int5-MLP Int6-Attn" (val_bpb 1.1508, records/track_10min_16mb/
// 2026-03-20_10L_Int5MLP_MuonWD04_SWA50): 10 layers, width 512, GQA 8/4, vocabulary 1024, SmearGate
// (after the norm), BigramHash 4096×128, MLP 3×, U-Net skips, OrthoInit (projections × 1/√(2L)),
// sequences of 2,048. Its int5/int6 export and SWA belong to later issues.
#pragma once

#include "pgolf/core/config.hpp"

namespace pgolf::configs {

inline constexpr ModelConfig kSeedB = [] {
  ModelConfig c;
  c.name = "seed_b";
  c.vocab_size = 1024;
  c.num_layers = 10;
  c.model_dim = 512;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.mlp_mult = 3;
  c.max_seq_len = 2048;
  c.features.hash_embedding = HashEmbedding::bigram;
  c.features.hash_buckets = 4096;
  c.features.hash_dim = 128;
  c.features.smear = SmearGate::post_norm;
  c.init.ortho = true;
  c.init.ortho_scale_proj = true;
  return c;
}();

}  // namespace pgolf::configs
