// The compile-time model configuration.
//
// One structural type names every dimension and switch of a model; it is passed as a template
// argument (`template <ModelConfig C>`), so every configuration instantiates its own kernels.
// `Dims<C>` derives the dependent sizes and rejects impossible configurations with static_asserts.
// `describe(C)` is the readable form written into artifacts; `fingerprint(C)` its 64-bit hash.
#pragma once

#include <charconv>
#include <cstdint>
#include <string>

#include "pgolf/core/fixed_string.hpp"
#include "pgolf/core/hash.hpp"

namespace pgolf {

// Bit widths used when the trained weights are exported.
struct QuantBits {
  int matrix_bits = 8;  // per-row integer quantization of large matrices (the reference: int8)
  int embed_bits = 8;   // the token embedding (tied head)
  constexpr bool operator==(const QuantBits&) const = default;
};

struct ModelConfig {
  FixedString<32> name{"custom"};  // shown in messages, not part of the fingerprint
  int vocab_size = 1024;           // VOCAB_SIZE
  int num_layers = 9;              // NUM_LAYERS
  int model_dim = 512;             // MODEL_DIM
  int num_heads = 8;               // NUM_HEADS
  int num_kv_heads = 4;            // NUM_KV_HEADS (grouped-query attention when < num_heads)
  int mlp_mult = 2;                // MLP_MULT: hidden = mlp_mult * model_dim
  int max_seq_len = 1024;          // longest sequence a binary accepts (TRAIN_SEQ_LEN <= this)
  bool tie_embeddings = true;      // TIE_EMBEDDINGS: logits = h · tok_embᵀ
  float rope_base = 10000.0f;      // ROPE_BASE
  float logit_softcap = 30.0f;     // LOGIT_SOFTCAP: logits = c · tanh(z / c)
  QuantBits quant{};
  constexpr bool operator==(const ModelConfig&) const = default;
};

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
  static_assert(C.mlp_mult >= 1, "mlp_mult must be at least 1");
  static_assert(C.max_seq_len >= 1, "max_seq_len must be at least 1");
  static_assert(C.rope_base > 1.0f, "rope_base must be greater than 1");
  static_assert(C.logit_softcap > 0.0f, "logit_softcap must be positive (the reference rejects <= 0)");
  static_assert(C.quant.matrix_bits >= 2 && C.quant.matrix_bits <= 8, "quant.matrix_bits must be in [2, 8]");
  static_assert(C.quant.embed_bits >= 2 && C.quant.embed_bits <= 8, "quant.embed_bits must be in [2, 8]");

  static constexpr int vocab = C.vocab_size;
  static constexpr int layers = C.num_layers;
  static constexpr int dim = C.model_dim;
  static constexpr int heads = C.num_heads;
  static constexpr int kv_heads = C.num_kv_heads;
  static constexpr int head_dim = dim / heads;
  static constexpr int kv_dim = kv_heads * head_dim;
  static constexpr int group = heads / kv_heads;  // query heads per KV head
  static constexpr int hidden = C.mlp_mult * dim;
  static constexpr int max_seq = C.max_seq_len;
  static constexpr int n_enc = layers / 2;  // U-Net: first half pushes skips
  static constexpr int n_dec = layers - n_enc;
  static constexpr int n_skip = n_enc < n_dec ? n_enc : n_dec;
  static constexpr bool tied = C.tie_embeddings;
};

namespace detail {
inline void append_number(std::string& out, double v) {
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
  field("max_seq", c.max_seq_len);
  field("tied", c.tie_embeddings ? 1 : 0);
  field("rope_base", c.rope_base);
  field("softcap", c.logit_softcap);
  field("quant.matrix_bits", c.quant.matrix_bits);
  field("quant.embed_bits", c.quant.embed_bits);
  return s;
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
