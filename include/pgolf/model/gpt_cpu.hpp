// The reference GPT (train_gpt.py, §1.4) on the CPU: forward, loss, and a hand-written backward.
//
// This is pgolf's oracle: plain loops and the packed GEMM, float for training and double for
// finite-difference checks. Shapes: N = batch·seq tokens, D model dim, H heads, Hkv KV heads,
// Hd head dim, F MLP hidden, V vocab. Activations of every layer are kept for the backward pass.
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
  using Blk = typename Layout::Block;
  static constexpr int D = Dm::dim, H = Dm::heads, Hkv = Dm::kv_heads, Hd = Dm::head_dim, KvD = Dm::kv_dim;
  static constexpr int F = Dm::hidden, V = Dm::vocab, L = Dm::layers;
  static constexpr T kSoftcap = static_cast<T>(C.logit_softcap);

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
    ids_.assign(ids.begin(), ids.end());
    targets_.assign(targets.begin(), targets.end());

    embedding_forward<D>(emb_.data(), P + Layout::tok_emb, ids_.data(), n, V);  // (N, D)
    rmsnorm_forward<D>(x0_.data(), rstd0_.data(), emb_.data(), n);              // (N, D)

    const T* x = x0_.data();
    for (int l = 0; l < L; ++l) {
      Acts& a = layers_[l];
      const T* W = P + Layout::block(l);
      if (const int s = skip_index(l); s >= 0) {  // decoder: x += skip_weights[s] ⊙ skips.pop()
        scaled_add_forward<D>(a.x_in.data(), x, layers_[Dm::n_enc - 1 - s].x_out.data(), P + Layout::skip_weights + s * D, n);
        x = a.x_in.data();
      }
      a.input = x;
      resid_mix_forward<D>(a.x_mix.data(), x, x0_.data(), W + Blk::resid_mix, n);             // (N, D)
      rmsnorm_forward<D>(a.h_attn.data(), a.rstd_attn.data(), a.x_mix.data(), n);            // (N, D)
      linear_forward(a.q_raw.data(), a.h_attn.data(), W + Blk::c_q, n, D, D);                // (N, H·Hd)
      linear_forward(a.k_raw.data(), a.h_attn.data(), W + Blk::c_k, n, D, KvD);              // (N, Hkv·Hd)
      linear_forward(a.v.data(), a.h_attn.data(), W + Blk::c_v, n, D, KvD);                  // (N, Hkv·Hd)
      rmsnorm_forward<Hd>(a.q_rot.data(), a.q_rstd.data(), a.q_raw.data(), n * H);          // per-head q norm
      rmsnorm_forward<Hd>(a.k.data(), a.k_rstd.data(), a.k_raw.data(), n * Hkv);            // per-head k norm
      rope_forward<Hd, Hd>(a.q_rot.data(), rope_, batch, seq, H);
      rope_forward<Hd, Hd>(a.k.data(), rope_, batch, seq, Hkv);
      std::copy(a.q_rot.begin(), a.q_rot.end(), a.q.begin());
      head_gain_forward<H, Hd>(a.q.data(), W + Blk::q_gain, n);                             // q *= q_gain[h]
      attention_forward<H, Hkv, Hd>(a.y.data(), a.lse.data(), a.q.data(), a.k.data(), a.v.data(), batch, seq);
      linear_forward(a.attn_out.data(), a.y.data(), W + Blk::attn_proj, n, D, D);            // (N, D)
      scaled_add_forward<D>(a.x_mid.data(), a.x_mix.data(), a.attn_out.data(), W + Blk::attn_scale, n);
      rmsnorm_forward<D>(a.h_mlp.data(), a.rstd_mlp.data(), a.x_mid.data(), n);
      linear_forward(a.u.data(), a.h_mlp.data(), W + Blk::fc, n, D, F);                      // (N, F)
      relu2_forward(a.r.data(), a.u.data(), n * F);
      linear_forward(a.mlp_out.data(), a.r.data(), W + Blk::mlp_proj, n, F, D);              // (N, D)
      scaled_add_forward<D>(a.x_out.data(), a.x_mid.data(), a.mlp_out.data(), W + Blk::mlp_scale, n);
      x = a.x_out.data();
    }
    final_in_ = x;
    rmsnorm_forward<D>(hf_.data(), rstdf_.data(), x, n);                                      // (N, D)
    linear_forward(logits_.data(), hf_.data(), P + head_offset(), n, D, V);                   // (N, V) raw, then capped
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
    linear_backward_weight(G + head_offset(), logits_.data(), hf_.data(), n, D, V);
    linear_backward_input(gx_.data(), logits_.data(), P + head_offset(), n, D, V, false);
    rmsnorm_backward<D>(gx_.data(), gx_.data(), final_in_, rstdf_.data(), n, false);         // d x_out(L-1)

    std::fill(gx0_.begin(), gx0_.end(), T(0));
    for (auto& s : gskip_) std::fill(s.begin(), s.end(), T(0));
    for (int l = L - 1; l >= 0; --l) {
      Acts& a = layers_[l];
      const T* W = P + Layout::block(l);
      T* GW = G + Layout::block(l);
      if (l < Dm::n_skip) {  // encoder output also used as a skip: add that gradient
        const auto& gs = gskip_[l];
        for (std::int64_t i = 0; i < n * D; ++i) gx_[i] += gs[i];
      }
      // x_out = x_mid + mlp_scale ⊙ mlp_out; gx is d x_out and becomes d x_mid.
      scaled_add_backward<D>(gtmp_.data(), GW + Blk::mlp_scale, gx_.data(), a.mlp_out.data(), W + Blk::mlp_scale, n, false);
      linear_backward_weight(GW + Blk::mlp_proj, gtmp_.data(), a.r.data(), n, F, D);
      linear_backward_input(ghid_.data(), gtmp_.data(), W + Blk::mlp_proj, n, F, D, false);  // d r (N, F)
      relu2_backward(ghid_.data(), ghid_.data(), a.u.data(), n * F);                          // d u
      linear_backward_weight(GW + Blk::fc, ghid_.data(), a.h_mlp.data(), n, D, F);
      linear_backward_input(gtmp_.data(), ghid_.data(), W + Blk::fc, n, D, F, false);       // d h_mlp
      rmsnorm_backward<D>(gx_.data(), gtmp_.data(), a.x_mid.data(), a.rstd_mlp.data(), n, true);
      // x_mid = x_mix + attn_scale ⊙ attn_out; gx becomes d x_mix.
      scaled_add_backward<D>(gtmp_.data(), GW + Blk::attn_scale, gx_.data(), a.attn_out.data(), W + Blk::attn_scale, n, false);
      linear_backward_weight(GW + Blk::attn_proj, gtmp_.data(), a.y.data(), n, D, D);
      linear_backward_input(gy_.data(), gtmp_.data(), W + Blk::attn_proj, n, D, D, false);  // d y
      attention_backward<H, Hkv, Hd>(gq_.data(), gk_.data(), gv_.data(), gy_.data(), a.y.data(), a.lse.data(), a.q.data(),
                                     a.k.data(), a.v.data(), batch_, seq_);
      head_gain_backward<H, Hd>(gq_.data(), GW + Blk::q_gain, a.q_rot.data(), W + Blk::q_gain, n);
      rope_backward<Hd, Hd>(gq_.data(), rope_, batch_, seq_, H);
      rope_backward<Hd, Hd>(gk_.data(), rope_, batch_, seq_, Hkv);
      rmsnorm_backward<Hd>(gq_.data(), gq_.data(), a.q_raw.data(), a.q_rstd.data(), n * H, false);
      rmsnorm_backward<Hd>(gk_.data(), gk_.data(), a.k_raw.data(), a.k_rstd.data(), n * Hkv, false);
      linear_backward_weight(GW + Blk::c_q, gq_.data(), a.h_attn.data(), n, D, D);
      linear_backward_weight(GW + Blk::c_k, gk_.data(), a.h_attn.data(), n, D, KvD);
      linear_backward_weight(GW + Blk::c_v, gv_.data(), a.h_attn.data(), n, D, KvD);
      linear_backward_input(gtmp_.data(), gq_.data(), W + Blk::c_q, n, D, D, false);
      linear_backward_input(gtmp_.data(), gk_.data(), W + Blk::c_k, n, D, KvD, true);
      linear_backward_input(gtmp_.data(), gv_.data(), W + Blk::c_v, n, D, KvD, true);       // d h_attn
      rmsnorm_backward<D>(gx_.data(), gtmp_.data(), a.x_mix.data(), a.rstd_attn.data(), n, true);
      // x_mix = m0 ⊙ x_in + m1 ⊙ x0; gx becomes d x_in.
      resid_mix_backward<D>(gx_.data(), gx0_.data(), GW + Blk::resid_mix, gx_.data(), a.input, x0_.data(), W + Blk::resid_mix, n);
      if (const int s = skip_index(l); s >= 0) {  // x_in = x_prev + w ⊙ skip: d skip = w ⊙ gx
        const int enc = Dm::n_enc - 1 - s;
        scaled_add_backward<D>(gskip_[enc].data(), G + Layout::skip_weights + s * D, gx_.data(), layers_[enc].x_out.data(),
                               P + Layout::skip_weights + s * D, n, true);
      }
    }
    // Layer 0's input is x0 itself.
    for (std::int64_t i = 0; i < n * D; ++i) gx0_[i] += gx_[i];
    rmsnorm_backward<D>(gx0_.data(), gx0_.data(), emb_.data(), rstd0_.data(), n, false);
    embedding_backward<D>(G + Layout::tok_emb, gx0_.data(), ids_.data(), n, V);
  }

  // The final hidden states (N, D) and the softcapped logits (N, V) of the last forward (valid
  // until backward(), which overwrites the logits with their gradient).
  std::span<const T> final_hidden() const { return {hf_.data(), hf_.size()}; }
  std::span<const T> capped_logits() const { return {logits_.data(), logits_.size()}; }

 private:
  static constexpr std::int64_t head_offset() { return Dm::tied ? Layout::tok_emb : Layout::lm_head; }

  // Decoder block l (l >= n_enc) with a skip connection uses skip_weights[l - n_enc]; else -1.
  static constexpr int skip_index(int l) {
    const int i = l - Dm::n_enc;
    return (i >= 0 && i < Dm::n_skip) ? i : -1;
  }

  struct Acts {
    const T* input = nullptr;  // x_in (own buffer for skip layers, else the previous output)
    HostBuffer<T> x_in, x_mix, h_attn, rstd_attn, q_raw, k_raw, q_rstd, k_rstd, q_rot, q, k, v, y, lse, attn_out, x_mid,
        h_mlp, rstd_mlp, u, r, mlp_out, x_out;
  };

  void reserve(std::int64_t batch, std::int64_t seq) {
    if (batch == batch_ && seq == seq_ && !layers_.empty()) return;
    batch_ = batch;
    seq_ = seq;
    const auto n = static_cast<std::size_t>(batch * seq);
    layers_.assign(L, Acts{});
    for (int l = 0; l < L; ++l) {
      Acts& a = layers_[l];
      if (skip_index(l) >= 0) a.x_in.resize(n * D);
      for (auto* b : {&a.x_mix, &a.h_attn, &a.q_raw, &a.q_rot, &a.q, &a.y, &a.attn_out, &a.x_mid, &a.h_mlp, &a.mlp_out, &a.x_out}) {
        b->resize(n * D);
      }
      for (auto* b : {&a.k_raw, &a.k, &a.v}) b->resize(n * KvD);
      for (auto* b : {&a.rstd_attn, &a.rstd_mlp}) b->resize(n);
      a.q_rstd.resize(n * H);
      a.k_rstd.resize(n * Hkv);
      a.lse.resize(n * H);
      a.u.resize(n * F);
      a.r.resize(n * F);
    }
    for (auto* b : {&emb_, &x0_, &hf_, &gx_, &gx0_, &gtmp_, &gq_, &gy_}) b->resize(n * D);
    for (auto* b : {&rstd0_, &rstdf_, &loss_, &lse_, &dloss_}) b->resize(n);
    gk_.resize(n * KvD);
    gv_.resize(n * KvD);
    ghid_.resize(n * F);
    logits_.resize(n * V);
    gskip_.assign(Dm::n_skip, HostBuffer<T>(n * D));
    if (rope_.seq_len < seq) rope_ = RopeTables<T>(static_cast<int>(Dm::max_seq), Hd, C.rope_base);
  }

  std::int64_t batch_ = 0, seq_ = 0;
  bool has_forward_ = false;
  std::vector<std::int32_t> ids_, targets_;
  std::vector<Acts> layers_;
  HostBuffer<T> emb_, x0_, rstd0_, hf_, rstdf_, logits_, loss_, lse_, dloss_;
  HostBuffer<T> gx_, gx0_, gtmp_, gq_, gk_, gv_, gy_, ghid_;
  std::vector<HostBuffer<T>> gskip_;
  const T* final_in_ = nullptr;
  RopeTables<T> rope_;
};

}  // namespace pgolf::cpu
