// The GPT of the reference (train_gpt.py, §1.4) with the records' architecture switches, on the
// CPU: forward, loss, and a hand-written backward.
//
// This is pgolf's oracle: plain loops and the packed GEMM, float for training and double for
// finite-difference checks. Shapes: N = batch·seq tokens, D model dim, H heads, Hkv KV heads,
// Hd head dim, F MLP hidden, V vocab. Every layer's activations are kept for the backward pass.
// A switch that is off compiles out (if constexpr) and allocates nothing.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "pgolf/core/config.hpp"
#include "pgolf/core/error.hpp"
#include "pgolf/core/tensor.hpp"
#include "pgolf/model/param_layout.hpp"
#include "pgolf/ops/attention.hpp"
#include "pgolf/ops/channel_ops.hpp"
#include "pgolf/ops/embedding.hpp"
#include "pgolf/ops/features.hpp"
#include "pgolf/ops/gemm.hpp"
#include "pgolf/ops/rmsnorm.hpp"
#include "pgolf/ops/rope.hpp"
#include "pgolf/ops/softcap_cross_entropy.hpp"

namespace pgolf::cpu {

template <ModelConfig C, class T = float>
class Gpt {
 public:
  using Dm = Dims<C>;
  using Layout = ParamLayout<C>;
  using BP = BlockParam;
  using GP = GlobalParam;
  static constexpr Features Ft = C.features;
  static constexpr int D = Dm::dim, H = Dm::heads, Hkv = Dm::kv_heads, Hd = Dm::head_dim, KvD = Dm::kv_dim;
  static constexpr int F = Dm::hidden, V = Dm::vocab, L = Dm::layers, Rd = Dm::rope_dims;
  static constexpr T kSoftcap = static_cast<T>(C.logit_softcap);
  static constexpr bool kHash = Ft.hash_embedding != HashEmbedding::none;
  static constexpr bool kEngram = Ft.hash_embedding == HashEmbedding::engram_lite;
  static constexpr int kHashSlots = kEngram ? 2 * Ft.engram_orders : 1;  // table rows gathered per token
  static constexpr int kHashDim = Ft.hash_dim, kHashConcat = Dm::hash_concat;
  static constexpr bool kSmearConst = Ft.smear == SmearGate::pre_norm || Ft.smear == SmearGate::post_norm;
  static constexpr bool kSmearPre = Ft.smear == SmearGate::pre_norm || Ft.smear == SmearGate::input_gated;
  static constexpr bool kVe = Ft.ve_layers != 0;
  static constexpr bool kGatedSkip = Ft.skips == SkipConnection::sigmoid_gated;
  static constexpr bool kGate = Ft.attn_gate != AttnGate::none;
  static constexpr int kGateWin = (Ft.attn_gate == AttnGate::output_gate || Ft.attn_gate == AttnGate::sparse) ? Ft.gate_window : D;
  static constexpr bool kVrLambda = Ft.value_residual == ValueResidual::lambda_mix;
  static constexpr bool kVrAlpha = Ft.value_residual == ValueResidual::sigmoid_alpha;

  // Mean cross-entropy over the batch's batch·seq targets (natural log). Keeps the activations for
  // backward(). When per_token_loss is given (batch·seq entries) it receives every token's loss.
  double forward(std::span<const T> params, std::span<const std::int32_t> ids, std::span<const std::int32_t> targets,
                 std::int64_t batch, std::int64_t seq, std::span<T> per_token_loss = {}) {
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(params.size()), Layout::total, "parameters of " << describe(C));
    PGOLF_CHECK(seq >= 1 && seq <= Dm::max_seq, "sequence length " << seq << " must be in [1, " << Dm::max_seq
                                                                 << "] for configuration " << describe(C));
    PGOLF_CHECK(batch >= 1, "batch size " << batch);
    const std::int64_t n = batch * seq;
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(ids.size()), n, "input ids (batch " << batch << " x seq " << seq << ")");
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(targets.size()), n, "target ids (batch " << batch << " x seq " << seq << ")");
    PGOLF_CHECK(per_token_loss.empty() || static_cast<std::int64_t>(per_token_loss.size()) == n, "per-token loss buffer size");
    reserve(batch, seq);
    const T* P = params.data();
    // resize + copy_n: GCC 12 reports a false -Wstringop-overflow on vector::assign from a span here.
    ids_.resize(static_cast<std::size_t>(n));
    targets_.resize(static_cast<std::size_t>(n));
    std::copy_n(ids.data(), n, ids_.data());
    std::copy_n(targets.data(), n, targets_.data());

    embed_forward(P);
    const T* x = x0_.data();
    for (int l = 0; l < L; ++l) x = block_forward(l, P, x);
    final_in_ = x;
    rmsnorm_forward<D>(hf_.data(), rstdf_.data(), x, n);                                          // (N, D)
    linear_forward(logits_.data(), hf_.data(), P + Layout::head_offset(), n, D, V);              // (N, V) raw, then capped
    softcap_cross_entropy_forward<V>(loss_.data(), lse_.data(), logits_.data(), targets_.data(), n, kSoftcap);
    double total = 0;
    for (std::int64_t r = 0; r < n; ++r) total += loss_[r];
    if (!per_token_loss.empty()) std::copy_n(loss_.data(), n, per_token_loss.data());
    has_forward_ = true;
    return total / static_cast<double>(n);
  }

  // grads += loss_scale · ∂(mean loss)/∂params, for the batch of the last forward().
  void backward(std::span<const T> params, std::span<T> grads, T loss_scale = T(1)) {
    PGOLF_CHECK(has_forward_, "backward() needs a forward() first");
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(grads.size()), Layout::total, "gradient buffer of " << describe(C));
    const std::int64_t n = batch_ * seq_;
    const T* P = params.data();
    T* G = grads.data();

    // Head: d loss_n / d z, in place over the logits.
    std::fill(dloss_.begin(), dloss_.end(), loss_scale / static_cast<T>(n));
    softcap_cross_entropy_backward<V>(logits_.data(), logits_.data(), lse_.data(), targets_.data(), dloss_.data(), n, kSoftcap);
    linear_backward_weight(G + Layout::head_offset(), logits_.data(), hf_.data(), n, D, V);
    linear_backward_input(gx_.data(), logits_.data(), P + Layout::head_offset(), n, D, V, false);
    rmsnorm_backward<D>(gx_.data(), gx_.data(), final_in_, rstdf_.data(), n, false);  // d x_out(L-1)

    std::fill(gx0_.begin(), gx0_.end(), T(0));
    for (auto& s : gskip_) std::fill(s.begin(), s.end(), T(0));
    if constexpr (kVe) std::fill(gve_base_.begin(), gve_base_.end(), T(0));
    if constexpr (kVrLambda || kVrAlpha) std::fill(gv0_.begin(), gv0_.end(), T(0));
    for (int l = L - 1; l >= 0; --l) block_backward(l, P, G);
    // Layer 0's input is x0 itself.
    for (std::int64_t i = 0; i < n * D; ++i) gx0_[i] += gx_[i];
    embed_backward(P, G);
  }

  // The final hidden states (N, D), the softcapped logits (N, V), the per-token losses and their
  // logsumexp (N) of the last forward (the logits are valid until backward(), which overwrites them
  // with their gradient).
  std::span<const T> final_hidden() const { return {hf_.data(), hf_.size()}; }
  std::span<const T> capped_logits() const { return {logits_.data(), logits_.size()}; }
  std::span<const T> token_losses() const { return {loss_.data(), loss_.size()}; }
  std::span<const T> logsumexp() const { return {lse_.data(), lse_.size()}; }

 private:
  static T ln_factor(int l) {
    if constexpr (Ft.ln_scale) {
      return static_cast<T>(1.0 / std::sqrt(static_cast<double>(l + 1)));
    } else {
      (void)l;
      return T(1);
    }
  }
  // Decoder block l (l >= n_enc) with a skip connection uses skip_weights[l - n_enc]; else -1.
  static constexpr int skip_index(int l) {
    const int i = l - Dm::n_enc;
    return (i >= 0 && i < Dm::n_skip) ? i : -1;
  }
  static constexpr bool xsa(int l) { return has_layer(Ft.xsa_layers, l); }
  static constexpr bool ve(int l) { return has_layer(Ft.ve_layers, l); }

  // ------------------------------------------------------------------------- embedding stage
  void embed_forward(const T* P) {
    const std::int64_t n = batch_ * seq_;
    embedding_forward<D>(emb_.data(), P + Layout::tok_emb, ids_.data(), n, V);  // e = tok_emb[ids]   (N, D)
    if constexpr (kHash) {
      if constexpr (kEngram) {
        engram_indices(hash_idx_.data(), ids_.data(), batch_, seq_, Ft.hash_buckets, Ft.engram_orders);
      } else {
        bigram_hash_indices(hash_idx_.data(), ids_.data(), batch_, seq_, Ft.hash_buckets, Ft.bigram_start);
      }
      embedding_forward<kHashDim>(hash_rows_.data(), P + Layout::offset(GP::hash_embed), hash_idx_.data(), n * kHashSlots,
                                  Dm::hash_rows);  // (N, slots·dim) = concat
      const T* z = hash_rows_.data();
      if constexpr (Dm::hash_proj) {
        linear_forward(hash_proj_.data(), hash_rows_.data(), P + Layout::offset(GP::hash_proj), n, kHashConcat, D);
        z = hash_proj_.data();
      }
      if constexpr (kEngram) {  // e += σ(gate) ⊙ z
        const T* gate = P + Layout::offset(GP::hash_gate);
        for (std::int64_t r = 0; r < n; ++r)
          for (int i = 0; i < D; ++i) emb_[r * D + i] += sigmoid(gate[i]) * z[r * D + i];
      } else {  // e += scale · z
        axpby(emb_.data(), T(1), emb_.data(), P[Layout::offset(GP::hash_scale)], z, n * D);
      }
    }
    const T* e = emb_.data();
    if constexpr (Ft.smear != SmearGate::none) build_blocked_mask();
    if constexpr (Ft.smear == SmearGate::pre_norm) {
      smear_forward<D>(smeared_.data(), e, P + Layout::offset(GP::smear_gate), blocked_.data(), n, false);
      e = smeared_.data();
    } else if constexpr (Ft.smear == SmearGate::input_gated) {
      smear_input_forward<D, Ft.gate_window>(smeared_.data(), smear_z_.data(), e, P + Layout::offset(GP::smear_gate),
                                             P + Layout::offset(GP::smear_lambda), blocked_.data(), n);
      e = smeared_.data();
    }
    if constexpr (Ft.smear == SmearGate::post_norm) {
      rmsnorm_forward<D>(xn_.data(), rstd0_.data(), e, n);
      smear_forward<D>(x0_.data(), xn_.data(), P + Layout::offset(GP::smear_gate), blocked_.data(), n, true);
    } else {
      rmsnorm_forward<D>(x0_.data(), rstd0_.data(), e, n);
    }
  }

  void embed_backward(const T* P, T* G) {
    const std::int64_t n = batch_ * seq_;
    T* g = gx0_.data();  // d x0, turned in place into d e
    if constexpr (Ft.smear == SmearGate::post_norm) {
      smear_backward<D>(gtmp_.data(), G + Layout::offset(GP::smear_gate), g, xn_.data(), P + Layout::offset(GP::smear_gate),
                        blocked_.data(), n, true);
      rmsnorm_backward<D>(g, gtmp_.data(), emb_.data(), rstd0_.data(), n, false);
    } else {
      const T* pre_norm = kSmearPre ? smeared_.data() : emb_.data();
      rmsnorm_backward<D>(g, g, pre_norm, rstd0_.data(), n, false);
      if constexpr (Ft.smear == SmearGate::pre_norm) {
        smear_backward<D>(gtmp_.data(), G + Layout::offset(GP::smear_gate), g, emb_.data(), P + Layout::offset(GP::smear_gate),
                          blocked_.data(), n, false);
        std::copy(gtmp_.begin(), gtmp_.end(), gx0_.begin());
      } else if constexpr (Ft.smear == SmearGate::input_gated) {
        smear_input_backward<D, Ft.gate_window>(gtmp_.data(), G + Layout::offset(GP::smear_gate), G + Layout::offset(GP::smear_lambda), g,
                                                emb_.data(), smear_z_.data(), P + Layout::offset(GP::smear_gate),
                                                P + Layout::offset(GP::smear_lambda), blocked_.data(), n);
        std::copy(gtmp_.begin(), gtmp_.end(), gx0_.begin());
      }
    }
    // g = d e: the token embedding and the hash embedding receive it.
    if constexpr (kHash) {
      const T* z = Dm::hash_proj ? hash_proj_.data() : hash_rows_.data();
      T* gz = Dm::hash_proj ? ghash_proj_.data() : ghash_rows_.data();
      if constexpr (kEngram) {  // e += σ(gate) ⊙ z
        const T* gate = P + Layout::offset(GP::hash_gate);
        reduce_rows_into(G + Layout::offset(GP::hash_gate), D, n, [&](std::int64_t r, double* acc) {
          for (int i = 0; i < D; ++i) {
            const T s = sigmoid(gate[i]);
            acc[i] += static_cast<double>(g[r * D + i]) * z[r * D + i] * s * (T(1) - s);
          }
        });
        for (std::int64_t r = 0; r < n; ++r)
          for (int i = 0; i < D; ++i) gz[r * D + i] = sigmoid(gate[i]) * g[r * D + i];
      } else {  // e += scale · z
        const T scale = P[Layout::offset(GP::hash_scale)];
        G[Layout::offset(GP::hash_scale)] += static_cast<T>(dot_all(g, z, n * D));
        axpby(gz, scale, g, T(0), g, n * D);
      }
      if constexpr (Dm::hash_proj) {
        linear_backward_weight(G + Layout::offset(GP::hash_proj), gz, hash_rows_.data(), n, kHashConcat, D);
        linear_backward_input(ghash_rows_.data(), gz, P + Layout::offset(GP::hash_proj), n, kHashConcat, D, false);
      }
      embedding_backward<kHashDim>(G + Layout::offset(GP::hash_embed), ghash_rows_.data(), hash_idx_.data(), n * kHashSlots,
                                   Dm::hash_rows);
    }
    embedding_backward<D>(G + Layout::tok_emb, g, ids_.data(), n, V);
    if constexpr (kVe) ve_backward(P, G);
  }

  // blocked_[i] = 1 where token i may not read token i − 1: the first position of every sequence,
  // and (BOS fix) every BOS token, so that one document never smears into the next.
  void build_blocked_mask() {
    for (std::int64_t b = 0; b < batch_; ++b) {
      for (std::int64_t t = 0; t < seq_; ++t) {
        const std::int64_t i = b * seq_ + t;
        blocked_[i] = (t == 0 || (Ft.smear_bos_fix && ids_[i] == C.bos_id)) ? 1 : 0;
      }
    }
  }

  // ------------------------------------------------------------------------- value embedding
  void ve_forward(const T* P) {
    const std::int64_t n = batch_ * seq_;
    embedding_forward<Ft.ve_dim>(ve_rows_.data(), P + Layout::offset(GP::ve_embed), ids_.data(), n, V);  // (N, ve_dim)
    const T* z = ve_rows_.data();
    if constexpr (Dm::ve_proj) {
      linear_forward(ve_proj_.data(), ve_rows_.data(), P + Layout::offset(GP::ve_proj), n, Ft.ve_dim, KvD);
      z = ve_proj_.data();
    }
    axpby(ve_base_.data(), P[Layout::offset(GP::ve_scale)], z, T(0), z, n * KvD);  // scale · proj(E[ids])   (N, KvD)
  }

  void ve_backward(const T* P, T* G) {
    const std::int64_t n = batch_ * seq_;
    const T* z = Dm::ve_proj ? ve_proj_.data() : ve_rows_.data();
    G[Layout::offset(GP::ve_scale)] += static_cast<T>(dot_all(gve_base_.data(), z, n * KvD));
    T* gz = Dm::ve_proj ? gve_proj_.data() : gve_rows_.data();
    axpby(gz, P[Layout::offset(GP::ve_scale)], gve_base_.data(), T(0), gve_base_.data(), n * KvD);
    if constexpr (Dm::ve_proj) {
      linear_backward_weight(G + Layout::offset(GP::ve_proj), gz, ve_rows_.data(), n, Ft.ve_dim, KvD);
      linear_backward_input(gve_rows_.data(), gz, P + Layout::offset(GP::ve_proj), n, Ft.ve_dim, KvD, false);
    }
    embedding_backward<Ft.ve_dim>(G + Layout::offset(GP::ve_embed), gve_rows_.data(), ids_.data(), n, V);
  }

  // ------------------------------------------------------------------------- blocks
  struct Acts {
    const T* input = nullptr;  // x_in (own buffer for skip layers, else the previous output)
    HostBuffer<T> x_in, x_mix, h_attn, rstd_attn, q_raw, k_raw, v_lin, v_pre, v, q_rstd, k_rstd, q_rot, q, k, y_attn, y_xsa, gate_z,
        y, lse, attn_out, x_mid, h_mlp, rstd_mlp, u, r, mlp_out, x_out;
  };

  // Runs block l on input x; returns its output.
  const T* block_forward(int l, const T* P, const T* x) {
    const std::int64_t n = batch_ * seq_;
    Acts& a = layers_[l];
    auto W = [&](BP b) { return P + Layout::offset(l, b); };
    if (const int s = skip_index(l); s >= 0) {
      const T* skip = layers_[Dm::n_enc - 1 - s].x_out.data();
      const T* w = P + Layout::skip_weights + s * D;
      if constexpr (kGatedSkip) {
        gated_skip_forward<D>(a.x_in.data(), x, skip, w, P + Layout::offset(GP::skip_gates) + s * D, n);
      } else {
        scaled_add_forward<D>(a.x_in.data(), x, skip, w, n);  // x += skip_weights[s] ⊙ skips.pop()
      }
      x = a.x_in.data();
    }
    a.input = x;
    const T f = ln_factor(l);
    resid_mix_forward<D>(a.x_mix.data(), x, x0_.data(), W(BP::resid_mix), n);             // (N, D)
    rmsnorm_forward<D>(a.h_attn.data(), a.rstd_attn.data(), a.x_mix.data(), n);
    if (f != T(1)) axpby(a.h_attn.data(), f, a.h_attn.data(), T(0), a.h_attn.data(), n * D);  // LN scale
    linear_forward(a.q_raw.data(), a.h_attn.data(), W(BP::c_q), n, D, D);                 // (N, H·Hd)
    linear_forward(a.k_raw.data(), a.h_attn.data(), W(BP::c_k), n, D, KvD);               // (N, Hkv·Hd)
    linear_forward(a.v_lin.data(), a.h_attn.data(), W(BP::c_v), n, D, KvD);               // (N, Hkv·Hd)
    // Values: c_v output, + value embedding, + value residual.
    const T* v = a.v_lin.data();
    if constexpr (kVe) {
      if (ve(l)) {
        if (l == first_ve_layer()) ve_forward(P);
        axpby(a.v_pre.data(), T(1), v, W(BP::ve_layer_scale)[0], ve_base_.data(), n * KvD);
        v = a.v_pre.data();
      }
    }
    if constexpr (kVrLambda) {
      if (l == 0) {
        v0_ = v;  // layer 0's values (after its value embedding) are v0
      } else {
        const T* lam = W(BP::vr_lambda);
        axpby(a.v.data(), lam[0], v0_, lam[1], v, n * KvD);
        if (v != a.v_pre.data()) std::copy_n(v, n * KvD, a.v_pre.data());  // keep the pre-mix values for the backward
        v = a.v.data();
      }
    }
    if constexpr (kVrAlpha) {
      if (l == 0) {
        v0_ = a.v_lin.data();  // layer 0's raw c_v output
      } else {
        axpby(a.v.data(), T(1), v, sigmoid(W(BP::vrl_alpha)[0]), v0_, n * KvD);
        v = a.v.data();
      }
    }
    a_v_[l] = v;
    rmsnorm_forward<Hd>(a.q_rot.data(), a.q_rstd.data(), a.q_raw.data(), n * H);        // per-head q norm
    rmsnorm_forward<Hd>(a.k.data(), a.k_rstd.data(), a.k_raw.data(), n * Hkv);          // per-head k norm
    rope_forward<Hd, Rd>(a.q_rot.data(), rope_, batch_, seq_, H);
    rope_forward<Hd, Rd>(a.k.data(), rope_, batch_, seq_, Hkv);
    std::copy(a.q_rot.begin(), a.q_rot.end(), a.q.begin());
    head_gain_forward<H, Hd>(a.q.data(), W(BP::q_gain), n);                              // q *= q_gain[h]
    attention_forward<H, Hkv, Hd>(a.y_attn.data(), a.lse.data(), a.q.data(), a.k.data(), v, batch_, seq_);
    const T* y = a.y_attn.data();
    if (xsa(l)) {
      xsa_forward<H, Hkv, Hd>(a.y_xsa.data(), y, v, n);
      y = a.y_xsa.data();
    }
    if constexpr (kGate) {
      std::copy_n(y, n * D, a.y.data());
      gate_forward(l, P, a);
      y = a.y.data();
    }
    a_y_[l] = y;
    linear_forward(a.attn_out.data(), y, W(BP::attn_proj), n, D, D);                      // (N, D)
    scaled_add_forward<D>(a.x_mid.data(), a.x_mix.data(), a.attn_out.data(), W(BP::attn_scale), n);
    rmsnorm_forward<D>(a.h_mlp.data(), a.rstd_mlp.data(), a.x_mid.data(), n);
    if (f != T(1)) axpby(a.h_mlp.data(), f, a.h_mlp.data(), T(0), a.h_mlp.data(), n * D);
    linear_forward(a.u.data(), a.h_mlp.data(), W(BP::fc), n, D, F);                       // (N, F)
    if constexpr (Ft.activation == Activation::relu2) {
      relu2_forward(a.r.data(), a.u.data(), n * F);
    } else {
      leaky_relu2_forward(a.r.data(), a.u.data(), n * F, static_cast<T>(Ft.leaky_slope));
    }
    linear_forward(a.mlp_out.data(), a.r.data(), W(BP::mlp_proj), n, F, D);               // (N, D)
    scaled_add_forward<D>(a.x_out.data(), a.x_mid.data(), a.mlp_out.data(), W(BP::mlp_scale), n);
    return a.x_out.data();
  }

  static constexpr GateForm gate_form() { return Ft.attn_gate == AttnGate::output_gate ? GateForm::twice_sigmoid : GateForm::sigmoid; }
  static constexpr T gate_scale() { return Ft.attn_gate == AttnGate::sparse ? static_cast<T>(Ft.sparse_gate_scale) : T(1); }

  void gate_forward(int l, const T* P, Acts& a) {
    const T* bias = Ft.attn_gate == AttnGate::headwise_bias ? P + Layout::offset(l, BP::gate_bias) : nullptr;
    head_gate_forward<D, H, Hd, kGateWin>(a.y.data(), a.gate_z.data(), a.h_attn.data(), P + Layout::offset(l, BP::gate_weight), bias,
                                          gate_scale(), gate_form(), batch_ * seq_);
  }

  // gx_ holds d x_out(l) on entry and d x_in(l) (the gradient for the previous layer) on exit.
  void block_backward(int l, const T* P, T* G) {
    const std::int64_t n = batch_ * seq_;
    Acts& a = layers_[l];
    auto W = [&](BP b) { return P + Layout::offset(l, b); };
    auto GW = [&](BP b) { return G + Layout::offset(l, b); };
    if (l < Dm::n_skip) {  // encoder output also used as a skip: add that gradient
      const auto& gs = gskip_[l];
      for (std::int64_t i = 0; i < n * D; ++i) gx_[i] += gs[i];
    }
    const T f = ln_factor(l);
    // x_out = x_mid + mlp_scale ⊙ mlp_out; gx is d x_out and becomes d x_mid.
    scaled_add_backward<D>(gtmp_.data(), GW(BP::mlp_scale), gx_.data(), a.mlp_out.data(), W(BP::mlp_scale), n, false);
    linear_backward_weight(GW(BP::mlp_proj), gtmp_.data(), a.r.data(), n, F, D);
    linear_backward_input(ghid_.data(), gtmp_.data(), W(BP::mlp_proj), n, F, D, false);  // d r (N, F)
    if constexpr (Ft.activation == Activation::relu2) {
      relu2_backward(ghid_.data(), ghid_.data(), a.u.data(), n * F);                         // d u
    } else {
      leaky_relu2_backward(ghid_.data(), ghid_.data(), a.u.data(), n * F, static_cast<T>(Ft.leaky_slope));
    }
    linear_backward_weight(GW(BP::fc), ghid_.data(), a.h_mlp.data(), n, D, F);
    linear_backward_input(gtmp_.data(), ghid_.data(), W(BP::fc), n, D, F, false);        // d h_mlp
    if (f != T(1)) axpby(gtmp_.data(), f, gtmp_.data(), T(0), gtmp_.data(), n * D);
    rmsnorm_backward<D>(gx_.data(), gtmp_.data(), a.x_mid.data(), a.rstd_mlp.data(), n, true);
    // x_mid = x_mix + attn_scale ⊙ attn_out; gx becomes d x_mix.
    scaled_add_backward<D>(gtmp_.data(), GW(BP::attn_scale), gx_.data(), a.attn_out.data(), W(BP::attn_scale), n, false);
    linear_backward_weight(GW(BP::attn_proj), gtmp_.data(), a_y_[l], n, D, D);
    linear_backward_input(gy_.data(), gtmp_.data(), W(BP::attn_proj), n, D, D, false);   // d y
    std::fill(gh_.begin(), gh_.end(), T(0));                                               // d h_attn from the gate
    if constexpr (kGate) {
      const T* y_in = xsa(l) ? a.y_xsa.data() : a.y_attn.data();
      T* gbias = Ft.attn_gate == AttnGate::headwise_bias ? GW(BP::gate_bias) : nullptr;
      head_gate_backward<D, H, Hd, kGateWin>(gy_.data(), gh_.data(), GW(BP::gate_weight), gbias, y_in, a.gate_z.data(), a.h_attn.data(),
                                             W(BP::gate_weight), gate_scale(), gate_form(), n);
    }
    const T* v = a_v_[l];
    std::fill(gv_.begin(), gv_.end(), T(0));
    if (xsa(l)) xsa_backward<H, Hkv, Hd>(gy_.data(), gv_.data(), gy_.data(), a.y_attn.data(), v, n);
    attention_backward<H, Hkv, Hd>(gq_.data(), gk_.data(), gv_attn_.data(), gy_.data(), a.y_attn.data(), a.lse.data(), a.q.data(),
                                   a.k.data(), v, batch_, seq_);
    for (std::int64_t i = 0; i < n * KvD; ++i) gv_[i] += gv_attn_[i];                     // d v (final values)
    head_gain_backward<H, Hd>(gq_.data(), GW(BP::q_gain), a.q_rot.data(), W(BP::q_gain), n);
    rope_backward<Hd, Rd>(gq_.data(), rope_, batch_, seq_, H);
    rope_backward<Hd, Rd>(gk_.data(), rope_, batch_, seq_, Hkv);
    rmsnorm_backward<Hd>(gq_.data(), gq_.data(), a.q_raw.data(), a.q_rstd.data(), n * H, false);
    rmsnorm_backward<Hd>(gk_.data(), gk_.data(), a.k_raw.data(), a.k_rstd.data(), n * Hkv, false);
    // Values back through the residual and the embedding to c_v's output: gv becomes d v_lin.
    if constexpr (kVrAlpha) {
      if (l > 0) {
        const T s = sigmoid(W(BP::vrl_alpha)[0]);
        GW(BP::vrl_alpha)[0] += static_cast<T>(dot_all(gv_.data(), v0_, n * KvD) * s * (1 - s));
        axpby(gv0_.data(), T(1), gv0_.data(), s, gv_.data(), n * KvD);
      }
    }
    if constexpr (kVrLambda) {
      if (l > 0) {
        const T* lam = W(BP::vr_lambda);
        GW(BP::vr_lambda)[0] += static_cast<T>(dot_all(gv_.data(), v0_, n * KvD));
        GW(BP::vr_lambda)[1] += static_cast<T>(dot_all(gv_.data(), a.v_pre.data(), n * KvD));
        axpby(gv0_.data(), T(1), gv0_.data(), lam[0], gv_.data(), n * KvD);
        axpby(gv_.data(), lam[1], gv_.data(), T(0), gv_.data(), n * KvD);
      } else {
        axpby(gv_.data(), T(1), gv_.data(), T(1), gv0_.data(), n * KvD);  // v0 is layer 0's values
      }
    }
    if constexpr (kVe) {
      if (ve(l)) {
        const T* scale = W(BP::ve_layer_scale);
        GW(BP::ve_layer_scale)[0] += static_cast<T>(dot_all(gv_.data(), ve_base_.data(), n * KvD));
        axpby(gve_base_.data(), T(1), gve_base_.data(), scale[0], gv_.data(), n * KvD);
      }
    }
    if constexpr (kVrAlpha) {  // v0_raw is layer 0's c_v output, before its value embedding
      if (l == 0) axpby(gv_.data(), T(1), gv_.data(), T(1), gv0_.data(), n * KvD);
    }
    linear_backward_weight(GW(BP::c_q), gq_.data(), a.h_attn.data(), n, D, D);
    linear_backward_weight(GW(BP::c_k), gk_.data(), a.h_attn.data(), n, D, KvD);
    linear_backward_weight(GW(BP::c_v), gv_.data(), a.h_attn.data(), n, D, KvD);
    linear_backward_input(gtmp_.data(), gq_.data(), W(BP::c_q), n, D, D, false);
    linear_backward_input(gtmp_.data(), gk_.data(), W(BP::c_k), n, D, KvD, true);
    linear_backward_input(gtmp_.data(), gv_.data(), W(BP::c_v), n, D, KvD, true);        // d h_attn
    axpby(gtmp_.data(), f, gtmp_.data(), f, gh_.data(), n * D);                            // + gate path, × LN scale
    rmsnorm_backward<D>(gx_.data(), gtmp_.data(), a.x_mix.data(), a.rstd_attn.data(), n, true);
    // x_mix = m0 ⊙ x_in + m1 ⊙ x0; gx becomes d x_in.
    resid_mix_backward<D>(gx_.data(), gx0_.data(), GW(BP::resid_mix), gx_.data(), a.input, x0_.data(), W(BP::resid_mix), n);
    if (const int s = skip_index(l); s >= 0) {
      const int enc = Dm::n_enc - 1 - s;
      const T* w = P + Layout::skip_weights + s * D;
      T* gw = G + Layout::skip_weights + s * D;
      if constexpr (kGatedSkip) {
        const T* prev = l == 0 ? x0_.data() : layers_[l - 1].x_out.data();
        gated_skip_backward<D>(gx_.data(), gskip_[enc].data(), gw, G + Layout::offset(GP::skip_gates) + s * D, gx_.data(), prev,
                               layers_[enc].x_out.data(), w, P + Layout::offset(GP::skip_gates) + s * D, n);
      } else {  // x_in = x_prev + w ⊙ skip: d skip = w ⊙ gx
        scaled_add_backward<D>(gskip_[enc].data(), gw, gx_.data(), layers_[enc].x_out.data(), w, n, true);
      }
    }
  }

  static constexpr int first_ve_layer() {
    for (int l = 0; l < L; ++l) {
      if (ve(l)) return l;
    }
    return -1;
  }

  void reserve(std::int64_t batch, std::int64_t seq) {
    if (batch == batch_ && seq == seq_ && !layers_.empty()) return;
    batch_ = batch;
    seq_ = seq;
    const auto n = static_cast<std::size_t>(batch * seq);
    layers_.assign(L, Acts{});
    a_v_.assign(L, nullptr);
    a_y_.assign(L, nullptr);
    for (int l = 0; l < L; ++l) {
      Acts& a = layers_[l];
      if (skip_index(l) >= 0) a.x_in.resize(n * D);
      for (auto* b : {&a.x_mix, &a.h_attn, &a.q_raw, &a.q_rot, &a.q, &a.y_attn, &a.attn_out, &a.x_mid, &a.h_mlp, &a.mlp_out, &a.x_out}) {
        b->resize(n * D);
      }
      if (xsa(l)) a.y_xsa.resize(n * D);
      if (kGate) {
        a.y.resize(n * D);
        a.gate_z.resize(n * H);
      }
      for (auto* b : {&a.k_raw, &a.k, &a.v_lin}) b->resize(n * KvD);
      if (kVe && ve(l)) a.v_pre.resize(n * KvD);
      if ((kVrLambda || kVrAlpha) && l > 0) {
        a.v.resize(n * KvD);
        if (kVrLambda) a.v_pre.resize(n * KvD);
      }
      for (auto* b : {&a.rstd_attn, &a.rstd_mlp}) b->resize(n);
      a.q_rstd.resize(n * H);
      a.k_rstd.resize(n * Hkv);
      a.lse.resize(n * H);
      a.u.resize(n * F);
      a.r.resize(n * F);
    }
    for (auto* b : {&emb_, &x0_, &hf_, &gx_, &gx0_, &gtmp_, &gq_, &gy_, &gh_}) b->resize(n * D);
    for (auto* b : {&rstd0_, &rstdf_, &loss_, &lse_, &dloss_}) b->resize(n);
    for (auto* b : {&gk_, &gv_, &gv_attn_}) b->resize(n * KvD);
    ghid_.resize(n * F);
    logits_.resize(n * V);
    gskip_.assign(Dm::n_skip, HostBuffer<T>(n * D));
    if constexpr (kHash) {
      hash_idx_.resize(n * kHashSlots);
      hash_rows_.resize(n * kHashConcat);
      ghash_rows_.resize(n * kHashConcat);
      if constexpr (Dm::hash_proj) {
        hash_proj_.resize(n * D);
        ghash_proj_.resize(n * D);
      }
    }
    if constexpr (Ft.smear != SmearGate::none) blocked_.resize(n);
    if constexpr (kSmearPre) smeared_.resize(n * D);
    if constexpr (Ft.smear == SmearGate::input_gated) smear_z_.resize(n);
    if constexpr (Ft.smear == SmearGate::post_norm) xn_.resize(n * D);
    if constexpr (kVe) {
      ve_rows_.resize(n * Ft.ve_dim);
      gve_rows_.resize(n * Ft.ve_dim);
      ve_base_.resize(n * KvD);
      gve_base_.resize(n * KvD);
      if constexpr (Dm::ve_proj) {
        ve_proj_.resize(n * KvD);
        gve_proj_.resize(n * KvD);
      }
    }
    if constexpr (kVrLambda || kVrAlpha) gv0_.resize(n * KvD);
    if (rope_.seq_len < seq) rope_ = RopeTables<T>(static_cast<int>(Dm::max_seq), Rd, C.rope_base);
  }

  std::int64_t batch_ = 0, seq_ = 0;
  bool has_forward_ = false;
  std::vector<std::int32_t> ids_, targets_;
  std::vector<Acts> layers_;
  std::vector<const T*> a_v_, a_y_;  // per layer: the values attention read, the input of attn.proj
  HostBuffer<T> emb_, x0_, rstd0_, hf_, rstdf_, logits_, loss_, lse_, dloss_;
  HostBuffer<T> gx_, gx0_, gtmp_, gq_, gk_, gv_, gv_attn_, gy_, gh_, ghid_;
  std::vector<HostBuffer<T>> gskip_;
  // Features' buffers (empty when the feature is off).
  std::vector<std::int32_t> hash_idx_;
  HostBuffer<T> hash_rows_, hash_proj_, ghash_rows_, ghash_proj_;
  std::vector<std::uint8_t> blocked_;
  HostBuffer<T> smeared_, smear_z_, xn_;
  HostBuffer<T> ve_rows_, ve_proj_, ve_base_, gve_rows_, gve_proj_, gve_base_;
  const T* v0_ = nullptr;
  HostBuffer<T> gv0_;
  const T* final_in_ = nullptr;
  RopeTables<T> rope_;
};

}  // namespace pgolf::cpu
