// A small model with the baseline's architecture that trains in minutes on two CPU cores:
// 4 layers, width 128, 4 heads with 2 KV heads (head dim 32), MLP 2×, vocabulary 1024,
// sequences up to 256 tokens. It is the model of the README's main job on a CPU.
#pragma once

#include "pgolf/core/config.hpp"

namespace pgolf::configs {

inline constexpr ModelConfig kSmall = [] {
  ModelConfig c;
  c.name = "small";
  c.vocab_size = 1024;
  c.num_layers = 4;
  c.model_dim = 128;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.mlp_mult = 2;
  c.max_seq_len = 256;
  c.tie_embeddings = true;
  c.rope_base = 10000.0f;
  c.logit_softcap = 30.0f;
  return c;
}();

}  // namespace pgolf::configs
