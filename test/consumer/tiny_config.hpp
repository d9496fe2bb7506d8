#pragma once
#include "pgolf/core/config.hpp"

namespace consumer {
inline constexpr pgolf::ModelConfig kTiny = [] {
  pgolf::ModelConfig c;
  c.name = "consumer-tiny";
  c.vocab_size = 64;
  c.num_layers = 2;
  c.model_dim = 32;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.max_seq_len = 16;
  return c;
}();
}  // namespace consumer
