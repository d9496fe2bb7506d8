// Prepares a corpus the way the reference's data pipeline does: documents → fixed-seed shuffle →
// validation/train split → SentencePiece BPE tokenizer trained on the training documents →
// [BOS] + tokens per document → token shards in the reference's format.
//
// With no arguments it prepares pgolf's embedded default corpus, Debian's GCIDE dictionary.
#include <cstdio>
#include <string>

#include "pgolf/core/error.hpp"
#include "pgolf/core/progress.hpp"
#include "pgolf/data/corpus.hpp"
#include "pgolf/run/options.hpp"

namespace {

constexpr char kGcideDict[] = "/usr/share/dictd/gcide.dict.dz";  // Debian package dict-gcide
constexpr char kGcideIndex[] = "/usr/share/dictd/gcide.index";

int run(int argc, char** argv) {
  std::string format = "gcide", input, index = kGcideIndex, delimiter = pgolf::kDefaultDocumentDelimiter, field = "text";
  std::string output_dir = "data/datasets/gcide_sp1024", tokenizer = "data/tokenizers/gcide_1024_bpe.model", reuse;
  pgolf::CorpusOptions opt;
  std::int64_t seed = static_cast<std::int64_t>(opt.seed);
  int vocab = opt.tokenizer.vocab_size, threads = pgolf::default_thread_count();
  pgolf::run::OptionSet o("prepare_corpus",
                          "Turns raw text into a SentencePiece tokenizer and token shards (the reference's format and pipeline).\n"
                          "Default: Debian's GCIDE dictionary, one entry per document.");
  o.add("FORMAT", &format, "input format: gcide, text (documents separated by a delimiter line) or jsonl");
  o.add("INPUT", &input, std::string("input file (default for gcide: ") + kGcideDict + ")");
  o.add("GCIDE_INDEX", &index, "dictd index of the gcide input");
  o.add("DELIMITER", &delimiter, "document delimiter line of the text format");
  o.add("JSON_FIELD", &field, "field holding the document text in the jsonl format");
  o.add("OUTPUT_DIR", &output_dir, "where the shards and corpus_summary.json go");
  o.add("TOKENIZER", &tokenizer, "path of the trained tokenizer (.model)");
  o.add("REUSE_TOKENIZER", &reuse, "use this existing .model instead of training one");
  o.add("VOCAB_SIZE", &vocab, "tokenizer vocabulary size");
  o.add("NUM_VAL_DOCS", &opt.num_val_docs,
        "documents in the validation split (5,000 GCIDE entries: about 4% of the corpus, 0.7M tokens)");
  o.add("SHARD_SIZE", &opt.shard_size, "maximum tokens per shard");
  o.add("SEED", &seed, "seed of the document shuffle");
  o.add("TOKENIZER_TRAIN_DOCS", &opt.tokenizer_train_docs, "training documents used to train the tokenizer (0: all)");
  o.add("THREADS", &threads, "tokenizer training threads");
  if (!o.parse(argc, argv)) return 0;
  opt.seed = static_cast<std::uint64_t>(seed);
  opt.tokenizer.vocab_size = vocab;
  opt.tokenizer.num_threads = threads;

  pgolf::Stopwatch clock;
  std::vector<std::string> docs;
  if (format == "gcide") {
    docs = pgolf::read_gcide_documents(input.empty() ? kGcideDict : input, index);
  } else if (format == "text") {
    PGOLF_CHECK(!input.empty(), "--input is required for the text format");
    docs = pgolf::read_delimited_documents(input, delimiter);
  } else if (format == "jsonl") {
    PGOLF_CHECK(!input.empty(), "--input is required for the jsonl format");
    docs = pgolf::read_jsonl_documents(input, field);
  } else {
    PGOLF_FAIL("unknown --format '" << format << "' (expected gcide, text or jsonl)");
  }
  std::fprintf(stderr, "read %zu documents in %.1f s\n", docs.size(), clock.seconds());
  const auto s = pgolf::prepare_corpus(std::move(docs), opt, output_dir, tokenizer, reuse);
  std::printf("corpus: %s tokenizer: %s vocab_size: %d (tokenizer %.1f s, encoding %.1f s, total %.1f s)\n", output_dir.c_str(),
              (reuse.empty() ? tokenizer : reuse).c_str(), s.vocab_size, s.tokenizer_seconds, s.encode_seconds, clock.seconds());
  for (const auto& [name, st] : {std::pair{"val", s.val}, std::pair{"train", s.train}}) {
    std::printf("split:%s documents:%lld bytes:%lld tokens:%lld tokens_per_byte:%.4f shards:%lld\n", name,
                static_cast<long long>(st.documents), static_cast<long long>(st.bytes), static_cast<long long>(st.tokens),
                st.tokens_per_byte(), static_cast<long long>(st.shards));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const pgolf::Error& e) {
    std::fprintf(stderr, "prepare_corpus: error: %s\n", e.what());
    return 1;
  }
}
