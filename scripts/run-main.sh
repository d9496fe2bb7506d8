#!/usr/bin/env bash
# pgolf's main job on the embedded default corpus (Debian's GCIDE dictionary):
#   1. prepare the corpus: SentencePiece BPE-1024 tokenizer + token shards (skipped when present);
#   2. train the model under a wall-clock cap: the reference's baseline configuration with its
#      defaults on a GPU (when nvidia-smi sees one and pgolf was built with CUDA), else the small
#      configuration on the CPU;
#   3. quantize it to the int8+zstd artifact;
#   4. evaluate the artifact: val_loss, val_bpb, the submission size, and the bits per byte that
#      zstd -22 needs for the same validation text.
# Settings (environment): PGOLF_BUILD_DIR (build), PGOLF_MODEL (baseline on a GPU, small on a CPU),
# PGOLF_TRAIN_SECONDS (120 on a GPU, 360 on a CPU), PGOLF_JOBS (cores), and any of the train
# binary's variables (e.g. ITERATIONS, MATRIX_LR; see small_train --help).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${PGOLF_BUILD_DIR:-build}
jobs=${PGOLF_JOBS:-$(nproc)}
gpu=0
if (command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]) && nvidia-smi -L >/dev/null 2>&1; then gpu=1; fi
if [ $gpu -eq 1 ]; then
  model=${PGOLF_MODEL:-baseline}
  train_seconds=${PGOLF_TRAIN_SECONDS:-120}
else
  model=${PGOLF_MODEL:-small}
  train_seconds=${PGOLF_TRAIN_SECONDS:-360}
fi
data_dir=data/datasets/gcide_sp1024
tokenizer=data/tokenizers/gcide_1024_bpe.model

echo "== build"
cuda_args=()
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" >/dev/null
cmake --build "$build_dir" -j "$jobs" --target prepare_corpus ${model}_train ${model}_quantize ${model}_eval
bin="$build_dir/examples"

echo "== corpus"
if [ -f "$data_dir/corpus_summary.json" ] && [ -f "$tokenizer" ]; then
  echo "using the prepared corpus in $data_dir (delete it to prepare again)"
else
  "$bin/prepare_corpus" --output-dir "$data_dir" --tokenizer "$tokenizer"
fi

run_id=${RUN_ID:-main-$(date +%Y%m%d-%H%M%S)}
run_dir=runs/$run_id
echo "== train ($model, ${train_seconds}s cap, $([ $gpu -eq 1 ] && echo GPU || echo CPU)) -> $run_dir"
export DATA_PATH=${DATA_PATH:-$data_dir} TOKENIZER_PATH=${TOKENIZER_PATH:-$tokenizer}
export ITERATIONS=${ITERATIONS:-100000} MAX_WALLCLOCK_SECONDS=${MAX_WALLCLOCK_SECONDS:-$train_seconds}
export FINAL_ROUNDTRIP=0
if [ $gpu -eq 1 ]; then
  # The reference's run-time defaults (524,288 tokens per step, sequences of 1,024, warmdown by
  # wall clock) on the GPU; validation every 100 steps.
  export VAL_LOSS_EVERY=${VAL_LOSS_EVERY:-100} TRAIN_LOG_EVERY=${TRAIN_LOG_EVERY:-50}
else
  # Two CPU cores: 16,384 tokens per step in 2 micro-batches of 32 sequences of 256 tokens, the last
  # 100 steps of the cap as warmdown, validation only at the end.
  export TRAIN_SEQ_LEN=${TRAIN_SEQ_LEN:-256} TRAIN_BATCH_TOKENS=${TRAIN_BATCH_TOKENS:-16384} GRAD_ACCUM_STEPS=${GRAD_ACCUM_STEPS:-2}
  export WARMDOWN_ITERS=${WARMDOWN_ITERS:-100} WARMUP_STEPS=${WARMUP_STEPS:-2} VAL_LOSS_EVERY=${VAL_LOSS_EVERY:-0}
  export TRAIN_LOG_EVERY=${TRAIN_LOG_EVERY:-25}
fi
"$bin/${model}_train" --run-id "$run_id"

echo "== quantize"
"$bin/${model}_quantize" --weights "$run_dir/final_model.safetensors" --artifact "$run_dir/final_model.int8.ptz"

echo "== evaluate"
"$bin/${model}_eval" --artifact "$run_dir/final_model.int8.ptz" --zstd-baseline 1 ${EVAL_BATCH_SEQS:+--eval-batch-seqs "$EVAL_BATCH_SEQS"} |
  tee "$run_dir/eval.log"
