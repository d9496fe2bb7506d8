// CPU kernels of the records' architecture features, each with its hand-written backward
// (docs/features.md: formulas and sources). Layouts: N = batch·seq tokens in row-major (b, t)
// order; "previous token" means t − 1 in the same sequence (position 0 has none).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "pgolf/core/config.hpp"
#include "pgolf/core/parallel.hpp"
#include "pgolf/ops/channel_ops.hpp"

namespace pgolf::cpu {

template <class T>
inline T sigmoid(T z) {
  return T(1) / (T(1) + std::exp(-z));
}

// ---------------------------------------------------------------------------------------------
// Hashed n-gram embeddings: bucket indices (the tables are gathered with embedding_forward).
// ---------------------------------------------------------------------------------------------

// BigramHash: M = buckets − 1; ((36313·cur) XOR (27191·prev)) mod M in int32 arithmetic with
// wrap-around and a non-negative (Python) modulo, as torch computes it; position 0 → M (canonical)
// or prev = 0 there (BigramStart::zero_prev, PR #436).
inline void bigram_hash_indices(std::int32_t* out, const std::int32_t* ids, std::int64_t batch, std::int64_t seq, int buckets,
                                BigramStart start = BigramStart::reserved_bucket) {
  const std::int32_t mod = buckets - 1;
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t t = 0; t < seq; ++t) {
      const std::int64_t i = b * seq + t;
      if (t == 0 && start == BigramStart::reserved_bucket) {
        out[i] = mod;
        continue;
      }
      const auto cur = static_cast<std::int32_t>(static_cast<std::uint32_t>(ids[i]) * 36313u);
      const auto prev = t == 0 ? 0 : static_cast<std::int32_t>(static_cast<std::uint32_t>(ids[i - 1]) * 27191u);
      std::int32_t r = (cur ^ prev) % mod;
      if (r < 0) r += mod;
      out[i] = r;
    }
  }
}

// EngramLite: per token `orders·2` row indices into one table of orders·2·buckets rows (offsets
// 0, B, 2B, 3B): bigram heads (prev·1009 + cur) mod B and ((prev·2719 + 314159) XOR cur·3137) mod B,
// trigram heads ((pp·36313) XOR (prev·27191) XOR (cur·4903)) mod B and ((pp·7919) XOR (prev·4391)
// XOR (cur·6151)) mod B, with prev/pp = 0 before the sequence start (int64 arithmetic).
inline void engram_indices(std::int32_t* out, const std::int32_t* ids, std::int64_t batch, std::int64_t seq, int buckets, int orders) {
  const std::int64_t B = buckets;
  const int per_token = 2 * orders;
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t t = 0; t < seq; ++t) {
      const std::int64_t i = b * seq + t;
      const std::int64_t cur = ids[i], prev = t >= 1 ? ids[i - 1] : 0, pp = t >= 2 ? ids[i - 2] : 0;
      std::int32_t* o = out + i * per_token;
      o[0] = static_cast<std::int32_t>((prev * 1009 + cur) % B);
      o[1] = static_cast<std::int32_t>(((prev * 2719 + 314159) ^ (cur * 3137)) % B + B);
      if (orders >= 2) {
        o[2] = static_cast<std::int32_t>(((pp * 36313) ^ (prev * 27191) ^ (cur * 4903)) % B + 2 * B);
        o[3] = static_cast<std::int32_t>(((pp * 7919) ^ (prev * 4391) ^ (cur * 6151)) % B + 3 * B);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Smear gates. `blocked[i]` is 1 where token i may not read token i − 1 (sequence start, or a BOS
// token under the BOS fix).
// ---------------------------------------------------------------------------------------------

// Constant gate per channel: out_i = a ⊙ x_i + c ⊙ x_{i−1} with (a, c) = (g, 1 − g) for the
// pre-norm form and (1 − g, g) for the post-norm form, g = σ(w).
template <int D, class T>
void smear_forward(T* out, const T* x, const T* w, const std::uint8_t* blocked, std::int64_t n, bool post_norm) {
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < D; ++i) {
        const T g = sigmoid(w[i]);
        const T a = post_norm ? T(1) - g : g, c = post_norm ? g : T(1) - g;
        const T prev = blocked[r] ? T(0) : x[(r - 1) * D + i];
        out[r * D + i] = a * x[r * D + i] + c * prev;
      }
    }
  });
}

// dx (written) and dw (+=) from dout.
template <int D, class T>
void smear_backward(T* dx, T* dw, const T* dout, const T* x, const T* w, const std::uint8_t* blocked, std::int64_t n, bool post_norm) {
  // out = x_{i−1} + a (x_i − x_{i−1}) with a = g (pre) or 1 − g (post): d/dw = ±σ'(w) (x_i − x_{i−1}).
  reduce_rows_into(dw, D, n, [&](std::int64_t r, double* acc) {
    for (int i = 0; i < D; ++i) {
      const T g = sigmoid(w[i]);
      const T prev = blocked[r] ? T(0) : x[(r - 1) * D + i];
      const T da_dw = (post_norm ? T(-1) : T(1)) * g * (T(1) - g);
      acc[i] += static_cast<double>(dout[r * D + i]) * da_dw * (x[r * D + i] - prev);
    }
  });
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < D; ++i) {
        const T g = sigmoid(w[i]);
        const T a = post_norm ? T(1) - g : g, c = post_norm ? g : T(1) - g;
        // Token r feeds itself (a) and, unless r + 1 is blocked, token r + 1 (c).
        T v = a * dout[r * D + i];
        if (r + 1 < n && !blocked[r + 1]) v += c * dout[(r + 1) * D + i];
        dx[r * D + i] = v;
      }
    }
  });
}

// Input-gated smear: out_i = x_i + g_i · x_{i−1}, g_i = λ σ(W · x_i[:Win]) (0 where blocked).
// gate_z[i] keeps W · x_i[:Win] for the backward.
template <int D, int Win, class T>
void smear_input_forward(T* out, T* gate_z, const T* x, const T* W, const T* lambda, const std::uint8_t* blocked, std::int64_t n) {
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      T z = 0;
      for (int i = 0; i < Win; ++i) z += W[i] * x[r * D + i];
      gate_z[r] = z;
      const T g = blocked[r] ? T(0) : lambda[0] * sigmoid(z);
      for (int i = 0; i < D; ++i) out[r * D + i] = x[r * D + i] + (blocked[r] ? T(0) : g * x[(r - 1) * D + i]);
    }
  });
}

template <int D, int Win, class T>
void smear_input_backward(T* dx, T* dW, T* dlambda, const T* dout, const T* x, const T* gate_z, const T* W, const T* lambda,
                          const std::uint8_t* blocked, std::int64_t n) {
  std::vector<T> dz(static_cast<std::size_t>(n), T(0));
  // dg_i = dout_i · x_{i−1}; dλ += dg σ(z); dz = dg λ σ'(z).
  reduce_rows_into(dlambda, 1, n, [&](std::int64_t r, double* acc) {
    if (blocked[r]) return;
    T dg = 0;
    for (int i = 0; i < D; ++i) dg += dout[r * D + i] * x[(r - 1) * D + i];
    const T s = sigmoid(gate_z[r]);
    acc[0] += static_cast<double>(dg) * s;
    dz[r] = dg * lambda[0] * s * (T(1) - s);
  });
  reduce_rows_into(dW, Win, n, [&](std::int64_t r, double* acc) {
    for (int i = 0; i < Win; ++i) acc[i] += static_cast<double>(dz[r]) * x[r * D + i];
  });
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const T g_next = (r + 1 < n && !blocked[r + 1]) ? lambda[0] * sigmoid(gate_z[r + 1]) : T(0);
      for (int i = 0; i < D; ++i) {
        T v = dout[r * D + i];
        if (g_next != T(0)) v += g_next * dout[(r + 1) * D + i];
        if (i < Win) v += dz[r] * W[i];
        dx[r * D + i] = v;
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// U-Net skip with sigmoid gates: out = lerp(w ⊙ s, x, σ(g)) = w ⊙ s + σ(g) ⊙ (x − w ⊙ s).
// ---------------------------------------------------------------------------------------------

template <int D, class T>
void gated_skip_forward(T* out, const T* x, const T* s, const T* w, const T* g, std::int64_t n) {
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < D; ++i) {
        const T ws = w[i] * s[r * D + i], sg = sigmoid(g[i]);
        out[r * D + i] = ws + sg * (x[r * D + i] - ws);
      }
    }
  });
}

// dx written (may alias dout), ds += , dw += , dg += .
template <int D, class T>
void gated_skip_backward(T* dx, T* ds, T* dw, T* dg, const T* dout, const T* x, const T* s, const T* w, const T* g, std::int64_t n) {
  reduce_rows_into(dw, D, n, [&](std::int64_t r, double* acc) {
    for (int i = 0; i < D; ++i) acc[i] += static_cast<double>(dout[r * D + i]) * (T(1) - sigmoid(g[i])) * s[r * D + i];
  });
  reduce_rows_into(dg, D, n, [&](std::int64_t r, double* acc) {
    for (int i = 0; i < D; ++i) {
      const T sg = sigmoid(g[i]);
      acc[i] += static_cast<double>(dout[r * D + i]) * sg * (T(1) - sg) * (x[r * D + i] - w[i] * s[r * D + i]);
    }
  });
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int i = 0; i < D; ++i) {
        const T sg = sigmoid(g[i]), go = dout[r * D + i];
        ds[r * D + i] += (T(1) - sg) * w[i] * go;
        dx[r * D + i] = sg * go;
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Exclusive self-attention: y_h ← y_h − (y_h · v̂) v̂ with v̂ the unit value of the token's KV head
// (F.normalize: v / max(‖v‖, 1e-12)).
// ---------------------------------------------------------------------------------------------

inline constexpr double kNormalizeEps = 1e-12;  // torch.nn.functional.normalize's default

template <int Heads, int KvHeads, int Hd, class T>
void xsa_forward(T* out, const T* y, const T* v, std::int64_t n) {
  constexpr int group = Heads / KvHeads;
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int k = 0; k < KvHeads; ++k) {
        const T* vk = v + (r * KvHeads + k) * Hd;
        T nn = 0;
        for (int d = 0; d < Hd; ++d) nn += vk[d] * vk[d];
        const T inv = T(1) / std::max(std::sqrt(nn), static_cast<T>(kNormalizeEps));
        for (int g = 0; g < group; ++g) {
          const int h = k * group + g;
          const T* yh = y + (r * Heads + h) * Hd;
          T dot = 0;
          for (int d = 0; d < Hd; ++d) dot += yh[d] * vk[d] * inv;
          T* o = out + (r * Heads + h) * Hd;
          for (int d = 0; d < Hd; ++d) o[d] = yh[d] - dot * vk[d] * inv;
        }
      }
    }
  });
}

// dy written (may alias dout); dv += .
template <int Heads, int KvHeads, int Hd, class T>
void xsa_backward(T* dy, T* dv, const T* dout, const T* y, const T* v, std::int64_t n) {
  constexpr int group = Heads / KvHeads;
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int k = 0; k < KvHeads; ++k) {
        const T* vk = v + (r * KvHeads + k) * Hd;
        T nn = 0;
        for (int d = 0; d < Hd; ++d) nn += vk[d] * vk[d];
        const T norm = std::sqrt(nn);
        const bool clamped = norm < static_cast<T>(kNormalizeEps);
        const T inv = T(1) / (clamped ? static_cast<T>(kNormalizeEps) : norm);
        T du[Hd] = {};  // gradient w.r.t. the unit vector û
        for (int g = 0; g < group; ++g) {
          const int h = k * group + g;
          const T* yh = y + (r * Heads + h) * Hd;
          const T* go = dout + (r * Heads + h) * Hd;
          T yu = 0, gu = 0;
          for (int d = 0; d < Hd; ++d) {
            yu += yh[d] * vk[d] * inv;
            gu += go[d] * vk[d] * inv;
          }
          T* dyh = dy + (r * Heads + h) * Hd;
          for (int d = 0; d < Hd; ++d) {
            du[d] -= yu * go[d] + gu * yh[d];
            dyh[d] = go[d] - gu * vk[d] * inv;
          }
        }
        // û = v / max(‖v‖, eps): dv = (du − (du·û) û) / ‖v‖, or du / eps where the norm is clamped.
        T duu = 0;
        for (int d = 0; d < Hd; ++d) duu += du[d] * vk[d] * inv;
        T* dvk = dv + (r * KvHeads + k) * Hd;
        for (int d = 0; d < Hd; ++d) dvk[d] += clamped ? du[d] * inv : (du[d] - duu * vk[d] * inv) * inv;
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Per-head attention gates, y_h ← g_h · y_h with g computed from the attention input h:
//   headwise_bias g = σ(W h + b) · full g = σ(W h) · output_gate g = 2σ(W h[:w]) · sparse g = σ(s · W h[:w])
// `z` keeps the pre-activation (N, H).
// ---------------------------------------------------------------------------------------------

enum class GateForm : std::uint8_t { sigmoid, twice_sigmoid };

template <int D, int Heads, int Hd, int Win, class T>
void head_gate_forward(T* y, T* z, const T* h, const T* W, const T* bias, T scale, GateForm form, std::int64_t n) {
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int hh = 0; hh < Heads; ++hh) {
        T acc = bias ? bias[hh] : T(0);
        for (int i = 0; i < Win; ++i) acc += W[hh * Win + i] * h[r * D + i];
        acc *= scale;
        z[r * Heads + hh] = acc;
        const T g = (form == GateForm::twice_sigmoid ? T(2) : T(1)) * sigmoid(acc);
        for (int d = 0; d < Hd; ++d) y[(r * Heads + hh) * Hd + d] *= g;
      }
    }
  });
}

// y_in: the gated input (before the gate). dy becomes d y_in in place; dh (+=), dW (+=), dbias (+=).
template <int D, int Heads, int Hd, int Win, class T>
void head_gate_backward(T* dy, T* dh, T* dW, T* dbias, const T* y_in, const T* z, const T* h, const T* W, T scale, GateForm form,
                        std::int64_t n) {
  const T mult = form == GateForm::twice_sigmoid ? T(2) : T(1);
  std::vector<T> dz(static_cast<std::size_t>(n * Heads));
  parallel_for(0, n, 64, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      for (int hh = 0; hh < Heads; ++hh) {
        const T s = sigmoid(z[r * Heads + hh]);
        T dg = 0;
        for (int d = 0; d < Hd; ++d) dg += dy[(r * Heads + hh) * Hd + d] * y_in[(r * Heads + hh) * Hd + d];
        dz[r * Heads + hh] = dg * mult * s * (T(1) - s) * scale;  // d/d(W h [+ b]) before the scale
        const T g = mult * s;
        for (int d = 0; d < Hd; ++d) dy[(r * Heads + hh) * Hd + d] *= g;
        T* dhr = dh + r * D;
        for (int i = 0; i < Win; ++i) dhr[i] += dz[r * Heads + hh] * W[hh * Win + i];
      }
    }
  });
  reduce_rows_into(dW, Heads * Win, n, [&](std::int64_t r, double* acc) {
    for (int hh = 0; hh < Heads; ++hh) {
      for (int i = 0; i < Win; ++i) acc[hh * Win + i] += static_cast<double>(dz[r * Heads + hh]) * h[r * D + i];
    }
  });
  if (dbias) {
    reduce_rows_into(dbias, Heads, n, [&](std::int64_t r, double* acc) {
      for (int hh = 0; hh < Heads; ++hh) acc[hh] += dz[r * Heads + hh];
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Activations and small reductions.
// ---------------------------------------------------------------------------------------------

// y = leaky_relu(u, slope)²
template <class T>
void leaky_relu2_forward(T* y, const T* u, std::int64_t count, T slope) {
  parallel_for(0, count, 1 << 14, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) {
      const T a = u[i] > T(0) ? u[i] : slope * u[i];
      y[i] = a * a;
    }
  });
}

// du = dy · 2 · leaky(u) · leaky'(u)   (may run in place)
template <class T>
void leaky_relu2_backward(T* du, const T* dy, const T* u, std::int64_t count, T slope) {
  parallel_for(0, count, 1 << 14, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t i = b; i < e; ++i) du[i] = dy[i] * T(2) * (u[i] > T(0) ? u[i] : slope * slope * u[i]);
  });
}

// out = a · x + b · y (scalars a, b; out may alias x or y)
template <class T>
void axpby(T* out, T a, const T* x, T b, const T* y, std::int64_t count) {
  parallel_for(0, count, 1 << 14, [&](std::int64_t s, std::int64_t e) {
    for (std::int64_t i = s; i < e; ++i) out[i] = a * x[i] + b * y[i];
  });
}

// Σ x ⊙ y in float64, in fixed chunks.
template <class T>
double dot_all(const T* x, const T* y, std::int64_t count) {
  return parallel_sum<double>(count, 1 << 14, [&](std::int64_t b, std::int64_t e) {
    double s = 0;
    for (std::int64_t i = b; i < e; ++i) s += static_cast<double>(x[i]) * y[i];
    return s;
  });
}

}  // namespace pgolf::cpu
