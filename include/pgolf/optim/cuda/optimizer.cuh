// The reference's optimizer split on the GPU (§1.6): Muon for ParamRole::matrix, fused Adam for
// every other tensor, optional global-norm clipping and decoupled weight decay — the same step as
// the CPU's Optimizer<C> (optim/optimizer.hpp), on the flat fp32 parameter and gradient buffers.
//
//   clipping  (grad_clip_norm > 0) deterministic fp64 Σg² (ops/cuda/reduce.cuh) → a one-thread
//             kernel forms the norm and coef = max_norm/(norm + 1e-6), used as float(coef) when < 1
//             (else 1), exactly the CPU's rule. The coefficient stays on the device: the Adam and
//             Muon kernels multiply each gradient by it as they read it (g·1 = g when no clipping
//             happens), so there is no host synchronisation and no extra pass over the gradients.
//   Adam      one kernel over every Adam tensor; see kernels::adam_step below.
//   Muon      NewtonSchulzBatch (optim/cuda/newton_schulz.cuh): momentum + bf16 orientation,
//             deterministic per-matrix norms, batched bf16 NS5 GEMMs, the update applied in place.
//
// Deliberate differences from the CPU, the reference's dtypes (§1.5):
//   - tok_emb.weight is a bf16 tensor in the reference (nn.Embedding stays bf16 after
//     .bfloat16(); only CastedLinear weights and low-dimensional/control tensors go back to fp32),
//     and so are the records' other nn.Embedding tables (BigramHash's and EngramLite's
//     `*.embed.weight`, the value embedding's: held_in_bf16_by_reference in ParamLayout),
//     so their gradients, exp_avg and exp_avg_sq are bf16 too and torch's fused Adam loads them as bf16,
//     computes in fp32 and stores bf16. With CudaOptimizerOptions::bf16_embedding_storage (default)
//     the Adam kernel rounds (to nearest even) g, p, m, v as it loads them and p, m, v as it stores
//     them, the new p computed from the fp32 m and v (the stored ones are rounded afterwards, as in
//     torch's registers-then-store kernel). With clipping on, these gradients are rounded to bf16
//     in place before the norm (the reference's norm sees the bf16 gradients); torch rounds each such
//     tensor's own norm to bf16 too (_foreach_norm on a bf16 tensor), which is not reproduced.
//     The parameter buffer stays fp32: after a step the embedding values are bf16-representable.
//   - Newton–Schulz runs in bf16 only (NsPrecision::fp32 is a CPU extra: the constructor rejects
//     it), rounding where the reference's bf16 ops round in eager mode (newton_schulz.cuh; the GEMMs' summation order differs).
#pragma once

#if !defined(__CUDACC__)
#error "pgolf/optim/cuda/optimizer.cuh is for CUDA translation units"
#endif

#include <cmath>
#include <cstdint>
#include <vector>

#include "pgolf/core/cuda_runtime.cuh"
#include "pgolf/core/error.hpp"
#include "pgolf/model/param_layout.hpp"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/gemm.cuh"
#include "pgolf/ops/cuda/reduce.cuh"
#include "pgolf/optim/cuda/newton_schulz.cuh"
#include "pgolf/optim/optimizer.hpp"

namespace pgolf::cuda {

// GPU-only choices (the CPU optimizer has no counterpart).
struct CudaOptimizerOptions {
  // The embedding tables' Adam update with the reference's bf16 storage of p, g, m, v (see above).
  // Off: every Adam tensor is fp32, exactly the CPU optimizer (parity tests).
  bool bf16_embedding_storage = true;
};

// A contiguous run of one Adam tensor, at most kAdamChunk elements: one block each.
struct AdamChunk {
  std::int64_t begin = 0;   // flat offset
  std::int32_t count = 0;   // elements
  std::uint8_t role = 0;    // ParamRole: selects the step size and decay
  std::uint8_t bf16 = 0;    // the tensor is stored in bf16 by the reference
};

// Per-step scalars, computed on the host exactly as the CPU does (double, then float).
struct AdamScalars {
  float step_size[4];  // float(lr / (1 − β1^t)) per ParamRole
  float decay[4];      // float(1 − lr·wd) per ParamRole
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float bc2_sqrt;      // float(√(1 − β2^t))
  float eps;
};

inline constexpr int kAdamThreads = 256;
inline constexpr std::int32_t kAdamChunk = kAdamThreads * 16;

namespace kernels {

// Blocks map to chunks through a table built once on the host (a tensor of n elements gives
// ⌈n / kAdamChunk⌉ chunks), instead of a grid-stride loop with a per-element segment search: no
// search, every block's role and storage type are uniform (no divergence), small tensors (the
// many per-layer vectors) get a block each, and the launch is one kernel for all Adam tensors.
// The arithmetic is the CPU's expression for expression (fp32; nvcc may contract a·b + c into an
// FMA where g++ does too or does not: results agree to an ulp, not always bit for bit).
template <int = 0>  // a template, so that every translation unit may instantiate it (no ODR clash)
__global__ void __launch_bounds__(kAdamThreads) adam_step(float* __restrict__ P, const float* __restrict__ G, float* __restrict__ Mom,
                                                          float* __restrict__ Var, const AdamChunk* __restrict__ chunks, AdamScalars s,
                                                          const float* __restrict__ clip_coef) {
  const AdamChunk ch = chunks[blockIdx.x];
  const float coef = clip_coef ? *clip_coef : 1.0f;
  const float step_size = s.step_size[ch.role], decay = s.decay[ch.role];
  if (ch.bf16) {
    for (std::int32_t k = static_cast<std::int32_t>(threadIdx.x); k < ch.count; k += kAdamThreads) {
      const std::int64_t i = ch.begin + k;
      const float g = round_bf16(round_bf16(G[i]) * coef);  // bf16 grad; clip_grad_norm_ multiplies it in place
      const float p = round_bf16(P[i]), m0 = round_bf16(Mom[i]), v0 = round_bf16(Var[i]);
      const float m = s.beta1 * m0 + s.one_minus_beta1 * g;
      const float v = s.beta2 * v0 + s.one_minus_beta2 * g * g;
      const float denom = sqrtf(v) / s.bc2_sqrt + s.eps;
      P[i] = round_bf16(p * decay - step_size * m / denom);
      Mom[i] = round_bf16(m);
      Var[i] = round_bf16(v);
    }
  } else {
    for (std::int32_t k = static_cast<std::int32_t>(threadIdx.x); k < ch.count; k += kAdamThreads) {
      const std::int64_t i = ch.begin + k;
      const float g = G[i] * coef;
      const float m = s.beta1 * Mom[i] + s.one_minus_beta1 * g;
      const float v = s.beta2 * Var[i] + s.one_minus_beta2 * g * g;
      const float denom = sqrtf(v) / s.bc2_sqrt + s.eps;
      Mom[i] = m;
      Var[i] = v;
      P[i] = P[i] * decay - step_size * m / denom;
    }
  }
}

// norm = √Σg²; coef = max_norm / (norm + eps), applied (as a float) only when < 1, like the CPU.
template <int = 0>  // a template, so that every translation unit may instantiate it (no ODR clash)
__global__ void clip_coefficient(double* norm, float* coef, const double* sum_squares, double max_norm, double eps) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  const double n = sqrt(*sum_squares);
  *norm = n;
  const double c = max_norm / (n + eps);
  *coef = c < 1.0 ? static_cast<float>(c) : 1.0f;
}

template <int = 0>  // a template, so that every translation unit may instantiate it (no ODR clash)
__global__ void round_bf16_inplace(float* x, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    x[i] = round_bf16(x[i]);
  }
}

}  // namespace kernels

template <ModelConfig C>
class CudaOptimizer {
 public:
  using Layout = ParamLayout<C>;

  // Device-side copy of the state (warm-up snapshot/restore without the host).
  struct Snapshot {
    DeviceBuffer<float> adam_m, adam_v, muon;
    std::int64_t adam_step = 0;
  };

  // Rejects what the GPU backend does not support, before touching the GPU (so that it can be
  // checked, and tested, on machines without one). The constructor calls it first.
  static void check_options(const OptimizerOptions& opt) {
    if (opt.ns_precision == NsPrecision::fp32) {
      PGOLF_FAIL("NS_PRECISION=fp32 is a CPU-only option: the CUDA optimizer runs Muon's Newton-Schulz iteration in bf16, "
                 "as the reference does (use NS_PRECISION=bf16, or the CPU backend)");
    }
    PGOLF_CHECK(opt.muon_backend_steps >= 0, "MUON_BACKEND_STEPS must be non-negative, got " << opt.muon_backend_steps);
    PGOLF_CHECK(opt.grad_clip_norm >= 0, "GRAD_CLIP_NORM must be non-negative (0 = off), got " << opt.grad_clip_norm);
  }

  // Allocates all state and workspaces once and uploads the segment tables (synchronises).
  CudaOptimizer(const OptimizerOptions& opt, GemmEngine& gemm, const CudaOptimizerOptions& cuda_opt = {})
      : opt_(checked(opt)), cuda_opt_(cuda_opt), gemm_(&gemm) {
    const auto specs = Layout::specs();
    std::vector<NsInput> muon;
    std::vector<AdamChunk> chunks;
    for (const ParamSpec& s : specs) {
      if (s.role == ParamRole::matrix) {
        PGOLF_CHECK_EQ(s.rank, 2, "Muon parameter " << s.name());
        muon.push_back(NsInput{s.offset, s.shape[0], s.shape[1]});
        continue;
      }
      const bool bf = cuda_opt_.bf16_embedding_storage && held_in_bf16_by_reference(s);
      if (bf) bf16_tensors_.push_back({s.offset, s.numel()});
      for (std::int64_t b = 0; b < s.numel(); b += kAdamChunk) {
        AdamChunk ch;
        ch.begin = s.offset + b;
        ch.count = static_cast<std::int32_t>(std::min<std::int64_t>(kAdamChunk, s.numel() - b));
        ch.role = static_cast<std::uint8_t>(s.role);
        ch.bf16 = bf ? 1 : 0;
        chunks.push_back(ch);
      }
    }
    adam_chunks_count_ = chunks.size();
    if (!chunks.empty()) adam_chunks_ = to_device<AdamChunk>(chunks, "Adam chunk table");
    ns_ = NewtonSchulzBatch(muon);
    const auto total = static_cast<std::size_t>(Layout::total);
    adam_m_ = DeviceBuffer<float>(total, "Adam exp_avg");
    adam_v_ = DeviceBuffer<float>(total, "Adam exp_avg_sq");
    muon_ = DeviceBuffer<float>(total, "Muon momentum");
    adam_m_.zero();
    adam_v_.zero();
    muon_.zero();
    if (opt_.grad_clip_norm > 0) {
      sum_scratch_ = DeviceBuffer<double>(static_cast<std::size_t>(std::max<std::int64_t>(1, sum_scratch_size(Layout::total))),
                                          "gradient norm partials");
      norm_ = DeviceBuffer<double>(2, "gradient norm");  // [0] Σg², [1] ‖g‖
      coef_ = DeviceBuffer<float>(1, "clip coefficient");
      norm_.zero();
    }
    PGOLF_CUDA_CHECK(cudaDeviceSynchronize());  // the zeroing ran on the legacy stream; steps may use any
  }

  CudaOptimizer(const CudaOptimizer&) = delete;
  CudaOptimizer& operator=(const CudaOptimizer&) = delete;

  const OptimizerOptions& options() const { return opt_; }
  const CudaOptimizerOptions& cuda_options() const { return cuda_opt_; }
  double base_lr(ParamRole role) const { return ::pgolf::base_lr(opt_, role, Dims<C>::tied); }
  const NewtonSchulzBatch& newton_schulz() const { return ns_; }

  // One optimizer step over the flat device buffers (ParamLayout<C>::total floats each): exactly
  // Optimizer<C>::step (with the differences above). lr_mul scales every base LR; muon_momentum is
  // this step's μ. Gradients may be modified (the bf16 embedding gradients, when clipping). No host
  // synchronisation.
  void step(float* params, float* grads, double lr_mul, double muon_momentum, cudaStream_t stream) {
    const float* clip = nullptr;
    if (opt_.grad_clip_norm > 0) {
      for (const auto& t : bf16_tensors_) {
        kernels::round_bf16_inplace<><<<grid_for(t.numel, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(grads + t.offset, t.numel);
        PGOLF_CUDA_LAUNCH_CHECK();
      }
      sum_squares(norm_.data(), grads, Layout::total, sum_scratch_.data(), false, stream);
      kernels::clip_coefficient<><<<1, 1, 0, stream>>>(norm_.data() + 1, coef_.data(), norm_.data(), opt_.grad_clip_norm, kClipNormEps);
      PGOLF_CUDA_LAUNCH_CHECK();
      clip = coef_.data();
    }
    ++adam_step_;
    if (adam_chunks_count_ > 0) {
      const double t = static_cast<double>(adam_step_);
      const double bc1 = 1.0 - std::pow(opt_.beta1, t);
      const double bc2_sqrt = std::sqrt(1.0 - std::pow(opt_.beta2, t));
      AdamScalars s{};
      for (int r = 0; r < 4; ++r) {
        const double lr = base_lr(static_cast<ParamRole>(r)) * lr_mul;
        s.step_size[r] = static_cast<float>(lr / bc1);
        s.decay[r] = static_cast<float>(1.0 - lr * opt_.adam_weight_decay);
      }
      s.beta1 = static_cast<float>(opt_.beta1);
      s.beta2 = static_cast<float>(opt_.beta2);
      s.one_minus_beta1 = 1.0f - s.beta1;  // the CPU's (1.0f − b1), in float
      s.one_minus_beta2 = 1.0f - s.beta2;
      s.bc2_sqrt = static_cast<float>(bc2_sqrt);
      s.eps = static_cast<float>(opt_.adam_eps);
      kernels::adam_step<><<<static_cast<unsigned>(adam_chunks_count_), kAdamThreads, 0, stream>>>(
          params, grads, adam_m_.data(), adam_v_.data(), adam_chunks_.data(), s, clip);
      PGOLF_CUDA_LAUNCH_CHECK();
    }
    if (!ns_.empty()) {
      const double lr = base_lr(ParamRole::matrix) * lr_mul;
      ns_.prepare(grads, muon_.data(), static_cast<float>(muon_momentum), clip, stream);
      ns_.iterate(*gemm_, opt_.muon_backend_steps, stream);
      ns_.apply(params, static_cast<float>(lr), static_cast<float>(1.0 - lr * opt_.muon_weight_decay), stream);
    }
  }

  // The gradient norm of the last step (before clipping) when clipping is on, else 0 (as the
  // CPU's step returns). Synchronises the stream (for logging).
  double last_grad_norm(cudaStream_t stream) {
    if (opt_.grad_clip_norm <= 0) return 0.0;
    double n = 0;
    PGOLF_CUDA_CHECK(cudaMemcpyAsync(&n, norm_.data() + 1, sizeof n, cudaMemcpyDeviceToHost, stream));
    PGOLF_CUDA_CHECK(cudaStreamSynchronize(stream));
    return n;
  }

  // State transfer, same layout as the CPU optimizer's OptimizerState. download synchronises;
  // upload returns once the host buffers have been copied (it synchronises too).
  void download(OptimizerState& out, cudaStream_t stream) const {
    const auto total = static_cast<std::size_t>(Layout::total);
    out.adam_m.resize(total);
    out.adam_v.resize(total);
    out.muon.resize(total);
    adam_m_.download(out.adam_m.span(), stream);
    adam_v_.download(out.adam_v.span(), stream);
    muon_.download(out.muon.span(), stream);
    out.adam_step = adam_step_;
  }
  void upload(const OptimizerState& in, cudaStream_t stream) {
    const auto total = static_cast<std::size_t>(Layout::total);
    PGOLF_CHECK_EQ(in.adam_m.size(), total, "optimizer state upload (adam_m)");
    PGOLF_CHECK_EQ(in.adam_v.size(), total, "optimizer state upload (adam_v)");
    PGOLF_CHECK_EQ(in.muon.size(), total, "optimizer state upload (muon)");
    PGOLF_CHECK_GE(in.adam_step, std::int64_t{0}, "optimizer state upload (adam_step)");
    adam_m_.upload(in.adam_m.span(), stream);
    adam_v_.upload(in.adam_v.span(), stream);
    muon_.upload(in.muon.span(), stream);
    PGOLF_CUDA_CHECK(cudaStreamSynchronize(stream));
    adam_step_ = in.adam_step;
  }

  // Device-side copies, ordered on `stream` (no host synchronisation).
  Snapshot snapshot(cudaStream_t stream) const {
    Snapshot s;
    const auto total = static_cast<std::size_t>(Layout::total);
    s.adam_m = DeviceBuffer<float>(total, "optimizer snapshot (adam_m)");
    s.adam_v = DeviceBuffer<float>(total, "optimizer snapshot (adam_v)");
    s.muon = DeviceBuffer<float>(total, "optimizer snapshot (muon)");
    copy(s.adam_m, adam_m_, stream);
    copy(s.adam_v, adam_v_, stream);
    copy(s.muon, muon_, stream);
    s.adam_step = adam_step_;
    return s;
  }
  void restore(const Snapshot& s, cudaStream_t stream) {
    const auto total = static_cast<std::size_t>(Layout::total);
    PGOLF_CHECK(s.adam_m.size() == total && s.adam_v.size() == total && s.muon.size() == total,
                "optimizer snapshot of another configuration (" << s.adam_m.size() << " elements, expected " << total << ")");
    copy(adam_m_, s.adam_m, stream);
    copy(adam_v_, s.adam_v, stream);
    copy(muon_, s.muon, stream);
    adam_step_ = s.adam_step;
  }

  std::int64_t adam_step() const { return adam_step_; }

 private:
  static const OptimizerOptions& checked(const OptimizerOptions& opt) {
    check_options(opt);
    return opt;
  }
  static void copy(DeviceBuffer<float>& dst, const DeviceBuffer<float>& src, cudaStream_t stream) {
    if (src.bytes() > 0) PGOLF_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), src.bytes(), cudaMemcpyDeviceToDevice, stream));
  }

  OptimizerOptions opt_;
  CudaOptimizerOptions cuda_opt_;
  GemmEngine* gemm_;
  std::int64_t adam_step_ = 0;
  struct FlatRange {
    std::int64_t offset = 0, numel = 0;
  };
  std::vector<FlatRange> bf16_tensors_;  // the bf16-stored Adam tensors (the embedding tables)
  std::size_t adam_chunks_count_ = 0;
  DeviceBuffer<AdamChunk> adam_chunks_;
  NewtonSchulzBatch ns_;
  DeviceBuffer<float> adam_m_, adam_v_, muon_;
  DeviceBuffer<double> sum_scratch_, norm_;
  DeviceBuffer<float> coef_;
};

}  // namespace pgolf::cuda
