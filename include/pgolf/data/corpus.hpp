// Raw text → documents → tokenizer + token shards, mirroring the reference's pipeline
// (data/download_hf_docs_and_tokenize.py): documents in a fixed shuffled order, the first N to
// validation and the rest to training, a SentencePiece BPE tokenizer trained on training documents
// only, each document written as [BOS] + tokens (no EOS), shards of at most shard_size tokens.
//
// Document sources: plain text with a delimiter line, JSONL with a "text" field (the reference's
// raw format), and Debian's GCIDE dictionary (one dictionary entry per document).
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/file.hpp"
#include "pgolf/core/hash.hpp"
#include "pgolf/core/json.hpp"
#include "pgolf/core/parallel.hpp"
#include "pgolf/core/philox.hpp"
#include "pgolf/core/progress.hpp"
#include "pgolf/data/shard.hpp"
#include "pgolf/data/tokenizer.hpp"

namespace pgolf {

// ---------------------------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------------------------

// Drops bytes that are not part of well-formed UTF-8 (what `iconv -c` does to GCIDE's few bad bytes).
inline std::string drop_invalid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (ok && len > 1) {  // reject overlong forms, surrogates and code points beyond U+10FFFF
      std::uint32_t cp = c & (0x7F >> len);
      for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
      const std::uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= min_cp[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    }
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      ++i;
    }
  }
  return out;
}

inline bool is_valid_utf8(std::string_view s) { return drop_invalid_utf8(s).size() == s.size(); }

inline std::string_view strip(std::string_view s) {
  auto sp = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; };
  while (!s.empty() && sp(s.front())) s.remove_prefix(1);
  while (!s.empty() && sp(s.back())) s.remove_suffix(1);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Document sources
// ---------------------------------------------------------------------------------------------

inline constexpr char kDefaultDocumentDelimiter[] = "<|endoftext|>";

// Documents separated by lines equal to `delimiter`; empty documents are skipped.
inline std::vector<std::string> read_delimited_documents(const std::filesystem::path& path, const std::string& delimiter) {
  const std::string text = read_text_file(path);
  std::vector<std::string> docs;
  std::string cur;
  std::size_t pos = 0;
  auto flush = [&] {
    if (!strip(cur).empty()) docs.push_back(cur);
    cur.clear();
  };
  while (pos <= text.size()) {
    const std::size_t nl = text.find('\n', pos);
    const std::size_t end = nl == std::string::npos ? text.size() : nl;
    std::string_view line(text.data() + pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == delimiter) {
      flush();
    } else {
      if (!cur.empty()) cur += '\n';
      cur.append(line);
    }
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  flush();
  return docs;
}

// One JSON object per line with a string field (the reference's docs_selected.jsonl: "text").
inline std::vector<std::string> read_jsonl_documents(const std::filesystem::path& path, const std::string& field = "text") {
  std::ifstream in(path);
  if (!in) PGOLF_FAIL("cannot open " << path.string() << " for reading");
  std::vector<std::string> docs;
  std::string line;
  std::int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (strip(line).empty()) continue;
    try {
      const json::Value v = json::parse(line);
      docs.push_back(v.at(field).as_string());
    } catch (const Error& e) {
      PGOLF_FAIL(path.string() << " line " << line_no << ": " << e.what());
    }
  }
  return docs;
}

// Whole contents of a gzip (or dictzip) file.
inline std::string read_gzip_file(const std::filesystem::path& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) PGOLF_FAIL("cannot open " << path.string() << " for reading");
  std::string out;
  std::vector<char> buf(1 << 20);
  for (;;) {
    const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int errnum = 0;
      const std::string msg = gzerror(f, &errnum);
      gzclose(f);
      PGOLF_FAIL("decompressing " << path.string() << ": " << msg);
    }
    if (n == 0) break;
    out.append(buf.data(), static_cast<std::size_t>(n));
  }
  gzclose(f);
  return out;
}

// dictd index numbers: base64 digits A–Z a–z 0–9 + /, most significant first.
inline std::uint64_t decode_dictd_number(std::string_view s, const std::string& context) {
  static constexpr std::string_view kDigits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  PGOLF_CHECK(!s.empty() && s.size() <= 10, context << ": invalid dictd number '" << s << "'");
  std::uint64_t v = 0;
  for (char c : s) {
    const auto d = kDigits.find(c);
    PGOLF_CHECK(d != std::string_view::npos, context << ": invalid dictd digit '" << c << "'");
    v = v * 64 + d;
  }
  return v;
}

// The GCIDE entry text cleaned as docs/corpus.md describes: lines that hold only a bracketed
// source tag ("[1913 Webster]", "[WordNet 1.5]") are dropped, every line is stripped, empty lines
// are dropped, invalid UTF-8 bytes are removed; the remaining lines are joined by "\n".
inline std::string clean_gcide_entry(std::string_view raw) {
  const std::string text = drop_invalid_utf8(raw);
  std::string out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    const std::size_t end = nl == std::string::npos ? text.size() : nl;
    const std::string_view line = strip(std::string_view(text).substr(pos, end - pos));
    const bool tag_only = line.size() >= 2 && line.front() == '[' && line.back() == ']' && line.find(']') == line.size() - 1;
    if (!line.empty() && !tag_only) {
      if (!out.empty()) out += '\n';
      out.append(line);
    }
    pos = end + 1;
  }
  return out;
}

// Every dictionary entry of a dictd database (.dict.dz + .index), one document each, in file
// order; the database's own metadata entries (00-database-*, 00-gcide-*, 00-web1913-*) are skipped.
inline std::vector<std::string> read_gcide_documents(const std::filesystem::path& dict_path, const std::filesystem::path& index_path) {
  const std::string dict = read_gzip_file(dict_path);
  const std::string index = read_text_file(index_path);
  std::map<std::uint64_t, std::uint64_t> entries;  // offset → length, unique and sorted
  std::size_t pos = 0;
  std::int64_t line_no = 0;
  while (pos < index.size()) {
    const std::size_t nl = index.find('\n', pos);
    const std::string_view line(index.data() + pos, (nl == std::string::npos ? index.size() : nl) - pos);
    pos = nl == std::string::npos ? index.size() : nl + 1;
    ++line_no;
    if (line.empty()) continue;
    const auto t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
    const std::string ctx = index_path.string() + " line " + std::to_string(line_no);
    PGOLF_CHECK(t1 != std::string_view::npos && t2 != std::string_view::npos, ctx << ": expected headword<TAB>offset<TAB>length");
    const std::string_view head = line.substr(0, t1);
    if (head.starts_with("00-database") || head.starts_with("00-gcide") || head.starts_with("00-web1913")) continue;
    const std::uint64_t off = decode_dictd_number(line.substr(t1 + 1, t2 - t1 - 1), ctx);
    const std::uint64_t len = decode_dictd_number(line.substr(t2 + 1), ctx);
    PGOLF_CHECK(off + len <= dict.size(), ctx << ": entry [" << off << ", " << off + len << ") is beyond the " << dict.size()
                                              << " bytes of " << dict_path.string());
    entries.emplace(off, len);
  }
  std::vector<std::string> docs;
  docs.reserve(entries.size());
  for (const auto& [off, len] : entries) {
    std::string doc = clean_gcide_entry(std::string_view(dict).substr(off, len));
    if (!doc.empty()) docs.push_back(std::move(doc));
  }
  PGOLF_CHECK(!docs.empty(), index_path.string() << ": no dictionary entries");
  return docs;
}

// ---------------------------------------------------------------------------------------------
// Shuffle, split, tokenize, shard
// ---------------------------------------------------------------------------------------------

// Fisher–Yates with pgolf's counter-based RNG: the same order on every platform and compiler.
inline void shuffle_documents(std::vector<std::string>& docs, std::uint64_t seed) {
  const RandomStream rng(seed, fnv1a64("pgolf.corpus.shuffle"));
  for (std::size_t i = docs.size(); i > 1; --i) {
    const std::size_t j = rng.below(i - 1, static_cast<std::uint32_t>(i));
    std::swap(docs[i - 1], docs[j]);
  }
}

struct SplitStats {
  std::int64_t documents = 0;
  std::int64_t bytes = 0;   // UTF-8 bytes of the raw document text
  std::int64_t tokens = 0;  // including one BOS per document
  std::int64_t shards = 0;
  double tokens_per_byte() const { return bytes > 0 ? static_cast<double>(tokens) / static_cast<double>(bytes) : 0.0; }
};

struct CorpusOptions {
  std::int64_t num_val_docs = 5000;
  std::int64_t shard_size = 100'000'000;  // SHARD_SIZE = 10**8 tokens
  std::uint64_t seed = 1337;
  std::string shard_prefix = "fineweb";   // fineweb_{train,val}_%06d.bin: the reference's names
  std::int64_t tokenizer_train_docs = 0;  // 0 = every training document
  TokenizerSpec tokenizer;
};

// Splits and tokenizes shuffled documents into shards: [BOS] + tokens per document.
class ShardWriter {
 public:
  ShardWriter(std::filesystem::path dir, std::string prefix, std::string split, std::int64_t shard_size)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), split_(std::move(split)), shard_size_(shard_size) {
    PGOLF_CHECK(shard_size_ > 0 && shard_size_ <= kShardMaxTokens, "shard size " << shard_size_);
  }
  void append(const std::vector<std::uint16_t>& tokens) {
    std::size_t pos = 0;
    while (pos < tokens.size()) {
      const std::size_t take = std::min<std::size_t>(static_cast<std::size_t>(shard_size_) - buf_.size(), tokens.size() - pos);
      buf_.insert(buf_.end(), tokens.begin() + static_cast<std::ptrdiff_t>(pos), tokens.begin() + static_cast<std::ptrdiff_t>(pos + take));
      pos += take;
      if (static_cast<std::int64_t>(buf_.size()) == shard_size_) flush();
    }
  }
  void flush() {
    if (buf_.empty()) return;
    char name[64];
    std::snprintf(name, sizeof name, "_%s_%06lld.bin", split_.c_str(), static_cast<long long>(count_));
    write_shard(dir_ / (prefix_ + name), buf_);
    ++count_;
    buf_.clear();
  }
  std::int64_t shards() const { return count_; }

 private:
  std::filesystem::path dir_;
  std::string prefix_, split_;
  std::int64_t shard_size_;
  std::vector<std::uint16_t> buf_;
  std::int64_t count_ = 0;
};

// Encodes documents [begin, end) in parallel and appends them, in order, to `writer`.
inline SplitStats encode_split(const Tokenizer& tok, const std::vector<std::string>& docs, std::size_t begin, std::size_t end,
                               ShardWriter& writer, const std::string& label) {
  SplitStats st;
  const int vocab = tok.vocab_size();
  PGOLF_CHECK(vocab <= 65536, "vocab_size=" << vocab << " is too large for uint16 shard storage");
  constexpr std::size_t kBatchDocs = 2048;
  Progress progress("encode " + label, static_cast<std::int64_t>(end - begin), "docs");
  std::vector<std::vector<std::uint16_t>> encoded;
  for (std::size_t b = begin; b < end; b += kBatchDocs) {
    const std::size_t e = std::min(end, b + kBatchDocs);
    encoded.assign(e - b, {});
    parallel_for(static_cast<std::int64_t>(b), static_cast<std::int64_t>(e), 16, [&](std::int64_t i0, std::int64_t i1) {
      for (std::int64_t i = i0; i < i1; ++i) {
        const auto ids = tok.encode(docs[static_cast<std::size_t>(i)]);
        auto& out = encoded[static_cast<std::size_t>(i) - b];
        out.reserve(ids.size() + 1);
        out.push_back(static_cast<std::uint16_t>(tok.bos_id()));
        for (int id : ids) {
          PGOLF_CHECK(id >= 0 && id < vocab, "token id " << id << " outside declared vocab_size=" << vocab);
          out.push_back(static_cast<std::uint16_t>(id));
        }
      }
    });
    for (std::size_t i = b; i < e; ++i) {
      writer.append(encoded[i - b]);
      ++st.documents;
      st.bytes += static_cast<std::int64_t>(docs[i].size());
      st.tokens += static_cast<std::int64_t>(encoded[i - b].size());
    }
    progress.update(static_cast<std::int64_t>(e - begin));
  }
  writer.flush();
  st.shards = writer.shards();
  return st;
}

struct CorpusSummary {
  SplitStats val, train;
  int vocab_size = 0;
  double tokenizer_seconds = 0, encode_seconds = 0;

  json::Value to_json() const {
    auto split = [](const SplitStats& s) {
      return json::Value(json::Object{{"documents", json::Value(s.documents)},
                                      {"bytes", json::Value(s.bytes)},
                                      {"tokens", json::Value(s.tokens)},
                                      {"shards", json::Value(s.shards)},
                                      {"tokens_per_byte", json::Value(s.tokens_per_byte())}});
    };
    return json::Value(json::Object{{"val", split(val)}, {"train", split(train)}, {"vocab_size", json::Value(vocab_size)}});
  }
};

// Shuffles, splits, trains (or reuses) the tokenizer and writes the shards of both splits.
// `tokenizer_path` receives the trained model unless `reuse_tokenizer` names an existing one.
inline CorpusSummary prepare_corpus(std::vector<std::string> docs, const CorpusOptions& opt, const std::filesystem::path& output_dir,
                                    const std::filesystem::path& tokenizer_path, const std::filesystem::path& reuse_tokenizer = {}) {
  PGOLF_CHECK(opt.num_val_docs >= 1, "the validation split needs at least one document (num_val_docs=" << opt.num_val_docs << ")");
  PGOLF_CHECK(static_cast<std::int64_t>(docs.size()) > opt.num_val_docs,
              "the corpus has " << docs.size() << " documents: not enough for " << opt.num_val_docs << " validation documents plus training");
  shuffle_documents(docs, opt.seed);
  const auto n_val = static_cast<std::size_t>(opt.num_val_docs);
  CorpusSummary summary;
  Stopwatch clock;
  std::string model;
  if (!reuse_tokenizer.empty()) {
    model = read_text_file(reuse_tokenizer);
  } else {
    std::vector<std::string> texts;
    const std::size_t limit = opt.tokenizer_train_docs > 0 ? std::min(docs.size(), n_val + static_cast<std::size_t>(opt.tokenizer_train_docs))
                                                           : docs.size();
    for (std::size_t i = n_val; i < limit; ++i) {  // training documents only
      std::string t = tokenizer_training_text(docs[i]);
      if (!t.empty()) texts.push_back(std::move(t));
    }
    std::fprintf(stderr, "tokenizer: training BPE vocab %d on %zu training documents\n", opt.tokenizer.vocab_size, texts.size());
    model = train_bpe_tokenizer(texts, opt.tokenizer);
    write_file_atomic(tokenizer_path, std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(model.data()), model.size()));
  }
  summary.tokenizer_seconds = clock.seconds();
  const Tokenizer tok = reuse_tokenizer.empty() ? Tokenizer(tokenizer_path) : Tokenizer(reuse_tokenizer);
  summary.vocab_size = tok.vocab_size();
  std::filesystem::create_directories(output_dir);
  for (const auto& e : std::filesystem::directory_iterator(output_dir)) {  // stale shards of an earlier export
    const std::string name = e.path().filename().string();
    if ((name.starts_with(opt.shard_prefix + "_train_") || name.starts_with(opt.shard_prefix + "_val_")) && name.ends_with(".bin")) {
      std::filesystem::remove(e.path());
    }
  }
  clock.restart();
  ShardWriter val_writer(output_dir, opt.shard_prefix, "val", opt.shard_size);
  summary.val = encode_split(tok, docs, 0, n_val, val_writer, "val");
  ShardWriter train_writer(output_dir, opt.shard_prefix, "train", opt.shard_size);
  summary.train = encode_split(tok, docs, n_val, docs.size(), train_writer, "train");
  summary.encode_seconds = clock.seconds();
  write_text_file_atomic(output_dir / "corpus_summary.json", json::dump(summary.to_json()) + "\n");
  return summary;
}

}  // namespace pgolf
