// Document sources (GCIDE, delimited text, JSONL), the shuffle, and a whole corpus preparation
// whose shards the training loader reads back.
#include <gtest/gtest.h>

#include <set>

#include "pgolf/data/corpus.hpp"
#include "pgolf/data/token_stream.hpp"
#include "test_paths.hpp"

namespace pgolf {
namespace {

using testing::TempDir;

const std::vector<std::string>& gcide() {
  static const auto docs = read_gcide_documents(testing::gcide_dict(), testing::gcide_index());
  return docs;
}

TEST(Gcide, OneCleanedEntryPerDocument) {
  const auto& docs = gcide();
  // 126,240 distinct (offset, length) entries in the dict-gcide 0.48 index, minus metadata.
  EXPECT_GT(docs.size(), 120000u);
  EXPECT_LT(docs.size(), 130000u);
  std::int64_t bytes = 0;
  for (const auto& d : docs) {
    ASSERT_FALSE(d.empty());
    ASSERT_TRUE(is_valid_utf8(d)) << d.substr(0, 60);
    ASSERT_EQ(d.find("\n[1913 Webster]\n"), std::string::npos) << d.substr(0, 60);
    ASSERT_EQ(d.find("00-database"), std::string::npos);
    bytes += static_cast<std::int64_t>(d.size());
  }
  EXPECT_GT(bytes, 25'000'000);
  // A known entry survives cleaning with its definition text.
  const bool found = std::any_of(docs.begin(), docs.end(), [](const std::string& d) {
    return d.starts_with("Alleyway \\Al\"ley*way`\\n.\nAn alley.");
  });
  EXPECT_TRUE(found);
}

TEST(Gcide, EntryCleaningRule) {
  EXPECT_EQ(clean_gcide_entry("Head \\Head\\\n   First line.\n   [1913 Webster]\n\n   Second.  \n   [WordNet 1.5]\n"),
            "Head \\Head\\\nFirst line.\nSecond.");
  EXPECT_EQ(clean_gcide_entry("A [Obs.] word\n   [1913 Webster] tail"), "A [Obs.] word\n[1913 Webster] tail");
  EXPECT_EQ(drop_invalid_utf8("ok\xff\xc3\xa9\xe2\x82"), "ok\xc3\xa9");
}

TEST(Corpus, ShuffleIsDeterministicAndAPermutation) {
  std::vector<std::string> a(gcide().begin(), gcide().begin() + 5000), b = a;
  shuffle_documents(a, 1337);
  shuffle_documents(b, 1337);
  EXPECT_EQ(a, b);
  std::vector<std::string> c(gcide().begin(), gcide().begin() + 5000);
  shuffle_documents(c, 1338);
  EXPECT_NE(a, c);
  std::multiset<std::string> sa(a.begin(), a.end()), so(gcide().begin(), gcide().begin() + 5000);
  EXPECT_EQ(sa, so);
  EXPECT_NE(std::vector<std::string>(gcide().begin(), gcide().begin() + 5000), a);
}

TEST(Corpus, DelimitedTextAndJsonlReaders) {
  TempDir dir("readers");
  const auto& docs = gcide();
  std::string text, jsonl;
  for (int i = 0; i < 50; ++i) {
    text += docs[i] + "\n" + kDefaultDocumentDelimiter + "\n";
    jsonl += json::dump(json::Value(json::Object{{"text", json::Value(docs[i])}, {"id", json::Value(i)}})) + "\n";
  }
  text += "\n" + std::string(kDefaultDocumentDelimiter) + "\n";  // an empty document is skipped
  write_text_file_atomic(dir / "docs.txt", text);
  write_text_file_atomic(dir / "docs.jsonl", jsonl);
  const auto t = read_delimited_documents(dir / "docs.txt", kDefaultDocumentDelimiter);
  const auto j = read_jsonl_documents(dir / "docs.jsonl");
  ASSERT_EQ(t.size(), 50u);
  ASSERT_EQ(j.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(t[i], docs[i]);
    EXPECT_EQ(j[i], docs[i]);
  }
  write_text_file_atomic(dir / "bad.jsonl", "{\"text\": \"ok\"}\n{\"body\": \"no text field\"}\n");
  try {
    read_jsonl_documents(dir / "bad.jsonl");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl line 2"), std::string::npos) << e.what();
  }
}

TEST(Corpus, PreparesShardsThatTheLoadersRead) {
  TempDir dir("prepare");
  std::vector<std::string> docs(gcide().begin(), gcide().begin() + 6000);
  CorpusOptions opt;
  opt.num_val_docs = 500;
  opt.shard_size = 200'000;  // several train shards
  const auto s = prepare_corpus(docs, opt, dir / "ds", dir / "tok.model");
  EXPECT_EQ(s.val.documents, 500);
  EXPECT_EQ(s.train.documents, 5500);
  EXPECT_GT(s.train.shards, 1);
  EXPECT_NEAR(s.train.tokens_per_byte(), 0.46, 0.08);
  const Tokenizer tok(dir / "tok.model");
  // Validation shards hold exactly [BOS] + encode(doc) for the first 500 shuffled documents.
  shuffle_documents(docs, opt.seed);
  std::vector<std::uint16_t> expect;
  for (int i = 0; i < 500; ++i) {
    expect.push_back(static_cast<std::uint16_t>(tok.bos_id()));
    for (int id : tok.encode(docs[i])) expect.push_back(static_cast<std::uint16_t>(id));
  }
  std::vector<std::uint16_t> got;
  for (const auto& f : list_shards((dir / "ds" / "fineweb_val_*.bin").string())) {
    const Shard sh(f);
    got.insert(got.end(), sh.tokens().begin(), sh.tokens().end());
  }
  EXPECT_EQ(got, expect);
  EXPECT_EQ(static_cast<std::int64_t>(got.size()), s.val.tokens);
  const auto val = load_validation_tokens((dir / "ds" / "fineweb_val_*.bin").string(), 64);
  EXPECT_EQ(val[0], tok.bos_id());
  DistributedTokenLoader loader((dir / "ds" / "fineweb_train_*.bin").string(), 0, 1, tok.vocab_size());
  const auto b = loader.next_batch(8 * 64, 64, 1);
  EXPECT_EQ(b.x[0], tok.bos_id());
  const auto summary = json::parse(read_text_file(dir / "ds" / "corpus_summary.json"));
  EXPECT_EQ(summary.at("train").at("documents").as_int(), 5500);
  // Running it again replaces the shards (no stale ones left from a larger export).
  opt.shard_size = 10'000'000;
  prepare_corpus(docs, opt, dir / "ds", dir / "tok2.model", dir / "tok.model");
  EXPECT_EQ(list_shards((dir / "ds" / "fineweb_train_*.bin").string()).size(), 1u);
  EXPECT_THROW(prepare_corpus(std::vector<std::string>(docs.begin(), docs.begin() + 10), opt, dir / "x", dir / "t.model"), Error);
}

}  // namespace
}  // namespace pgolf
