// The reference baseline (train_gpt.py defaults, §1.4): 9 layers, width 512, 8 heads with 4 KV
// heads, MLP 2×, vocabulary 1024, sequence 1024, tied embeddings. 17,059,912 parameters.
#pragma once

#include "pgolf/core/config.hpp"

namespace pgolf::configs {

inline constexpr ModelConfig kBaseline = [] {
  ModelConfig c;
  c.name = "baseline";
  c.vocab_size = 1024;
  c.num_layers = 9;
  c.model_dim = 512;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.mlp_mult = 2;
  c.max_seq_len = 1024;
  c.tie_embeddings = true;
  c.rope_base = 10000.0f;
  c.logit_softcap = 30.0f;
  return c;
}();

}  // namespace pgolf::configs
