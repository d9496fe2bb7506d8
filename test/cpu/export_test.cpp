// Moving weights in and out of pgolf: safetensors with the reference's names, the int8 artifact.
#include <gtest/gtest.h>

#include "pgolf/model/init.hpp"
#include "pgolf/run/export.hpp"
#include "test_paths.hpp"

namespace pgolf {
namespace {

constexpr ModelConfig kExport = [] {
  ModelConfig c;
  c.name = "export";
  c.vocab_size = 512;
  c.num_layers = 3;
  c.model_dim = 64;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.max_seq_len = 64;
  return c;
}();
constexpr ModelConfig kOther = [] {
  ModelConfig c = kExport;
  c.name = "other";
  c.num_layers = 4;
  return c;
}();

TEST(Export, SafetensorsRoundTripWithReferenceNames) {
  testing::TempDir dir("export");
  std::vector<float> p(ParamLayout<kExport>::total), q(p.size());
  init_params<kExport>(std::span<float>(p), 5);
  run::write_weights_safetensors<kExport>(dir / "w.safetensors", p);
  run::read_weights_safetensors<kExport>(dir / "w.safetensors", q);
  EXPECT_EQ(p, q);
  const auto f = io::read_safetensors(dir / "w.safetensors");
  EXPECT_EQ(f.tensors.size(), ParamLayout<kExport>::specs().size());
  EXPECT_EQ(f.at("blocks.2.attn.c_k.weight").shape, (std::vector<std::int64_t>{32, 64}));
  EXPECT_EQ(f.at("blocks.2.attn.q_gain").shape, (std::vector<std::int64_t>{4}));
  EXPECT_EQ(f.metadata.at("pgolf_config"), describe(kExport));
  // Weights of another configuration: the first tensor that does not fit is named with both shapes.
  std::vector<float> r(ParamLayout<kOther>::total);
  try {
    run::read_weights_safetensors<kOther>(dir / "w.safetensors", r);
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("w.safetensors: tensor skip_weights has shape (1, 64) but configuration 'other'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("needs (2, 64)"), std::string::npos) << msg;
  }
}

TEST(Export, Int8ArtifactRoundTripEqualsDirectDequantization) {
  testing::TempDir dir("export_int8");
  std::vector<float> p(ParamLayout<kExport>::total);
  init_params<kExport>(std::span<float>(p), 6);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] += 0.01f * static_cast<float>(i % 17);
  const auto rep = run::export_int8_artifact<kExport>(dir / "m.ptz", p, 3);
  EXPECT_EQ(rep.file_bytes, static_cast<std::int64_t>(size_of_file(dir / "m.ptz")));
  std::vector<float> back(p.size()), direct(p.size());
  run::load_int8_artifact<kExport>(dir / "m.ptz", back);
  dequantize_model<kExport>(quantize_model_int8<kExport>(p), direct);
  EXPECT_EQ(back, direct);
  EXPECT_EQ(*io::read_artifact(dir / "m.ptz").meta("quant_format"), "int8_clean_per_row_v1");
  std::vector<float> other(ParamLayout<kOther>::total);
  EXPECT_THROW(run::load_int8_artifact<kOther>(dir / "m.ptz", other), Error);
}

}  // namespace
}  // namespace pgolf
