#!/usr/bin/env bash
# The checks that need a GPU (GPU time is scarce: docs/cuda-backend.md, "Verifying on a GPU
# machine", has the plan that fits a 15-minute device budget). Steps, run in the order given:
#   stage     (on the machine that built, not the GPU one) copy the GPU programs of an existing
#             build (PGOLF_BUILD_DIR, default build) into PGOLF_STAGE_DIR (default .gpu-bin, ignored
#             by git), stripped, with the same layout, so that a GPU session carries them and skips
#             `build` (the GPU machines have the same nvcc 13.0; the programs are built for sm_90)
#   build     configure + build the CUDA tests, benchmarks and the baseline binaries (sm_90)
#   test      every CUDA test binary: kernel parity with the CPU, the model, determinism
#   bench     every bench_cuda_* binary, JSON results
#   sanitize  compute-sanitizer: memcheck over every CUDA test binary (the full-width model tests
#             left out), racecheck over the attention tests of short sequences
# Usage: scripts/gpu-checks.sh [stage] [build] [test] [bench] [sanitize]   (default: build test bench sanitize)
#        On the GPU machine with staged programs: PGOLF_BUILD_DIR=.gpu-bin scripts/gpu-checks.sh test
# Every program runs under a time limit (PGOLF_TEST_TIMEOUT, PGOLF_BENCH_TIMEOUT,
# PGOLF_SANITIZE_TIMEOUT seconds), so one hung kernel cannot eat the session.
# Results: logs, JSON and summary.txt in PGOLF_RESULTS_DIR (default gpu-results, ignored by git). When
# OUT is set (the device tool's folder of files that come back: at most 8 files), they are packed
# into $OUT/gpu-results-<steps>.tar.gz (with summary-<steps>.txt beside it) after every program,
# so a call stopped at its time limit still brings back what finished.
# Settings: PGOLF_BUILD_DIR (build-gpu; build for `stage`), PGOLF_STAGE_DIR (.gpu-bin),
#           PGOLF_BENCH_FILTER (a --benchmark_filter regex), PGOLF_BENCH_MIN_TIME (0.1 s per
#           benchmark), PGOLF_TEST_FILTER (a --gtest_filter), PGOLF_SANITIZE_FILTER (a --gtest_filter
#           for memcheck), PGOLF_RACECHECK_FILTER (the attention cases for racecheck), PGOLF_JOBS (cores).
set -uo pipefail
cd "$(dirname "$0")/.."

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build test bench sanitize)
for s in "${steps[@]}"; do
  case "$s" in
    stage | build | test | bench | sanitize) ;;
    *) echo "gpu-checks: unknown step '$s' (stage, build, test, bench, sanitize)" >&2; exit 2 ;;
  esac
done

step_stage() {
  local from=${PGOLF_BUILD_DIR:-build} stage=${PGOLF_STAGE_DIR:-.gpu-bin} n=0 f rel
  local programs=("$from"/test/cuda/test_cuda_* "$from"/bench/bench_cuda_* "$from"/examples/baseline_train
                  "$from"/examples/baseline_quantize "$from"/examples/baseline_eval "$from"/examples/prepare_corpus)
  rm -rf "$stage"
  mkdir -p "$stage/test/cuda" "$stage/bench" "$stage/examples"
  for f in "${programs[@]}"; do
    [ -f "$f" ] && [ -x "$f" ] || continue  # skips gtest's *.cmake files and missing programs
    rel=${f#"$from"/}
    cp "$f" "$stage/$rel"
    strip "$stage/$rel" 2>/dev/null || true  # symbols only (about 15%); the GPU code is data and stays
    n=$((n + 1))
  done
  [ $n -gt 0 ] || { echo "stage: no GPU programs under $from (build it first: scripts/test.sh)" >&2; exit 1; }
  grep -qxF "/${stage#./}/" .git/info/exclude 2>/dev/null || echo "/${stage#./}/" >>.git/info/exclude
  echo "staged $n programs in $stage ($(du -sh "$stage" | cut -f1)); carry it and run: PGOLF_BUILD_DIR=$stage scripts/gpu-checks.sh test"
}

if [ "${steps[*]}" = "stage" ]; then
  step_stage
  exit 0
fi

build_dir=${PGOLF_BUILD_DIR:-build-gpu}
out=${PGOLF_RESULTS_DIR:-gpu-results}
jobs=${PGOLF_JOBS:-$(nproc)}
tag=$(IFS=-; echo "${steps[*]}")
mkdir -p "$out"
status=0

note() { echo "== $*" | tee -a "$out/summary.txt"; }
# note_exit LABEL RC: the program's exit status into the summary; a failure fails the run.
note_exit() {
  note "$1: exit $2$([ "$2" -eq 124 ] && echo ' (timed out)')"
  [ "$2" -ne 0 ] && status=1
  return 0
}
# The results so far into $OUT (the device tool brings back what is there, even after a timeout).
pack() {
  if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    tar czf "$OUT/gpu-results-$tag.tar.gz" -C "$out" . 2>/dev/null
    cp "$out/summary.txt" "$OUT/summary-$tag.txt" 2>/dev/null
  fi
  return 0
}
# run_limited SECONDS LOG COMMAND...: the command's output into LOG; its exit status (124: timed out).
run_limited() {
  local limit=$1 log=$2
  shift 2
  timeout -k 10 "$limit" "$@" >"$log" 2>&1
}
programs_in() {  # the executables among $1/<prefix>*
  local f
  for f in "$1"/"$2"*; do
    [ -f "$f" ] && [ -x "$f" ] && echo "$f"  # gtest's <name>*.cmake files live beside the programs
  done
}

# The CUDA toolkit's libraries (libcudart, libcublasLt) for programs built elsewhere.
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

note "gpu-checks ${steps[*]} ($(date -u +%FT%TZ), programs from $build_dir)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$out/summary.txt"

# Before spending minutes on the programs: every one must find its shared libraries (once).
libraries_checked=0
check_libraries() {
  [ $libraries_checked -eq 1 ] && return 0
  libraries_checked=1
  local missing f
  missing=$(for f in $(programs_in "$build_dir/test/cuda" test_cuda_) $(programs_in "$build_dir/bench" bench_cuda_); do
    ldd "$f" 2>/dev/null | grep "not found" | sed "s|^|$(basename "$f"): |"
  done | sort -u)
  if [ -n "$missing" ]; then
    note "shared libraries not found (source .devdeps/unpack.sh first; is the CUDA toolkit's lib folder there?):"
    echo "$missing" | tee -a "$out/summary.txt"
    pack
    exit 1
  fi
}

step_build() {
  local generator=() targets=(baseline_train baseline_quantize baseline_eval prepare_corpus) f
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)  # GPU machines may have make only
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >"$out/configure.log" 2>&1 ||
    { note "configure failed (see configure.log)"; pack; exit 1; }
  # Only what the GPU checks use (GPU time is counted while this builds).
  for f in test/cuda/*_test.cu; do targets+=("test_cuda_$(basename "$f" _test.cu)"); done
  for f in bench/cuda/*_bench.cu; do targets+=("bench_cuda_$(basename "$f" _bench.cu)"); done
  cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}" >"$out/build.log" 2>&1 ||
    { tail -50 "$out/build.log"; note "build failed (see build.log)"; pack; exit 1; }
  note "build done"
}

step_test() {
  check_libraries
  # Each CUDA test binary with its full output kept (the model tests print their per-tensor error
  # tables); the summary gets gtest's verdict lines.
  local t name filter=()
  [ -n "${PGOLF_TEST_FILTER:-}" ] && filter=("--gtest_filter=$PGOLF_TEST_FILTER")
  for t in $(programs_in "$build_dir/test/cuda" test_cuda_); do
    name=$(basename "$t")
    run_limited "${PGOLF_TEST_TIMEOUT:-240}" "$out/$name.log" "$t" --gtest_color=no "${filter[@]}"
    note_exit "$name" $?
    grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$out/$name.log" | tee -a "$out/summary.txt"
    pack
  done
}

step_bench() {
  check_libraries
  local b name filter=()
  [ -n "${PGOLF_BENCH_FILTER:-}" ] && filter=("--benchmark_filter=$PGOLF_BENCH_FILTER")
  # The peak bandwidth the of_peak counters divide by, from the device's name.
  if [ -z "${PGOLF_PEAK_GBPS:-}" ] && nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -q H200; then
    export PGOLF_PEAK_GBPS=4800
  fi
  for b in $(programs_in "$build_dir/bench" bench_cuda_); do
    name=$(basename "$b")
    # Google Benchmark 1.7 (Debian 12) takes --benchmark_min_time in plain seconds.
    run_limited "${PGOLF_BENCH_TIMEOUT:-150}" "$out/$name.txt" "$b" --benchmark_out="$out/$name.json" --benchmark_out_format=json \
      --benchmark_min_time="${PGOLF_BENCH_MIN_TIME:-0.1}" "${filter[@]}"
    note_exit "benchmark $name" $?
    grep -v "^\*\*\*WARNING" "$out/$name.txt" | tail -25
    pack
  done
}

# sanitize_one TOOL PROGRAM FILTER LOG LABEL: one compute-sanitizer run under the time limit.
sanitize_one() {
  run_limited "${PGOLF_SANITIZE_TIMEOUT:-180}" "$out/$4" compute-sanitizer --tool "$1" --error-exitcode 99 "$2" "--gtest_filter=$3"
  note_exit "$5" $?
  pack
}

step_sanitize() {
  check_libraries
  local t name
  if ! command -v compute-sanitizer >/dev/null 2>&1; then
    note "compute-sanitizer not found: sanitizer runs skipped"
    return
  fi
  for t in $(programs_in "$build_dir/test/cuda" test_cuda_); do
    name=$(basename "$t")
    # The full-width model tests take minutes under memcheck; the small ones cover the same kernels.
    sanitize_one memcheck "$t" "${PGOLF_SANITIZE_FILTER:--*Baseline*:*SeedConfigurations*}" "memcheck-$name.log" "memcheck $name"
  done
  # racecheck slows shared-memory-heavy kernels by orders of magnitude: the attention cases of
  # sequences up to 257 only (every head dim, tile path, mask and GQA group of the kernels).
  t="$build_dir/test/cuda/test_cuda_attention"
  [ -x "$t" ] && sanitize_one racecheck "$t" "${PGOLF_RACECHECK_FILTER:-AttentionGpu.TensorCoreHd32Group1:AttentionGpu.TensorCoreHd64Group4:AttentionGpu.SimpleHd8:AttentionGpu.TensorCoreHd128Group2}" \
    racecheck-attention.log "racecheck test_cuda_attention"
}

for s in "${steps[@]}"; do
  "step_$s"
done

note "done: exit $status"
pack
exit $status
