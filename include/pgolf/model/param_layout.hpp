// Where every parameter of a configuration lives in the flat parameter buffer, under the
// reference's (or the introducing record's) state_dict name, with its optimizer role and its
// initialisation.
//
// One enumeration, for_each_param(), is the single source of truth: it yields the tensors of a
// configuration in state_dict order (a module's own parameters, then its children in registration
// order), and both the compile-time offset table and the run-time spec list are built from it.
// Baseline order: skip_weights, tok_emb.weight, then per block attn_scale, mlp_scale, resid_mix,
// attn.q_gain, attn.c_q/c_k/c_v/proj.weight, mlp.fc/proj.weight, then lm_head.weight. The records'
// tensors slot in where their modules register (docs/features.md).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pgolf/core/config.hpp"

namespace pgolf {

// Which optimizer group a tensor belongs to (§1.6 of the reference digest).
enum class ParamRole : std::uint8_t {
  embedding,  // embedding tables (and whatever a record trains with them, groups.hash_embedding):
              // Adam at TIED_EMBED_LR (tied) or EMBED_LR (untied)
  head,       // lm_head: Adam at HEAD_LR
  matrix,     // 2-D projection matrices: Muon at MATRIX_LR
  scalar,     // vectors, scalars and control tensors: Adam at SCALAR_LR
};

enum class ParamInit : std::uint8_t {
  tok_emb_normal,  // N(0, TIED_EMBED_INIT_STD) when tied; nn.Embedding's N(0, 1) when untied
  linear_uniform,  // nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  zeros,
  ones,
  constant,        // init_value everywhere
  normal,          // N(0, init_value)
  resid_mix,       // row 0 ones, row 1 zeros
  q_gain,          // QK_GAIN_INIT
};

enum class GlobalParam : std::uint8_t {
  skip_weights, skip_gates, smear_lambda, tok_emb, hash_scale, hash_gate, hash_embed, hash_proj, smear_gate,
  ve_scale, ve_embed, ve_proj, lm_head, count
};
enum class BlockParam : std::uint8_t {
  attn_scale, mlp_scale, resid_mix, q_gain, vr_lambda, gate_weight, gate_bias, c_q, c_k, c_v, attn_proj, fc, mlp_proj,
  ve_layer_scale, vrl_alpha, count
};

struct ParamSpec {
  bool in_block = false;
  GlobalParam global = GlobalParam::count;
  BlockParam block = BlockParam::count;
  int layer = -1;  // block index (for ve_layer_scale / vrl_alpha: the layer they serve)
  int index = -1;  // position in a ParameterList (ve_layer_scales.k, vrl_alphas.k)
  int rank = 1;
  std::array<std::int64_t, 2> shape{};  // rank 2: (rows, cols); rank 1: (n, ·); rank 0: scalar
  ParamRole role = ParamRole::scalar;
  ParamInit init = ParamInit::zeros;
  float init_value = 0.0f;
  bool linear = false;     // an nn.Linear weight (OrthoInit applies to those)
  bool zero_init = false;  // flagged _zero_init: OrthoInit leaves it at zero
  // The records' CONTROL_TENSOR_NAME_PATTERNS match this tensor (kept fp32 by the int8 export).
  bool control = false;
  std::string_view label;  // the name suffix where one kind has several spellings (attention gates)
  std::int64_t offset = 0;

  constexpr std::int64_t numel() const { return rank == 0 ? 1 : rank == 1 ? shape[0] : shape[0] * shape[1]; }
  std::vector<std::int64_t> dims() const {
    if (rank == 0) return {};
    if (rank == 1) return {shape[0]};
    return {shape[0], shape[1]};
  }
  std::string name() const;
};

// The tensors the reference keeps in bf16 during training: its nn.Embedding tables (tok_emb, the
// records' hash and value embeddings), which stay bf16 after `.bfloat16()` where CastedLinear
// weights and control tensors go back to fp32. The GPU backend rounds them on every write and its
// optimizer stores their Adam state in bf16; the CPU oracle keeps everything fp32.
// (By kind, not by optimizer role: a record may train other tensors in the embedding's Adam group,
// PR #436 its BigramHash projection, a CastedLinear weight kept fp32.)
constexpr bool held_in_bf16_by_reference(const ParamSpec& s) {
  return !s.in_block && (s.global == GlobalParam::tok_emb || s.global == GlobalParam::hash_embed || s.global == GlobalParam::ve_embed);
}

inline std::string ParamSpec::name() const {
  if (!in_block) {
    switch (global) {
      case GlobalParam::skip_weights: return "skip_weights";
      case GlobalParam::skip_gates: return "skip_gates";
      case GlobalParam::smear_lambda: return "smear_lambda";
      case GlobalParam::tok_emb: return "tok_emb.weight";
      case GlobalParam::hash_scale: return "bigram.scale";
      case GlobalParam::hash_gate: return "bigram.ngram_gate";
      case GlobalParam::hash_embed: return "bigram.embed.weight";
      case GlobalParam::hash_proj: return "bigram.proj.weight";
      case GlobalParam::smear_gate: return rank == 2 ? "smear_gate.weight" : "smear.gate";
      case GlobalParam::ve_scale: return "ve_shared.scale";
      case GlobalParam::ve_embed: return "ve_shared.embed.weight";
      case GlobalParam::ve_proj: return "ve_shared.proj.weight";
      case GlobalParam::lm_head: return "lm_head.weight";
      case GlobalParam::count: break;
    }
    return "?";
  }
  if (block == BlockParam::ve_layer_scale) return "ve_layer_scales." + std::to_string(index);
  if (block == BlockParam::vrl_alpha) return "vrl_alphas." + std::to_string(index);
  std::string s = "blocks." + std::to_string(layer) + ".";
  switch (block) {
    case BlockParam::attn_scale: return s + "attn_scale";
    case BlockParam::mlp_scale: return s + "mlp_scale";
    case BlockParam::resid_mix: return s + "resid_mix";
    case BlockParam::q_gain: return s + "attn.q_gain";
    case BlockParam::vr_lambda: return s + "attn.vr_lambda";
    case BlockParam::gate_weight: return s + std::string(label);
    case BlockParam::gate_bias: return s + "attn.attn_gate.bias";
    case BlockParam::c_q: return s + "attn.c_q.weight";
    case BlockParam::c_k: return s + "attn.c_k.weight";
    case BlockParam::c_v: return s + "attn.c_v.weight";
    case BlockParam::attn_proj: return s + "attn.proj.weight";
    case BlockParam::fc: return s + "mlp.fc.weight";
    case BlockParam::mlp_proj: return s + "mlp.proj.weight";
    default: return s + "?";
  }
}

namespace layout_detail {

constexpr ParamSpec global_spec(GlobalParam g, int rank, std::int64_t rows, std::int64_t cols, ParamRole role, ParamInit init,
                                float value = 0.0f, bool control = false, bool linear = false, bool zero_init = false) {
  ParamSpec s;
  s.global = g;
  s.rank = rank;
  s.shape = {rows, cols};
  s.role = role;
  s.init = init;
  s.init_value = value;
  s.control = control;
  s.linear = linear;
  s.zero_init = zero_init;
  return s;
}

constexpr ParamSpec block_spec(BlockParam b, int layer, int rank, std::int64_t rows, std::int64_t cols, ParamRole role, ParamInit init,
                               float value = 0.0f, bool control = false, bool linear = false, bool zero_init = false) {
  ParamSpec s = global_spec(GlobalParam::count, rank, rows, cols, role, init, value, control, linear, zero_init);
  s.in_block = true;
  s.block = b;
  s.layer = layer;
  return s;
}

constexpr ParamSpec labeled(ParamSpec s, std::string_view label) {
  s.label = label;
  return s;
}

}  // namespace layout_detail

// Calls f(ParamSpec) for every tensor of configuration c, in state_dict order (offsets unset).
template <class F>
constexpr void for_each_param(const ModelConfig& c, F&& f) {
  using namespace layout_detail;
  using R = ParamRole;
  using I = ParamInit;
  const Features& ft = c.features;
  const int d = c.model_dim, heads = c.num_heads, hd = c.model_dim / c.num_heads, kv = c.num_kv_heads * hd;
  const int hidden = c.mlp_hidden > 0 ? c.mlp_hidden : c.mlp_mult * c.model_dim, layers = c.num_layers;
  const int n_enc = layers / 2, n_skip = n_enc < layers - n_enc ? n_enc : layers - n_enc;

  // GPT's own parameters.
  if (n_skip > 0) f(global_spec(GlobalParam::skip_weights, 2, n_skip, d, R::scalar, I::ones, 0, true));
  if (n_skip > 0 && ft.skips == SkipConnection::sigmoid_gated) {
    f(global_spec(GlobalParam::skip_gates, 2, n_skip, d, R::scalar, I::zeros, 0, true));
  }
  if (ft.smear == SmearGate::input_gated) f(global_spec(GlobalParam::smear_lambda, 1, 1, 0, R::scalar, I::zeros, 0, true));
  // Children in registration order.
  f(global_spec(GlobalParam::tok_emb, 2, c.vocab_size, d, R::embedding, I::tok_emb_normal));
  const bool hash_in_embedding_group = c.groups.hash_embedding == HashEmbeddingGroups::embedding_adam;
  const R hash_proj_role = hash_in_embedding_group ? R::embedding : R::matrix;
  const R hash_scale_role = hash_in_embedding_group ? R::embedding : R::scalar;
  if (ft.hash_embedding == HashEmbedding::bigram) {
    f(global_spec(GlobalParam::hash_scale, 0, 0, 0, hash_scale_role, I::constant, 0.05f, true));
    f(global_spec(GlobalParam::hash_embed, 2, ft.hash_buckets, ft.hash_dim, R::embedding,
                  c.init.hash_table_init_std > 0 ? I::normal : I::zeros, c.init.hash_table_init_std));
    if (ft.hash_dim != d) f(global_spec(GlobalParam::hash_proj, 2, d, ft.hash_dim, hash_proj_role, I::zeros, 0, false, true, false));
  } else if (ft.hash_embedding == HashEmbedding::engram_lite) {
    const int rows = ft.engram_orders * ft.engram_heads * ft.hash_buckets;
    const int concat = ft.engram_orders * ft.engram_heads * ft.hash_dim;
    f(global_spec(GlobalParam::hash_gate, 1, d, 0, hash_scale_role, I::zeros, 0, true));
    f(global_spec(GlobalParam::hash_embed, 2, rows, ft.hash_dim, R::embedding, I::normal, 0.01f));
    if (concat != d) f(global_spec(GlobalParam::hash_proj, 2, d, concat, hash_proj_role, I::zeros, 0, false, true, true));
  }
  if (ft.smear == SmearGate::pre_norm) f(global_spec(GlobalParam::smear_gate, 1, d, 0, R::scalar, I::constant, 3.0f, true));
  if (ft.smear == SmearGate::post_norm) f(global_spec(GlobalParam::smear_gate, 1, d, 0, R::scalar, I::zeros, 0, true));
  if (ft.smear == SmearGate::input_gated) {
    f(global_spec(GlobalParam::smear_gate, 2, 1, ft.gate_window, R::scalar, I::zeros, 0, true, true, true));
  }
  for (int l = 0; l < layers; ++l) {
    f(block_spec(BlockParam::attn_scale, l, 1, d, 0, R::scalar, I::ones, 0, true));
    f(block_spec(BlockParam::mlp_scale, l, 1, d, 0, R::scalar, I::ones, 0, true));
    f(block_spec(BlockParam::resid_mix, l, 2, 2, d, R::scalar, I::resid_mix, 0, true));
    f(block_spec(BlockParam::q_gain, l, 1, heads, 0, R::scalar, I::q_gain, 0, true));
    if (ft.value_residual == ValueResidual::lambda_mix) f(block_spec(BlockParam::vr_lambda, l, 1, 2, 0, R::scalar, I::constant, 0.5f, true));
    switch (ft.attn_gate) {
      case AttnGate::none: break;
      case AttnGate::headwise_bias:  // nn.Linear(d, H) named attn_gate
        f(labeled(block_spec(BlockParam::gate_weight, l, 2, heads, d, R::scalar, I::zeros, 0, true, true, false), "attn.attn_gate.weight"));
        f(block_spec(BlockParam::gate_bias, l, 1, heads, 0, R::scalar, I::constant, 4.0f, true));
        break;
      case AttnGate::output_gate:  // CastedLinear(gate_window, H) named attn_gate_proj, _zero_init
        f(labeled(block_spec(BlockParam::gate_weight, l, 2, heads, ft.gate_window, R::scalar, I::zeros, 0, true, true, true),
                  "attn.attn_gate_proj.weight"));
        break;
      case AttnGate::full:  // a bare parameter attn_gate_w (H, d)
        f(labeled(block_spec(BlockParam::gate_weight, l, 2, heads, d, R::scalar, I::normal, 0.01f, true), "attn.attn_gate_w"));
        break;
      case AttnGate::sparse:
        f(labeled(block_spec(BlockParam::gate_weight, l, 2, heads, ft.gate_window, R::scalar, I::zeros, 0, true), "attn.attn_gate_w"));
        break;
    }
    f(block_spec(BlockParam::c_q, l, 2, d, d, R::matrix, I::linear_uniform, 0, false, true));
    f(block_spec(BlockParam::c_k, l, 2, kv, d, R::matrix, I::linear_uniform, 0, false, true));
    f(block_spec(BlockParam::c_v, l, 2, kv, d, R::matrix, I::linear_uniform, 0, false, true));
    f(block_spec(BlockParam::attn_proj, l, 2, d, d, R::matrix, I::zeros, 0, false, true, true));
    f(block_spec(BlockParam::fc, l, 2, hidden, d, R::matrix, I::linear_uniform, 0, false, true));
    f(block_spec(BlockParam::mlp_proj, l, 2, d, hidden, R::matrix, I::zeros, 0, false, true, true));
  }
  if (ft.ve_layers != 0) {
    f(global_spec(GlobalParam::ve_scale, 0, 0, 0, R::scalar, I::constant, 0.1f, true));
    f(global_spec(GlobalParam::ve_embed, 2, c.vocab_size, ft.ve_dim, R::embedding, I::normal, 0.01f));
    if (ft.ve_dim != kv) f(global_spec(GlobalParam::ve_proj, 2, kv, ft.ve_dim, R::matrix, I::zeros, 0, false, true, false));
    int k = 0;
    for (int l = 0; l < layers; ++l) {
      if (!has_layer(ft.ve_layers, l)) continue;
      ParamSpec s = block_spec(BlockParam::ve_layer_scale, l, 1, 1, 0, R::scalar, I::ones, 0, true);
      s.index = k++;
      f(s);
    }
  }
  if (ft.value_residual == ValueResidual::sigmoid_alpha) {
    for (int l = 1; l < layers; ++l) {
      ParamSpec s = block_spec(BlockParam::vrl_alpha, l, 0, 0, 0, R::scalar, I::zeros, 0, true);
      s.index = l - 1;
      f(s);
    }
  }
  if (!c.tie_embeddings) f(global_spec(GlobalParam::lm_head, 2, c.vocab_size, d, R::head, I::zeros, 0, false, true, true));
}

// Align: every tensor starts on a multiple of Align elements. Align = 1 is the canonical packed
// layout (the CPU model, the optimizers, checkpoints); the GPU model keeps a padded copy (Align 128,
// model/gpt_cuda.cuh) so that no tensor sits off a vector boundary behind an odd-sized one. c_k and
// c_v always follow c_q directly: the three form one (q | k | v) matrix for a fused projection.
template <ModelConfig C, std::int64_t Align = 1>
struct ParamLayout {
  static_assert(Align >= 1, "alignment must be at least one element");
  using D = Dims<C>;
  static constexpr std::int64_t kAbsent = -1;
  static constexpr std::int64_t kAlign = Align;

  struct Table {
    std::array<std::int64_t, static_cast<int>(GlobalParam::count)> global{};
    std::array<std::array<std::int64_t, static_cast<int>(BlockParam::count)>, kMaxLayers> block{};
    std::int64_t total = 0;
  };

  static constexpr std::int64_t round_up(std::int64_t x) { return (x + Align - 1) / Align * Align; }
  static constexpr bool follows_previous(const ParamSpec& s) {
    return s.in_block && (s.block == BlockParam::c_k || s.block == BlockParam::c_v);
  }
  // The offset of the next tensor `s` after `end` (the end of the previous one).
  static constexpr std::int64_t place(const ParamSpec& s, std::int64_t end) { return follows_previous(s) ? end : round_up(end); }

  static constexpr Table build() {
    Table t;
    for (auto& g : t.global) g = kAbsent;
    for (auto& row : t.block) {
      for (auto& b : row) b = kAbsent;
    }
    for_each_param(C, [&](const ParamSpec& s) {
      t.total = place(s, t.total);
      if (s.in_block) {
        t.block[s.layer][static_cast<int>(s.block)] = t.total;
      } else {
        t.global[static_cast<int>(s.global)] = t.total;
      }
      t.total += s.numel();
    });
    t.total = round_up(t.total);
    return t;
  }
  static constexpr Table table = build();

  static constexpr std::int64_t total = table.total;
  static constexpr std::int64_t offset(GlobalParam g) { return table.global[static_cast<int>(g)]; }
  static constexpr std::int64_t offset(int layer, BlockParam b) { return table.block[layer][static_cast<int>(b)]; }
  static constexpr bool has(GlobalParam g) { return offset(g) != kAbsent; }

  // Baseline shorthands.
  static constexpr std::int64_t tok_emb = offset(GlobalParam::tok_emb);
  static constexpr std::int64_t skip_weights = offset(GlobalParam::skip_weights);
  static constexpr std::int64_t head_offset() { return D::tied ? offset(GlobalParam::tok_emb) : offset(GlobalParam::lm_head); }

  // Every tensor, in state_dict order, with its absolute offset.
  static std::vector<ParamSpec> specs() {
    std::vector<ParamSpec> out;
    std::int64_t off = 0;
    for_each_param(C, [&](ParamSpec s) {
      off = place(s, off);
      s.offset = off;
      off += s.numel();
      out.push_back(s);
    });
    return out;
  }
};

// The parameter count of a configuration, as the reference's sum(p.numel() for p in parameters()).
template <ModelConfig C>
inline constexpr std::int64_t param_count = ParamLayout<C>::total;

}  // namespace pgolf
