// The compile-time model configuration.
//
// One structural type names every dimension and switch of a model; it is passed as a template
// argument (`template <ModelConfig C>`), so every configuration instantiates its own kernels.
// `Dims<C>` derives the dependent sizes and rejects impossible configurations with static_asserts.
// `describe(C)` is the readable form written into artifacts; `fingerprint(C)` its 64-bit hash.
#pragma once

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "pgolf/core/fixed_string.hpp"
#include "pgolf/core/hash.hpp"

namespace pgolf {

// Bit widths used when the trained weights are exported.
struct QuantBits {
  int matrix_bits = 8;  // per-row integer quantization of large matrices (the reference: int8)
  int embed_bits = 8;   // the token embedding (tied head)
  constexpr bool operator==(const QuantBits&) const = default;
};

// ---------------------------------------------------------------------------------------------
// Architecture switches of the records (docs/features.md has the formulas and the sources).
// Every switch defaults to the reference baseline, and a switch that is off adds no parameter
// and no work: the code behind it is compiled out (`if constexpr`).
// ---------------------------------------------------------------------------------------------

// A hashed n-gram embedding added to the token embedding before the first RMSNorm.
enum class HashEmbedding : std::uint8_t {
  none,
  bigram,       // BigramHash: h_t = ((36313·cur) XOR (27191·prev)) mod (buckets − 1), h_0 = buckets − 1;
                // out = scale · proj(table[h])
  engram_lite,  // EngramLite: heads × orders (bigram, trigram) hashes into buckets each; out = σ(gate) ⊙ proj(concat)
};

// Where a sequence's first token hashes (it has no previous token).
enum class BigramStart : std::uint8_t {
  reserved_bucket,  // the canonical BigramHash (rec/2026-03-20): position 0 → bucket buckets − 1
  zero_prev,        // PR #436 (seed A) pads prev with 0: position 0 → (36313·cur) mod (buckets − 1)
};

enum class SmearGate : std::uint8_t {
  none,
  pre_norm,     // v1: g = σ(w) (w = 3 at init); e_t = g ⊙ e_t + (1 − g) ⊙ e_{t−1}, before the RMSNorm
  post_norm,    // v2: g = σ(w) (w = 0 at init); x_t = (1 − g) ⊙ x_t + g ⊙ x_{t−1}, after the RMSNorm
  input_gated,  // v3: g_t = λ · σ(W · e_t[:gate_window]); e_t += g_t · e_{t−1}, before the RMSNorm
};

enum class SkipConnection : std::uint8_t {
  weighted,       // x += w ⊙ skip (the reference)
  sigmoid_gated,  // x = lerp(w ⊙ skip, x, σ(g)), gates g zero at init
};

enum class ValueResidual : std::uint8_t {
  none,
  lambda_mix,     // layer l ≥ 1: v = λ0 · v0 + λ1 · v, λ = (0.5, 0.5) at init; v0 = layer 0's values
  sigmoid_alpha,  // layer l ≥ 1: v += σ(α_l) · v0_raw, α = 0 at init; v0_raw = layer 0's c_v output
};

enum class AttnGate : std::uint8_t {
  none,
  headwise_bias,  // g = σ(W x + b), W (H, d) zero, b = 4
  output_gate,    // g = 2 σ(W x[:gate_window]), W (H, gate_window) zero
  full,           // g = σ(W x), W (H, d) ~ N(0, 0.01)             (GatedAttn "G1")
  sparse,         // g = σ(s · W x[:gate_window]), W (H, gate_window) zero, s = sparse_gate_scale
};

enum class Activation : std::uint8_t {
  relu2,        // relu(u)²
  leaky_relu2,  // leaky_relu(u, slope)²
};

struct Features {
  HashEmbedding hash_embedding = HashEmbedding::none;
  int hash_buckets = 0;               // bigram: table rows; engram: buckets per (order, head)
  int hash_dim = 128;                 // bigram: table width; engram: width per (order, head)
  BigramStart bigram_start = BigramStart::reserved_bucket;
  int engram_heads = 2;
  int engram_orders = 2;              // 1: bigrams only; 2: bigrams and trigrams
  SmearGate smear = SmearGate::none;
  bool smear_bos_fix = false;         // no smear into a BOS token (documents do not leak into the next)
  int gate_window = 12;               // leading channels read by the input-gated smear and narrow attention gates
  SkipConnection skips = SkipConnection::weighted;
  int rope_dims = 0;                  // rotated dims per head (partial RoPE); 0 = all of head_dim
  bool ln_scale = false;              // block l scales its normed inputs by 1/√(l+1)
  std::uint32_t xsa_layers = 0;       // bit l: exclusive self-attention in layer l
  ValueResidual value_residual = ValueResidual::none;
  std::uint32_t ve_layers = 0;        // bit l: value embedding added to layer l's values
  int ve_dim = 128;
  AttnGate attn_gate = AttnGate::none;
  float sparse_gate_scale = 1.0f;
  Activation activation = Activation::relu2;
  float leaky_slope = 0.5f;
  constexpr bool operator==(const Features&) const = default;
};

// Initialisation schemes (they change the starting point, not the meaning of the weights, so
// they are not part of the fingerprint).
struct InitScheme {
  bool ortho = false;             // OrthoInit: linears with both dims >= 64 (not zero-init) orthogonal
  bool ortho_scale_proj = false;  // … and those named *.proj scaled by 1/√(2L)
  bool overtone_embedding = false;  // tok_emb singular values reshaped to S_1 · k^(−1/2)
  bool phase_resid_mix = false;     // resid_mix = (φ_l, 1 − φ_l), φ_l = σ(3 (l/(L−1) − 1/2))
  float mimetic_vo_alpha = 0.0f;    // > 0: attn.proj rows of head h = −α · c_v rows of its KV head
  float hash_table_init_std = 0.0f; // BigramHash table: 0 = zeros (canonical), else N(0, std)
  constexpr bool operator==(const InitScheme&) const = default;
};

// Which optimizer groups a hash embedding's projection and scale train in (the table is an
// embedding table in every record: Adam at the embedding LR). An optimizer choice that leaves
// the meaning of the weights alone, so not part of the fingerprint.
enum class HashEmbeddingGroups : std::uint8_t {
  canonical,       // rec/2026-03-20 BigramHashEmbedding (§2.1): proj → Muon, scale → the scalar Adam group
  embedding_adam,  // PR #436 (seed A): table, proj and scale all in the token embedding's Adam group
};

struct OptimizerGroups {
  HashEmbeddingGroups hash_embedding = HashEmbeddingGroups::canonical;
  constexpr bool operator==(const OptimizerGroups&) const = default;
};

inline constexpr int kMaxLayers = 32;  // the per-layer bitmasks are 32 bits wide

struct ModelConfig {
  FixedString<32> name{"custom"};  // shown in messages, not part of the fingerprint
  int vocab_size = 1024;           // VOCAB_SIZE
  int num_layers = 9;              // NUM_LAYERS
  int model_dim = 512;             // MODEL_DIM
  int num_heads = 8;               // NUM_HEADS
  int num_kv_heads = 4;            // NUM_KV_HEADS (grouped-query attention when < num_heads)
  int mlp_mult = 2;                // MLP_MULT: hidden = mlp_mult * model_dim
  int mlp_hidden = 0;              // > 0: the hidden width itself (the records' MLP_MULT=3.5 is int(3.5 · 512) = 1792)
  int max_seq_len = 1024;          // longest sequence a binary accepts (TRAIN_SEQ_LEN <= this)
  bool tie_embeddings = true;      // TIE_EMBEDDINGS: logits = h · tok_embᵀ
  float rope_base = 10000.0f;      // ROPE_BASE
  float logit_softcap = 30.0f;     // LOGIT_SOFTCAP: logits = c · tanh(z / c)
  int bos_id = 1;                  // the tokenizer's BOS id (the smear BOS fix reads it)
  Features features{};
  InitScheme init{};
  OptimizerGroups groups{};
  QuantBits quant{};
  constexpr bool operator==(const ModelConfig&) const = default;
};

// The last `n` layers as a layer bitmask (XSA "last 4", ...).
constexpr std::uint32_t last_layers(int num_layers, int n) {
  std::uint32_t m = 0;
  for (int l = num_layers - n; l < num_layers; ++l) {
    if (l >= 0) m |= 1u << l;
  }
  return m;
}
constexpr std::uint32_t layer_bits(std::initializer_list<int> layers) {
  std::uint32_t m = 0;
  for (int l : layers) m |= 1u << l;
  return m;
}
constexpr bool has_layer(std::uint32_t mask, int layer) { return ((mask >> layer) & 1u) != 0; }
constexpr int count_layers(std::uint32_t mask) {
  int n = 0;
  for (int l = 0; l < 32; ++l) n += has_layer(mask, l);
  return n;
}

// Sizes derived from a configuration, with every shape relation checked at compile time.
template <ModelConfig C>
struct Dims {
  static_assert(C.vocab_size > 0 && C.vocab_size <= 65536,
                "vocab_size must be in [1, 65536]: shard tokens are stored as uint16");
  static_assert(C.num_layers >= 1, "num_layers must be at least 1");
  static_assert(C.model_dim > 0 && C.num_heads > 0 && C.num_kv_heads > 0, "dimensions must be positive");
  static_assert(C.model_dim % C.num_heads == 0, "model_dim must be divisible by num_heads");
  static_assert(C.num_heads % C.num_kv_heads == 0, "num_heads must be divisible by num_kv_heads");
  static_assert((C.model_dim / C.num_heads) % 2 == 0, "head_dim must be even for RoPE");
  static_assert(C.mlp_mult >= 1 && C.mlp_hidden >= 0, "mlp_mult must be at least 1 (and mlp_hidden non-negative)");
  static_assert(C.max_seq_len >= 1, "max_seq_len must be at least 1");
  static_assert(C.rope_base > 1.0f, "rope_base must be greater than 1");
  static_assert(C.logit_softcap > 0.0f, "logit_softcap must be positive (the reference rejects <= 0)");
  static_assert(C.quant.matrix_bits >= 2 && C.quant.matrix_bits <= 8, "quant.matrix_bits must be in [2, 8]");
  static_assert(C.quant.embed_bits >= 2 && C.quant.embed_bits <= 8, "quant.embed_bits must be in [2, 8]");
  static_assert(C.num_layers <= kMaxLayers, "at most 32 layers: the per-layer switches are 32-bit masks");
  static_assert(C.features.rope_dims >= 0 && C.features.rope_dims <= C.model_dim / C.num_heads &&
                    C.features.rope_dims % 2 == 0,
                "features.rope_dims must be even and at most head_dim (0 = all)");
  static_assert(C.num_layers == 32 || (C.features.xsa_layers >> C.num_layers) == 0, "features.xsa_layers names a layer that does not exist");
  static_assert(C.num_layers == 32 || (C.features.ve_layers >> C.num_layers) == 0, "features.ve_layers names a layer that does not exist");
  static_assert(C.features.ve_layers == 0 || C.features.ve_dim > 0, "features.ve_dim must be positive");
  static_assert(C.features.hash_embedding == HashEmbedding::none || (C.features.hash_buckets > 1 && C.features.hash_dim > 0),
                "a hash embedding needs hash_buckets > 1 and hash_dim > 0");
  static_assert(C.features.hash_embedding != HashEmbedding::engram_lite ||
                    (C.features.engram_heads == 2 && (C.features.engram_orders == 1 || C.features.engram_orders == 2)),
                "EngramLite is defined for 2 heads and 1 (bigram) or 2 (bigram + trigram) orders");
  static_assert((C.features.smear != SmearGate::input_gated && C.features.attn_gate != AttnGate::output_gate &&
                 C.features.attn_gate != AttnGate::sparse) ||
                    (C.features.gate_window >= 1 && C.features.gate_window <= C.model_dim),
                "features.gate_window must be in [1, model_dim]");
  static_assert(C.features.value_residual == ValueResidual::none || C.num_layers >= 2, "a value residual needs at least 2 layers");
  static_assert(C.features.smear != SmearGate::none || !C.features.smear_bos_fix, "smear_bos_fix needs a smear gate");
  static_assert(C.features.bigram_start == BigramStart::reserved_bucket || C.features.hash_embedding == HashEmbedding::bigram,
                "features.bigram_start is a BigramHash setting: the configuration has no BigramHash");
  static_assert(C.groups.hash_embedding == HashEmbeddingGroups::canonical || C.features.hash_embedding != HashEmbedding::none,
                "groups.hash_embedding chooses the optimizer groups of a hash embedding: the configuration has none");
  static_assert(C.features.activation != Activation::leaky_relu2 || C.features.leaky_slope >= 0.0f,
                "leaky_slope must be non-negative");
  static_assert(C.init.mimetic_vo_alpha >= 0.0f, "init.mimetic_vo_alpha must be non-negative");
  static_assert(!C.init.ortho_scale_proj || C.init.ortho, "init.ortho_scale_proj scales OrthoInit's projections: enable init.ortho");
  static_assert(C.bos_id >= 0 && C.bos_id < C.vocab_size, "bos_id must be a token id");

  static constexpr int vocab = C.vocab_size;
  static constexpr int layers = C.num_layers;
  static constexpr int dim = C.model_dim;
  static constexpr int heads = C.num_heads;
  static constexpr int kv_heads = C.num_kv_heads;
  static constexpr int head_dim = dim / heads;
  static constexpr int kv_dim = kv_heads * head_dim;
  static constexpr int group = heads / kv_heads;  // query heads per KV head
  static constexpr int hidden = C.mlp_hidden > 0 ? C.mlp_hidden : C.mlp_mult * dim;
  static constexpr int max_seq = C.max_seq_len;
  static constexpr int n_enc = layers / 2;  // U-Net: first half pushes skips
  static constexpr int n_dec = layers - n_enc;
  static constexpr int n_skip = n_enc < n_dec ? n_enc : n_dec;
  static constexpr bool tied = C.tie_embeddings;
  static constexpr int rope_dims = C.features.rope_dims > 0 ? C.features.rope_dims : head_dim;
  static constexpr int hash_rows = C.features.hash_embedding == HashEmbedding::engram_lite
                                       ? C.features.engram_orders * C.features.engram_heads * C.features.hash_buckets
                                       : C.features.hash_buckets;
  static constexpr int hash_concat = C.features.hash_embedding == HashEmbedding::engram_lite
                                         ? C.features.engram_orders * C.features.engram_heads * C.features.hash_dim
                                         : C.features.hash_dim;
  static constexpr bool hash_proj = C.features.hash_embedding != HashEmbedding::none && hash_concat != dim;
  static constexpr int ve_count = count_layers(C.features.ve_layers);
  static constexpr bool ve_proj = ve_count > 0 && C.features.ve_dim != kv_dim;
};

namespace detail {
// The shortest form of v in its own type: a float setting prints as written (0.01, not the
// 0.009999999776… of its double widening). The architecture description widens to double first,
// so fingerprints stay put.
template <class Number>
inline void append_number(std::string& out, Number v) {
  char buf[32];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}
}  // namespace detail

// Every field that changes the meaning of the weights, in a fixed order; the name goes first
// but is excluded from the fingerprint (two names for one architecture share artifacts).
inline std::string describe_architecture(const ModelConfig& c) {
  std::string s;
  auto field = [&](const char* key, double v) {
    if (!s.empty()) s += ' ';
    s += key;
    s += '=';
    detail::append_number(s, v);
  };
  field("vocab", c.vocab_size);
  field("layers", c.num_layers);
  field("dim", c.model_dim);
  field("heads", c.num_heads);
  field("kv_heads", c.num_kv_heads);
  field("mlp_mult", c.mlp_mult);
  if (c.mlp_hidden > 0) field("mlp_hidden", c.mlp_hidden);
  field("max_seq", c.max_seq_len);
  field("tied", c.tie_embeddings ? 1 : 0);
  field("rope_base", c.rope_base);
  field("softcap", c.logit_softcap);
  field("quant.matrix_bits", c.quant.matrix_bits);
  field("quant.embed_bits", c.quant.embed_bits);
  // Features appear only when they differ from the baseline, so that the baseline's description
  // (and fingerprint) stays short and stable.
  auto text = [&](const char* key, std::string_view v) {
    s += ' ';
    s += key;
    s += '=';
    s += v;
  };
  auto layers = [&](const char* key, std::uint32_t mask) {
    std::string list;
    for (int l = 0; l < kMaxLayers; ++l) {
      if (!has_layer(mask, l)) continue;
      if (!list.empty()) list += ',';
      list += std::to_string(l);
    }
    text(key, list);
  };
  const Features& f = c.features;
  const Features base{};
  if (f.hash_embedding != base.hash_embedding) {
    text("hash", f.hash_embedding == HashEmbedding::bigram ? "bigram" : "engram_lite");
    field("hash_buckets", f.hash_buckets);
    field("hash_dim", f.hash_dim);
    if (f.bigram_start != base.bigram_start) text("bigram_start", "zero_prev");
    if (f.hash_embedding == HashEmbedding::engram_lite) {
      field("engram_heads", f.engram_heads);
      field("engram_orders", f.engram_orders);
    }
  }
  if (f.smear != base.smear) {
    text("smear", f.smear == SmearGate::pre_norm ? "pre_norm" : f.smear == SmearGate::post_norm ? "post_norm" : "input_gated");
    if (f.smear_bos_fix) field("smear_bos_fix_bos_id", c.bos_id);
  }
  if (f.skips != base.skips) text("skips", "sigmoid_gated");
  if (f.rope_dims != base.rope_dims) field("rope_dims", f.rope_dims);
  if (f.ln_scale) text("ln_scale", "1");
  if (f.xsa_layers) layers("xsa_layers", f.xsa_layers);
  if (f.value_residual != base.value_residual) {
    text("value_residual", f.value_residual == ValueResidual::lambda_mix ? "lambda_mix" : "sigmoid_alpha");
  }
  if (f.ve_layers) {
    layers("ve_layers", f.ve_layers);
    field("ve_dim", f.ve_dim);
  }
  if (f.attn_gate != base.attn_gate) {
    constexpr std::string_view names[] = {"none", "headwise_bias", "output_gate", "full", "sparse"};
    text("attn_gate", names[static_cast<int>(f.attn_gate)]);
    if (f.attn_gate == AttnGate::sparse) field("sparse_gate_scale", f.sparse_gate_scale);
  }
  if (f.smear == SmearGate::input_gated || f.attn_gate == AttnGate::output_gate || f.attn_gate == AttnGate::sparse) {
    field("gate_window", f.gate_window);
  }
  if (f.activation != base.activation) {
    text("activation", "leaky_relu2");
    field("leaky_slope", f.leaky_slope);
  }
  return s;
}

// The initialisation scheme, for logs (not part of the fingerprint).
inline std::string describe_init(const ModelConfig& c) {
  std::string s;
  auto flag = [&](const char* name, bool on) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  flag("ortho", c.init.ortho);
  flag("ortho_scale_proj", c.init.ortho_scale_proj);
  flag("overtone_embedding", c.init.overtone_embedding);
  flag("phase_resid_mix", c.init.phase_resid_mix);
  if (c.init.mimetic_vo_alpha > 0) {
    s += s.empty() ? "" : " ";
    s += "mimetic_vo_alpha=";
    detail::append_number(s, c.init.mimetic_vo_alpha);
  }
  if (c.init.hash_table_init_std > 0) {
    s += s.empty() ? "" : " ";
    s += "hash_table_init_std=";
    detail::append_number(s, c.init.hash_table_init_std);
  }
  return s.empty() ? "reference" : s;
}

// The optimizer groups, for logs and checkpoints (not part of the fingerprint; a checkpoint's
// optimizer state belongs to them).
inline std::string describe_groups(const ModelConfig& c) {
  return c.groups.hash_embedding == HashEmbeddingGroups::embedding_adam ? "hash_embedding=embedding_adam" : "canonical";
}

inline std::string describe(const ModelConfig& c) {
  // Built by appending: GCC 12 warns falsely (-Wrestrict) on `"'" + std::string(...)` chains.
  std::string s = "'";
  s.append(c.name.view());
  s.append("' (");
  s.append(describe_architecture(c));
  s.append(")");
  return s;
}

inline std::uint64_t fingerprint(const ModelConfig& c) { return fnv1a64(describe_architecture(c)); }

}  // namespace pgolf
