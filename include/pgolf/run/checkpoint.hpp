// Training checkpoints: weights, optimizer state, data position and progress, in the artifact
// container (so they are checksummed, tied to their configuration and written atomically).
// Resuming from one continues the run bit for bit on the CPU.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>

#include "pgolf/core/config.hpp"
#include "pgolf/data/token_stream.hpp"
#include "pgolf/io/artifact.hpp"
#include "pgolf/model/param_layout.hpp"
#include "pgolf/optim/optimizer.hpp"
#include "pgolf/run/backend.hpp"

namespace pgolf::run {

inline constexpr int kCheckpointZstdLevel = 1;  // speed over size: checkpoints are rewritten often
inline constexpr char kCheckpointKind[] = "pgolf-checkpoint-v1";

struct CheckpointState {
  int step = 0;
  double training_ms = 0;
  StreamPosition loader_position;
};

namespace detail {
inline io::ArtifactTensor flat_tensor(const std::string& name, std::span<const float> v) {
  io::ArtifactTensor t;
  t.name = name;
  t.dtype = io::DType::f32;
  t.shape = {static_cast<std::int64_t>(v.size())};
  t.data.resize(v.size() * sizeof(float));
  if (!v.empty()) std::memcpy(t.data.data(), v.data(), t.data.size());
  return t;
}
inline void read_flat(const io::Artifact& a, const std::string& name, std::span<float> out, const std::string& file) {
  const auto& t = a.tensor(name, file);
  PGOLF_CHECK(t.dtype == io::DType::f32 && t.data.size() == out.size() * sizeof(float),
              file << ": checkpoint tensor " << name << " has the wrong type or size");
  std::memcpy(out.data(), t.data.data(), t.data.size());
}
inline const std::string& required_meta(const io::Artifact& a, const std::string& key, const std::string& file) {
  const std::string* v = a.meta(key);
  if (!v) PGOLF_FAIL(file << ": checkpoint metadata has no " << key);
  return *v;
}
}  // namespace detail

template <ModelConfig C>
void save_checkpoint(const std::filesystem::path& path, Backend& backend, const CheckpointState& st, std::int64_t seed) {
  HostBuffer<float> params(ParamLayout<C>::total);
  backend.read_params(params.span());
  OptimizerState opt;
  backend.read_optimizer_state(opt);
  io::Artifact a;
  a.config_fingerprint = fingerprint(C);
  a.config_description = describe(C);
  char ms[64];
  std::snprintf(ms, sizeof ms, "%.17g", st.training_ms);
  a.metadata = {{"kind", kCheckpointKind},
                {"step", std::to_string(st.step)},
                {"training_ms", ms},
                {"loader_file_index", std::to_string(st.loader_position.file_index)},
                {"loader_offset", std::to_string(st.loader_position.offset)},
                {"adam_step", std::to_string(opt.adam_step)},
                {"optimizer_groups", describe_groups(C)},
                {"seed", std::to_string(seed)}};
  a.tensors.push_back(detail::flat_tensor("params", params.span()));
  a.tensors.push_back(detail::flat_tensor("adam_m", opt.adam_m.span()));
  a.tensors.push_back(detail::flat_tensor("adam_v", opt.adam_v.span()));
  a.tensors.push_back(detail::flat_tensor("muon_momentum", opt.muon.span()));
  io::write_artifact(path, a, kCheckpointZstdLevel);
}

template <ModelConfig C>
CheckpointState load_checkpoint(const std::filesystem::path& path, Backend& backend) {
  const io::Artifact a = io::read_artifact_for(path, C);
  const std::string file = path.string();
  PGOLF_CHECK(a.meta("kind") && *a.meta("kind") == kCheckpointKind, file << " is not a pgolf training checkpoint");
  // The optimizer state belongs to the groups it was trained with (older checkpoints: canonical).
  const std::string groups = a.meta("optimizer_groups") ? *a.meta("optimizer_groups") : "canonical";
  PGOLF_CHECK(groups == describe_groups(C), file << " holds optimizer state for the optimizer groups '" << groups
                                                 << "', this binary trains with '" << describe_groups(C) << "'");
  HostBuffer<float> params(ParamLayout<C>::total);
  OptimizerState opt(ParamLayout<C>::total);
  detail::read_flat(a, "params", params.span(), file);
  detail::read_flat(a, "adam_m", opt.adam_m.span(), file);
  detail::read_flat(a, "adam_v", opt.adam_v.span(), file);
  detail::read_flat(a, "muon_momentum", opt.muon.span(), file);
  opt.adam_step = std::stoll(detail::required_meta(a, "adam_step", file));
  backend.write_params(params.span());
  backend.write_optimizer_state(opt);
  CheckpointState st;
  st.step = std::stoi(detail::required_meta(a, "step", file));
  st.training_ms = std::stod(detail::required_meta(a, "training_ms", file));
  st.loader_position.file_index = std::stoll(detail::required_meta(a, "loader_file_index", file));
  st.loader_position.offset = std::stoll(detail::required_meta(a, "loader_offset", file));
  return st;
}

}  // namespace pgolf::run
