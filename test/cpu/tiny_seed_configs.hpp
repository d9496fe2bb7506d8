// Tiny models carrying the feature sets of the five seed configurations (small enough for finite
// differences; the PyTorch fixture test/cpu/data/make_feature_fixtures.py builds the same models).
#pragma once

#include "configs/seed_a.hpp"
#include "configs/seed_b.hpp"
#include "configs/seed_c.hpp"
#include "configs/seed_d.hpp"
#include "configs/seed_e.hpp"
#include "pgolf/core/config.hpp"

namespace pgolf {

// A tiny model with a given feature set.
constexpr ModelConfig tiny(Features f, int layers = 4, bool tied = true) {
  ModelConfig c;
  c.name = "tiny-features";
  c.vocab_size = 40;
  c.num_layers = layers;
  c.model_dim = 16;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.mlp_mult = 2;
  c.max_seq_len = 8;
  c.logit_softcap = 5.0f;
  c.tie_embeddings = tied;
  c.bos_id = 1;
  f.gate_window = 3;
  c.features = f;
  return c;
}

// Seed feature sets at tiny width.
constexpr Features seed_features(const ModelConfig& seed, int layers) {
  Features f = seed.features;
  if (f.hash_embedding == HashEmbedding::bigram) {
    f.hash_buckets = 23;
    f.hash_dim = 6;
  } else if (f.hash_embedding == HashEmbedding::engram_lite) {
    f.hash_buckets = 7;
    f.hash_dim = 3;
  }
  f.ve_dim = 5;
  f.rope_dims = f.rope_dims ? 2 : 0;
  const int seed_layers = seed.num_layers;
  f.xsa_layers = f.xsa_layers == last_layers(seed_layers, seed_layers) ? last_layers(layers, layers)
                 : f.xsa_layers ? last_layers(layers, 2) : 0u;
  f.ve_layers = f.ve_layers ? last_layers(layers, 2) : 0u;
  return f;
}

constexpr ModelConfig kTinyA = tiny(seed_features(configs::kSeedA, 4));
constexpr ModelConfig kTinyB = tiny(seed_features(configs::kSeedB, 4));
constexpr ModelConfig kTinyC = tiny(seed_features(configs::kSeedC, 5), 5);
constexpr ModelConfig kTinyD = tiny(seed_features(configs::kSeedD, 5), 5);
constexpr ModelConfig kTinyE = tiny(seed_features(configs::kSeedE, 4));

// The variants no seed uses.
constexpr Features variant(auto&& edit) {
  Features f;
  edit(f);
  return f;
}
constexpr ModelConfig kVariant1 = tiny(variant([](Features& f) {
                                         f.smear = SmearGate::pre_norm;
                                         f.smear_bos_fix = true;
                                         f.hash_embedding = HashEmbedding::engram_lite;
                                         f.hash_buckets = 5;
                                         f.hash_dim = 8;  // 2 heads × 8 = 16 = model width: no projection
                                         f.engram_orders = 1;
                                         f.attn_gate = AttnGate::output_gate;
                                       }),
                                       3);
constexpr ModelConfig kVariant2 = tiny(variant([](Features& f) {
  f.smear = SmearGate::input_gated;
  f.smear_bos_fix = true;
  f.attn_gate = AttnGate::full;
  f.value_residual = ValueResidual::sigmoid_alpha;
  f.ve_layers = layer_bits({0, 2});  // including layer 0: v0_raw is the c_v output before the embedding
  f.ve_dim = 8;                      // = kv_dim: no projection
}));
constexpr ModelConfig kVariant3 = tiny(variant([](Features& f) {
  f.attn_gate = AttnGate::sparse;
  f.sparse_gate_scale = 0.5f;
  f.skips = SkipConnection::sigmoid_gated;
  f.value_residual = ValueResidual::lambda_mix;
  f.ve_layers = layer_bits({0, 3});
  f.ve_dim = 5;
  f.xsa_layers = layer_bits({1, 2});
  f.activation = Activation::leaky_relu2;
  f.leaky_slope = 0.3f;
}));
constexpr ModelConfig kVariantUntied = tiny(seed_features(configs::kSeedB, 4), 4, false);

}  // namespace pgolf
