// DEVICE=auto|cpu|cuda: which backend a train or eval binary runs on.
#pragma once

#include <memory>
#include <string>

#include "pgolf/core/error.hpp"
#include "pgolf/run/backend.hpp"
#include "pgolf/run/binary_info.hpp"
#include "pgolf/run/cpu_backend.hpp"

namespace pgolf::run {

// auto: the GPU when the binary has a CUDA backend, a GPU is visible and the configuration's
// features all have CUDA kernels; the CPU otherwise, with `note` saying why. cpu/cuda force it
// (cuda fails with the reason when it cannot run).
template <ModelConfig C>
std::unique_ptr<Backend> make_backend(const std::string& device, const OptimizerOptions& opt, const BinaryInfo& info, std::string* note = nullptr) {
  PGOLF_CHECK(device == "auto" || device == "cpu" || device == "cuda", "DEVICE must be auto, cpu or cuda; got '" << device << "'");
  if (device == "cpu") return std::make_unique<CpuBackend<C>>(opt);
  std::string why_not;
  if (info.cuda == nullptr || !info.cuda->built()) {
    why_not = "this binary was built without CUDA (pgolf found no nvcc at configure time)";
  } else if (const std::string reason = info.cuda->unsupported_reason(); !reason.empty()) {
    why_not = "configuration " + describe(C) + " is not supported by the CUDA backend yet: " + reason;
  } else if (info.cuda->device_count() == 0) {
    why_not = "no CUDA device is visible (no GPU, or no driver)";
  }
  if (why_not.empty()) return info.cuda->make(opt);
  PGOLF_CHECK(device != "cuda", "DEVICE=cuda, but " << why_not);
  if (note) *note = "using the CPU: " + why_not;
  return std::make_unique<CpuBackend<C>>(opt);
}

}  // namespace pgolf::run
