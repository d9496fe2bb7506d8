// The GPT of the reference (train_gpt.py, §1.4) on the GPU: the same computation as cpu::Gpt,
// with the reference's mixed precision (bf16 autocast + CastedLinear):
//   - fp32 master weights (the flat ParamLayout<C> buffer) and a bf16 copy that every GEMM reads;
//   - the residual stream and everything summed along it in fp32; normalized activations, q/k/v,
//     attention outputs, branch outputs and logits in bf16 (GEMMs accumulate in fp32);
//   - parameter gradients accumulated in fp32.
// Shapes: N = batch·seq tokens, D model dim, H heads, Hkv KV heads, Hd head dim, F MLP hidden,
// V vocab, Q = D + 2·Hkv·Hd (the fused q|k|v projection: c_q, c_k and c_v are adjacent in the
// parameter layout, so one GEMM computes all three).
//
// Activations of every layer are kept for the backward pass (about 1.3 GB per layer for the
// baseline's 65,536-token micro-batch); they live in one arena allocated for the largest token
// count seen, so a training run allocates once. All work is enqueued on one stream; nothing here
// synchronises with the host.
//
// The switches of the records that have CUDA kernels so far: partial RoPE, LN scale, LeakyReLU²,
// untied head. cuda_unsupported_features<C>() names the others; the backend refuses them.
#pragma once

#if !defined(__CUDACC__)
#error "pgolf/model/gpt_cuda.cuh is for CUDA translation units"
#endif

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "pgolf/core/config.hpp"
#include "pgolf/core/cuda_runtime.cuh"
#include "pgolf/model/param_layout.hpp"
#include "pgolf/ops/cuda/attention.cuh"
#include "pgolf/ops/cuda/channel_ops.cuh"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/embedding.cuh"
#include "pgolf/ops/cuda/gemm.cuh"
#include "pgolf/ops/cuda/qk_norm_rope.cuh"
#include "pgolf/ops/cuda/reduce.cuh"
#include "pgolf/ops/cuda/rmsnorm.cuh"
#include "pgolf/ops/cuda/softcap_cross_entropy.cuh"

namespace pgolf::cuda {

// The configuration's switches that the CUDA model does not implement yet, as a readable list
// (empty: the configuration runs on the GPU).
inline std::string cuda_unsupported_features(const ModelConfig& c) {
  const Features& f = c.features;
  const Features base{};
  std::string s;
  auto add = [&](bool on, const char* what) {
    if (!on) return;
    if (!s.empty()) s += ", ";
    s += what;
  };
  add(f.hash_embedding != base.hash_embedding, "hash embeddings (BigramHash/EngramLite)");
  add(f.smear != base.smear, "SmearGate");
  add(f.skips != base.skips, "sigmoid-gated skips");
  add(f.xsa_layers != 0, "XSA");
  add(f.value_residual != base.value_residual, "value residual");
  add(f.ve_layers != 0, "value embeddings");
  add(f.attn_gate != base.attn_gate, "attention gates");
  return s;
}

template <ModelConfig C>
inline constexpr bool kCudaSupported = [] {
  const Features& f = C.features;
  const Features base{};
  return f.hash_embedding == base.hash_embedding && f.smear == base.smear && f.skips == base.skips && f.xsa_layers == 0 &&
         f.value_residual == base.value_residual && f.ve_layers == 0 && f.attn_gate == base.attn_gate;
}();

namespace model_kernels {
// acc[0] += scale · sum[0]: the micro-batch's mean loss (scaled) into the step's loss, on the device.
template <int = 0>  // a template, so that every translation unit may instantiate it (no ODR clash)
__global__ void accumulate_scaled(double* acc, const double* sum, double scale) { acc[0] += scale * sum[0]; }
}  // namespace model_kernels

template <ModelConfig C>
class GptCuda {
 public:
  static_assert(kCudaSupported<C>, "this configuration uses features without CUDA kernels (see cuda_unsupported_features)");
  using Dm = Dims<C>;
  using Layout = ParamLayout<C>;
  using BP = BlockParam;
  using GP = GlobalParam;
  static constexpr Features Ft = C.features;
  static constexpr int D = Dm::dim, H = Dm::heads, Hkv = Dm::kv_heads, Hd = Dm::head_dim, KvD = Dm::kv_dim;
  static constexpr int F = Dm::hidden, V = Dm::vocab, L = Dm::layers, Rd = Dm::rope_dims;
  static constexpr int Q = D + 2 * KvD;  // fused q|k|v projection width
  static constexpr float kSoftcap = C.logit_softcap;
  static constexpr float kSlope = Ft.leaky_slope;

  // The fused q|k|v GEMM relies on c_q, c_k, c_v being adjacent, in that order, in every block.
  static constexpr bool qkv_adjacent() {
    for (int l = 0; l < L; ++l) {
      if (Layout::offset(l, BP::c_k) != Layout::offset(l, BP::c_q) + std::int64_t{D} * D) return false;
      if (Layout::offset(l, BP::c_v) != Layout::offset(l, BP::c_k) + std::int64_t{KvD} * D) return false;
    }
    return true;
  }
  static_assert(qkv_adjacent(), "c_q, c_k and c_v must be adjacent in the parameter layout (one fused GEMM)");

  GptCuda(GemmEngine& gemm, cudaStream_t stream) : gemm_(gemm), stream_(stream), rope_(Dm::max_seq, Rd, C.rope_base) {}

  // Mean loss of the batch, scaled by loss_scale, is added to *step_loss (device); gradients of
  // loss_scale · mean loss are added to grads. ids/targets: device (N) int32, already validated.
  // P: fp32 master weights, W: their bf16 copy, G: fp32 gradients (all device, Layout::total).
  void forward_backward(const float* P, const nv_bf16* W, float* G, const std::int32_t* ids, const std::int32_t* targets, std::int64_t batch,
                        std::int64_t seq, float loss_scale, double* step_loss) {
    const std::int64_t n = batch * seq;
    reserve(n);
    batch_ = batch;
    seq_ = seq;
    embed_plan_->prepare(ids, n, stream_);  // the deterministic embedding backward needs ids grouped
    forward(P, W, ids);
    softcap_cross_entropy_forward_backward<V>(loss_, logits_, logits_, targets, kSoftcap, loss_scale / static_cast<float>(n), n, stream_);
    sum(loss_sum_, loss_, n, sum_scratch_, false, stream_);
    model_kernels::accumulate_scaled<><<<1, 1, 0, stream_>>>(step_loss, loss_sum_, static_cast<double>(loss_scale) / static_cast<double>(n));
    PGOLF_CUDA_LAUNCH_CHECK();
    backward(P, W, G);
  }

  // Per-token losses (N) into `losses` (device), no gradients.
  void token_losses(const float* P, const nv_bf16* W, const std::int32_t* ids, const std::int32_t* targets, std::int64_t batch, std::int64_t seq,
                    float* losses) {
    const std::int64_t n = batch * seq;
    reserve(n);
    batch_ = batch;
    seq_ = seq;
    forward(P, W, ids);
    softcap_cross_entropy_forward<V>(losses, logits_, targets, kSoftcap, n, stream_);
  }

  // Device bytes of the activation arena (0 before the first batch).
  std::size_t activation_bytes() const { return arena_.bytes(); }

 private:
  static float ln_factor(int l) {
    if constexpr (Ft.ln_scale) {
      return static_cast<float>(1.0 / std::sqrt(static_cast<double>(l + 1)));
    } else {
      (void)l;
      return 1.0f;
    }
  }
  static constexpr int skip_index(int l) {
    const int i = l - Dm::n_enc;
    return (i >= 0 && i < Dm::n_skip) ? i : -1;
  }

  // ----------------------------------------------------------------------------- forward
  void forward(const float* P, const nv_bf16* W, const std::int32_t* ids) {
    const std::int64_t n = batch_ * seq_;
    embedding_forward<D>(emb_, P + Layout::tok_emb, ids, n, stream_);  // e = tok_emb[ids]      (N, D)
    rmsnorm_forward<D, float>(x0_, rstd0_, emb_, 1.0f, n, stream_);     // x0 = rms_norm(e)      (N, D)
    const float* x = x0_;
    for (int l = 0; l < L; ++l) x = block_forward(l, P, W, x);
    final_in_ = x;
    rmsnorm_forward<D, nv_bf16>(hf_, rstdf_, x, 1.0f, n, stream_);                                  // (N, D) bf16
    gemm_.linear_forward(logits_, OutType::bf16, hf_, W + Layout::head_offset(), n, D, V, stream_);  // (N, V) raw z
  }

  const float* block_forward(int l, const float* P, const nv_bf16* W, const float* x) {
    const std::int64_t n = batch_ * seq_;
    Acts& a = acts_[l];
    auto Pw = [&](BP b) { return P + Layout::offset(l, b); };
    auto Ww = [&](BP b) { return W + Layout::offset(l, b); };
    const float f = ln_factor(l);
    if (const int s = skip_index(l); s >= 0) {  // x += skip_weights[s] ⊙ skips.pop()
      scaled_add_forward<D, float>(a.x_in, x, acts_[Dm::n_enc - 1 - s].x_out, P + Layout::skip_weights + s * D, n, stream_);
      x = a.x_in;
    }
    a.input = x;
    resid_mix_rmsnorm_forward<D>(a.x_mix, a.h_attn, a.rstd_attn, x, x0_, Pw(BP::resid_mix), f, n, stream_);
    gemm_.linear_forward(a.qkv, OutType::bf16, a.h_attn, Ww(BP::c_q), n, D, Q, stream_);  // (N, Q) = [q_raw | k_raw | v]
    qk_norm_rope_forward<H, Hkv, Hd, Rd>(a.q, a.k, a.q_rstd, a.k_rstd, a.qkv, Q, Pw(BP::q_gain), rope_, batch_, seq_, stream_);
    attention_forward<H, Hkv, Hd>(a.y, D, a.lse, a.q, D, a.k, KvD, a.qkv + D + KvD, Q, batch_, seq_, stream_);  // (N, D)
    gemm_.linear_forward(a.attn_out, OutType::bf16, a.y, Ww(BP::attn_proj), n, D, D, stream_);
    scaled_add_rmsnorm_forward<D>(a.x_mid, a.h_mlp, a.rstd_mlp, a.x_mix, a.attn_out, Pw(BP::attn_scale), f, n, stream_);
    gemm_.linear_forward(a.u, OutType::bf16, a.h_mlp, Ww(BP::fc), n, D, F, stream_);  // (N, F)
    mlp_activation_forward<Ft.activation>(a.r, a.u, n * F, kSlope, stream_);
    gemm_.linear_forward(a.mlp_out, OutType::bf16, a.r, Ww(BP::mlp_proj), n, F, D, stream_);  // (N, D)
    scaled_add_forward<D, nv_bf16>(a.x_out, a.x_mid, a.mlp_out, Pw(BP::mlp_scale), n, stream_);
    return a.x_out;
  }

  // ----------------------------------------------------------------------------- backward
  void backward(const float* P, const nv_bf16* W, float* G) {
    const std::int64_t n = batch_ * seq_;
    // Head: logits_ now hold d z (bf16), written by the fused cross-entropy.
    gemm_.linear_backward_weight(G + Layout::head_offset(), logits_, hf_, n, D, V, stream_);
    gemm_.linear_backward_input(gtmp_, OutType::f32, logits_, W + Layout::head_offset(), n, D, V, false, stream_);  // d hf
    rmsnorm_backward<D>(gx_, gtmp_, final_in_, rstdf_, 1.0f, n, false, stream_);                                    // d x_out(L-1)
    PGOLF_CUDA_CHECK(cudaMemsetAsync(gx0_, 0, sizeof(float) * n * D, stream_));
    for (int l = L - 1; l >= 0; --l) block_backward(l, P, W, G);
    add_into(gx0_, gx_, n * D, stream_);  // layer 0's input is x0 itself
    rmsnorm_backward<D>(gtmp_, gx0_, emb_, rstd0_, 1.0f, n, false, stream_);  // d e
    embedding_backward<D>(G + Layout::tok_emb, gtmp_, *embed_plan_, stream_);
  }

  // gx_ holds d x_out(l) on entry and d x_in(l) on exit.
  void block_backward(int l, const float* P, const nv_bf16* W, float* G) {
    const std::int64_t n = batch_ * seq_;
    Acts& a = acts_[l];
    auto Pw = [&](BP b) { return P + Layout::offset(l, b); };
    auto Ww = [&](BP b) { return W + Layout::offset(l, b); };
    auto Gw = [&](BP b) { return G + Layout::offset(l, b); };
    const float f = ln_factor(l);
    if (l < Dm::n_skip) add_into(gx_, gskip_[l], n * D, stream_);  // this encoder output also fed a skip
    // x_out = x_mid + mlp_scale ⊙ mlp_out
    scaled_add_backward<D, nv_bf16, nv_bf16>(dbranch_, Gw(BP::mlp_scale), gx_, a.mlp_out, Pw(BP::mlp_scale), n, false, partials_, stream_);
    gemm_.linear_backward_weight(Gw(BP::mlp_proj), dbranch_, a.r, n, F, D, stream_);
    gemm_.linear_backward_input(dhidden_, OutType::bf16, dbranch_, Ww(BP::mlp_proj), n, F, D, false, stream_);  // d r (N, F)
    mlp_activation_backward<Ft.activation>(dhidden_, dhidden_, a.u, n * F, kSlope, stream_);              // d u
    gemm_.linear_backward_weight(Gw(BP::fc), dhidden_, a.h_mlp, n, D, F, stream_);
    gemm_.linear_backward_input(gtmp_, OutType::f32, dhidden_, Ww(BP::fc), n, D, F, false, stream_);  // d h_mlp
    rmsnorm_backward<D>(gx_, gtmp_, a.x_mid, a.rstd_mlp, f, n, true, stream_);                        // gx = d x_mid
    // x_mid = x_mix + attn_scale ⊙ attn_out
    scaled_add_backward<D, nv_bf16, nv_bf16>(dbranch_, Gw(BP::attn_scale), gx_, a.attn_out, Pw(BP::attn_scale), n, false, partials_, stream_);
    gemm_.linear_backward_weight(Gw(BP::attn_proj), dbranch_, a.y, n, D, D, stream_);
    gemm_.linear_backward_input(dy_, OutType::bf16, dbranch_, Ww(BP::attn_proj), n, D, D, false, stream_);  // d y
    attention_backward<H, Hkv, Hd>(dq_, D, dk_, KvD, dqkv_ + D + KvD, Q, dy_, D, a.y, D, a.lse, a.q, D, a.k, KvD, a.qkv + D + KvD, Q, batch_,
                                   seq_, attn_scratch_, stream_);
    qk_norm_rope_backward<H, Hkv, Hd, Rd>(dqkv_, Q, Gw(BP::q_gain), dq_, dk_, a.qkv, Q, a.q_rstd, a.k_rstd, Pw(BP::q_gain), rope_, batch_,
                                          seq_, partials_, stream_);
    gemm_.linear_backward_weight(Gw(BP::c_q), dqkv_, a.h_attn, n, D, Q, stream_);  // c_q|c_k|c_v at once
    gemm_.linear_backward_input(gtmp_, OutType::f32, dqkv_, Ww(BP::c_q), n, D, Q, false, stream_);  // d h_attn
    rmsnorm_backward<D>(gx_, gtmp_, a.x_mix, a.rstd_attn, f, n, true, stream_);                     // gx = d x_mix
    // x_mix = m0 ⊙ x_in + m1 ⊙ x0; gx becomes d x_in.
    resid_mix_backward<D>(gx_, gx0_, Gw(BP::resid_mix), gx_, a.input, x0_, Pw(BP::resid_mix), n, partials_, stream_);
    if (const int s = skip_index(l); s >= 0) {  // x_in = x_prev + w ⊙ skip: d skip = w ⊙ gx, d x_prev = gx
      const int enc = Dm::n_enc - 1 - s;
      scaled_add_backward<D, float, float>(gskip_[enc], G + Layout::skip_weights + s * D, gx_, acts_[enc].x_out, P + Layout::skip_weights + s * D,
                                           n, false, partials_, stream_);
    }
  }

  // ----------------------------------------------------------------------------- memory
  struct Acts {
    const float* input = nullptr;  // x_in: own buffer for skip layers, else the previous output
    float* x_in = nullptr;         // (N, D) skip layers only
    float *x_mix = nullptr, *x_mid = nullptr, *x_out = nullptr;  // (N, D) fp32 residual stream
    float *rstd_attn = nullptr, *rstd_mlp = nullptr;             // (N)
    nv_bf16 *h_attn = nullptr, *h_mlp = nullptr;                 // (N, D) normed GEMM inputs
    nv_bf16* qkv = nullptr;                                      // (N, Q)
    nv_bf16 *q = nullptr, *k = nullptr;                          // (N, D), (N, KvD) normed, rotated, q scaled by q_gain
    float *q_rstd = nullptr, *k_rstd = nullptr;                  // (N, H), (N, Hkv)
    nv_bf16* y = nullptr;                                        // (N, D) attention output
    float* lse = nullptr;                                        // (B, H, T)
    nv_bf16 *attn_out = nullptr, *mlp_out = nullptr;             // (N, D) branch outputs
    nv_bf16 *u = nullptr, *r = nullptr;                          // (N, F) MLP pre/post activation
  };

  // Carves every buffer for n tokens out of the arena (measure pass, allocate, assign pass).
  void reserve(std::int64_t n) {
    PGOLF_CHECK(n >= 1, "empty batch");
    if (n <= capacity_) return;
    arena_.release();
    embed_plan_.reset();
    auto carve = [&] {
      for (int l = 0; l < L; ++l) {
        Acts& a = acts_[l];
        a.x_in = skip_index(l) >= 0 ? arena_.take<float>(n * D) : nullptr;
        a.x_mix = arena_.take<float>(n * D);
        a.x_mid = arena_.take<float>(n * D);
        a.x_out = arena_.take<float>(n * D);
        a.rstd_attn = arena_.take<float>(n);
        a.rstd_mlp = arena_.take<float>(n);
        a.h_attn = arena_.take<nv_bf16>(n * D);
        a.h_mlp = arena_.take<nv_bf16>(n * D);
        a.qkv = arena_.take<nv_bf16>(n * Q);
        a.q = arena_.take<nv_bf16>(n * D);
        a.k = arena_.take<nv_bf16>(n * KvD);
        a.q_rstd = arena_.take<float>(n * H);
        a.k_rstd = arena_.take<float>(n * Hkv);
        a.y = arena_.take<nv_bf16>(n * D);
        a.lse = arena_.take<float>(n * H);
        a.attn_out = arena_.take<nv_bf16>(n * D);
        a.mlp_out = arena_.take<nv_bf16>(n * D);
        a.u = arena_.take<nv_bf16>(n * F);
        a.r = arena_.take<nv_bf16>(n * F);
      }
      emb_ = arena_.take<float>(n * D);
      x0_ = arena_.take<float>(n * D);
      rstd0_ = arena_.take<float>(n);
      hf_ = arena_.take<nv_bf16>(n * D);
      rstdf_ = arena_.take<float>(n);
      logits_ = arena_.take<nv_bf16>(n * V);
      loss_ = arena_.take<float>(n);
      gx_ = arena_.take<float>(n * D);
      gx0_ = arena_.take<float>(n * D);
      gtmp_ = arena_.take<float>(n * D);
      for (int s = 0; s < Dm::n_skip; ++s) gskip_[s] = arena_.take<float>(n * D);
      dbranch_ = arena_.take<nv_bf16>(n * D);
      dy_ = arena_.take<nv_bf16>(n * D);
      dq_ = arena_.take<nv_bf16>(n * D);
      dk_ = arena_.take<nv_bf16>(n * KvD);
      dqkv_ = arena_.take<nv_bf16>(n * Q);
      dhidden_ = arena_.take<nv_bf16>(n * F);
      partials_ = arena_.take<float>(column_partials_size(n, 2 * D > H ? 2 * D : H));
      sum_scratch_ = arena_.take<double>(sum_scratch_size(n));
      loss_sum_ = arena_.take<double>(1);
      attn_scratch_ = arena_.take<std::uint8_t>(static_cast<std::int64_t>(attention_backward_scratch_bytes<H, Hkv, Hd>(1, n)));
    };
    carve();
    const std::string what = "activations of " + describe(C) + " for " + std::to_string(n) + " tokens";
    arena_.allocate(what.c_str());
    carve();
    embed_plan_ = std::make_unique<EmbeddingGradPlan>(n, V);
    capacity_ = n;
  }

  GemmEngine& gemm_;
  cudaStream_t stream_;
  DeviceRopeTables rope_;
  DeviceArena arena_;
  std::unique_ptr<EmbeddingGradPlan> embed_plan_;
  std::int64_t capacity_ = 0, batch_ = 0, seq_ = 0;
  Acts acts_[L];
  const float* final_in_ = nullptr;
  float *emb_ = nullptr, *x0_ = nullptr, *rstd0_ = nullptr, *rstdf_ = nullptr, *loss_ = nullptr;
  nv_bf16 *hf_ = nullptr, *logits_ = nullptr;
  float *gx_ = nullptr, *gx0_ = nullptr, *gtmp_ = nullptr;
  float* gskip_[Dm::n_skip > 0 ? Dm::n_skip : 1] = {};
  nv_bf16 *dbranch_ = nullptr, *dy_ = nullptr, *dq_ = nullptr, *dk_ = nullptr, *dqkv_ = nullptr, *dhidden_ = nullptr;
  float* partials_ = nullptr;
  double *sum_scratch_ = nullptr, *loss_sum_ = nullptr;
  std::uint8_t* attn_scratch_ = nullptr;
};

}  // namespace pgolf::cuda
