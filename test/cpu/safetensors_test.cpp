// safetensors: round trips, malformed files, and a file written by the Python safetensors library.
#include <gtest/gtest.h>

#include <cstring>

#include "pgolf/io/safetensors.hpp"
#include "test_paths.hpp"

namespace pgolf::io {
namespace {

using testing::TempDir;

SafeTensor make(const std::string& name, DType dt, std::vector<std::int64_t> shape) {
  SafeTensor t;
  t.name = name;
  t.dtype = dt;
  t.shape = std::move(shape);
  t.data.resize(static_cast<std::size_t>(t.numel()) * dtype_size(dt));
  for (std::size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<std::uint8_t>(i * 7 + name.size());
  return t;
}

TEST(Safetensors, RoundTripOfEveryDtype) {
  TempDir dir("st");
  std::vector<SafeTensor> ts;
  const DType all[] = {DType::f32, DType::f16, DType::bf16, DType::f64, DType::i8, DType::u8, DType::i16, DType::u16, DType::i32, DType::i64};
  for (DType d : all) ts.push_back(make(std::string("t_") + std::string(dtype_name(d)), d, {3, 5}));
  ts.push_back(make("empty", DType::f32, {0, 4}));
  write_safetensors(dir / "x.safetensors", ts, {{"format", "pt"}});
  const auto f = read_safetensors(dir / "x.safetensors");
  EXPECT_EQ(f.metadata.at("format"), "pt");
  ASSERT_EQ(f.tensors.size(), ts.size());
  for (const auto& t : ts) {
    const auto& g = f.at(t.name);
    EXPECT_EQ(g.dtype, t.dtype);
    EXPECT_EQ(g.shape, t.shape);
    EXPECT_EQ(g.data, t.data);
  }
  const auto raw = read_file(dir / "x.safetensors");
  EXPECT_EQ(load_le<std::uint64_t>(raw.data()) % 8, 0u) << "header padded to 8 bytes";
}

TEST(Safetensors, ReadsAFileWrittenByPythonSafetensors) {
  // golden_tiny.safetensors was written by safetensors.torch.save_file (make_golden_fixtures.py).
  const auto f = read_safetensors(std::string(PGOLF_TEST_DATA_DIR) + "/golden_tiny.safetensors");
  EXPECT_EQ(f.metadata.at("vocab"), "48");
  const auto& ids = f.at("batch.ids");
  EXPECT_EQ(ids.dtype, DType::i32);
  EXPECT_EQ(ids.shape, (std::vector<std::int64_t>{2, 16}));
  const auto& emb = f.at("param.tok_emb.weight");
  EXPECT_EQ(emb.dtype, DType::f32);
  EXPECT_EQ(emb.shape, (std::vector<std::int64_t>{48, 16}));
  EXPECT_EQ(f.at("out.loss").to_float32().size(), 1u);
}

TEST(Safetensors, MalformedFilesAreCleanErrors) {
  TempDir dir("st_bad");
  auto write_raw = [&](const std::string& name, const std::string& header, std::size_t buffer) {
    std::string bytes(8, '\0');
    const std::uint64_t n = header.size();
    std::memcpy(bytes.data(), &n, 8);
    bytes += header + std::string(buffer, '\0');
    write_text_file_atomic(dir / name, bytes);
  };
  write_raw("huge_len.safetensors", "", 0);
  {
    std::string b(8, '\xff');
    write_text_file_atomic(dir / "huge_len.safetensors", b);
  }
  write_raw("not_json.safetensors", "{not json", 0);
  write_raw("bad_dtype.safetensors", R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", 1);
  write_raw("out_of_range.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  write_raw("size_mismatch.safetensors", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16);
  write_raw("hole.safetensors", R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})", 4);
  write_raw("overlap.safetensors", R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", 3);
  write_raw("negative.safetensors", R"({"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", 2);
  write_raw("missing_key.safetensors", R"({"a":{"dtype":"U8","shape":[2]}})", 2);
  for (const char* name : {"huge_len", "not_json", "bad_dtype", "out_of_range", "size_mismatch", "hole", "overlap", "negative", "missing_key"}) {
    const std::string file = std::string(name) + ".safetensors";
    try {
      read_safetensors(dir / file);
      ADD_FAILURE() << file << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(read_safetensors(dir / "missing.safetensors"), Error);
}

}  // namespace
}  // namespace pgolf::io
