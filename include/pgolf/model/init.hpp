// Parameter initialisation as the reference's GPT.__init__ + _init_weights (§1.5) and the records'
// schemes (OrthoInit, overtone embedding, phase-transition resid_mix, mimetic V-O), drawn from
// pgolf's counter-based RNG: every tensor has its own stream (keyed by its state_dict name) and
// element i is draw i of that stream, so the values depend on (seed, name, index) only — not on
// the backend, the thread count or the order the tensors are visited in.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/hash.hpp"
#include "pgolf/core/parallel.hpp"
#include "pgolf/core/philox.hpp"
#include "pgolf/model/param_layout.hpp"
#include "pgolf/ops/linalg.hpp"

namespace pgolf {

// Run-time initialisation hyper-parameters (environment variables of the reference).
struct InitOptions {
  double tied_embed_init_std = 0.005;  // TIED_EMBED_INIT_STD
  double qk_gain_init = 1.5;           // QK_GAIN_INIT
};

// nn.Embedding's default init is N(0, 1); the reference re-draws it with TIED_EMBED_INIT_STD only
// when the embedding is tied.
inline constexpr double kUntiedEmbeddingInitStd = 1.0;
// OrthoInit applies to linears whose both dimensions reach this (records' _init_weights).
inline constexpr std::int64_t kOrthoMinDim = 64;
// Phase-transition resid_mix: φ_l = σ(kPhaseSlope · (l/(L−1) − 1/2)).
inline constexpr double kPhaseSlope = 3.0;

inline std::uint64_t init_stream_id(const ParamSpec& spec) { return fnv1a64(spec.name()); }

namespace init_detail {

template <class T>
void fill(T* p, std::int64_t n, auto&& value_of) {
  parallel_for(0, n, 1 << 14, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) p[i] = static_cast<T>(value_of(i));
  });
}

// torch.nn.init.orthogonal_(gain=1): QR of a normal matrix, transposed when wide.
template <class T>
void orthogonal(T* p, std::int64_t rows, std::int64_t cols, const RandomStream& rng, double scale) {
  const bool wide = rows < cols;
  const std::int64_t m = wide ? cols : rows, n = wide ? rows : cols;
  std::vector<double> a(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m * n; ++i) a[i] = rng.normal(static_cast<std::uint64_t>(i));
  cpu::orthonormalize_columns(a, m, n);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      p[r * cols + c] = static_cast<T>(scale * (wide ? a[c * n + r] : a[r * n + c]));
    }
  }
}

// Overtone spectrum: W = U S Vᵀ → U S' Vᵀ with S'_k = S_1 · k^(−1/2) (k = 1..rank), i.e.
// W' = Σ_k (S'_k / S_k) · b_k v_kᵀ with B = W V = U S from the one-sided Jacobi SVD.
template <class T>
void overtone(T* w, std::int64_t rows, std::int64_t cols) {
  PGOLF_CHECK(rows >= cols, "overtone init expects a tall embedding (vocab >= dim)");
  std::vector<double> wd(w, w + rows * cols);
  const cpu::Svd svd = cpu::svd_one_sided_jacobi(wd, rows, cols);
  std::vector<double> out(static_cast<std::size_t>(rows * cols), 0.0);
  for (std::int64_t k = 0; k < cols; ++k) {
    if (svd.s[k] <= 0) continue;
    const double f = svd.s[0] / std::sqrt(static_cast<double>(k + 1)) / svd.s[k];
    const double* bk = svd.b.data() + k * rows;
    const double* vk = svd.v.data() + k * cols;
    parallel_for(0, rows, 64, [&](std::int64_t r0, std::int64_t r1) {
      for (std::int64_t r = r0; r < r1; ++r) {
        const double br = f * bk[r];
        for (std::int64_t c = 0; c < cols; ++c) out[r * cols + c] += br * vk[c];
      }
    });
  }
  for (std::int64_t i = 0; i < rows * cols; ++i) w[i] = static_cast<T>(out[i]);
}

}  // namespace init_detail

template <ModelConfig C, class T>
void init_params(std::span<T> params, std::uint64_t seed, const InitOptions& opt = {}) {
  using L = ParamLayout<C>;
  using D = Dims<C>;
  PGOLF_CHECK_EQ(static_cast<std::int64_t>(params.size()), L::total, "parameter buffer of " << describe(C));
  for (const ParamSpec& spec : L::specs()) {
    T* p = params.data() + spec.offset;
    const std::int64_t n = spec.numel();
    const RandomStream rng(seed, init_stream_id(spec));
    const bool ortho = C.init.ortho && spec.linear && !spec.zero_init && spec.rank == 2 && spec.shape[0] >= kOrthoMinDim &&
                       spec.shape[1] >= kOrthoMinDim;
    if (ortho) {
      const std::string name = spec.name();
      const bool is_proj = name.ends_with(".proj.weight");
      const double scale = C.init.ortho_scale_proj && is_proj ? 1.0 / std::sqrt(2.0 * D::layers) : 1.0;
      init_detail::orthogonal(p, spec.shape[0], spec.shape[1], rng, scale);
      continue;
    }
    switch (spec.init) {
      case ParamInit::tok_emb_normal: {
        const double std = D::tied ? opt.tied_embed_init_std : kUntiedEmbeddingInitStd;
        init_detail::fill(p, n, [&](std::int64_t i) { return std * rng.normal(static_cast<std::uint64_t>(i)); });
        if constexpr (C.init.overtone_embedding) init_detail::overtone(p, spec.shape[0], spec.shape[1]);
        break;
      }
      case ParamInit::linear_uniform: {
        // kaiming_uniform_(a=√5): bound = √3 · √(2/(1+5)) / √fan_in = 1/√fan_in.
        const double bound = 1.0 / std::sqrt(static_cast<double>(spec.shape[1]));
        init_detail::fill(p, n, [&](std::int64_t i) { return bound * (2.0 * rng.uniform(static_cast<std::uint64_t>(i)) - 1.0); });
        break;
      }
      case ParamInit::normal:
        init_detail::fill(p, n, [&](std::int64_t i) { return spec.init_value * rng.normal(static_cast<std::uint64_t>(i)); });
        break;
      case ParamInit::zeros: init_detail::fill(p, n, [](std::int64_t) { return 0.0; }); break;
      case ParamInit::ones: init_detail::fill(p, n, [](std::int64_t) { return 1.0; }); break;
      case ParamInit::constant: init_detail::fill(p, n, [&](std::int64_t) { return spec.init_value; }); break;
      case ParamInit::resid_mix: {
        double phi = 1.0;
        if constexpr (C.init.phase_resid_mix) {
          const double frac = static_cast<double>(spec.layer) / std::max(D::layers - 1, 1);
          phi = 1.0 / (1.0 + std::exp(-kPhaseSlope * (frac - 0.5)));
        }
        init_detail::fill(p, n, [&](std::int64_t i) { return i < n / 2 ? phi : 1.0 - phi; });
        break;
      }
      case ParamInit::q_gain: init_detail::fill(p, n, [&](std::int64_t) { return opt.qk_gain_init; }); break;
    }
  }
  // Mimetic V-O: attn.proj rows of query head h = −α · c_v rows of its KV head (after c_v's init).
  if constexpr (C.init.mimetic_vo_alpha > 0) {
    const double alpha = C.init.mimetic_vo_alpha;
    for (int l = 0; l < D::layers; ++l) {
      const T* v = params.data() + L::offset(l, BlockParam::c_v);  // (kv_dim, dim)
      T* o = params.data() + L::offset(l, BlockParam::attn_proj);  // (dim, dim)
      for (int h = 0; h < D::heads; ++h) {
        const int kh = h / D::group;
        for (int r = 0; r < D::head_dim; ++r) {
          for (int c = 0; c < D::dim; ++c) {
            o[(static_cast<std::int64_t>(h) * D::head_dim + r) * D::dim + c] =
                static_cast<T>(-alpha * v[(static_cast<std::int64_t>(kh) * D::head_dim + r) * D::dim + c]);
          }
        }
      }
    }
  }
}

}  // namespace pgolf
