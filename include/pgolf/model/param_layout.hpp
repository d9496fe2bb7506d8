// Where every parameter of a configuration lives in the flat parameter buffer, under the
// reference's state_dict name, with its optimizer role and its initialisation.
//
// The order is the reference's state_dict order (a module's own parameters, then its children in
// registration order): skip_weights, tok_emb.weight, then per block attn_scale, mlp_scale,
// resid_mix, attn.q_gain, attn.c_q/c_k/c_v/proj.weight, mlp.fc/proj.weight, then lm_head.weight.
// Offsets are compile-time constants, so kernels address parameters without a lookup.
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
  embedding,  // tok_emb: Adam at TIED_EMBED_LR (tied) or EMBED_LR (untied)
  head,       // lm_head: Adam at HEAD_LR
  matrix,     // 2-D block matrices: Muon at MATRIX_LR
  scalar,     // vectors, scalars and control tensors: Adam at SCALAR_LR
};

enum class ParamInit : std::uint8_t {
  tok_emb_normal,    // N(0, TIED_EMBED_INIT_STD) when tied; nn.Embedding's N(0, 1) when untied
  linear_uniform,    // nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  zeros,             // _zero_init projections (attn.proj, mlp.proj, lm_head)
  ones,              // attn_scale, mlp_scale, skip_weights
  resid_mix,         // row 0 ones, row 1 zeros
  q_gain,            // QK_GAIN_INIT
};

struct ParamSpec {
  std::string_view prefix;  // e.g. "blocks."
  int layer = -1;           // block index, or -1
  std::string_view suffix;  // e.g. ".attn.c_q.weight"
  int rank = 1;
  std::array<std::int64_t, 2> shape{};  // (rows, cols) for rank 2; (n, 0) for rank 1
  ParamRole role = ParamRole::scalar;
  ParamInit init = ParamInit::zeros;
  // The reference's CONTROL_TENSOR_NAME_PATTERNS match this tensor (kept fp32 by the int8 export).
  bool control = false;
  std::int64_t offset = 0;

  constexpr std::int64_t numel() const { return rank == 1 ? shape[0] : shape[0] * shape[1]; }
  std::string name() const {
    std::string s(prefix);
    if (layer >= 0) s += std::to_string(layer);
    s += suffix;
    return s;
  }
};

template <ModelConfig C>
struct ParamLayout {
  using D = Dims<C>;

  // Offsets inside one block, relative to the block's start (state_dict order).
  struct Block {
    static constexpr std::int64_t attn_scale = 0;
    static constexpr std::int64_t mlp_scale = attn_scale + D::dim;
    static constexpr std::int64_t resid_mix = mlp_scale + D::dim;
    static constexpr std::int64_t q_gain = resid_mix + 2 * D::dim;
    static constexpr std::int64_t c_q = q_gain + D::heads;
    static constexpr std::int64_t c_k = c_q + std::int64_t{D::dim} * D::dim;
    static constexpr std::int64_t c_v = c_k + std::int64_t{D::kv_dim} * D::dim;
    static constexpr std::int64_t attn_proj = c_v + std::int64_t{D::kv_dim} * D::dim;
    static constexpr std::int64_t fc = attn_proj + std::int64_t{D::dim} * D::dim;
    static constexpr std::int64_t mlp_proj = fc + std::int64_t{D::hidden} * D::dim;
    static constexpr std::int64_t size = mlp_proj + std::int64_t{D::dim} * D::hidden;
  };

  static constexpr std::int64_t skip_weights = 0;
  static constexpr std::int64_t tok_emb = skip_weights + std::int64_t{D::n_skip} * D::dim;
  static constexpr std::int64_t blocks = tok_emb + std::int64_t{D::vocab} * D::dim;
  static constexpr std::int64_t block(int layer) { return blocks + layer * Block::size; }
  static constexpr std::int64_t lm_head = blocks + D::layers * Block::size;  // only when untied
  static constexpr std::int64_t total = lm_head + (D::tied ? 0 : std::int64_t{D::vocab} * D::dim);

  // Every tensor, in state_dict order, with its absolute offset.
  static std::vector<ParamSpec> specs() {
    std::vector<ParamSpec> out;
    auto vec = [](std::string_view prefix, int layer, std::string_view suffix, std::int64_t n, ParamRole role,
                  ParamInit init, bool control, std::int64_t offset) {
      return ParamSpec{prefix, layer, suffix, 1, {n, 0}, role, init, control, offset};
    };
    auto mat = [](std::string_view prefix, int layer, std::string_view suffix, std::int64_t rows, std::int64_t cols,
                  ParamRole role, ParamInit init, bool control, std::int64_t offset) {
      return ParamSpec{prefix, layer, suffix, 2, {rows, cols}, role, init, control, offset};
    };
    if (D::n_skip > 0) {
      out.push_back(mat("skip_weights", -1, "", D::n_skip, D::dim, ParamRole::scalar, ParamInit::ones, true, skip_weights));
    }
    out.push_back(mat("tok_emb.weight", -1, "", D::vocab, D::dim, ParamRole::embedding, ParamInit::tok_emb_normal, false, tok_emb));
    for (int l = 0; l < D::layers; ++l) {
      const std::int64_t b = block(l);
      out.push_back(vec("blocks.", l, ".attn_scale", D::dim, ParamRole::scalar, ParamInit::ones, true, b + Block::attn_scale));
      out.push_back(vec("blocks.", l, ".mlp_scale", D::dim, ParamRole::scalar, ParamInit::ones, true, b + Block::mlp_scale));
      out.push_back(mat("blocks.", l, ".resid_mix", 2, D::dim, ParamRole::scalar, ParamInit::resid_mix, true, b + Block::resid_mix));
      out.push_back(vec("blocks.", l, ".attn.q_gain", D::heads, ParamRole::scalar, ParamInit::q_gain, true, b + Block::q_gain));
      out.push_back(mat("blocks.", l, ".attn.c_q.weight", D::dim, D::dim, ParamRole::matrix, ParamInit::linear_uniform, false, b + Block::c_q));
      out.push_back(mat("blocks.", l, ".attn.c_k.weight", D::kv_dim, D::dim, ParamRole::matrix, ParamInit::linear_uniform, false, b + Block::c_k));
      out.push_back(mat("blocks.", l, ".attn.c_v.weight", D::kv_dim, D::dim, ParamRole::matrix, ParamInit::linear_uniform, false, b + Block::c_v));
      out.push_back(mat("blocks.", l, ".attn.proj.weight", D::dim, D::dim, ParamRole::matrix, ParamInit::zeros, false, b + Block::attn_proj));
      out.push_back(mat("blocks.", l, ".mlp.fc.weight", D::hidden, D::dim, ParamRole::matrix, ParamInit::linear_uniform, false, b + Block::fc));
      out.push_back(mat("blocks.", l, ".mlp.proj.weight", D::dim, D::hidden, ParamRole::matrix, ParamInit::zeros, false, b + Block::mlp_proj));
    }
    if constexpr (!D::tied) {
      out.push_back(mat("lm_head.weight", -1, "", D::vocab, D::dim, ParamRole::head, ParamInit::zeros, false, lm_head));
    }
    return out;
  }
};

// The parameter count of a configuration, as the reference's sum(p.numel() for p in parameters()).
template <ModelConfig C>
inline constexpr std::int64_t param_count = ParamLayout<C>::total;

}  // namespace pgolf
