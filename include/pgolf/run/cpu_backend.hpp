// The CPU training backend: fp32 master weights, the CPU GPT, the reference optimizer split.
// The train loop talks to a backend only through this interface (the CUDA backend has the same).
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "pgolf/core/tensor.hpp"
#include "pgolf/model/gpt_cpu.hpp"
#include "pgolf/model/init.hpp"
#include "pgolf/optim/optimizer.hpp"

namespace pgolf::run {

template <ModelConfig C>
class CpuBackend {
 public:
  using Layout = ParamLayout<C>;

  explicit CpuBackend(const OptimizerOptions& opt) : params_(Layout::total), grads_(Layout::total), optimizer_(opt) {}

  static std::string device_name() { return "cpu (" + std::to_string(default_thread_count()) + " threads)"; }

  void init(std::uint64_t seed, const InitOptions& init) { init_params<C>(params_.span(), seed, init); }

  void zero_grads() { grads_.zero(); }

  // Forward + backward of one micro-batch; gradients accumulate. Returns the mean loss.
  double forward_backward(std::span<const std::int32_t> ids, std::span<const std::int32_t> targets, std::int64_t batch,
                          std::int64_t seq, float loss_scale) {
    const double loss = model_.forward(params_.span(), ids, targets, batch, seq);
    model_.backward(params_.span(), grads_.span(), loss_scale);
    return loss;
  }

  // Per-token losses (natural log) without keeping gradients.
  void token_losses(std::span<const std::int32_t> ids, std::span<const std::int32_t> targets, std::int64_t batch,
                    std::int64_t seq, std::span<float> out) {
    eval_model_.forward(params_.span(), ids, targets, batch, seq, out);
  }

  double optimizer_step(double lr_mul, double muon_momentum) {
    return optimizer_.step(params_.span(), grads_.span(), lr_mul, muon_momentum);
  }

  // Host views of the state (the checkpoint reads and writes these).
  std::span<float> params() { return params_.span(); }
  Optimizer<C>& optimizer() { return optimizer_; }

  // Copies of everything a warm-up must undo.
  struct Snapshot {
    HostBuffer<float> params, adam_m, adam_v, muon;
    std::int64_t adam_step = 0;
  };
  Snapshot snapshot() {
    return Snapshot{params_, optimizer_.adam_m(), optimizer_.adam_v(), optimizer_.muon_buffer(), optimizer_.adam_step()};
  }
  void restore(const Snapshot& s) {
    params_ = s.params;
    optimizer_.adam_m() = s.adam_m;
    optimizer_.adam_v() = s.adam_v;
    optimizer_.muon_buffer() = s.muon;
    optimizer_.adam_step() = s.adam_step;
  }

 private:
  HostBuffer<float> params_, grads_;
  Optimizer<C> optimizer_;
  cpu::Gpt<C, float> model_;
  cpu::Gpt<C, float> eval_model_;  // its own activations: evaluation shapes differ from training's
};

}  // namespace pgolf::run
