// The run-time options of the train/quantize/eval binaries, with the reference's environment
// names and defaults (§1.9), and the check that compile-time model variables in the environment
// agree with the binary's configuration.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "pgolf/core/config.hpp"
#include "pgolf/core/error.hpp"
#include "pgolf/model/init.hpp"
#include "pgolf/optim/optimizer.hpp"
#include "pgolf/optim/schedule.hpp"
#include "pgolf/run/options.hpp"

namespace pgolf::run {

// pgolf's embedded default corpus (prepared by examples/prepare_corpus from Debian's GCIDE);
// the reference's defaults name its FineWeb export instead.
inline constexpr char kDefaultDataPath[] = "./data/datasets/gcide_sp1024";
inline constexpr char kDefaultTokenizerPath[] = "./data/tokenizers/gcide_1024_bpe.model";
// The reference's grad_accum_steps = 8 // WORLD_SIZE: the global batch does not depend on the GPU count.
inline constexpr int kReferenceAccumulationWorld = 8;

// Options shared by every binary: where the data and the tokenizer are, and how to evaluate.
struct DataArgs {
  std::string data_path = kDefaultDataPath;            // DATA_PATH
  std::string tokenizer_path = kDefaultTokenizerPath;  // TOKENIZER_PATH
  std::int64_t val_batch_size = 524'288;               // VAL_BATCH_SIZE
  int train_seq_len = 1024;                            // TRAIN_SEQ_LEN
  int eval_batch_seqs = 16;  // EVAL_BATCH_SEQS: sequences per forward in evaluation (memory only; not the metric)
  std::string device = "auto";                         // DEVICE: auto, cpu or cuda

  std::string train_pattern() const { return data_path + "/fineweb_train_*.bin"; }
  std::string val_pattern() const { return data_path + "/fineweb_val_*.bin"; }

  void add_to(OptionSet& o) {
    o.add("DATA_PATH", &data_path, "directory with fineweb_train_*.bin and fineweb_val_*.bin token shards");
    o.add("TOKENIZER_PATH", &tokenizer_path, "SentencePiece .model file (byte accounting for val_bpb)");
    o.add("VAL_BATCH_SIZE", &val_batch_size, "validation tokens per batch across ranks and accumulation steps");
    o.add("TRAIN_SEQ_LEN", &train_seq_len, "sequence length for training and validation");
    o.add("EVAL_BATCH_SEQS", &eval_batch_seqs, "sequences per forward pass during evaluation (memory only)");
    o.add("DEVICE", &device, "auto (GPU when present), cpu or cuda");
  }
};

struct TrainArgs {
  DataArgs data;
  std::string run_id;                      // RUN_ID (default: generated from the time)
  std::string out_dir = "runs";            // OUT_DIR: <out_dir>/<run_id>/ holds the log, checkpoints, weights
  std::int64_t seed = 1337;                // SEED
  int val_loss_every = 1000;               // VAL_LOSS_EVERY
  int train_log_every = 200;               // TRAIN_LOG_EVERY
  int warmup_steps = 20;                   // WARMUP_STEPS
  std::int64_t train_batch_tokens = 524'288;  // TRAIN_BATCH_TOKENS
  int grad_accum_steps = 0;                // GRAD_ACCUM_STEPS (0: the reference's 8 / WORLD_SIZE)
  int checkpoint_every = 0;                // CHECKPOINT_EVERY (0: only at the end)
  bool resume = false;                     // RESUME
  int stop_after_steps = 0;                // STOP_AFTER_STEPS (0: run to the end)
  bool final_roundtrip = true;             // FINAL_ROUNDTRIP: quantize + evaluate at the end, as the reference
  int zstd_level = 22;                     // ZSTD_LEVEL of the final artifact
  ScheduleOptions schedule;
  InitOptions init;
  OptimizerOptions optim;
  std::string ns_precision = "bf16";       // NS_PRECISION: bf16 (the reference) or fp32

  void add_to(OptionSet& o) {
    data.add_to(o);
    o.add("RUN_ID", &run_id, "name of this run (default: train-<date>-<time>)");
    o.add("OUT_DIR", &out_dir, "directory for run outputs: <OUT_DIR>/<RUN_ID>/");
    o.add("SEED", &seed, "random seed of the initialisation");
    o.add("VAL_LOSS_EVERY", &val_loss_every, "validate every N steps (0: only at the end)");
    o.add("TRAIN_LOG_EVERY", &train_log_every, "log the train loss every N steps (and the first 10)");
    o.add("ITERATIONS", &schedule.iterations, "number of training steps");
    o.add("WARMDOWN_ITERS", &schedule.warmdown_iters, "length of the linear LR warmdown, in steps");
    o.add("WARMUP_STEPS", &warmup_steps, "priming steps run and then undone before training (not timed)");
    o.add("TRAIN_BATCH_TOKENS", &train_batch_tokens, "tokens per optimizer step (all ranks and accumulation steps)");
    o.add("GRAD_ACCUM_STEPS", &grad_accum_steps, "micro-batches per step (0: 8 / world size, the reference)");
    o.add("MAX_WALLCLOCK_SECONDS", &schedule.max_wallclock_seconds, "training time cap; the warmdown follows it (0: off)");
    o.add("QK_GAIN_INIT", &init.qk_gain_init, "initial per-head query gain");
    o.add("TIED_EMBED_INIT_STD", &init.tied_embed_init_std, "std of the tied embedding's initialisation");
    o.add("EMBED_LR", &optim.embed_lr, "Adam LR of an untied embedding");
    o.add("HEAD_LR", &optim.head_lr, "Adam LR of an untied lm_head");
    o.add("TIED_EMBED_LR", &optim.tied_embed_lr, "Adam LR of the tied embedding");
    o.add("MATRIX_LR", &optim.matrix_lr, "Muon LR of the block matrices");
    o.add("SCALAR_LR", &optim.scalar_lr, "Adam LR of vectors, scalars and control tensors");
    o.add("MUON_MOMENTUM", &schedule.muon_momentum, "Muon momentum after warm-up");
    o.add("MUON_BACKEND_STEPS", &optim.muon_backend_steps, "Newton-Schulz iterations");
    o.add("MUON_MOMENTUM_WARMUP_START", &schedule.muon_momentum_warmup_start, "Muon momentum at step 0");
    o.add("MUON_MOMENTUM_WARMUP_STEPS", &schedule.muon_momentum_warmup_steps, "steps of the Muon momentum warm-up");
    o.add("BETA1", &optim.beta1, "Adam beta1");
    o.add("BETA2", &optim.beta2, "Adam beta2");
    o.add("ADAM_EPS", &optim.adam_eps, "Adam epsilon");
    o.add("GRAD_CLIP_NORM", &optim.grad_clip_norm, "global gradient-norm clip (0: off)");
    o.add("MUON_WD", &optim.muon_weight_decay, "decoupled weight decay of the Muon group (0: off)");
    o.add("ADAM_WD", &optim.adam_weight_decay, "decoupled weight decay of the Adam groups (0: off)");
    o.add("NS_PRECISION", &ns_precision, "Newton-Schulz precision: bf16 (the reference) or fp32");
    o.add("CHECKPOINT_EVERY", &checkpoint_every, "write a checkpoint every N steps (0: only at the end)");
    o.add("RESUME", &resume, "resume from <OUT_DIR>/<RUN_ID>/checkpoint.pgck when it exists");
    o.add("STOP_AFTER_STEPS", &stop_after_steps,
          "checkpoint and exit after this many steps of this process (time-sliced machines; RESUME=1 continues)");
    o.add("FINAL_ROUNDTRIP", &final_roundtrip, "after training, write the int8+zstd artifact and evaluate it");
    o.add("ZSTD_LEVEL", &zstd_level, "zstd level of the final artifact");
  }

  void finalize() {
    if (ns_precision == "bf16") {
      optim.ns_precision = NsPrecision::bf16;
    } else if (ns_precision == "fp32") {
      optim.ns_precision = NsPrecision::fp32;
    } else {
      PGOLF_FAIL("NS_PRECISION must be bf16 or fp32, got '" << ns_precision << "'");
    }
    PGOLF_CHECK(schedule.iterations >= 0, "ITERATIONS must be >= 0, got " << schedule.iterations);
    PGOLF_CHECK(train_batch_tokens > 0, "TRAIN_BATCH_TOKENS must be positive, got " << train_batch_tokens);
    PGOLF_CHECK(data.train_seq_len > 0, "TRAIN_SEQ_LEN must be positive, got " << data.train_seq_len);
    PGOLF_CHECK(grad_accum_steps >= 0, "GRAD_ACCUM_STEPS must be >= 0, got " << grad_accum_steps);
    PGOLF_CHECK(data.eval_batch_seqs > 0, "EVAL_BATCH_SEQS must be positive, got " << data.eval_batch_seqs);
    PGOLF_CHECK(zstd_level >= 1 && zstd_level <= 22, "ZSTD_LEVEL must be in [1, 22], got " << zstd_level);
  }
};

// The reference reads the model's shape from VOCAB_SIZE, NUM_LAYERS, ...; in pgolf those are
// compiled in. A value in the environment that disagrees with the binary is an error (silently
// training another model than asked would be worse).
template <ModelConfig C>
void check_config_environment() {
  auto check = [](const char* env, double compiled) {
    const char* v = std::getenv(env);
    if (!v) return;
    char* end = nullptr;
    const double d = std::strtod(v, &end);
    if (*v == '\0' || *end != '\0' || std::fabs(d - compiled) > 1e-9 * std::max(1.0, std::fabs(compiled))) {
      PGOLF_FAIL("the environment sets " << env << "=" << v << " but this binary is compiled for " << env << "="
                                         << compiled << " (configuration " << describe(C)
                                         << "); model dimensions are compile-time in pgolf: build a binary for the "
                                            "configuration you want with pgolf_add_model()");
    }
  };
  check("VOCAB_SIZE", C.vocab_size);
  check("NUM_LAYERS", C.num_layers);
  check("MODEL_DIM", C.model_dim);
  check("NUM_HEADS", C.num_heads);
  check("NUM_KV_HEADS", C.num_kv_heads);
  check("MLP_MULT", C.mlp_mult);
  check("TIE_EMBEDDINGS", C.tie_embeddings ? 1 : 0);
  check("ROPE_BASE", C.rope_base);
  check("LOGIT_SOFTCAP", C.logit_softcap);
}

}  // namespace pgolf::run
