// Seed C — "11L PartialRoPE + LN scale + EMA + SWA + TTT" (val_bpb 1.2207): 11 layers, width 512,
// GQA 8/4, partial RoPE on 16 of 64 head dims, LN scale 1/√(layer+1), SmearGate (after the norm),
// BigramHash 2048×64, U-Net skips with learned weights, MLP 3×, OrthoInit with the muP-style
// 1/√(2L) output-projection scaling, sequences of 2,048. EMA, SWA and TTT are training/evaluation
// techniques of later issues.
#pragma once

#include "pgolf/core/config.hpp"

namespace pgolf::configs {

inline constexpr ModelConfig kSeedC = [] {
  ModelConfig c;
  c.name = "seed_c";
  c.vocab_size = 1024;
  c.num_layers = 11;
  c.model_dim = 512;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.mlp_mult = 3;
  c.max_seq_len = 2048;
  c.features.hash_embedding = HashEmbedding::bigram;
  c.features.hash_buckets = 2048;
  c.features.hash_dim = 64;
  c.features.smear = SmearGate::post_norm;
  c.features.rope_dims = 16;
  c.features.ln_scale = true;
  c.init.ortho = true;
  c.init.ortho_scale_proj = true;
  return c;
}();

}  // namespace pgolf::configs
