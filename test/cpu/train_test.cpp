// The training loop end to end on a tiny model and a GCIDE subset: reference log lines, the loss
// falling, bit-exact resume from a checkpoint, the NaN guard, and the int8 round trip.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "pgolf/data/corpus.hpp"
#include "pgolf/run/train_main.hpp"
#include "test_paths.hpp"

namespace pgolf {
namespace {

using testing::TempDir;

constexpr ModelConfig kTrainTiny = [] {
  ModelConfig c;
  c.name = "train-tiny";
  c.vocab_size = 1024;
  c.num_layers = 2;
  c.model_dim = 32;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.max_seq_len = 32;
  return c;
}();

class TrainLoop : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("train");
    auto docs = read_gcide_documents(testing::gcide_dict(), testing::gcide_index());
    docs.resize(4000);
    CorpusOptions opt;
    opt.num_val_docs = 150;
    opt.shard_size = 150'000;  // two train shards: the stream crosses a boundary
    prepare_corpus(docs, opt, *dir_ / "ds", *dir_ / "tok.model");
  }
  static void TearDownTestSuite() { delete dir_; }

  static run::TrainArgs args(const std::string& run_id) {
    run::TrainArgs a;
    a.data.data_path = (*dir_ / "ds").string();
    a.data.tokenizer_path = (*dir_ / "tok.model").string();
    a.data.train_seq_len = 32;
    a.data.val_batch_size = 8 * 32 * 8;
    a.out_dir = (*dir_ / "runs").string();
    a.run_id = run_id;
    a.train_batch_tokens = 8 * 32 * 2;
    a.grad_accum_steps = 2;
    a.schedule.iterations = 12;
    a.schedule.warmdown_iters = 4;
    a.schedule.max_wallclock_seconds = 0;
    a.warmup_steps = 2;
    a.val_loss_every = 6;
    a.train_log_every = 1;
    a.zstd_level = 3;
    a.finalize();
    return a;
  }
  static void train(const run::TrainArgs& a) {
    run::Trainer<kTrainTiny> t(a, run::BinaryInfo{"train-tiny", "train", "1234\n1234 x.hpp\n"},
                               std::make_unique<run::CpuBackend<kTrainTiny>>(a.optim));
    t.run();
  }
  static std::vector<std::string> log_lines(const std::string& run_id) {
    std::ifstream in(*dir_ / "runs" / run_id / "train.log");
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines;
  }
  static std::vector<std::string> matching(const std::vector<std::string>& lines, const std::string& re) {
    std::vector<std::string> out;
    for (const auto& l : lines) {
      if (std::regex_search(l, std::regex(re))) out.push_back(l);
    }
    return out;
  }
  static TempDir* dir_;
};
TempDir* TrainLoop::dir_ = nullptr;

TEST_F(TrainLoop, LogsInTheReferenceFormatAndTheLossFalls) {
  auto a = args("plain");
  train(a);
  const auto lines = log_lines("plain");
  const auto steps = matching(lines, R"(^step:\d+/12 train_loss:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms$)");
  EXPECT_EQ(steps.size(), 12u);
  const auto vals = matching(lines, R"(^step:(0|6|12)/12 val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms$)");
  ASSERT_EQ(vals.size(), 3u) << "validation at step 0, every VAL_LOSS_EVERY=6 and at the end";
  auto val_loss = [](const std::string& l) { return std::stod(l.substr(l.find("val_loss:") + 9)); };
  EXPECT_LT(val_loss(vals[2]), val_loss(vals[0]) - 0.2);
  EXPECT_NEAR(val_loss(vals[0]), std::log(1024.0), 0.05) << "the reference's init starts at uniform logits";
  EXPECT_EQ(matching(lines, "^model_params:").front(), "model_params:" + std::to_string(param_count<kTrainTiny>));
  EXPECT_EQ(matching(lines, "^warmup_step:").size(), 2u);
  EXPECT_EQ(matching(lines, R"(^final_int8_zstd_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$)").size(), 1u);
  EXPECT_EQ(matching(lines, R"(^Total submission size int8\+zstd: \d+ bytes \(code:1234\)$)").size(), 1u);
  EXPECT_TRUE(std::filesystem::exists(*dir_ / "runs" / "plain" / "final_model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(*dir_ / "runs" / "plain" / "final_model.int8.ptz"));
}

TEST_F(TrainLoop, ResumingFromACheckpointIsBitExact) {
  train(args("straight"));
  auto first = args("resumed");
  first.stop_after_steps = 5;
  train(first);
  EXPECT_FALSE(matching(log_lines("resumed"), "^paused: ").empty());
  auto second = args("resumed");
  second.resume = true;
  train(second);
  const auto straight = matching(log_lines("straight"), R"(^step:\d+/12 (train|val)_loss:)");
  const auto resumed = matching(log_lines("resumed"), R"(^step:\d+/12 (train|val)_loss:)");
  auto strip_time = [](std::vector<std::string> v) {
    for (auto& l : v) l = l.substr(0, l.find(" train_time:"));
    return v;
  };
  EXPECT_EQ(strip_time(straight), strip_time(resumed));
  // The final weights are the same bits.
  EXPECT_EQ(read_file(*dir_ / "runs" / "straight" / "final_model.safetensors"),
            read_file(*dir_ / "runs" / "resumed" / "final_model.safetensors"));
}

TEST_F(TrainLoop, ANonFiniteLossStopsWithAClearMessageAndKeepsTheCheckpoint) {
  auto a = args("diverge");
  a.optim.matrix_lr = 1e30;
  a.optim.scalar_lr = 1e30;
  a.optim.tied_embed_lr = 1e30;
  a.checkpoint_every = 1;
  a.warmup_steps = 0;
  try {
    train(a);
    FAIL() << "training with LR 1e30 did not stop";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("train_loss is not finite"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("checkpoint.pgck"), std::string::npos) << e.what();
  }
  const auto ckpt = *dir_ / "runs" / "diverge" / "checkpoint.pgck";
  ASSERT_TRUE(std::filesystem::exists(ckpt));
  EXPECT_NO_THROW(io::read_artifact_for(ckpt, kTrainTiny));
}

// Two configurations of one architecture (one fingerprint) whose hash embeddings train in other
// optimizer groups: a checkpoint's optimizer state belongs to the groups it was trained with.
constexpr ModelConfig kHashCanonical = [] {
  ModelConfig c = kTrainTiny;
  c.name = "hash-canonical";
  c.features.hash_embedding = HashEmbedding::bigram;
  c.features.hash_buckets = 17;
  c.features.hash_dim = 8;
  return c;
}();
constexpr ModelConfig kHashInEmbeddingGroup = [] {
  ModelConfig c = kHashCanonical;
  c.name = "hash-embedding-adam";
  c.groups.hash_embedding = HashEmbeddingGroups::embedding_adam;
  return c;
}();

TEST(Checkpoint, OptimizerStateOfOtherOptimizerGroupsIsRefused) {
  ASSERT_EQ(fingerprint(kHashCanonical), fingerprint(kHashInEmbeddingGroup)) << "the groups do not change the weights' meaning";
  TempDir dir("ckpt_groups");
  const auto path = dir / "checkpoint.pgck";
  run::CpuBackend<kHashCanonical> canonical(OptimizerOptions{});
  canonical.init(1, InitOptions{});
  run::CheckpointState st;
  st.step = 3;
  run::save_checkpoint<kHashCanonical>(path, canonical, st, 1);
  EXPECT_EQ(run::load_checkpoint<kHashCanonical>(path, canonical).step, 3);
  run::CpuBackend<kHashInEmbeddingGroup> other(OptimizerOptions{});
  try {
    run::load_checkpoint<kHashInEmbeddingGroup>(path, other);
    FAIL() << "a checkpoint of the canonical groups was resumed with the hash embedding in the embedding group";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path.string()), std::string::npos) << what;
    EXPECT_NE(what.find("'canonical'"), std::string::npos) << what;
    EXPECT_NE(what.find("'hash_embedding=embedding_adam'"), std::string::npos) << what;
  }
}

TEST_F(TrainLoop, TheConfigurationMustMatchTheTokenizerAndTheSequenceLength) {
  auto a = args("bad_seq");
  a.data.train_seq_len = 64;  // > max_seq_len 32
  EXPECT_THROW(train(a), Error);
}

}  // namespace
}  // namespace pgolf
