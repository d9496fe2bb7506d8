// The GPT of the reference (train_gpt.py, §1.4) with the records' architecture switches, on the
// GPU: the same computation as cpu::Gpt, with the reference's mixed precision (bf16 autocast +
// CastedLinear):
//   - fp32 master weights (the flat ParamLayout<C> buffer) and a bf16 copy that every GEMM reads;
//   - the residual stream and everything summed along it in fp32; normalized activations, q/k/v,
//     attention outputs, branch outputs and logits in bf16 (GEMMs accumulate in fp32);
//   - parameter gradients accumulated in fp32.
// Shapes: N = batch·seq tokens, D model dim, H heads, Hkv KV heads, Hd head dim, F MLP hidden,
// V vocab, KvD = Hkv·Hd, Q = D + 2·KvD (the fused q|k|v projection: c_q, c_k and c_v are adjacent
// in the parameter layout, so one GEMM computes all three).
//
// Activations of every layer are kept for the backward pass (about 1.3 GB per layer for the
// baseline's 65,536-token micro-batch); they live in one arena allocated for the largest token
// count seen, so a training run allocates once. All work is enqueued on one stream; nothing here
// synchronises with the host. A switch that is off compiles out and allocates nothing, as in the
// CPU model; each block below names the CPU model's step it mirrors.
#pragma once

#if !defined(__CUDACC__)
#error "pgolf/model/gpt_cuda.cuh is for CUDA translation units"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "pgolf/core/config.hpp"
#include "pgolf/core/cuda_runtime.cuh"
#include "pgolf/model/param_layout.hpp"
#include "pgolf/ops/cuda/attention.cuh"
#include "pgolf/ops/cuda/channel_ops.cuh"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/embedding.cuh"
#include "pgolf/ops/cuda/features_attention.cuh"
#include "pgolf/ops/cuda/features_embedding.cuh"
#include "pgolf/ops/cuda/gemm.cuh"
#include "pgolf/ops/cuda/qk_norm_rope.cuh"
#include "pgolf/ops/cuda/reduce.cuh"
#include "pgolf/ops/cuda/rmsnorm.cuh"
#include "pgolf/ops/cuda/scalar_ops.cuh"
#include "pgolf/ops/cuda/softcap_cross_entropy.cuh"

namespace pgolf::cuda {

// The configuration's switches that the CUDA model does not implement, as a readable list (empty:
// the configuration runs on the GPU). Every switch of Features has CUDA kernels now; the hook
// stays so that a new switch is refused by the GPU until its kernels exist.
inline std::string cuda_unsupported_features(const ModelConfig&) { return ""; }

template <ModelConfig C>
inline constexpr bool kCudaSupported = true;

// The GPU model's parameter layout: ParamLayout<C>'s tensors in the same (state_dict) order, each
// starting on a 128-element boundary (512 bytes of fp32, 256 of bf16); c_k and c_v follow c_q
// directly (the fused q|k|v GEMM reads the three as one (Q, D) matrix).
//
// Why the model does not read the flat ParamLayout<C> buffer: that layout is packed, so one odd-sized
// tensor (BigramHash's scalar scale, smear_lambda, vr_lambda's 2 values, ve_layer_scales, vrl_alphas,
// gate biases, gate windows of 3, ...) shifts every later tensor off the 16-byte boundary. The
// row-wise kernels read the per-channel vectors (resid_mix, attn_scale, mlp_scale, skip weights and
// gates, smear gate, hash gate) as kVec-wide vectors and refuse a misaligned pointer on the host, and
// cuBLASLt would run every GEMM on 2-byte-aligned bf16 weights (no TMA / 16-byte loads). The backend
// keeps the flat layout for the optimizer, checkpoints and export, and copies between the two with
// DeviceParamMap below (flat → padded fp32 + bf16 after every parameter change; padded gradients →
// flat once per optimizer step).
inline constexpr std::int64_t kDeviceParamAlign = 128;  // elements
template <ModelConfig C>
using DeviceParamLayout = ParamLayout<C, kDeviceParamAlign>;

namespace model_kernels {
// acc[0] += scale · sum[0]: the micro-batch's mean loss (scaled) into the step's loss, on the device.
template <int = 0>  // a template, so that every translation unit may instantiate it (no ODR clash)
__global__ void accumulate_scaled(double* acc, const double* sum, double scale) {
  acc[0] += scale * sum[0];
}

// A run of one tensor, at most kLayoutChunk elements, at `flat` in the flat layout and `dev` in the
// device layout: one block each.
struct LayoutChunk {
  std::int64_t flat = 0, dev = 0;
  std::int32_t count = 0;
};
inline constexpr int kLayoutThreads = 256;
inline constexpr std::int32_t kLayoutChunk = kLayoutThreads * 16;

// p_dev[dev + i] = flat[flat + i], w_dev[dev + i] = bf16(flat[flat + i]) (round to nearest even).
template <int = 0>
__global__ void __launch_bounds__(kLayoutThreads)
    flat_to_device(float* p_dev, nv_bf16* w_dev, const float* flat, const LayoutChunk* chunks) {
  const LayoutChunk c = chunks[blockIdx.x];
  for (std::int32_t i = threadIdx.x; i < c.count; i += kLayoutThreads) {
    const float v = flat[c.flat + i];
    p_dev[c.dev + i] = v;
    w_dev[c.dev + i] = __float2bfloat16_rn(v);
  }
}

// flat[flat + i] = g_dev[dev + i].
template <int = 0>
__global__ void __launch_bounds__(kLayoutThreads) device_to_flat(float* flat, const float* g_dev, const LayoutChunk* chunks) {
  const LayoutChunk c = chunks[blockIdx.x];
  for (std::int32_t i = threadIdx.x; i < c.count; i += kLayoutThreads) flat[c.flat + i] = g_dev[c.dev + i];
}
}  // namespace model_kernels

// Copies between the flat ParamLayout<C> buffers and the model's DeviceParamLayout<C> buffers
// (stream-ordered, no host synchronisation). The padding of the device buffers is never written here
// and never read by the model.
template <ModelConfig C>
class DeviceParamMap {
 public:
  using Flat = ParamLayout<C>;
  using Dev = DeviceParamLayout<C>;

  DeviceParamMap() {
    std::vector<model_kernels::LayoutChunk> chunks;
    const auto flat = Flat::specs(), dev_specs = Dev::specs();  // the same tensors, in the same order
    for (std::size_t k = 0; k < flat.size(); ++k) {
      const ParamSpec& s = flat[k];
      const std::int64_t dev = dev_specs[k].offset;
      for (std::int64_t b = 0; b < s.numel(); b += model_kernels::kLayoutChunk) {
        model_kernels::LayoutChunk c;
        c.flat = s.offset + b;
        c.dev = dev + b;
        c.count = static_cast<std::int32_t>(std::min<std::int64_t>(model_kernels::kLayoutChunk, s.numel() - b));
        chunks.push_back(c);
      }
    }
    count_ = static_cast<unsigned>(chunks.size());
    if (!chunks.empty()) {
      chunks_ = ::pgolf::cuda::to_device(std::span<const model_kernels::LayoutChunk>(chunks), "parameter layout map");
    }
  }

  // p_dev (Dev::total fp32) and w_dev (Dev::total bf16) from flat (Flat::total fp32).
  void to_device(float* p_dev, nv_bf16* w_dev, const float* flat, cudaStream_t stream) const {
    if (count_ == 0) return;
    model_kernels::flat_to_device<><<<count_, model_kernels::kLayoutThreads, 0, stream>>>(p_dev, w_dev, flat, chunks_.data());
    PGOLF_CUDA_LAUNCH_CHECK();
  }
  // flat (Flat::total fp32) = g_dev (Dev::total fp32), tensor by tensor.
  void to_flat(float* flat, const float* g_dev, cudaStream_t stream) const {
    if (count_ == 0) return;
    model_kernels::device_to_flat<><<<count_, model_kernels::kLayoutThreads, 0, stream>>>(flat, g_dev, chunks_.data());
    PGOLF_CUDA_LAUNCH_CHECK();
  }

 private:
  unsigned count_ = 0;
  DeviceBuffer<model_kernels::LayoutChunk> chunks_;
};

template <ModelConfig C>
class GptCuda {
 public:
  static_assert(kCudaSupported<C>, "this configuration uses features without CUDA kernels (see cuda_unsupported_features)");
  using Dm = Dims<C>;
  using Layout = DeviceParamLayout<C>;  // P, W and G are in this layout (not the flat ParamLayout<C>)
  using BP = BlockParam;
  using GP = GlobalParam;
  static constexpr Features Ft = C.features;
  static constexpr int D = Dm::dim, H = Dm::heads, Hkv = Dm::kv_heads, Hd = Dm::head_dim, KvD = Dm::kv_dim;
  static constexpr int F = Dm::hidden, V = Dm::vocab, L = Dm::layers, Rd = Dm::rope_dims;
  static constexpr int Q = D + 2 * KvD;  // fused q|k|v projection width
  static constexpr float kSoftcap = C.logit_softcap;
  static constexpr float kSlope = Ft.leaky_slope;
  // Switches (the CPU model's names).
  static constexpr bool kHash = Ft.hash_embedding != HashEmbedding::none;
  static constexpr bool kEngram = Ft.hash_embedding == HashEmbedding::engram_lite;
  static constexpr int kHashSlots = kEngram ? 2 * Ft.engram_orders : 1;  // table rows gathered per token
  static constexpr int kHashDim = Ft.hash_dim, kHashConcat = Dm::hash_concat;
  static constexpr bool kSmear = Ft.smear != SmearGate::none;
  static constexpr bool kSmearPre = Ft.smear == SmearGate::pre_norm || Ft.smear == SmearGate::input_gated;
  static constexpr bool kVe = Ft.ve_layers != 0;
  static constexpr int kVeDim = Ft.ve_dim;
  static constexpr bool kGatedSkip = Ft.skips == SkipConnection::sigmoid_gated;
  static constexpr bool kGate = Ft.attn_gate != AttnGate::none;
  static constexpr int kGateWin = (Ft.attn_gate == AttnGate::output_gate || Ft.attn_gate == AttnGate::sparse) ? Ft.gate_window : D;
  static constexpr bool kVrLambda = Ft.value_residual == ValueResidual::lambda_mix;
  static constexpr bool kVrAlpha = Ft.value_residual == ValueResidual::sigmoid_alpha;
  static constexpr bool kVr = kVrLambda || kVrAlpha;
  static constexpr int kSmearWin = Ft.gate_window;

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
  // P: fp32 master weights, W: their bf16 copy, G: fp32 gradients, all device buffers of
  // DeviceParamLayout<C>::total elements in that layout (DeviceParamMap copies to and from the flat
  // ParamLayout<C> buffers).
  void forward_backward(const float* P, const nv_bf16* W, float* G, const std::int32_t* ids, const std::int32_t* targets, std::int64_t batch,
                        std::int64_t seq, float loss_scale, double* step_loss) {
    const std::int64_t n = batch * seq;
    reserve(n);
    batch_ = batch;
    seq_ = seq;
    embed_plan_->prepare(ids, n, stream_);  // the deterministic embedding backward needs ids grouped
    forward(P, W, ids);
    if constexpr (kHash) hash_plan_->prepare(hash_idx_, n * kHashSlots, stream_);  // indices are made in forward()
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
  static constexpr bool xsa(int l) { return has_layer(Ft.xsa_layers, l); }
  static constexpr bool ve(int l) { return has_layer(Ft.ve_layers, l); }
  static constexpr int first_ve_layer() {
    for (int l = 0; l < L; ++l) {
      if (ve(l)) return l;
    }
    return -1;
  }
  // Layer l's values differ from its c_v output (value embedding or value residual): they get a
  // packed buffer of their own, and their gradient runs through the fp32 chain of the CPU model.
  static constexpr bool own_values(int l) { return (kVe && ve(l)) || (kVr && l > 0); }
  static constexpr bool value_chain(int l) { return own_values(l) || xsa(l) || (kVr && l == 0); }
  static constexpr bool packed_v_lin(int l) { return own_values(l) || (kVr && l == 0); }
  static constexpr GateForm gate_form() { return Ft.attn_gate == AttnGate::output_gate ? GateForm::twice_sigmoid : GateForm::sigmoid; }
  static constexpr float gate_scale() { return Ft.attn_gate == AttnGate::sparse ? Ft.sparse_gate_scale : 1.0f; }

  // ----------------------------------------------------------------------------- forward
  void forward(const float* P, const nv_bf16* W, const std::int32_t* ids) {
    embed_forward(P, W, ids);
    const float* x = x0_;
    for (int l = 0; l < L; ++l) x = block_forward(l, P, W, ids, x);
    const std::int64_t n = batch_ * seq_;
    final_in_ = x;
    rmsnorm_forward<D, nv_bf16>(hf_, rstdf_, x, 1.0f, n, stream_);                                  // (N, D) bf16
    gemm_.linear_forward(logits_, OutType::bf16, hf_, W + Layout::head_offset(), n, D, V, stream_);  // (N, V) raw z
  }

  // cpu::Gpt::embed_forward: e = tok_emb[ids] (+ hash embedding), smear, RMSNorm → x0.
  void embed_forward(const float* P, const nv_bf16* W, const std::int32_t* ids) {
    const std::int64_t n = batch_ * seq_;
    embedding_forward<D>(emb_, P + Layout::tok_emb, ids, n, stream_);  // e = tok_emb[ids]      (N, D)
    if constexpr (kHash) {
      if constexpr (kEngram) {
        engram_indices(hash_idx_, ids, batch_, seq_, Ft.hash_buckets, Ft.engram_orders, stream_);
      } else {
        bigram_hash_indices(hash_idx_, ids, batch_, seq_, Ft.hash_buckets, stream_, Ft.bigram_start);
      }
      embedding_forward<kHashDim>(hash_rows_, P + Layout::offset(GP::hash_embed), hash_idx_, n * kHashSlots, stream_);  // (N, concat)
      convert(hash_rows16_, hash_rows_, n * kHashConcat, stream_);
      if constexpr (Dm::hash_proj) {
        gemm_.linear_forward(hash_z_, OutType::bf16, hash_rows16_, W + Layout::offset(GP::hash_proj), n, kHashConcat, D, stream_);  // (N, D)
      }
      const nv_bf16* z = Dm::hash_proj ? hash_z_ : hash_rows16_;
      if constexpr (kEngram) {
        sigmoid_gated_add_forward<D>(emb_, z, P + Layout::offset(GP::hash_gate), n, stream_);  // e += σ(gate) ⊙ z
      } else {
        scalar_scaled_add_forward<D>(emb_, z, P + Layout::offset(GP::hash_scale), n, stream_);  // e += scale · z
      }
    }
    const float* e = emb_;
    if constexpr (kSmear) smear_blocked_mask(blocked_, ids, batch_, seq_, Ft.smear_bos_fix, C.bos_id, stream_);
    if constexpr (Ft.smear == SmearGate::pre_norm) {
      smear_forward<D>(smeared_, e, P + Layout::offset(GP::smear_gate), blocked_, n, false, stream_);
      e = smeared_;
    } else if constexpr (Ft.smear == SmearGate::input_gated) {
      smear_input_forward<D, kSmearWin>(smeared_, smear_z_, e, P + Layout::offset(GP::smear_gate), P + Layout::offset(GP::smear_lambda),
                                        blocked_, n, stream_);
      e = smeared_;
    }
    if constexpr (Ft.smear == SmearGate::post_norm) {
      rmsnorm_forward<D, float>(xn_, rstd0_, e, 1.0f, n, stream_);
      smear_forward<D>(x0_, xn_, P + Layout::offset(GP::smear_gate), blocked_, n, true, stream_);
    } else {
      rmsnorm_forward<D, float>(x0_, rstd0_, e, 1.0f, n, stream_);  // x0 = rms_norm(e)      (N, D)
    }
  }

  // cpu::Gpt::ve_forward: ve_base = scale · proj(ve_embed[ids])   (N, KvD) fp32
  void ve_forward(const float* P, const nv_bf16* W, const std::int32_t* ids) {
    const std::int64_t n = batch_ * seq_;
    embedding_forward<kVeDim>(ve_rows_, P + Layout::offset(GP::ve_embed), ids, n, stream_);  // (N, ve_dim)
    convert(ve_rows16_, ve_rows_, n * kVeDim, stream_);
    if constexpr (Dm::ve_proj) {
      gemm_.linear_forward(ve_z_, OutType::bf16, ve_rows16_, W + Layout::offset(GP::ve_proj), n, kVeDim, KvD, stream_);
    }
    scale_by(ve_base_, P + Layout::offset(GP::ve_scale), Dm::ve_proj ? ve_z_ : ve_rows16_, n * KvD, stream_);
  }

  const float* block_forward(int l, const float* P, const nv_bf16* W, const std::int32_t* ids, const float* x) {
    const std::int64_t n = batch_ * seq_;
    Acts& a = acts_[l];
    auto Pw = [&](BP b) { return P + Layout::offset(l, b); };
    auto Ww = [&](BP b) { return W + Layout::offset(l, b); };
    const float f = ln_factor(l);
    if (const int s = skip_index(l); s >= 0) {
      const float* skip = acts_[Dm::n_enc - 1 - s].x_out;
      const float* w = P + Layout::skip_weights + s * D;
      if constexpr (kGatedSkip) {
        gated_skip_forward<D>(a.x_in, x, skip, w, P + Layout::offset(GP::skip_gates) + s * D, n, stream_);
      } else {
        scaled_add_forward<D, float>(a.x_in, x, skip, w, n, stream_);  // x += skip_weights[s] ⊙ skips.pop()
      }
      a.x_prev = x;
      x = a.x_in;
    }
    a.input = x;
    resid_mix_rmsnorm_forward<D>(a.x_mix, a.h_attn, a.rstd_attn, x, x0_, Pw(BP::resid_mix), f, n, stream_);
    gemm_.linear_forward(a.qkv, OutType::bf16, a.h_attn, Ww(BP::c_q), n, D, Q, stream_);  // (N, Q) = [q_raw | k_raw | v]
    qk_norm_rope_forward<H, Hkv, Hd, Rd>(a.q, a.k, a.q_rstd, a.k_rstd, a.qkv, Q, Pw(BP::q_gain), rope_, batch_, seq_, stream_);
    // Values: the c_v output in place, or (value embedding / value residual) a packed buffer.
    const nv_bf16* v_lin = a.qkv + D + KvD;
    a.v = v_lin;
    a.ldv = Q;
    if (packed_v_lin(l)) {
      copy_rows(a.v_lin, KvD, v_lin, Q, n, KvD, false, stream_);
      v_lin = a.v_lin;
      a.v = v_lin;
      a.ldv = KvD;
    }
    if constexpr (kVe) {
      if (ve(l)) {
        if (l == first_ve_layer()) ve_forward(P, W, ids);
        add_scaled(a.v_pre, a.v, Pw(BP::ve_layer_scale), ScalarMap::identity, ve_base_, n * KvD, stream_);  // v + s_l · ve_base
        a.v = a.v_pre;
      }
    }
    if constexpr (kVrLambda) {
      if (l == 0) {
        v0_ = a.v;  // layer 0's values (after its value embedding) are v0
      } else {
        a.v_premix = a.v;
        axpby(a.v_own, Pw(BP::vr_lambda), v0_, Pw(BP::vr_lambda) + 1, a.v, n * KvD, stream_);  // λ0 · v0 + λ1 · v
        a.v = a.v_own;
      }
    }
    if constexpr (kVrAlpha) {
      if (l == 0) {
        v0_ = a.v_lin;  // layer 0's raw c_v output
      } else {
        add_scaled(a.v_own, a.v, Pw(BP::vrl_alpha), ScalarMap::sigmoid, v0_, n * KvD, stream_);  // v + σ(α) · v0
        a.v = a.v_own;
      }
    }
    attention_forward<H, Hkv, Hd>(a.y_attn, D, a.lse, a.q, D, a.k, KvD, a.v, a.ldv, batch_, seq_, stream_);  // (N, D)
    const nv_bf16* y = a.y_attn;
    if (xsa(l)) {
      xsa_forward<H, Hkv, Hd>(a.y_xsa, y, a.v, a.ldv, n, stream_);
      y = a.y_xsa;
    }
    if constexpr (kGate) {
      const float* bias = Ft.attn_gate == AttnGate::headwise_bias ? Pw(BP::gate_bias) : nullptr;
      head_gate_forward<D, H, Hd, kGateWin>(a.y_gated, a.gate_z, y, a.h_attn, Pw(BP::gate_weight), bias, gate_scale(), gate_form(), n, stream_);
      a.y_gate_in = y;
      y = a.y_gated;
    }
    a.y = y;
    gemm_.linear_forward(a.attn_out, OutType::bf16, y, Ww(BP::attn_proj), n, D, D, stream_);
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
    zero(gx0_, n * D);
    if constexpr (kGatedSkip) {  // the gated skip's backward adds into its d skip
      for (int s = 0; s < Dm::n_skip; ++s) zero(gskip_[s], n * D);
    }
    if constexpr (kVe) zero(gve_base_, n * KvD);
    if constexpr (kVr) zero(gv0_, n * KvD);
    for (int l = L - 1; l >= 0; --l) block_backward(l, P, W, G);
    add_into(gx0_, gx_, n * D, stream_);  // layer 0's input is x0 itself
    embed_backward(P, W, G);
  }

  // cpu::Gpt::embed_backward: from d x0 (gx0_) to the embedding tables.
  void embed_backward(const float* P, const nv_bf16* W, float* G) {
    const std::int64_t n = batch_ * seq_;
    float* de = nullptr;  // d e, the gradient of tok_emb[ids] (+ hash embedding)
    if constexpr (Ft.smear == SmearGate::post_norm) {
      smear_backward<D>(gtmp_, G + Layout::offset(GP::smear_gate), gx0_, xn_, P + Layout::offset(GP::smear_gate), blocked_, n, true,
                        reinterpret_cast<float*>(feat_scratch_), stream_);
      rmsnorm_backward<D>(gx0_, gtmp_, emb_, rstd0_, 1.0f, n, false, stream_);
      de = gx0_;
    } else if constexpr (kSmearPre) {
      rmsnorm_backward<D>(gtmp_, gx0_, smeared_, rstd0_, 1.0f, n, false, stream_);  // d smeared
      if constexpr (Ft.smear == SmearGate::pre_norm) {
        smear_backward<D>(gx0_, G + Layout::offset(GP::smear_gate), gtmp_, emb_, P + Layout::offset(GP::smear_gate), blocked_, n, false,
                          reinterpret_cast<float*>(feat_scratch_), stream_);
      } else {
        smear_input_backward<D, kSmearWin>(gx0_, G + Layout::offset(GP::smear_gate), G + Layout::offset(GP::smear_lambda), gtmp_, emb_, smear_z_,
                                           P + Layout::offset(GP::smear_gate), P + Layout::offset(GP::smear_lambda), blocked_, n,
                                           feat_scratch_, stream_);
      }
      de = gx0_;
    } else {
      rmsnorm_backward<D>(gtmp_, gx0_, emb_, rstd0_, 1.0f, n, false, stream_);
      de = gtmp_;
    }
    if constexpr (kHash) {
      const nv_bf16* z = Dm::hash_proj ? hash_z_ : hash_rows16_;
      if constexpr (kEngram) {
        sigmoid_gated_add_backward<D>(hash_dz_, G + Layout::offset(GP::hash_gate), de, z, P + Layout::offset(GP::hash_gate), n,
                                      reinterpret_cast<float*>(feat_scratch_), stream_);
      } else {
        scalar_scaled_add_backward<D>(hash_dz_, G + Layout::offset(GP::hash_scale), de, z, P + Layout::offset(GP::hash_scale), n,
                                      feat_scratch_, stream_);
      }
      if constexpr (Dm::hash_proj) {
        gemm_.linear_backward_weight(G + Layout::offset(GP::hash_proj), hash_dz_, hash_rows16_, n, kHashConcat, D, stream_);
        gemm_.linear_backward_input(ghash_rows_, OutType::f32, hash_dz_, W + Layout::offset(GP::hash_proj), n, kHashConcat, D, false, stream_);
      } else {
        convert(ghash_rows_, hash_dz_, n * kHashConcat, stream_);
      }
      embedding_backward<kHashDim>(G + Layout::offset(GP::hash_embed), ghash_rows_, *hash_plan_, stream_);
    }
    embedding_backward<D>(G + Layout::tok_emb, de, *embed_plan_, stream_);
    if constexpr (kVe) ve_backward(P, W, G);
  }

  // cpu::Gpt::ve_backward: from d ve_base (gve_base_) to ve_shared.{scale, proj, embed}.
  void ve_backward(const float* P, const nv_bf16* W, float* G) {
    const std::int64_t n = batch_ * seq_;
    const nv_bf16* z = Dm::ve_proj ? ve_z_ : ve_rows16_;
    dot_add(G + Layout::offset(GP::ve_scale), gve_base_, z, n * KvD, nullptr, ScalarMap::identity, feat_scratch_, stream_);
    scale_by(ve_dz_, P + Layout::offset(GP::ve_scale), gve_base_, n * KvD, stream_);  // d z = scale · d ve_base   (bf16)
    if constexpr (Dm::ve_proj) {
      gemm_.linear_backward_weight(G + Layout::offset(GP::ve_proj), ve_dz_, ve_rows16_, n, kVeDim, KvD, stream_);
      gemm_.linear_backward_input(gve_rows_, OutType::f32, ve_dz_, W + Layout::offset(GP::ve_proj), n, kVeDim, KvD, false, stream_);
    } else {
      convert(gve_rows_, ve_dz_, n * kVeDim, stream_);
    }
    embedding_backward<kVeDim>(G + Layout::offset(GP::ve_embed), gve_rows_, *embed_plan_, stream_);  // same ids as tok_emb
  }

  // gx_ holds d x_out(l) on entry and d x_in(l) on exit (cpu::Gpt::block_backward).
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
    if constexpr (kGate) {  // dy becomes d (gate input); the gate's d h_attn goes to gh_
      zero(gh_, n * D);
      float* gbias = Ft.attn_gate == AttnGate::headwise_bias ? Gw(BP::gate_bias) : nullptr;
      head_gate_backward<D, H, Hd, kGateWin>(dy_, gh_, Gw(BP::gate_weight), gbias, dy_, a.y_gate_in, a.gate_z, a.h_attn, Pw(BP::gate_weight),
                                             gate_scale(), gate_form(), n, feat_scratch_, stream_);
    }
    const bool chain = value_chain(l);
    if (xsa(l)) {  // XSA adds its d v into gv first (zeroed); without XSA the copy below writes gv
      zero(gv_, n * KvD);
      xsa_backward<H, Hkv, Hd>(dy_, gv_, dy_, a.y_attn, a.v, a.ldv, n, stream_);  // dy becomes d y_attn; gv += d v
    }
    // Attention: without a value chain, dv goes straight into d_qkv's v columns.
    nv_bf16* dv = chain ? dv_attn_ : dqkv_ + D + KvD;
    const std::int64_t lddv = chain ? KvD : Q;
    attention_backward<H, Hkv, Hd>(dq_, D, dk_, KvD, dv, lddv, dy_, D, a.y_attn, D, a.lse, a.q, D, a.k, KvD, a.v, a.ldv, batch_, seq_,
                                   attn_scratch_, stream_);
    qk_norm_rope_backward<H, Hkv, Hd, Rd>(dqkv_, Q, Gw(BP::q_gain), dq_, dk_, a.qkv, Q, a.q_rstd, a.k_rstd, Pw(BP::q_gain), rope_, batch_,
                                          seq_, partials_, stream_);
    if (chain) {
      copy_rows(gv_, KvD, dv_attn_, KvD, n, KvD, xsa(l), stream_);  // gv (+)= d v (the values attention and XSA read)
      value_chain_backward(l, P, G);                               // gv becomes d v_lin
      copy_rows(dqkv_ + D + KvD, Q, gv_, KvD, n, KvD, false, stream_);
    }
    gemm_.linear_backward_weight(Gw(BP::c_q), dqkv_, a.h_attn, n, D, Q, stream_);  // c_q|c_k|c_v at once
    // d h_attn: with a gate, added onto the gate's d h (beta = 1), saving a pass over (N, D) fp32.
    float* dh_attn = kGate ? gh_ : gtmp_;
    gemm_.linear_backward_input(dh_attn, OutType::f32, dqkv_, Ww(BP::c_q), n, D, Q, kGate, stream_);
    rmsnorm_backward<D>(gx_, dh_attn, a.x_mix, a.rstd_attn, f, n, true, stream_);  // gx = d x_mix
    // x_mix = m0 ⊙ x_in + m1 ⊙ x0; gx becomes d x_in.
    resid_mix_backward<D>(gx_, gx0_, Gw(BP::resid_mix), gx_, a.input, x0_, Pw(BP::resid_mix), n, partials_, stream_);
    if (const int s = skip_index(l); s >= 0) {
      const int enc = Dm::n_enc - 1 - s;
      const float* w = P + Layout::skip_weights + s * D;
      float* gw = G + Layout::skip_weights + s * D;
      if constexpr (kGatedSkip) {
        gated_skip_backward<D>(gx_, gskip_[enc], gw, G + Layout::offset(GP::skip_gates) + s * D, gx_, a.x_prev, acts_[enc].x_out, w,
                               P + Layout::offset(GP::skip_gates) + s * D, n, reinterpret_cast<float*>(feat_scratch_), stream_);
      } else {  // x_in = x_prev + w ⊙ skip: d skip = w ⊙ gx, d x_prev = gx
        scaled_add_backward<D, float, float>(gskip_[enc], gw, gx_, acts_[enc].x_out, w, n, false, partials_, stream_);
      }
    }
  }

  // The values' gradient back through the value residual and the value embedding, in the CPU
  // model's order: gv_ holds d v on entry and d v_lin (the c_v output) on exit.
  void value_chain_backward(int l, const float* P, float* G) {
    const std::int64_t count = batch_ * seq_ * KvD;
    const Acts& a = acts_[l];
    auto Pw = [&](BP b) { return P + Layout::offset(l, b); };
    auto Gw = [&](BP b) { return G + Layout::offset(l, b); };
    if constexpr (kVrAlpha) {
      if (l > 0) {  // v = v_pre + σ(α) · v0
        dot_add(Gw(BP::vrl_alpha), gv_, v0_, count, Pw(BP::vrl_alpha), ScalarMap::sigmoid, feat_scratch_, stream_);
        add_scaled(gv0_, gv0_, Pw(BP::vrl_alpha), ScalarMap::sigmoid, gv_, count, stream_);
      }
    }
    if constexpr (kVrLambda) {
      if (l > 0) {  // v = λ0 · v0 + λ1 · v_premix
        dot_add(Gw(BP::vr_lambda), gv_, v0_, count, nullptr, ScalarMap::identity, feat_scratch_, stream_);
        dot_add(Gw(BP::vr_lambda) + 1, gv_, a.v_premix, count, nullptr, ScalarMap::identity, feat_scratch_, stream_);
        add_scaled(gv0_, gv0_, Pw(BP::vr_lambda), ScalarMap::identity, gv_, count, stream_);
        scale_by(gv_, Pw(BP::vr_lambda) + 1, gv_, count, stream_);
      } else {
        add_into(gv_, gv0_, count, stream_);  // v0 is layer 0's values
      }
    }
    if constexpr (kVe) {
      if (ve(l)) {  // v = v_lin + s_l · ve_base
        dot_add(Gw(BP::ve_layer_scale), gv_, ve_base_, count, nullptr, ScalarMap::identity, feat_scratch_, stream_);
        add_scaled(gve_base_, gve_base_, Pw(BP::ve_layer_scale), ScalarMap::identity, gv_, count, stream_);
      }
    }
    if constexpr (kVrAlpha) {
      if (l == 0) add_into(gv_, gv0_, count, stream_);  // v0 is layer 0's raw c_v output
    }
  }

  void zero(float* p, std::int64_t count) { PGOLF_CUDA_CHECK(cudaMemsetAsync(p, 0, sizeof(float) * count, stream_)); }

  // ----------------------------------------------------------------------------- memory
  struct Acts {
    const float* input = nullptr;   // x_in: own buffer for skip layers, else the previous output
    const float* x_prev = nullptr;  // skip layers: the input before the skip was added
    float* x_in = nullptr;          // (N, D) skip layers only
    float *x_mix = nullptr, *x_mid = nullptr, *x_out = nullptr;  // (N, D) fp32 residual stream
    float *rstd_attn = nullptr, *rstd_mlp = nullptr;             // (N)
    nv_bf16 *h_attn = nullptr, *h_mlp = nullptr;                 // (N, D) normed GEMM inputs
    nv_bf16* qkv = nullptr;                                      // (N, Q)
    nv_bf16 *q = nullptr, *k = nullptr;                          // (N, D), (N, KvD) normed, rotated, q scaled by q_gain
    float *q_rstd = nullptr, *k_rstd = nullptr;                  // (N, H), (N, Hkv)
    // Values attention reads: the c_v columns of qkv (row stride Q) or a packed buffer (KvD).
    const nv_bf16* v = nullptr;
    std::int64_t ldv = 0;
    nv_bf16* v_lin = nullptr;           // (N, KvD) packed c_v output (value chain layers)
    nv_bf16* v_pre = nullptr;           // (N, KvD) + value embedding
    nv_bf16* v_own = nullptr;           // (N, KvD) after the value residual
    const nv_bf16* v_premix = nullptr;  // lambda_mix: the values before the mix
    nv_bf16* y_attn = nullptr;          // (N, D) attention output
    float* lse = nullptr;               // (B, H, T)
    nv_bf16* y_xsa = nullptr;           // (N, D) XSA layers
    nv_bf16* y_gated = nullptr;         // (N, D) attention gates
    const nv_bf16* y_gate_in = nullptr;
    float* gate_z = nullptr;            // (N, H)
    const nv_bf16* y = nullptr;         // the input of attn.proj
    nv_bf16 *attn_out = nullptr, *mlp_out = nullptr;  // (N, D) branch outputs
    nv_bf16 *u = nullptr, *r = nullptr;               // (N, F) MLP pre/post activation
  };

  // Carves every buffer for n tokens out of the arena (measure pass, allocate, assign pass).
  void reserve(std::int64_t n) {
    PGOLF_CHECK(n >= 1, "empty batch");
    if (n <= capacity_) return;
    // Work queued on the stream may still use the old arena and plans (cudaFree synchronises the
    // device too; this makes the ordering explicit and surfaces an earlier asynchronous error here).
    if (capacity_ > 0) PGOLF_CUDA_CHECK(cudaStreamSynchronize(stream_));
    arena_.release();
    capacity_ = 0;  // until the new arena and plans exist (an allocation failure leaves no stale pointers in use)
    embed_plan_.reset();
    hash_plan_.reset();
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
        a.v_lin = packed_v_lin(l) ? arena_.take<nv_bf16>(n * KvD) : nullptr;
        a.v_pre = kVe && ve(l) ? arena_.take<nv_bf16>(n * KvD) : nullptr;
        a.v_own = kVr && l > 0 ? arena_.take<nv_bf16>(n * KvD) : nullptr;
        a.y_attn = arena_.take<nv_bf16>(n * D);
        a.lse = arena_.take<float>(n * H);
        a.y_xsa = xsa(l) ? arena_.take<nv_bf16>(n * D) : nullptr;
        a.y_gated = kGate ? arena_.take<nv_bf16>(n * D) : nullptr;
        a.gate_z = kGate ? arena_.take<float>(n * H) : nullptr;
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
      partials_ = arena_.take<float>(std::max(column_partials_size(n, 2 * D), qk_norm_rope_scratch_size<H>(n)));
      sum_scratch_ = arena_.take<double>(sum_scratch_size(n));
      loss_sum_ = arena_.take<double>(1);
      attn_scratch_ = arena_.take<std::uint8_t>(static_cast<std::int64_t>(attention_backward_scratch_bytes<H, Hkv, Hd>(1, n)));
      // Features (nothing when off).
      const bool any_chain = [] {
        for (int l = 0; l < L; ++l) {
          if (value_chain(l)) return true;
        }
        return false;
      }();
      if (any_chain) {
        gv_ = arena_.take<float>(n * KvD);
        dv_attn_ = arena_.take<nv_bf16>(n * KvD);
      }
      if (kVr) gv0_ = arena_.take<float>(n * KvD);
      if (kGate) gh_ = arena_.take<float>(n * D);
      if (kHash) {
        hash_idx_ = arena_.take<std::int32_t>(n * kHashSlots);
        hash_rows_ = arena_.take<float>(n * kHashConcat);
        hash_rows16_ = arena_.take<nv_bf16>(n * kHashConcat);
        hash_z_ = Dm::hash_proj ? arena_.take<nv_bf16>(n * D) : nullptr;
        hash_dz_ = arena_.take<nv_bf16>(n * D);
        ghash_rows_ = arena_.take<float>(n * kHashConcat);
      }
      if (kSmear) blocked_ = arena_.take<std::uint8_t>(n);
      if (kSmearPre) smeared_ = arena_.take<float>(n * D);
      if (Ft.smear == SmearGate::input_gated) smear_z_ = arena_.take<float>(n);
      if (Ft.smear == SmearGate::post_norm) xn_ = arena_.take<float>(n * D);
      if (kVe) {
        ve_rows_ = arena_.take<float>(n * kVeDim);
        ve_rows16_ = arena_.take<nv_bf16>(n * kVeDim);
        ve_z_ = Dm::ve_proj ? arena_.take<nv_bf16>(n * KvD) : nullptr;
        ve_base_ = arena_.take<float>(n * KvD);
        gve_base_ = arena_.take<float>(n * KvD);
        ve_dz_ = arena_.take<nv_bf16>(n * KvD);
        gve_rows_ = arena_.take<float>(n * kVeDim);
      }
      feat_scratch_ = arena_.take<std::uint8_t>(static_cast<std::int64_t>(feature_scratch_bytes(n)));
    };
    carve();
    const std::string what = "activations of " + describe(C) + " for " + std::to_string(n) + " tokens";
    arena_.allocate(what.c_str());
    carve();
    embed_plan_ = std::make_unique<EmbeddingGradPlan>(n, V);
    if constexpr (kHash) hash_plan_ = std::make_unique<EmbeddingGradPlan>(n * kHashSlots, Dm::hash_rows);
    capacity_ = n;
  }

  // The largest scratch any feature kernel of this configuration needs for n tokens (bytes).
  static std::size_t feature_scratch_bytes(std::int64_t n) {
    std::size_t bytes = 8;
    auto need = [&](std::size_t b) { bytes = std::max(bytes, b); };
    if constexpr (kHash || kSmear || kGatedSkip) need(embedding_features_scratch_bytes<D, kSmearWin>(n));
    if constexpr (kGate) need(static_cast<std::size_t>(head_gate_backward_scratch_bytes<H, kGateWin>(n)));
    if constexpr (kVe || kVr) need(static_cast<std::size_t>(dot_add_scratch_bytes(n * KvD)));
    return bytes;
  }

  GemmEngine& gemm_;
  cudaStream_t stream_;
  DeviceRopeTables rope_;
  DeviceArena arena_;
  std::unique_ptr<EmbeddingGradPlan> embed_plan_, hash_plan_;
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
  // Features' buffers (null when the feature is off).
  float *gv_ = nullptr, *gv0_ = nullptr, *gh_ = nullptr;
  nv_bf16* dv_attn_ = nullptr;
  const nv_bf16* v0_ = nullptr;
  std::int32_t* hash_idx_ = nullptr;
  float *hash_rows_ = nullptr, *ghash_rows_ = nullptr;
  nv_bf16 *hash_rows16_ = nullptr, *hash_z_ = nullptr, *hash_dz_ = nullptr;
  std::uint8_t* blocked_ = nullptr;
  float *smeared_ = nullptr, *smear_z_ = nullptr, *xn_ = nullptr;
  float *ve_rows_ = nullptr, *ve_base_ = nullptr, *gve_base_ = nullptr, *gve_rows_ = nullptr;
  nv_bf16 *ve_rows16_ = nullptr, *ve_z_ = nullptr, *ve_dz_ = nullptr;
  std::uint8_t* feat_scratch_ = nullptr;
};

}  // namespace pgolf::cuda
