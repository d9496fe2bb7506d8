// The feature switches against PyTorch (data/make_feature_fixtures.py: a re-statement of the
// records' modules): the loss and every gradient of tiny models carrying the seeds' features and
// the variants no seed uses.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "pgolf/io/safetensors.hpp"
#include "pgolf/model/gpt_cpu.hpp"
#include "tiny_seed_configs.hpp"

namespace pgolf {
namespace {

const io::SafetensorsFile& fixture() {
  static const auto f = io::read_safetensors(std::string(PGOLF_TEST_DATA_DIR) + "/golden_features.safetensors");
  return f;
}

std::vector<std::int32_t> ints(const std::string& name) {
  const auto& t = fixture().at(name);
  std::vector<std::int32_t> v(t.data.size() / 4);
  std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

template <ModelConfig C>
void check_against_pytorch(const std::string& seed) {
  using L = ParamLayout<C>;
  // Tensor j (state_dict order) holds 0.5·sin(0.37·(i+1)·(j+1) + 0.1·j), as in the fixture script.
  std::vector<double> params(L::total);
  const auto specs = L::specs();
  for (std::size_t j = 0; j < specs.size(); ++j) {
    for (std::int64_t i = 0; i < specs[j].numel(); ++i) {
      params[specs[j].offset + i] = 0.5 * std::sin(0.37 * static_cast<double>(i + 1) * static_cast<double>(j + 1) + 0.1 * static_cast<double>(j));
    }
  }
  const auto ids = ints("ids"), targets = ints("targets");
  cpu::Gpt<C, double> model;
  const double loss = model.forward(params, ids, targets, 2, 7);
  const auto& ref_loss = fixture().at(seed + ".loss");
  double ref = 0;
  std::memcpy(&ref, ref_loss.data.data(), 8);
  EXPECT_NEAR(loss, ref, 1e-9 * std::fabs(ref)) << seed;
  std::vector<double> grads(L::total, 0.0);
  model.backward(params, grads, 1.0);
  std::size_t checked = 0;
  for (const auto& s : specs) {
    const std::string name = seed + ".grad." + s.name();
    ASSERT_TRUE(fixture().contains(name)) << name << " (the two sides enumerate different tensors)";
    const auto& t = fixture().at(name);
    ASSERT_EQ(t.numel(), s.numel()) << name;
    const auto g = t.to_float32();
    double scale = 1e-30;
    for (float v : g) scale = std::max(scale, static_cast<double>(std::fabs(v)));
    for (std::int64_t i = 0; i < s.numel(); ++i) {
      // The fixture stores float32 gradients of a float64 computation.
      ASSERT_NEAR(grads[s.offset + i], g[i], 1e-6 * scale + 1e-12) << name << "[" << i << "]";
    }
    ++checked;
  }
  std::size_t in_fixture = 0;
  for (const auto& t : fixture().tensors) in_fixture += t.name.starts_with(seed + ".grad.");
  EXPECT_EQ(checked, in_fixture) << seed << ": the fixture has tensors pgolf does not";
}

TEST(GoldenFeatures, SeedA) { check_against_pytorch<kTinyA>("seed_a"); }
TEST(GoldenFeatures, SeedB) { check_against_pytorch<kTinyB>("seed_b"); }
TEST(GoldenFeatures, SeedC) { check_against_pytorch<kTinyC>("seed_c"); }
TEST(GoldenFeatures, SeedD) { check_against_pytorch<kTinyD>("seed_d"); }
TEST(GoldenFeatures, SeedE) { check_against_pytorch<kTinyE>("seed_e"); }
TEST(GoldenFeatures, PreNormSmearBosFixEngramBigramsOutputGate) { check_against_pytorch<kVariant1>("variant_1"); }
TEST(GoldenFeatures, InputGatedSmearFullGateSigmoidAlphaResidual) { check_against_pytorch<kVariant2>("variant_2"); }
TEST(GoldenFeatures, SparseGateGatedSkipsLambdaResidualXsaLeaky) { check_against_pytorch<kVariant3>("variant_3"); }

}  // namespace
}  // namespace pgolf
