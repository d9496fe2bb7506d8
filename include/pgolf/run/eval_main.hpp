// The eval binary: loads an artifact (or raw safetensors weights), evaluates val_loss and val_bpb
// on the validation shards as the reference does, prints the size report, and optionally the bits
// per byte that zstd -22 achieves on the same validation text.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/data/token_stream.hpp"
#include "pgolf/data/tokenizer.hpp"
#include "pgolf/io/zstd.hpp"
#include "pgolf/run/args.hpp"
#include "pgolf/run/binary_info.hpp"
#include "pgolf/run/evaluate.hpp"
#include "pgolf/run/export.hpp"
#include "pgolf/run/logger.hpp"
#include "pgolf/run/select_backend.hpp"
#include "pgolf/run/size_report.hpp"

namespace pgolf::run {

struct ZstdBaseline {
  std::int64_t text_bytes = 0, compressed_bytes = 0;
  double bpb = 0;
};

// The scored validation tokens decoded back to text, document by document (split at BOS), and
// compressed with zstd at `level`: the bits per byte a general-purpose compressor needs for the
// same bytes the model's val_bpb counts (the byte tables count exactly the decoded text's UTF-8
// bytes, see docs/formats.md).
inline ZstdBaseline zstd_baseline(const Tokenizer& tok, std::span<const std::uint16_t> val, int level) {
  std::string text;
  std::vector<int> doc;
  auto flush = [&] {
    if (!doc.empty()) text += tok.decode(doc);
    doc.clear();
  };
  for (std::size_t i = 1; i < val.size(); ++i) {  // the scored targets
    if (val[i] == tok.bos_id()) {
      flush();
    } else {
      doc.push_back(val[i]);
    }
  }
  flush();
  const auto z = io::zstd_compress(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()), level);
  ZstdBaseline b;
  b.text_bytes = static_cast<std::int64_t>(text.size());
  b.compressed_bytes = static_cast<std::int64_t>(z.size());
  b.bpb = 8.0 * static_cast<double>(z.size()) / static_cast<double>(std::max<std::int64_t>(1, b.text_bytes));
  return b;
}

template <ModelConfig C>
int eval_main(int argc, char** argv, const BinaryInfo& info) {
  const std::string program = std::string(info.model_name) + "_eval";
  try {
    check_config_environment<C>();
    DataArgs data;
    std::string artifact, weights;
    bool compare_zstd = false, list_code = false;
    int grad_accum = 0;
    OptionSet o(program, "Evaluates the '" + std::string(info.model_name) + "' model " + describe(C) +
                             " on the validation shards: val_loss (nats/token) and val_bpb, as the reference's final round trip.");
    data.add_to(o);
    o.add("ARTIFACT", &artifact, "int8+zstd artifact to evaluate");
    o.add("WEIGHTS", &weights, "or: unquantized weights (.safetensors) to evaluate");
    o.add("GRAD_ACCUM_STEPS", &grad_accum, "divides VAL_BATCH_SIZE like training does (0: 8 / world size)");
    o.add("ZSTD_BASELINE", &compare_zstd, "also print the bits per byte of zstd -22 on the same validation text");
    o.add("LIST_CODE_FILES", &list_code, "list the files counted as code in the size report");
    if (!o.parse(argc, argv)) return 0;
    PGOLF_CHECK(artifact.empty() != weights.empty(), "give exactly one of --artifact or --weights");
    PGOLF_CHECK(data.train_seq_len >= 1 && data.train_seq_len <= C.max_seq_len,
                "TRAIN_SEQ_LEN=" << data.train_seq_len << " must be in [1, " << C.max_seq_len << "] for " << describe(C));
    Logger log;
    std::vector<float> params(ParamLayout<C>::total);
    std::int64_t model_bytes = 0;
    if (!artifact.empty()) {
      load_int8_artifact<C>(artifact, params);
      model_bytes = static_cast<std::int64_t>(::pgolf::size_of_file(artifact));
    } else {
      read_weights_safetensors<C>(weights, params);
      model_bytes = static_cast<std::int64_t>(::pgolf::size_of_file(weights));
    }
    const Tokenizer tok(data.tokenizer_path);
    check_tokenizer_vocab(tok, C.vocab_size, data.tokenizer_path);
    const ByteLuts luts = build_byte_luts(tok, C.vocab_size);
    const auto val = load_validation_tokens(data.val_pattern(), data.train_seq_len);
    check_tokens_in_vocab(val, C.vocab_size, data.val_pattern());
    std::string device_note;
    const auto backend = make_backend<C>(data.device, OptimizerOptions{}, info, &device_note);
    backend->write_params(params);
    log.printf("eval: %s %s model_params:%lld device:%s val_tokens:%zu", artifact.empty() ? weights.c_str() : artifact.c_str(),
               describe(C).c_str(), static_cast<long long>(param_count<C>), backend->device_name().c_str(), val.size() - 1);
    if (!device_note.empty()) log.printf("device_note:%s", device_note.c_str());
    const int world = 1, accum = grad_accum > 0 ? grad_accum : kReferenceAccumulationWorld / world;
    const EvalResult r = evaluate(
        [&](auto ids, auto targets, std::int64_t b, std::int64_t s, std::span<float> out) { backend->token_losses(ids, targets, b, s, out); },
        std::span<const std::uint16_t>(val), data.train_seq_len, data.val_batch_size, world, accum, data.eval_batch_seqs, luts);
    log.printf("%s val_loss:%.4f val_bpb:%.4f eval_time:%.0fms", artifact.empty() ? "weights" : "final_int8_zstd_roundtrip", r.val_loss,
               r.val_bpb, 1000.0 * r.seconds);
    log.printf("%s_exact val_loss:%.8f val_bpb:%.8f tokens:%lld bytes:%lld", artifact.empty() ? "weights" : "final_int8_zstd_roundtrip",
               r.val_loss, r.val_bpb, static_cast<long long>(r.tokens), static_cast<long long>(r.bytes));
    log_size_report(log, model_bytes, info, list_code);
    if (compare_zstd) {
      const ZstdBaseline z = zstd_baseline(tok, val, io::kDefaultZstdLevel);
      log.printf("zstd_baseline level:%d text_bytes:%lld compressed_bytes:%lld bpb:%.4f", io::kDefaultZstdLevel,
                 static_cast<long long>(z.text_bytes), static_cast<long long>(z.compressed_bytes), z.bpb);
      log.printf("model_vs_zstd: val_bpb:%.4f zstd_bpb:%.4f ratio:%.3f %s", r.val_bpb, z.bpb, r.val_bpb / z.bpb,
                 r.val_bpb < z.bpb ? "model_beats_zstd" : "zstd_beats_model");
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), e.what());
    return 1;
  }
}

}  // namespace pgolf::run
