// Seed D — "Turbo-Muon + EngramLite + GPTQ" (val_bpb 1.1091, openai/parameter-golf PR #1089,
// 2026-03-28_TurboMuon_EngramLite_ParamBanking): 11 layers, width 512, GQA 8/4, MLP 3.5× (1,792)
// LeakyReLU(0.3)² (the issue's; the record's script fixes per-layer slopes −0.014 … 0.468, which
// one leaky_slope cannot express: docs/features.md), EngramLite (2 heads × bigram + trigram, 8,192 buckets, 32 dims per head), U-Net
// skips with sigmoid gates, value embeddings (128) at layers 9 and 10, SmearGate (after the norm),
// XSA in all 11 layers, partial RoPE 16/64, LN scale, logit softcap 30, OrthoInit with the mimetic
// V-O initialisation (α 0.05). Turbo-Muon and GPTQ belong to later issues.
#pragma once

#include "pgolf/core/config.hpp"

namespace pgolf::configs {

inline constexpr ModelConfig kSeedD = [] {
  ModelConfig c;
  c.name = "seed_d";
  c.vocab_size = 1024;
  c.num_layers = 11;
  c.model_dim = 512;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.mlp_hidden = 1792;
  c.max_seq_len = 2048;
  c.logit_softcap = 30.0f;
  c.features.hash_embedding = HashEmbedding::engram_lite;
  c.features.hash_buckets = 8192;
  c.features.hash_dim = 32;
  c.features.engram_heads = 2;
  c.features.engram_orders = 2;
  c.features.skips = SkipConnection::sigmoid_gated;
  c.features.ve_layers = layer_bits({9, 10});
  c.features.ve_dim = 128;
  c.features.smear = SmearGate::post_norm;
  c.features.xsa_layers = last_layers(11, 11);
  c.features.rope_dims = 16;
  c.features.ln_scale = true;
  c.features.activation = Activation::leaky_relu2;
  c.features.leaky_slope = 0.3f;
  c.init.ortho = true;
  c.init.mimetic_vo_alpha = 0.05f;
  return c;
}();

}  // namespace pgolf::configs
