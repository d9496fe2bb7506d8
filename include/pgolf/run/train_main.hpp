// The train binary: the reference's training script (train_gpt.py main()) for one compile-time
// configuration. Data order, warm-up, schedules, validation cadence and log lines follow the
// reference; checkpoints, resume and the NaN guard are pgolf's.
#pragma once

#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>

#include "pgolf/core/error.hpp"
#include "pgolf/core/progress.hpp"
#include "pgolf/data/token_stream.hpp"
#include "pgolf/data/tokenizer.hpp"
#include "pgolf/run/args.hpp"
#include "pgolf/run/binary_info.hpp"
#include "pgolf/run/checkpoint.hpp"
#include "pgolf/run/evaluate.hpp"
#include "pgolf/run/export.hpp"
#include "pgolf/run/logger.hpp"
#include "pgolf/run/select_backend.hpp"

namespace pgolf::run {

inline std::string default_run_id() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "train-%Y%m%d-%H%M%S", std::localtime(&t));
  return buf;
}

template <ModelConfig C>
class Trainer {
 public:
  // The backend follows DEVICE (args.data.device) unless one is given.
  Trainer(const TrainArgs& args, const BinaryInfo& info, std::unique_ptr<Backend> backend = nullptr)
      : a_(args), info_(info), backend_(std::move(backend)) {
    if (!backend_) backend_ = make_backend<C>(a_.data.device, a_.optim, info_, &device_note_);
  }

  void run() {
    const std::filesystem::path dir = std::filesystem::path(a_.out_dir) / a_.run_id;
    std::filesystem::create_directories(dir);
    log_.open(dir / "train.log");
    const std::filesystem::path ckpt_path = dir / "checkpoint.pgck";
    log_.line("run_dir:" + dir.string());
    log_.line("config:" + describe(C) + " fingerprint:" + std::to_string(fingerprint(C)));
    log_.line("init:" + describe_init(C) + " optimizer_groups:" + describe_groups(C));
    log_.line("device:" + backend_->device_name());
    if (!device_note_.empty()) log_.line("device_note:" + device_note_);

    // Tokenizer and validation metric setup.
    const Tokenizer tok(a_.data.tokenizer_path);
    check_tokenizer_vocab(tok, C.vocab_size, a_.data.tokenizer_path);
    const ByteLuts luts = build_byte_luts(tok, C.vocab_size);
    const auto val = load_validation_tokens(a_.data.val_pattern(), a_.data.train_seq_len);
    check_tokens_in_vocab(val, C.vocab_size, a_.data.val_pattern());
    const auto train_files = list_shards(a_.data.train_pattern());
    log_.line("val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=" + a_.data.tokenizer_path);
    log_.line("train_loader:dataset:" + std::filesystem::path(a_.data.data_path).filename().string() +
              " train_shards:" + std::to_string(train_files.size()));
    log_.line("val_loader:shards pattern=" + a_.data.val_pattern() + " tokens:" + std::to_string(val.size() - 1));

    // Model and optimizer.
    const int world = 1;
    const int accum = a_.grad_accum_steps > 0 ? a_.grad_accum_steps : kReferenceAccumulationWorld / world;
    const std::int64_t local_tokens = a_.train_batch_tokens / (static_cast<std::int64_t>(world) * accum);
    PGOLF_CHECK(local_tokens > 0 && local_tokens % a_.data.train_seq_len == 0,
                "TRAIN_BATCH_TOKENS=" << a_.train_batch_tokens << " over WORLD_SIZE=" << world << " x GRAD_ACCUM_STEPS=" << accum
                                      << " gives " << local_tokens << " tokens per micro-batch, which must be a positive multiple of TRAIN_SEQ_LEN="
                                      << a_.data.train_seq_len);
    PGOLF_CHECK(a_.data.train_seq_len <= C.max_seq_len, "TRAIN_SEQ_LEN=" << a_.data.train_seq_len << " exceeds max_seq_len="
                                                                         << C.max_seq_len << " of configuration " << describe(C));
    const std::int64_t micro_batch = local_tokens / a_.data.train_seq_len;
    backend_->init(static_cast<std::uint64_t>(a_.seed), a_.init);
    log_.line("model_params:" + std::to_string(param_count<C>));
    log_.printf("world_size:%d grad_accum_steps:%d", world, accum);
    log_.printf("attention_mode:%s num_heads:%d num_kv_heads:%d", C.num_kv_heads != C.num_heads ? "gqa" : "mha", C.num_heads,
                C.num_kv_heads);
    log_.printf("tie_embeddings:%s embed_lr:%g head_lr:%g matrix_lr:%g scalar_lr:%g", C.tie_embeddings ? "True" : "False",
                base_lr(a_.optim, ParamRole::embedding, C.tie_embeddings), C.tie_embeddings ? 0.0 : a_.optim.head_lr,
                a_.optim.matrix_lr, a_.optim.scalar_lr);
    log_.printf("train_batch_tokens:%lld train_seq_len:%d iterations:%d warmup_steps:%d max_wallclock_seconds:%.3f",
                static_cast<long long>(a_.train_batch_tokens), a_.data.train_seq_len, a_.schedule.iterations, a_.warmup_steps,
                a_.schedule.max_wallclock_seconds);
    log_.printf("seed:%lld", static_cast<long long>(a_.seed));

    DistributedTokenLoader loader(a_.data.train_pattern(), 0, world);
    int start_step = 0;
    double training_ms = 0;
    if (a_.resume && std::filesystem::exists(ckpt_path)) {
      const auto st = load_checkpoint<C>(ckpt_path, *backend_);
      loader.set_position(st.loader_position);
      start_step = st.step;
      training_ms = st.training_ms;
      log_.printf("resumed:%s step:%d train_time:%.0fms", ckpt_path.c_str(), start_step, training_ms);
    } else if (a_.warmup_steps > 0) {
      // Prime every code path, then restore the initial state and restart the data (the reference).
      backend_->save_snapshot();
      for (int w = 0; w < a_.warmup_steps; ++w) {
        train_step(loader, micro_batch, accum, 1.0, muon_momentum_at(a_.schedule, w));
        if (a_.warmup_steps <= 20 || (w + 1) % 10 == 0 || w + 1 == a_.warmup_steps) {
          log_.printf("warmup_step:%d/%d", w + 1, a_.warmup_steps);
        }
      }
      backend_->restore_snapshot();
      loader = DistributedTokenLoader(a_.data.train_pattern(), 0, world);
    }

    auto evaluate_now = [&] {
      return evaluate(
          [&](auto ids, auto targets, std::int64_t b, std::int64_t s, std::span<float> out) { backend_->token_losses(ids, targets, b, s, out); },
          std::span<const std::uint16_t>(val), a_.data.train_seq_len, a_.data.val_batch_size, world, accum, a_.data.eval_batch_seqs,
          luts);
    };

    const int iterations = a_.schedule.iterations;
    std::optional<int> stop_after_step;
    Stopwatch clock;
    Progress progress("train", iterations, "steps", 1e30);  // terminal only: the log lines are the record
    int step = start_step;
    for (;;) {
      const bool last_step = step == iterations || (stop_after_step && step >= *stop_after_step);
      if (last_step || (a_.val_loss_every > 0 && step % a_.val_loss_every == 0)) {
        training_ms += clock.millis();
        const EvalResult r = evaluate_now();
        log_.printf("step:%d/%d val_loss:%.4f val_bpb:%.4f train_time:%.0fms step_avg:%.2fms", step, iterations, r.val_loss,
                    r.val_bpb, training_ms, training_ms / std::max(step, 1));
        clock.restart();
      }
      if (last_step) {
        if (stop_after_step && step < iterations) {
          log_.printf("stopping_early: wallclock_cap train_time:%.0fms step:%d/%d", training_ms, step, iterations);
        }
        break;
      }
      const double elapsed_ms = training_ms + clock.millis();
      const double lr_mul = lr_multiplier(a_.schedule, step, elapsed_ms);
      const double loss = train_step(loader, micro_batch, accum, lr_mul, muon_momentum_at(a_.schedule, step));
      ++step;
      const double approx_ms = training_ms + clock.millis();
      if (!std::isfinite(loss)) {
        log_.printf("error: train_loss is %s at step %d; training stopped", std::isnan(loss) ? "nan" : "inf", step);
        PGOLF_FAIL("train_loss is not finite at step " << step << " of run " << a_.run_id << "; the last good checkpoint "
                                                        << (std::filesystem::exists(ckpt_path) ? ckpt_path.string() : std::string("(none written yet)"))
                                                        << " is intact");
      }
      if (a_.train_log_every > 0 && (step <= 10 || step % a_.train_log_every == 0 || stop_after_step)) {
        log_.printf("step:%d/%d train_loss:%.4f train_time:%.0fms step_avg:%.2fms", step, iterations, loss, approx_ms,
                    approx_ms / std::max(step - start_step, 1));
      }
      progress.update(step);
      if (a_.checkpoint_every > 0 && step % a_.checkpoint_every == 0 && step < iterations) {
        training_ms += clock.millis();
        save_checkpoint<C>(ckpt_path, *backend_, CheckpointState{step, training_ms, loader.position()}, a_.seed);
        clock.restart();
      }
      if (a_.stop_after_steps > 0 && step - start_step >= a_.stop_after_steps && step < iterations) {
        training_ms += clock.millis();
        save_checkpoint<C>(ckpt_path, *backend_, CheckpointState{step, training_ms, loader.position()}, a_.seed);
        log_.line("paused: checkpoint:" + ckpt_path.string() + " step:" + std::to_string(step) + " (STOP_AFTER_STEPS; RESUME=1 continues)");
        return;
      }
      const bool reached_cap = a_.schedule.max_wallclock_seconds > 0 && approx_ms >= 1000.0 * a_.schedule.max_wallclock_seconds;
      if (!stop_after_step && reached_cap) stop_after_step = step;
    }
    progress.finish();
    save_checkpoint<C>(ckpt_path, *backend_, CheckpointState{step, training_ms, loader.position()}, a_.seed);
    log_.line("checkpoint:" + ckpt_path.string() + " step:" + std::to_string(step));

    // Serialization + round trip, as the reference's final section.
    const auto weights = dir / "final_model.safetensors";
    HostBuffer<float> params(ParamLayout<C>::total);
    backend_->read_params(params.span());
    write_weights_safetensors<C>(weights, params.span());
    log_.printf("Serialized model: %lld bytes", static_cast<long long>(::pgolf::size_of_file(weights)));
    if (!a_.final_roundtrip) return;
    const auto artifact_path = dir / "final_model.int8.ptz";
    const ExportReport rep = export_int8_artifact<C>(artifact_path, params.span(), a_.zstd_level, {{"train_steps", std::to_string(step)}});
    const CodeManifest code = parse_code_manifest(info_.code_manifest);
    log_.printf("Serialized model int8+zstd: %lld bytes (payload:%lld raw:%lld payload_ratio:%.2fx)",
                static_cast<long long>(rep.file_bytes), static_cast<long long>(rep.payload_bytes), static_cast<long long>(rep.raw_bytes),
                rep.payload_ratio);
    log_.printf("Total submission size int8+zstd: %lld bytes (code:%lld)", static_cast<long long>(rep.file_bytes + code.total_bytes),
                static_cast<long long>(code.total_bytes));
    load_int8_artifact<C>(artifact_path, params.span());
    backend_->write_params(params.span());
    const EvalResult q = evaluate_now();
    log_.printf("final_int8_zstd_roundtrip val_loss:%.4f val_bpb:%.4f eval_time:%.0fms", q.val_loss, q.val_bpb, 1000.0 * q.seconds);
    log_.printf("final_int8_zstd_roundtrip_exact val_loss:%.8f val_bpb:%.8f", q.val_loss, q.val_bpb);
  }

 private:
  // One optimizer step over `accum` micro-batches; returns the mean training loss.
  double train_step(DistributedTokenLoader& loader, std::int64_t micro_batch, int accum, double lr_mul, double momentum) {
    backend_->zero_grads();
    for (int m = 0; m < accum; ++m) {
      const auto batch = loader.next_batch(a_.train_batch_tokens, a_.data.train_seq_len, accum);
      backend_->forward_backward(batch.x, batch.y, micro_batch, a_.data.train_seq_len, 1.0f / static_cast<float>(accum));
    }
    const double loss = backend_->step_loss();  // the mean over the micro-batches (each scaled by 1/accum)
    if (!std::isfinite(loss)) return loss;      // leave the weights as they were
    backend_->optimizer_step(lr_mul, momentum);
    return loss;
  }

  TrainArgs a_;
  BinaryInfo info_;
  std::string device_note_;
  std::unique_ptr<Backend> backend_;
  Logger log_;
};

template <ModelConfig C>
int train_main(int argc, char** argv, const BinaryInfo& info) {
  try {
    check_config_environment<C>();
    TrainArgs args;
    OptionSet options(std::string(info.model_name) + "_train",
                      "Trains the '" + std::string(info.model_name) + "' model " + describe(C) + ", " +
                          std::to_string(param_count<C>) + " parameters, on token shards, then writes the int8+zstd artifact "
                          "and evaluates it (val_loss, val_bpb), as the reference train_gpt.py does.");
    args.add_to(options);
    if (!options.parse(argc, argv)) return 0;
    if (args.run_id.empty()) args.run_id = default_run_id();
    args.finalize();
    std::printf("%s: %s, model_params:%lld\n", info.tool, describe(C).c_str(), static_cast<long long>(param_count<C>));
    Trainer<C> trainer(args, info);
    trainer.run();
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "%s_train: error: %s\n", info.model_name, e.what());
    return 1;
  }
}

}  // namespace pgolf::run
