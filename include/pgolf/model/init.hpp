// Parameter initialisation as the reference's GPT.__init__ + _init_weights (§1.5), drawn from
// pgolf's counter-based RNG: every tensor has its own stream (keyed by its state_dict name) and
// element i is draw i of that stream, so the values depend on (seed, name, index) only — not on
// the backend, the thread count or the order the tensors are visited in.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "pgolf/core/error.hpp"
#include "pgolf/core/hash.hpp"
#include "pgolf/core/parallel.hpp"
#include "pgolf/core/philox.hpp"
#include "pgolf/model/param_layout.hpp"

namespace pgolf {

// Run-time initialisation hyper-parameters (environment variables of the reference).
struct InitOptions {
  double tied_embed_init_std = 0.005;  // TIED_EMBED_INIT_STD
  double qk_gain_init = 1.5;           // QK_GAIN_INIT
};

// nn.Embedding's default init is N(0, 1); the reference re-draws it with TIED_EMBED_INIT_STD only
// when the embedding is tied.
inline constexpr double kUntiedEmbeddingInitStd = 1.0;

inline std::uint64_t init_stream_id(const ParamSpec& spec) { return fnv1a64(spec.name()); }

template <ModelConfig C, class T>
void init_params(std::span<T> params, std::uint64_t seed, const InitOptions& opt = {}) {
  using L = ParamLayout<C>;
  PGOLF_CHECK_EQ(static_cast<std::int64_t>(params.size()), L::total, "parameter buffer of " << describe(C));
  for (const ParamSpec& spec : L::specs()) {
    T* p = params.data() + spec.offset;
    const std::int64_t n = spec.numel();
    const RandomStream rng(seed, init_stream_id(spec));
    switch (spec.init) {
      case ParamInit::tok_emb_normal: {
        const double std = Dims<C>::tied ? opt.tied_embed_init_std : kUntiedEmbeddingInitStd;
        parallel_for(0, n, 1 << 14, [&](std::int64_t b, std::int64_t e) {
          for (std::int64_t i = b; i < e; ++i) p[i] = static_cast<T>(std * rng.normal(static_cast<std::uint64_t>(i)));
        });
        break;
      }
      case ParamInit::linear_uniform: {
        // kaiming_uniform_(a=√5): bound = √3 · √(2/(1+5)) / √fan_in = 1/√fan_in.
        const double bound = 1.0 / std::sqrt(static_cast<double>(spec.shape[1]));
        parallel_for(0, n, 1 << 14, [&](std::int64_t b, std::int64_t e) {
          for (std::int64_t i = b; i < e; ++i) {
            p[i] = static_cast<T>(bound * (2.0 * rng.uniform(static_cast<std::uint64_t>(i)) - 1.0));
          }
        });
        break;
      }
      case ParamInit::zeros:
        for (std::int64_t i = 0; i < n; ++i) p[i] = T(0);
        break;
      case ParamInit::ones:
        for (std::int64_t i = 0; i < n; ++i) p[i] = T(1);
        break;
      case ParamInit::resid_mix:
        for (std::int64_t i = 0; i < n; ++i) p[i] = i < n / 2 ? T(1) : T(0);
        break;
      case ParamInit::q_gain:
        for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(opt.qk_gain_init);
        break;
    }
  }
}

}  // namespace pgolf
