// The CUDA training backend: the GPU GPT (model/gpt_cuda.cuh), fp32 master weights and their bf16
// copy, fp32 gradients and the optimizer on the device. Implements run::Backend.
//
// Synchronisation: a training step enqueues everything on one stream; step_loss() is the one
// point where the host waits (the log line and the NaN guard need the loss). Evaluation waits for
// each batch's per-token losses. Host copies of the state (read_params, read_optimizer_state) wait
// too; they are for checkpoints and export, not for the step loop.
//
// Initialisation is computed on the host (model/init.hpp, the same values as the CPU backend for
// the same seed) and uploaded; as in the reference, the embedding tables are then held in bf16
// (tok_emb and the records' other nn.Embedding tables — hash and value embeddings,
// held_in_bf16_by_reference — stay bf16 tensors there: `.bfloat16()` is only undone for
// CastedLinear weights and small control tensors), so their values are rounded to bf16 whenever
// they are set (init, write_params) and the optimizer keeps them so.
#pragma once

#if !defined(__CUDACC__)
#error "pgolf/run/cuda_backend.cuh is for CUDA translation units"
#endif

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "pgolf/core/cuda_runtime.cuh"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/core/tensor.hpp"
#include "pgolf/model/gpt_cuda.cuh"
#include "pgolf/model/init.hpp"
#include "pgolf/optim/cuda/optimizer.cuh"
#include "pgolf/run/backend.hpp"

namespace pgolf::run {

// Parameters and gradients exist twice: in the flat ParamLayout<C> (params_, grads_: what the
// optimizer, checkpoints and export use) and in the model's padded DeviceParamLayout<C> (model_params_,
// weights_bf16_, model_grads_: every tensor aligned for the vector kernels and cuBLASLt; see
// gpt_cuda.cuh). refresh_model_weights() copies params_ into the model's fp32 and bf16 buffers after
// every parameter change; flat_grads() copies the model's accumulated gradients into grads_ once per
// optimizer step (not per micro-batch), when something needs them in the flat layout.
template <ModelConfig C>
class CudaBackend final : public Backend {
 public:
  using Layout = ParamLayout<C>;
  using DevLayout = cuda::DeviceParamLayout<C>;
  static constexpr std::int64_t kTotal = Layout::total;
  static constexpr std::int64_t kDevTotal = DevLayout::total;

  explicit CudaBackend(const OptimizerOptions& opt)
      : params_(kTotal, "fp32 master weights"),
        grads_(kTotal, "fp32 gradients"),
        model_params_(kDevTotal, "fp32 master weights (model layout)"),
        weights_bf16_(kDevTotal, "bf16 weights (model layout)"),
        model_grads_(kDevTotal, "fp32 gradients (model layout)"),
        step_loss_(1, "step loss"),
        optimizer_(opt, gemm_),
        model_(gemm_, stream_.get()) {
    params_.zero(stream_.get());
    grads_.zero(stream_.get());
    model_params_.zero(stream_.get());
    weights_bf16_.zero(stream_.get());
    model_grads_.zero(stream_.get());
    step_loss_.zero(stream_.get());
  }

  // Queued work may still read the buffers (staging slots, activations) that the members free.
  ~CudaBackend() override { (void)cudaStreamSynchronize(stream_.get()); }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string device_name() const override {
    int dev = 0;
    PGOLF_CUDA_CHECK(cudaGetDevice(&dev));
    return "cuda:" + std::to_string(dev) + " " + cuda::device_description(dev);
  }

  void init(std::uint64_t seed, const InitOptions& init) override {
    HostBuffer<float> host(kTotal);
    init_params<C>(host.span(), seed, init);
    write_params(host.span());
  }

  void zero_grads() override {
    model_grads_.zero(stream_.get());
    grads_stale_ = true;  // grads_ becomes model_grads_'s zeros when something asks for it
    step_loss_.zero(stream_.get());
  }

  void forward_backward(std::span<const std::int32_t> ids, std::span<const std::int32_t> targets, std::int64_t batch, std::int64_t seq,
                        float loss_scale) override {
    upload_batch(ids, targets, batch, seq);
    model_.forward_backward(model_params_.data(), weights_bf16_.data(), model_grads_.data(), ids_.data(), targets_.data(), batch, seq,
                            loss_scale, step_loss_.data());
    grads_stale_ = true;  // model_grads_ holds the sum over the micro-batches since zero_grads()
  }

  double step_loss() override {
    double loss = 0;
    PGOLF_CUDA_CHECK(cudaMemcpyAsync(&loss, step_loss_.data(), sizeof loss, cudaMemcpyDeviceToHost, stream_.get()));
    stream_.synchronize();
    return loss;
  }

  void optimizer_step(double lr_mul, double muon_momentum) override {
    optimizer_.step(params_.data(), flat_grads(), lr_mul, muon_momentum, stream_.get());
    refresh_model_weights();
  }

  void token_losses(std::span<const std::int32_t> ids, std::span<const std::int32_t> targets, std::int64_t batch, std::int64_t seq,
                    std::span<float> out) override {
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(out.size()), batch * seq, "per-token loss buffer");
    upload_batch(ids, targets, batch, seq);
    if (static_cast<std::int64_t>(losses_.size()) < batch * seq) losses_ = cuda::DeviceBuffer<float>(batch * seq, "per-token losses");
    model_.token_losses(model_params_.data(), weights_bf16_.data(), ids_.data(), targets_.data(), batch, seq, losses_.data());
    PGOLF_CUDA_CHECK(cudaMemcpyAsync(out.data(), losses_.data(), out.size_bytes(), cudaMemcpyDeviceToHost, stream_.get()));
    stream_.synchronize();
  }

  void read_params(std::span<float> out) override {
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(out.size()), kTotal, "parameter buffer of " << describe(C));
    params_.download(out, stream_.get());
  }
  // The embedding tables are rounded to bf16 (the header comment): weights from an fp32 file or a
  // dequantized artifact hold values that the reference's bf16 tables cannot.
  void write_params(std::span<const float> in) override {
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(in.size()), kTotal, "parameter buffer of " << describe(C));
    HostBuffer<float> host(kTotal);
    std::copy(in.begin(), in.end(), host.data());
    round_embedding_tables(host.span());
    params_.upload(std::span<const float>(host.data(), host.size()), stream_.get());
    refresh_model_weights();
    stream_.synchronize();  // `in` may be freed by the caller once this returns
  }
  void read_optimizer_state(OptimizerState& out) override {
    optimizer_.download(out, stream_.get());
    stream_.synchronize();
  }
  void write_optimizer_state(const OptimizerState& in) override {
    for (const auto* b : {&in.adam_m, &in.adam_v, &in.muon}) {
      PGOLF_CHECK_EQ(static_cast<std::int64_t>(b->size()), kTotal, "optimizer state of " << describe(C));
    }
    optimizer_.upload(in, stream_.get());
    stream_.synchronize();
  }

  void save_snapshot() override {
    snapshot_params_ = cuda::DeviceBuffer<float>(kTotal, "warm-up snapshot of the weights");
    PGOLF_CUDA_CHECK(cudaMemcpyAsync(snapshot_params_.data(), params_.data(), params_.bytes(), cudaMemcpyDeviceToDevice, stream_.get()));
    snapshot_optimizer_ = std::make_unique<typename cuda::CudaOptimizer<C>::Snapshot>(optimizer_.snapshot(stream_.get()));
  }
  void restore_snapshot() override {
    PGOLF_CHECK(snapshot_optimizer_ != nullptr, "restore_snapshot() without save_snapshot()");
    PGOLF_CUDA_CHECK(cudaMemcpyAsync(params_.data(), snapshot_params_.data(), params_.bytes(), cudaMemcpyDeviceToDevice, stream_.get()));
    optimizer_.restore(*snapshot_optimizer_, stream_.get());
    refresh_model_weights();
    stream_.synchronize();
    snapshot_params_ = cuda::DeviceBuffer<float>();
    snapshot_optimizer_.reset();
  }

  // Device views, for tests and benchmarks.
  const float* device_params() const { return params_.data(); }
  // The accumulated gradients in the flat layout (device).
  const float* device_grads() { return flat_grads(); }
  cudaStream_t stream() const { return stream_.get(); }
  std::size_t activation_bytes() const { return model_.activation_bytes(); }

 private:
  // Token ids are checked on the host (a bad id would read outside the embedding on the device),
  // written into a page-locked staging slot and copied from there: a copy from pageable memory may
  // wait for the stream to drain first, which would stall the host between micro-batches while the
  // GPU idles. Two slots alternate; a slot is rewritten only after its previous copy has finished
  // (its event), which by then is long past: the wait costs nothing in the steady state.
  void upload_batch(std::span<const std::int32_t> ids, std::span<const std::int32_t> targets, std::int64_t batch, std::int64_t seq) {
    const std::int64_t n = batch * seq;
    PGOLF_CHECK(batch >= 1 && seq >= 1 && seq <= C.max_seq_len,
                "batch " << batch << " x sequence " << seq << " (sequence must be in [1, " << C.max_seq_len << "] for " << describe(C) << ")");
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(ids.size()), n, "input ids (batch " << batch << " x seq " << seq << ")");
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(targets.size()), n, "target ids (batch " << batch << " x seq " << seq << ")");
    StagingSlot& slot = staging_[next_slot_];
    next_slot_ = 1 - next_slot_;
    slot.copied.wait_on_host();  // the slot's previous copy has been read by the GPU
    slot.ids.reserve(static_cast<std::size_t>(n), "staged token ids");
    slot.targets.reserve(static_cast<std::size_t>(n), "staged target ids");
    for (std::int64_t i = 0; i < n; ++i) {  // checked as they are staged: one pass over the batch
      PGOLF_CHECK(ids[i] >= 0 && ids[i] < C.vocab_size && targets[i] >= 0 && targets[i] < C.vocab_size,
                  "token id " << ids[i] << " / target " << targets[i] << " at position " << i << " is outside the vocabulary [0, "
                              << C.vocab_size << ")");
      slot.ids.data()[i] = ids[i];
      slot.targets.data()[i] = targets[i];
    }
    if (static_cast<std::int64_t>(ids_.size()) < n) {
      stream_.synchronize();  // the old buffers may still be read by queued work
      ids_ = cuda::DeviceBuffer<std::int32_t>(n, "token ids");
      targets_ = cuda::DeviceBuffer<std::int32_t>(n, "target ids");
    }
    PGOLF_CUDA_CHECK(cudaMemcpyAsync(ids_.data(), slot.ids.data(), ids.size_bytes(), cudaMemcpyHostToDevice, stream_.get()));
    PGOLF_CUDA_CHECK(cudaMemcpyAsync(targets_.data(), slot.targets.data(), targets.size_bytes(), cudaMemcpyHostToDevice, stream_.get()));
    slot.copied.record(stream_.get());
  }

  static void round_embedding_tables(std::span<float> p) {
    for (const ParamSpec& s : Layout::specs()) {
      if (!held_in_bf16_by_reference(s)) continue;
      for (std::int64_t i = s.offset; i < s.offset + s.numel(); ++i) p[i] = round_to_bf16(p[i]);
    }
  }

  // grads_ = the model's accumulated gradients, in the flat layout (copied when they changed).
  float* flat_grads() {
    if (grads_stale_) map_.to_flat(grads_.data(), model_grads_.data(), stream_.get());
    grads_stale_ = false;
    return grads_.data();
  }

  // The model's fp32 and bf16 weights from params_ (after init, write_params, an optimizer step,
  // restore_snapshot: every change of params_).
  void refresh_model_weights() { map_.to_device(model_params_.data(), weights_bf16_.data(), params_.data(), stream_.get()); }

  cuda::CudaStream stream_;  // first: everything below enqueues on it
  cuda::GemmEngine gemm_;
  cuda::DeviceParamMap<C> map_;
  cuda::DeviceBuffer<float> params_;
  cuda::DeviceBuffer<float> grads_;
  cuda::DeviceBuffer<float> model_params_;
  cuda::DeviceBuffer<cuda::nv_bf16> weights_bf16_;
  cuda::DeviceBuffer<float> model_grads_;
  bool grads_stale_ = false;  // model_grads_ changed since grads_ was last copied from it
  cuda::DeviceBuffer<double> step_loss_;
  cuda::DeviceBuffer<std::int32_t> ids_, targets_;
  struct StagingSlot {
    cuda::PinnedBuffer<std::int32_t> ids, targets;
    cuda::CudaEvent copied;  // recorded after this slot's last copy (an unrecorded event counts as complete)
  };
  StagingSlot staging_[2];
  int next_slot_ = 0;
  cuda::DeviceBuffer<float> losses_;
  cuda::CudaOptimizer<C> optimizer_;
  cuda::GptCuda<C> model_;
  cuda::DeviceBuffer<float> snapshot_params_;
  std::unique_ptr<typename cuda::CudaOptimizer<C>::Snapshot> snapshot_optimizer_;
};

// What pgolf_add_model's generated cuda_backend.cu hands to the train and eval mains.
template <ModelConfig C>
CudaBackendFactory cuda_backend_factory() {
  CudaBackendFactory f;
  f.device_count = [] { return cuda::device_count(); };
  f.unsupported_reason = [] { return cuda::cuda_unsupported_features(C); };
  f.make = [](const OptimizerOptions& opt) -> std::unique_ptr<Backend> {
    if constexpr (cuda::kCudaSupported<C>) {
      return std::make_unique<CudaBackend<C>>(opt);
    } else {
      PGOLF_FAIL("configuration " << describe(C) << " has features without CUDA kernels: " << cuda::cuda_unsupported_features(C));
    }
  };
  return f;
}

}  // namespace pgolf::run
