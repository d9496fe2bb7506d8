// SentencePiece tokenizers: loading a .model, the byte tables of the bits-per-byte metric, and
// training a BPE model with the reference's spec (data/download_hf_docs_and_tokenize.py
// build_sentencepiece_tokenizer).
#pragma once

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/file.hpp"
#include "pgolf/eval/bpb.hpp"

namespace pgolf {

inline constexpr std::string_view kSentencePieceSpace = "\xE2\x96\x81";  // "▁" U+2581, SentencePiece's whitespace mark

class Tokenizer {
 public:
  explicit Tokenizer(const std::filesystem::path& path) : path_(path), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
    if (path.extension() != ".model") PGOLF_FAIL("tokenizer " << path.string() << ": only SentencePiece .model files are supported");
    if (!std::filesystem::exists(path)) PGOLF_FAIL("tokenizer " << path.string() << " does not exist");
    const auto st = sp_->Load(path.string());
    if (!st.ok()) PGOLF_FAIL("tokenizer " << path.string() << " is not a valid SentencePiece model: " << st.ToString());
  }
  // From the bytes of a serialized model (e.g. freshly trained).
  static Tokenizer from_serialized(const std::string& model_proto, const std::string& name) {
    Tokenizer t;
    t.path_ = name;
    t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto st = t.sp_->LoadFromSerializedProto(model_proto);
    if (!st.ok()) PGOLF_FAIL("tokenizer " << name << " is not a valid SentencePiece model: " << st.ToString());
    return t;
  }

  const std::filesystem::path& path() const { return path_; }
  int vocab_size() const { return sp_->GetPieceSize(); }
  int bos_id() const { return sp_->bos_id(); }
  const sentencepiece::SentencePieceProcessor& processor() const { return *sp_; }

  std::vector<int> encode(std::string_view text) const {
    std::vector<int> ids;
    const auto st = sp_->Encode(text, &ids);
    if (!st.ok()) PGOLF_FAIL("tokenizer " << path_.string() << ": encoding failed: " << st.ToString());
    return ids;
  }
  std::string decode(const std::vector<int>& ids) const {
    std::string text;
    const auto st = sp_->Decode(ids, &text);
    if (!st.ok()) PGOLF_FAIL("tokenizer " << path_.string() << ": decoding failed: " << st.ToString());
    return text;
  }

 private:
  Tokenizer() = default;
  std::filesystem::path path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

inline void check_tokenizer_vocab(const Tokenizer& tok, int model_vocab, const std::string& path) {
  if (tok.vocab_size() != model_vocab) {
    PGOLF_FAIL("VOCAB_SIZE=" << model_vocab << " does not match tokenizer vocab_size=" << tok.vocab_size() << " of " << path
                             << ": the binary's configuration and the tokenizer must agree");
  }
}

// The reference's build_sentencepiece_luts: tables sized max(tokenizer vocab, model vocab).
inline ByteLuts build_byte_luts(const Tokenizer& tok, int model_vocab) {
  const auto& sp = tok.processor();
  const int sp_vocab = tok.vocab_size();
  const auto n = static_cast<std::size_t>(std::max(sp_vocab, model_vocab));
  ByteLuts l;
  l.base_bytes.assign(n, 0);
  l.has_leading_space.assign(n, 0);
  l.is_boundary.assign(n, 1);
  for (int id = 0; id < sp_vocab; ++id) {
    if (sp.IsControl(id) || sp.IsUnknown(id) || sp.IsUnused(id)) continue;
    l.is_boundary[id] = 0;
    if (sp.IsByte(id)) {
      l.base_bytes[id] = 1;
      continue;
    }
    std::string_view piece = sp.IdToPiece(id);
    if (piece.substr(0, kSentencePieceSpace.size()) == kSentencePieceSpace) {
      l.has_leading_space[id] = 1;
      piece.remove_prefix(kSentencePieceSpace.size());
    }
    l.base_bytes[id] = static_cast<std::int16_t>(piece.size());
  }
  return l;
}

// The reference's tokenizer spec (data/tokenizer_specs.json + build_sentencepiece_tokenizer).
struct TokenizerSpec {
  int vocab_size = 1024;
  double character_coverage = 0.999;
  int num_threads = 2;
  // SentencePiece drops training sentences longer than max_sentence_length (default 4,192 bytes);
  // dictionary entries can be longer, so the limit is raised to keep them.
  int max_sentence_length = 1 << 16;
  // Training sentences sampled by SentencePiece (its input_sentence_size); 0 = all.
  std::int64_t input_sentence_size = 0;
};

namespace detail {
class VectorSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& s) : s_(s) {}
  bool done() const override { return i_ >= s_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return s_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& s_;
  std::size_t i_ = 0;
};
}  // namespace detail

// The text of a document as the reference feeds it to the trainer: NUL → space, stripped of
// surrounding whitespace (_iter_sentencepiece_text); empty results are skipped.
inline std::string tokenizer_training_text(std::string_view doc) {
  std::string t(doc);
  for (auto& c : t) {
    if (c == '\0') c = ' ';
  }
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
  std::size_t b = 0, e = t.size();
  while (b < e && is_space(t[b])) ++b;
  while (e > b && is_space(t[e - 1])) --e;
  return t.substr(b, e - b);
}

// Trains a BPE model on the documents and returns the serialized model (write it with
// write_file_atomic). pad/bos/eos/unk = 0/1/2/3, byte fallback, split digits, nmt_nfkc, no dummy prefix.
inline std::string train_bpe_tokenizer(const std::vector<std::string>& training_texts, const TokenizerSpec& spec) {
  PGOLF_CHECK(!training_texts.empty(), "tokenizer training needs at least one non-empty document");
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(spec.vocab_size)},
      {"character_coverage", std::to_string(spec.character_coverage)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"normalization_rule_name", "nmt_nfkc"},
      {"add_dummy_prefix", "false"},
      {"pad_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"unk_id", "3"},
      {"hard_vocab_limit", "false"},
      {"num_threads", std::to_string(spec.num_threads)},
      {"max_sentence_length", std::to_string(spec.max_sentence_length)},
      {"input_sentence_size", std::to_string(spec.input_sentence_size)},
      {"shuffle_input_sentence", "true"},
      {"minloglevel", "1"},
  };
  detail::VectorSentenceIterator it(training_texts);
  std::string model;
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &model);
  if (!st.ok()) PGOLF_FAIL("SentencePiece training failed: " << st.ToString());
  return model;
}

}  // namespace pgolf
