// The CPU backend: fp32 master weights, the CPU GPT, the reference optimizer split.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "pgolf/core/tensor.hpp"
#include "pgolf/model/gpt_cpu.hpp"
#include "pgolf/model/init.hpp"
#include "pgolf/optim/optimizer.hpp"
#include "pgolf/run/backend.hpp"

namespace pgolf::run {

template <ModelConfig C>
class CpuBackend : public Backend {
 public:
  using Layout = ParamLayout<C>;

  explicit CpuBackend(const OptimizerOptions& opt) : params_(Layout::total), grads_(Layout::total), optimizer_(opt) {}

  std::string device_name() const override { return "cpu (" + std::to_string(default_thread_count()) + " threads)"; }

  void init(std::uint64_t seed, const InitOptions& init) override { init_params<C>(params_.span(), seed, init); }

  void zero_grads() override {
    grads_.zero();
    step_loss_ = 0;
  }

  void forward_backward(std::span<const std::int32_t> ids, std::span<const std::int32_t> targets, std::int64_t batch, std::int64_t seq,
                        float loss_scale) override {
    const double loss = model_.forward(params_.span(), ids, targets, batch, seq);
    model_.backward(params_.span(), grads_.span(), loss_scale);
    step_loss_ += static_cast<double>(loss_scale) * loss;
  }

  double step_loss() override { return step_loss_; }

  void optimizer_step(double lr_mul, double muon_momentum) override { optimizer_.step(params_.span(), grads_.span(), lr_mul, muon_momentum); }

  void token_losses(std::span<const std::int32_t> ids, std::span<const std::int32_t> targets, std::int64_t batch, std::int64_t seq,
                    std::span<float> out) override {
    eval_model_.forward(params_.span(), ids, targets, batch, seq, out);
  }

  void read_params(std::span<float> out) override {
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(out.size()), Layout::total, "parameter buffer of " << describe(C));
    std::copy(params_.begin(), params_.end(), out.begin());
  }
  void write_params(std::span<const float> in) override {
    PGOLF_CHECK_EQ(static_cast<std::int64_t>(in.size()), Layout::total, "parameter buffer of " << describe(C));
    std::copy(in.begin(), in.end(), params_.begin());
  }
  void read_optimizer_state(OptimizerState& out) override { out = optimizer_.state(); }
  void write_optimizer_state(const OptimizerState& in) override {
    for (const auto* b : {&in.adam_m, &in.adam_v, &in.muon}) {
      PGOLF_CHECK_EQ(static_cast<std::int64_t>(b->size()), Layout::total, "optimizer state of " << describe(C));
    }
    optimizer_.state() = in;
  }

  void save_snapshot() override { snapshot_ = std::make_unique<Snapshot>(Snapshot{params_, optimizer_.state()}); }
  void restore_snapshot() override {
    PGOLF_CHECK(snapshot_ != nullptr, "restore_snapshot() without save_snapshot()");
    params_ = snapshot_->params;
    optimizer_.state() = snapshot_->optimizer;
  }

  // Direct views for the CPU-only tests and tools.
  std::span<float> params() { return params_.span(); }
  std::span<float> grads() { return grads_.span(); }

 private:
  struct Snapshot {
    HostBuffer<float> params;
    OptimizerState optimizer;
  };
  HostBuffer<float> params_, grads_;
  Optimizer<C> optimizer_;
  cpu::Gpt<C, float> model_;
  cpu::Gpt<C, float> eval_model_;  // its own activations: evaluation shapes differ from training's
  double step_loss_ = 0;
  std::unique_ptr<Snapshot> snapshot_;
};

}  // namespace pgolf::run
