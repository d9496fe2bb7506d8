// Seed E — "n-gram backoff eval" (val_bpb 0.9076; model of openai/parameter-golf PR #727,
// 2026-03-26_Backoff_Entropy_Adaptive): 10 layers, width 512, GQA 8/4, MLP 3× LeakyReLU(0.5)²,
// BigramHash 4096×128, SmearGate (after the norm), value residual (v = λ0·v0 + λ1·v), gated
// attention (σ(W x + b), b = 4), XSA in the last 4 layers, partial RoPE 16/64, LN scale, U-Net skips,
// logit softcap 30, OrthoInit with 1/√(2L) projection scaling. The n-gram backoff cache is an
// evaluation technique of a later issue.
#pragma once

#include "pgolf/core/config.hpp"

namespace pgolf::configs {

inline constexpr ModelConfig kSeedE = [] {
  ModelConfig c;
  c.name = "seed_e";
  c.vocab_size = 1024;
  c.num_layers = 10;
  c.model_dim = 512;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.mlp_mult = 3;
  c.max_seq_len = 2048;
  c.logit_softcap = 30.0f;
  c.features.hash_embedding = HashEmbedding::bigram;
  c.features.hash_buckets = 4096;
  c.features.hash_dim = 128;
  c.features.smear = SmearGate::post_norm;
  c.features.value_residual = ValueResidual::lambda_mix;
  c.features.attn_gate = AttnGate::headwise_bias;
  c.features.xsa_layers = last_layers(10, 4);
  c.features.rope_dims = 16;
  c.features.ln_scale = true;
  c.features.activation = Activation::leaky_relu2;
  c.features.leaky_slope = 0.5f;
  c.init.ortho = true;
  c.init.ortho_scale_proj = true;
  return c;
}();

}  // namespace pgolf::configs
