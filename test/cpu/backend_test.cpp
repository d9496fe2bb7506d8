// DEVICE=auto|cpu|cuda: which backend a binary picks, and the messages when the GPU cannot be used.
// The CUDA side is a stand-in factory here, so the selection logic is tested on any machine.
#include <gtest/gtest.h>

#include <string>

#include "pgolf/run/select_backend.hpp"

namespace pgolf {
namespace {

constexpr ModelConfig kSelectTiny = [] {
  ModelConfig c;
  c.name = "select-tiny";
  c.vocab_size = 64;
  c.num_layers = 2;
  c.model_dim = 16;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.max_seq_len = 8;
  return c;
}();

// A backend that only says who it is (what make() returned is all these tests look at).
class MarkerBackend final : public run::CpuBackend<kSelectTiny> {
 public:
  MarkerBackend() : CpuBackend(OptimizerOptions{}) {}
  std::string device_name() const override { return "marker-gpu"; }
};

run::CudaBackendFactory fake_factory(int devices, std::string unsupported = "") {
  run::CudaBackendFactory f;
  f.device_count = [devices] { return devices; };
  f.unsupported_reason = [unsupported] { return unsupported; };
  f.make = [](const OptimizerOptions&) -> std::unique_ptr<run::Backend> { return std::make_unique<MarkerBackend>(); };
  return f;
}

run::BinaryInfo info_with(const run::CudaBackendFactory* f) {
  run::BinaryInfo info{"select-tiny", "train", ""};
  info.cuda = f;
  return info;
}

TEST(SelectBackend, AutoUsesTheGpuWhenEverythingAllowsIt) {
  const auto f = fake_factory(1);
  std::string note;
  const auto b = run::make_backend<kSelectTiny>("auto", OptimizerOptions{}, info_with(&f), &note);
  EXPECT_EQ(b->device_name(), "marker-gpu");
  EXPECT_TRUE(note.empty()) << note;
}

TEST(SelectBackend, AutoFallsBackToTheCpuAndSaysWhy) {
  struct Case {
    run::CudaBackendFactory factory;
    bool have_factory;
    std::string expected;
  };
  const Case cases[] = {{run::CudaBackendFactory{}, false, "built without CUDA"},
                        {fake_factory(0), true, "no CUDA device is visible"},
                        {fake_factory(2, "XSA"), true, "not supported by the CUDA backend yet: XSA"}};
  for (const Case& c : cases) {
    std::string note;
    const auto b = run::make_backend<kSelectTiny>("auto", OptimizerOptions{}, info_with(c.have_factory ? &c.factory : nullptr), &note);
    EXPECT_EQ(b->device_name().rfind("cpu", 0), 0u) << b->device_name();
    EXPECT_NE(note.find(c.expected), std::string::npos) << note;
    EXPECT_NE(note.find("using the CPU"), std::string::npos) << note;
  }
}

TEST(SelectBackend, CpuIsAlwaysTheCpuAndCudaFailsWithTheReason) {
  const auto gpu = fake_factory(1), none = fake_factory(0);
  EXPECT_EQ(run::make_backend<kSelectTiny>("cpu", OptimizerOptions{}, info_with(&gpu))->device_name().rfind("cpu", 0), 0u);
  EXPECT_EQ(run::make_backend<kSelectTiny>("cuda", OptimizerOptions{}, info_with(&gpu))->device_name(), "marker-gpu");
  try {
    run::make_backend<kSelectTiny>("cuda", OptimizerOptions{}, info_with(&none));
    FAIL() << "DEVICE=cuda without a GPU must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("DEVICE=cuda, but no CUDA device is visible"), std::string::npos) << e.what();
  }
  try {
    run::make_backend<kSelectTiny>("gpu", OptimizerOptions{}, info_with(&gpu));
    FAIL() << "an unknown DEVICE must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("DEVICE must be auto, cpu or cuda; got 'gpu'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pgolf
