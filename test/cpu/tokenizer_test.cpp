// SentencePiece byte tables and the bits-per-byte byte accounting, on real text (Debian's GCIDE).
#include <gtest/gtest.h>

#include "pgolf/data/corpus.hpp"
#include "pgolf/data/tokenizer.hpp"
#include "pgolf/eval/bpb.hpp"
#include "test_paths.hpp"

namespace pgolf {
namespace {

using testing::TempDir;

// One tokenizer for the whole suite: BPE 1024 with the reference's spec, trained on 20,000 GCIDE
// training entries; validation = the first 2,000 entries of the shuffled order (never trained on).
class GcideTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto docs = read_gcide_documents(testing::gcide_dict(), testing::gcide_index());
    shuffle_documents(docs, 1337);
    val_ = new std::vector<std::string>(docs.begin(), docs.begin() + 2000);
    std::vector<std::string> train;
    for (std::size_t i = 2000; i < 22000; ++i) {
      auto t = tokenizer_training_text(docs[i]);
      if (!t.empty()) train.push_back(std::move(t));
    }
    TokenizerSpec spec;
    dir_ = new TempDir("tokenizer");
    const std::string model = train_bpe_tokenizer(train, spec);
    write_text_file_atomic(*dir_ / "gcide_1024.model", model);
    tok_ = new Tokenizer(*dir_ / "gcide_1024.model");
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete val_;
    delete dir_;
  }
  static Tokenizer* tok_;
  static std::vector<std::string>* val_;
  static TempDir* dir_;
};
Tokenizer* GcideTokenizer::tok_ = nullptr;
std::vector<std::string>* GcideTokenizer::val_ = nullptr;
TempDir* GcideTokenizer::dir_ = nullptr;

TEST_F(GcideTokenizer, HasTheReferenceSpecialsAndTableRules) {
  const auto& sp = tok_->processor();
  ASSERT_EQ(tok_->vocab_size(), 1024);
  EXPECT_EQ(sp.pad_id(), 0);
  EXPECT_EQ(sp.bos_id(), 1);
  EXPECT_EQ(sp.eos_id(), 2);
  EXPECT_EQ(sp.unk_id(), 3);
  const ByteLuts l = build_byte_luts(*tok_, 1024);
  ASSERT_EQ(l.size(), 1024u);
  int bytes_pieces = 0, space_pieces = 0;
  for (int id = 0; id < 1024; ++id) {
    const std::string piece = sp.IdToPiece(id);
    if (id <= 3) {
      EXPECT_TRUE(l.is_boundary[id]) << piece;
      EXPECT_EQ(l.base_bytes[id], 0) << piece;
      continue;
    }
    EXPECT_FALSE(l.is_boundary[id]) << piece;
    if (sp.IsByte(id)) {  // <0x41>: one byte
      ++bytes_pieces;
      EXPECT_EQ(l.base_bytes[id], 1) << piece;
      EXPECT_FALSE(l.has_leading_space[id]);
    } else if (piece.starts_with(kSentencePieceSpace)) {
      ++space_pieces;
      EXPECT_TRUE(l.has_leading_space[id]);
      EXPECT_EQ(l.base_bytes[id], static_cast<int>(piece.size()) - 3) << piece;
    } else {
      EXPECT_EQ(l.base_bytes[id], static_cast<int>(piece.size())) << piece;
    }
  }
  EXPECT_EQ(bytes_pieces, 256) << "byte fallback gives one piece per byte value";
  EXPECT_GT(space_pieces, 100);
  // A model vocabulary larger than the tokenizer's: the extra ids are boundaries worth 0 bytes.
  const ByteLuts wide = build_byte_luts(*tok_, 1100);
  ASSERT_EQ(wide.size(), 1100u);
  EXPECT_TRUE(wide.is_boundary[1050]);
  EXPECT_EQ(wide.base_bytes[1050], 0);
}

// The byte accounting proof. For every validation document the shard holds [BOS] + encode(doc).
// The bytes counted through the tables for its tokens (each target's base bytes, plus one for a
// leading "▁" unless the previous token is a boundary such as BOS) equal the UTF-8 length of
// decode(encode(doc)): the text the tokenizer reproduces. That text is the nmt_nfkc-normalised
// document (NFKC, whitespace runs and newlines collapsed to one space, surrounding spaces removed),
// not the raw text: the reference's tokenizer is lossy, so val_bpb counts the normalised bytes.
// The first piece of a document can carry a "▁" only if the normalised text begins with a space,
// which whitespace trimming rules out, and the rule's "not after a boundary" exception is what
// keeps a "▁" right after BOS from being charged a byte that decode does not produce.
TEST_F(GcideTokenizer, BytesThroughTheTablesEqualTheDecodedTextsUtf8Bytes) {
  const ByteLuts l = build_byte_luts(*tok_, 1024);
  std::int64_t table_bytes = 0, decoded_bytes = 0, raw_bytes = 0, byte_fallback_tokens = 0;
  for (const std::string& doc : *val_) {
    const auto ids = tok_->encode(doc);
    std::int32_t prev = tok_->bos_id();
    std::int64_t doc_bytes = 0;
    for (int id : ids) {
      doc_bytes += token_bytes(prev, id, l);
      byte_fallback_tokens += tok_->processor().IsByte(id);
      prev = id;
    }
    const std::string decoded = tok_->decode(ids);
    ASSERT_TRUE(is_valid_utf8(decoded));
    ASSERT_EQ(doc_bytes, static_cast<std::int64_t>(decoded.size())) << "document: " << doc.substr(0, 80);
    table_bytes += doc_bytes;
    decoded_bytes += static_cast<std::int64_t>(decoded.size());
    raw_bytes += static_cast<std::int64_t>(doc.size());
  }
  EXPECT_EQ(table_bytes, decoded_bytes);
  EXPECT_GT(byte_fallback_tokens, 0) << "the check should cover byte-fallback pieces too";
  // Normalisation removes bytes (newlines + indentation), it never adds many.
  EXPECT_LT(decoded_bytes, raw_bytes);
  EXPECT_GT(decoded_bytes, raw_bytes * 9 / 10);
}

TEST_F(GcideTokenizer, BitsPerByteIsNatsOverLn2TimesTokensPerByte) {
  const ByteLuts l = build_byte_luts(*tok_, 1024);
  BpbAccumulator acc;
  const auto ids = tok_->encode((*val_)[0]);
  std::int32_t prev = tok_->bos_id();
  std::int64_t bytes = 0;
  for (int id : ids) {
    acc.add(2.0, prev, id, l);
    bytes += token_bytes(prev, id, l);
    prev = id;
  }
  EXPECT_DOUBLE_EQ(acc.val_loss(), 2.0);
  EXPECT_NEAR(acc.val_bpb(), 2.0 / std::log(2.0) * static_cast<double>(ids.size()) / static_cast<double>(bytes), 1e-12);
}

TEST_F(GcideTokenizer, VocabularyMismatchIsRejected) {
  try {
    check_tokenizer_vocab(*tok_, 2048, "tok.model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("VOCAB_SIZE=2048 does not match tokenizer vocab_size=1024 of tok.model"), std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(check_tokenizer_vocab(*tok_, 1024, "tok.model"));
}

TEST(Tokenizer, BadFilesAreClearErrors) {
  TempDir dir("tok_bad");
  EXPECT_THROW(Tokenizer(dir / "missing.model"), Error);
  write_text_file_atomic(dir / "garbage.model", "this is not a protobuf");
  try {
    Tokenizer t(dir / "garbage.model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("garbage.model"), std::string::npos);
  }
  write_text_file_atomic(dir / "x.json", "{}");
  EXPECT_THROW(Tokenizer(dir / "x.json"), Error);
}

}  // namespace
}  // namespace pgolf
