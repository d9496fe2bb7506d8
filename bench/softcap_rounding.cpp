// How much the GPU's softcap rounding differs from the reference's, measured on a trained model
// and the validation text (docs/reference-parity.md). Three heads on the same final hidden states:
//
//   fp32_oracle         fp32 z = hf · Wᵀ, fp32 softcap and cross-entropy: the CPU backend
//   gpu_kernel          bf16 z (bf16 operands, fp32 accumulation), softcap in fp32, dz rounded to
//                       bf16 once: pgolf's CUDA kernel (its test checks it against the oracle's
//                       formulas on the same bf16 z, which is what this program evaluates)
//   reference_autocast  the same bf16 z; z/c, tanh and c·tanh rounded to bf16, and the backward's
//                       products too: train_gpt.py under eager autocast (cpu::*_autocast); the
//                       script's torch.compile skips some of these roundings
//
// It prints val_loss and val_bpb for each (the reference's non-overlapping windows), the per-token
// loss differences between gpu_kernel and reference_autocast, and the relative L2 differences of
// the gradients with respect to the logits and to the head weight (one gradient over all the
// tokens evaluated, as one large batch). CPU only; nothing is timed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "configs/baseline.hpp"
#include "configs/small.hpp"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/data/token_stream.hpp"
#include "pgolf/data/tokenizer.hpp"
#include "pgolf/eval/bpb.hpp"
#include "pgolf/model/gpt_cpu.hpp"
#include "pgolf/ops/gemm.hpp"
#include "pgolf/ops/softcap_cross_entropy.hpp"
#include "pgolf/run/args.hpp"
#include "pgolf/run/export.hpp"
#include "pgolf/run/logger.hpp"

namespace {

using namespace pgolf;

struct Options {
  std::string model = "small", artifact, weights;
  std::string data_path = run::kDefaultDataPath, tokenizer_path = run::kDefaultTokenizerPath;
  int seq_len = 256, batch_seqs = 16;
  std::int64_t max_seqs = 0;
};

// Σ (a − b)² and Σ b², for a relative L2 difference ‖a − b‖ / ‖b‖.
struct RelativeL2 {
  double diff2 = 0, ref2 = 0;
  void add(std::span<const float> a, std::span<const float> b) {
    for (std::size_t i = 0; i < a.size(); ++i) {
      diff2 += static_cast<double>(a[i] - b[i]) * (a[i] - b[i]);
      ref2 += static_cast<double>(b[i]) * b[i];
    }
  }
  double value() const { return ref2 > 0 ? std::sqrt(diff2 / ref2) : 0.0; }
};

std::vector<float> bf16_rounded(std::span<const float> v) {
  std::vector<float> r(v.size());
  std::transform(v.begin(), v.end(), r.begin(), round_to_bf16);
  return r;
}

template <ModelConfig C>
int measure(const Options& opt) {
  using Model = cpu::Gpt<C>;
  constexpr int V = Model::V, D = Model::D;
  constexpr float kCap = static_cast<float>(C.logit_softcap);
  PGOLF_CHECK(opt.seq_len >= 1 && opt.seq_len <= C.max_seq_len,
              "TRAIN_SEQ_LEN=" << opt.seq_len << " must be in [1, " << C.max_seq_len << "] for " << describe(C));
  PGOLF_CHECK(opt.batch_seqs >= 1, "EVAL_BATCH_SEQS must be at least 1, got " << opt.batch_seqs);
  std::vector<float> params(ParamLayout<C>::total);
  if (!opt.artifact.empty()) {
    run::load_int8_artifact<C>(opt.artifact, params);
  } else {
    run::read_weights_safetensors<C>(opt.weights, params);
  }
  const Tokenizer tok(opt.tokenizer_path);
  check_tokenizer_vocab(tok, C.vocab_size, opt.tokenizer_path);
  const ByteLuts luts = build_byte_luts(tok, C.vocab_size);
  const std::string val_pattern = opt.data_path + "/fineweb_val_*.bin";
  const auto val = load_validation_tokens(val_pattern, opt.seq_len);
  check_tokens_in_vocab(val, C.vocab_size, val_pattern);
  std::int64_t total_seqs = (static_cast<std::int64_t>(val.size()) - 1) / opt.seq_len;
  if (opt.max_seqs > 0) total_seqs = std::min(total_seqs, opt.max_seqs);

  run::Logger log;
  log.printf("softcap_rounding: %s %s cap:%g seqs:%lld seq_len:%d", opt.artifact.empty() ? opt.weights.c_str() : opt.artifact.c_str(),
             describe(C).c_str(), static_cast<double>(kCap), static_cast<long long>(total_seqs), opt.seq_len);

  const float* W = params.data() + ParamLayout<C>::head_offset();  // (V, D): tok_emb when tied
  const std::vector<float> W_bf16 = bf16_rounded(std::span<const float>(W, static_cast<std::size_t>(V) * D));
  Model model;
  BpbAccumulator acc_oracle, acc_kernel, acc_reference;
  double sum_abs_dloss = 0, max_abs_dloss = 0;
  RelativeL2 dz_kernel_vs_ref, dz_ref_vs_oracle, dz_kernel_vs_oracle;
  std::vector<float> dW_oracle(static_cast<std::size_t>(V) * D), dW_kernel(dW_oracle.size()), dW_ref(dW_oracle.size());
  std::vector<std::int32_t> x, y;
  std::vector<float> z_oracle, z_kernel, z_ref, z_raw, hf_bf16, loss_o, lse_o, loss_k, lse_k, loss_r, lse_r, dloss, dz_o, dz_k, dz_r;
  std::int64_t tokens_total = 0;
  for (std::int64_t s0 = 0; s0 < total_seqs; s0 += opt.batch_seqs) {
    const std::int64_t seqs = std::min<std::int64_t>(opt.batch_seqs, total_seqs - s0), n = seqs * opt.seq_len;
    const auto un = static_cast<std::size_t>(n);
    x.resize(un);
    y.resize(un);
    for (std::int64_t i = 0; i < n; ++i) {
      x[i] = val[s0 * opt.seq_len + i];
      y[i] = val[s0 * opt.seq_len + i + 1];
    }
    model.forward(params, x, y, seqs, opt.seq_len);  // the fp32 oracle's head: capped logits, losses, lse
    const auto hf = model.final_hidden();              // (N, D) fp32
    z_oracle.assign(model.capped_logits().begin(), model.capped_logits().end());
    loss_o.assign(model.token_losses().begin(), model.token_losses().end());
    lse_o.assign(model.logsumexp().begin(), model.logsumexp().end());

    // Raw logits for the GPU and the reference: bf16 operands, fp32 sums, bf16 output.
    hf_bf16 = bf16_rounded(hf);
    z_raw.resize(un * V);
    cpu::linear_forward(z_raw.data(), hf_bf16.data(), W_bf16.data(), n, D, V);
    std::transform(z_raw.begin(), z_raw.end(), z_raw.begin(), round_to_bf16);
    z_kernel = z_raw;
    z_ref = z_raw;

    for (auto* b : {&loss_k, &lse_k, &loss_r, &lse_r}) b->resize(un);
    cpu::softcap_cross_entropy_forward<V>(loss_k.data(), lse_k.data(), z_kernel.data(), y.data(), n, kCap);
    cpu::softcap_cross_entropy_forward_autocast<V>(loss_r.data(), lse_r.data(), z_ref.data(), y.data(), n, kCap);
    for (std::int64_t i = 0; i < n; ++i) {
      acc_oracle.add(loss_o[i], x[i], y[i], luts);
      acc_kernel.add(loss_k[i], x[i], y[i], luts);
      acc_reference.add(loss_r[i], x[i], y[i], luts);
      const double d = std::abs(static_cast<double>(loss_k[i]) - loss_r[i]);
      sum_abs_dloss += d;
      max_abs_dloss = std::max(max_abs_dloss, d);
    }

    // Gradients of the mean loss over every token evaluated (dloss = 1 / total tokens), as one batch.
    dloss.assign(un, 1.0f / static_cast<float>(total_seqs * opt.seq_len));
    dz_o.resize(un * V);
    dz_k.resize(un * V);
    dz_r.resize(un * V);
    cpu::softcap_cross_entropy_backward<V>(dz_o.data(), z_oracle.data(), lse_o.data(), y.data(), dloss.data(), n, kCap);
    cpu::softcap_cross_entropy_backward<V>(dz_k.data(), z_kernel.data(), lse_k.data(), y.data(), dloss.data(), n, kCap);
    std::transform(dz_k.begin(), dz_k.end(), dz_k.begin(), round_to_bf16);  // the kernel writes bf16
    cpu::softcap_cross_entropy_backward_autocast<V>(dz_r.data(), z_raw.data(), z_ref.data(), lse_r.data(), y.data(), dloss.data(), n, kCap);
    dz_kernel_vs_ref.add(dz_k, dz_r);
    dz_ref_vs_oracle.add(dz_r, dz_o);
    dz_kernel_vs_oracle.add(dz_k, dz_o);
    cpu::linear_backward_weight(dW_oracle.data(), dz_o.data(), hf.data(), n, D, V);
    cpu::linear_backward_weight(dW_kernel.data(), dz_k.data(), hf_bf16.data(), n, D, V);
    cpu::linear_backward_weight(dW_ref.data(), dz_r.data(), hf_bf16.data(), n, D, V);
    tokens_total += n;
  }

  auto report = [&](const char* scheme, const char* what, const BpbAccumulator& a) {
    log.printf("scheme:%s val_loss:%.6f val_bpb:%.6f (%s)", scheme, a.val_loss(), a.val_bpb(), what);
  };
  report("fp32_oracle", "fp32 logits and softcap: the CPU backend", acc_oracle);
  report("gpu_kernel", "bf16 logits, fp32 softcap: pgolf's CUDA kernel", acc_kernel);
  report("reference_autocast", "bf16 logits, z/c, tanh, c*tanh in bf16: train_gpt.py in eager mode", acc_reference);
  log.printf("gpu_kernel_vs_reference: dval_loss:%+.3e dval_bpb:%+.3e mean_abs_dloss:%.3e max_abs_dloss:%.3e tokens:%lld",
             acc_kernel.val_loss() - acc_reference.val_loss(), acc_kernel.val_bpb() - acc_reference.val_bpb(),
             sum_abs_dloss / static_cast<double>(tokens_total), max_abs_dloss, static_cast<long long>(tokens_total));
  RelativeL2 dW_kernel_vs_ref, dW_ref_vs_oracle, dW_kernel_vs_oracle;
  dW_kernel_vs_ref.add(dW_kernel, dW_ref);
  dW_ref_vs_oracle.add(dW_ref, dW_oracle);
  dW_kernel_vs_oracle.add(dW_kernel, dW_oracle);
  log.printf("grad_logits_rel_l2: gpu_kernel_vs_reference:%.3e reference_vs_fp32_oracle:%.3e gpu_kernel_vs_fp32_oracle:%.3e",
             dz_kernel_vs_ref.value(), dz_ref_vs_oracle.value(), dz_kernel_vs_oracle.value());
  log.printf("grad_head_weight_rel_l2: gpu_kernel_vs_reference:%.3e reference_vs_fp32_oracle:%.3e gpu_kernel_vs_fp32_oracle:%.3e",
             dW_kernel_vs_ref.value(), dW_ref_vs_oracle.value(), dW_kernel_vs_oracle.value());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string program = "softcap_rounding";
  try {
    Options opt;
    run::OptionSet o(program,
                     "Measures how far pgolf's GPU softcap (fp32) is from the reference's eager-autocast softcap (bf16 z/c, tanh, c*tanh) "
                     "on a trained model and the validation text: val_loss, val_bpb and gradient differences. CPU only.");
    o.add("MODEL", &opt.model, "configuration of the weights: small or baseline");
    o.add("ARTIFACT", &opt.artifact, "int8+zstd artifact to evaluate");
    o.add("WEIGHTS", &opt.weights, "or: unquantized weights (.safetensors)");
    o.add("DATA_PATH", &opt.data_path, "directory with the fineweb_val_*.bin token shards");
    o.add("TOKENIZER_PATH", &opt.tokenizer_path, "SentencePiece .model file (byte accounting for val_bpb)");
    o.add("TRAIN_SEQ_LEN", &opt.seq_len, "sequence length of the evaluation windows");
    o.add("EVAL_BATCH_SEQS", &opt.batch_seqs, "sequences per forward pass (memory only)");
    o.add("MAX_SEQS", &opt.max_seqs, "evaluate only the first MAX_SEQS windows (0: all)");
    if (!o.parse(argc, argv)) return 0;
    PGOLF_CHECK(opt.artifact.empty() != opt.weights.empty(), "give exactly one of --artifact or --weights");
    if (opt.model == "small") return measure<configs::kSmall>(opt);
    if (opt.model == "baseline") return measure<configs::kBaseline>(opt);
    PGOLF_FAIL("--model must be small or baseline, got '" << opt.model << "'");
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), e.what());
    return 1;
  }
}
