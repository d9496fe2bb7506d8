// The reference's optimizer split (§1.6): Muon for 2-D block matrices, Adam for the embedding,
// the untied head and every scalar/vector/control tensor, each group with its own base LR.
//
//   Muon (per matrix):  buf = μ·buf + g;  g' = g + μ·buf (Nesterov);  O = NS5(g');
//                       p ← p·(1 − lr·wd) − lr·max(1, rows/cols)^½·O      (wd = 0 in the baseline)
//   Adam (torch.optim.Adam, per element, t = step count):
//                       m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;
//                       p ← p·(1 − lr·wd) − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps)
// Optional global-norm clipping (torch.nn.utils.clip_grad_norm_) runs before the update.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/parallel.hpp"
#include "pgolf/core/tensor.hpp"
#include "pgolf/model/param_layout.hpp"
#include "pgolf/optim/newton_schulz.hpp"

namespace pgolf {

struct OptimizerOptions {
  double tied_embed_lr = 0.05;  // TIED_EMBED_LR
  double embed_lr = 0.6;        // EMBED_LR (untied embedding)
  double head_lr = 0.008;       // HEAD_LR (untied lm_head)
  double matrix_lr = 0.04;      // MATRIX_LR (Muon)
  double scalar_lr = 0.04;      // SCALAR_LR
  double beta1 = 0.9;           // BETA1
  double beta2 = 0.95;          // BETA2
  double adam_eps = 1e-8;       // ADAM_EPS
  int muon_backend_steps = 5;   // MUON_BACKEND_STEPS
  double muon_weight_decay = 0.0;  // MUON_WD (decoupled; records use 0.02–0.048)
  double adam_weight_decay = 0.0;  // ADAM_WD (decoupled, AdamW)
  double grad_clip_norm = 0.0;     // GRAD_CLIP_NORM (0 = off)
  NsPrecision ns_precision = NsPrecision::bf16;  // the reference runs Newton–Schulz in bfloat16
};

// torch.nn.utils.clip_grad_norm_ adds this to the norm before dividing.
inline constexpr double kClipNormEps = 1e-6;

// The base LR of a parameter group (§1.6): the embedding's depends on whether the head is tied.
inline double base_lr(const OptimizerOptions& opt, ParamRole role, bool tied_embeddings) {
  switch (role) {
    case ParamRole::embedding: return tied_embeddings ? opt.tied_embed_lr : opt.embed_lr;
    case ParamRole::head: return opt.head_lr;
    case ParamRole::matrix: return opt.matrix_lr;
    case ParamRole::scalar: return opt.scalar_lr;
  }
  return 0.0;
}

// Everything an optimizer carries from step to step, in the flat parameter layout: what a
// checkpoint saves and a warm-up restores (every backend keeps the same state).
struct OptimizerState {
  HostBuffer<float> adam_m, adam_v;  // Adam moments (zero outside the Adam groups)
  HostBuffer<float> muon;            // Muon momentum buffers (zero outside the Muon group)
  std::int64_t adam_step = 0;        // Adam's step count t (bias corrections)

  OptimizerState() = default;
  explicit OptimizerState(std::int64_t total) : adam_m(total), adam_v(total), muon(total) {}
};

template <ModelConfig C>
class Optimizer {
 public:
  using Layout = ParamLayout<C>;

  explicit Optimizer(const OptimizerOptions& opt) : opt_(opt), specs_(Layout::specs()), state_(Layout::total) {}

  const OptimizerOptions& options() const { return opt_; }

  double base_lr(ParamRole role) const { return ::pgolf::base_lr(opt_, role, Dims<C>::tied); }

  // Global L2 norm of all gradients (fp64, tensor by tensor).
  double grad_norm(std::span<const float> grads) const {
    double total = 0;
    for (const ParamSpec& s : specs_) {
      const float* g = grads.data() + s.offset;
      total += parallel_sum<double>(s.numel(), 1 << 14, [&](std::int64_t b, std::int64_t e) {
        double acc = 0;
        for (std::int64_t i = b; i < e; ++i) acc += static_cast<double>(g[i]) * g[i];
        return acc;
      });
    }
    return std::sqrt(total);
  }

  // One optimizer step. lr_mul scales every base LR; muon_momentum is this step's μ.
  // Returns the gradient norm before clipping when clipping is on, else 0.
  double step(std::span<float> params, std::span<float> grads, double lr_mul, double muon_momentum) {
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(params.size()), Layout::total, "parameters");
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(grads.size()), Layout::total, "gradients");
    double norm = 0;
    if (opt_.grad_clip_norm > 0) {
      norm = grad_norm(grads);
      const double coef = opt_.grad_clip_norm / (norm + kClipNormEps);
      if (coef < 1.0) {
        const auto c = static_cast<float>(coef);
        parallel_for(0, Layout::total, 1 << 16, [&](std::int64_t b, std::int64_t e) {
          for (std::int64_t i = b; i < e; ++i) grads[i] *= c;
        });
      }
    }
    ++state_.adam_step;
    for (const ParamSpec& s : specs_) {
      const double lr = base_lr(s.role) * lr_mul;
      if (s.role == ParamRole::matrix) {
        muon_update(s, params.data(), grads.data(), lr, muon_momentum);
      } else {
        adam_update(s, params.data(), grads.data(), lr);
      }
    }
    return norm;
  }

  // Adam moments, Muon momentum buffers and the Adam step count (checkpoints, warm-up).
  OptimizerState& state() { return state_; }
  const OptimizerState& state() const { return state_; }

 private:
  void adam_update(const ParamSpec& s, float* P, const float* G, double lr) {
    const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(state_.adam_step));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(opt_.beta2, static_cast<double>(state_.adam_step)));
    const auto b1 = static_cast<float>(opt_.beta1), b2 = static_cast<float>(opt_.beta2);
    const auto step_size = static_cast<float>(lr / bc1);
    const auto bc2_sqrt_f = static_cast<float>(bc2_sqrt);
    const auto eps = static_cast<float>(opt_.adam_eps);
    const auto decay = static_cast<float>(1.0 - lr * opt_.adam_weight_decay);
    float* p = P + s.offset;
    const float* g = G + s.offset;
    float* m = state_.adam_m.data() + s.offset;
    float* v = state_.adam_v.data() + s.offset;
    parallel_for(0, s.numel(), 1 << 14, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        const float denom = std::sqrt(v[i]) / bc2_sqrt_f + eps;
        p[i] = p[i] * decay - step_size * m[i] / denom;
      }
    });
  }

  void muon_update(const ParamSpec& s, float* P, const float* G, double lr, double momentum) {
    const std::int64_t rows = s.shape[0], cols = s.shape[1], n = s.numel();
    float* p = P + s.offset;
    const float* g = G + s.offset;
    float* buf = state_.muon.data() + s.offset;
    const auto mu = static_cast<float>(momentum);
    nesterov_.resize(static_cast<std::size_t>(n));
    update_.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) {
      buf[i] = mu * buf[i] + g[i];
      nesterov_[i] = g[i] + mu * buf[i];
    }
    newton_schulz5(update_.data(), nesterov_.data(), rows, cols, opt_.muon_backend_steps, opt_.ns_precision);
    const bool bf = opt_.ns_precision == NsPrecision::bf16;
    // g *= max(1, rows/cols)^0.5 happens on the bf16 update in the reference.
    const auto aspect = static_cast<float>(std::sqrt(std::max(1.0, static_cast<double>(rows) / static_cast<double>(cols))));
    const auto lr_f = static_cast<float>(lr);
    const auto decay = static_cast<float>(1.0 - lr * opt_.muon_weight_decay);
    for (std::int64_t i = 0; i < n; ++i) {
      const float u = bf ? round_to_bf16(update_[i] * aspect) : update_[i] * aspect;
      p[i] = p[i] * decay - lr_f * u;
    }
  }

  OptimizerOptions opt_;
  std::vector<ParamSpec> specs_;
  OptimizerState state_;
  std::vector<float> nesterov_, update_;
};

}  // namespace pgolf
