#!/usr/bin/env bash
# The checks that need a GPU, in one command (GPU time is scarce; see docs/cuda-backend.md):
#   stage   (on the machine that built, not the GPU one) copy the GPU programs of an existing
#           build (PGOLF_BUILD_DIR, default build) into PGOLF_STAGE_DIR (default .gpu-bin, ignored
#           by git), with the same layout, so that a GPU session carries them and skips `build`
#           (the GPU machines have the same nvcc 13.0; the programs are built for sm_90)
#   build   configure + build the CUDA tests, benchmarks and the baseline binaries (sm_90)
#   test    every CUDA test binary: kernel parity with the CPU, the model, determinism
#   sanitize  compute-sanitizer: memcheck over every CUDA test binary, racecheck over attention
#   bench   every bench_cuda_* binary, JSON results
# Usage: scripts/gpu-checks.sh [stage] [build] [test] [sanitize] [bench]   (default: build test sanitize bench)
#        On the GPU machine with staged programs: PGOLF_BUILD_DIR=.gpu-bin scripts/gpu-checks.sh test bench
# Results: logs, JSON and summary.txt in PGOLF_RESULTS_DIR (default gpu-results, ignored by git); when
# OUT is set (the device tool's folder of files that come back, which takes at most 8 files), they
# are also packed into $OUT/gpu-results-<steps>.tar.gz, with summary.txt beside it.
# Settings: PGOLF_BUILD_DIR (build-gpu; build for `stage`), PGOLF_STAGE_DIR (.gpu-bin),
#           PGOLF_BENCH_FILTER (a --benchmark_filter regex), PGOLF_TEST_FILTER (a --gtest_filter),
#           PGOLF_SANITIZE_FILTER (a --gtest_filter for the sanitizer runs), PGOLF_JOBS (cores).
set -uo pipefail
cd "$(dirname "$0")/.."

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build test sanitize bench)
has_step() { local s; for s in "${steps[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

if has_step stage; then
  from=${PGOLF_BUILD_DIR:-build}
  stage=${PGOLF_STAGE_DIR:-.gpu-bin}
  programs=("$from"/test/cuda/test_cuda_* "$from"/bench/bench_cuda_* "$from"/examples/baseline_train "$from"/examples/baseline_quantize
            "$from"/examples/baseline_eval "$from"/examples/prepare_corpus)
  rm -rf "$stage"
  mkdir -p "$stage/test/cuda" "$stage/bench" "$stage/examples"
  n=0
  for f in "${programs[@]}"; do
    [ -f "$f" ] && [ -x "$f" ] || continue  # skips gtest's *.cmake files and missing programs
    rel=${f#"$from"/}
    cp "$f" "$stage/$rel"
    strip "$stage/$rel" 2>/dev/null || true  # symbols only (about 15%); the GPU code is data and stays
    n=$((n + 1))
  done
  [ $n -gt 0 ] || { echo "stage: no GPU programs under $from (build it first: scripts/test.sh)" >&2; exit 1; }
  grep -qxF "/${stage#./}/" .git/info/exclude 2>/dev/null || echo "/${stage#./}/" >>.git/info/exclude
  echo "staged $n programs in $stage ($(du -sh "$stage" | cut -f1)); carry it and run: PGOLF_BUILD_DIR=$stage scripts/gpu-checks.sh test bench"
  [ ${#steps[@]} -eq 1 ] && exit 0
fi

build_dir=${PGOLF_BUILD_DIR:-build-gpu}
out=${PGOLF_RESULTS_DIR:-gpu-results}
jobs=${PGOLF_JOBS:-$(nproc)}
mkdir -p "$out"
status=0

note() { echo "== $*" | tee -a "$out/summary.txt"; }

if has_step build; then
  note "build ($(date -u +%FT%TZ))"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$out/summary.txt" || true
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)  # GPU machines may have make only
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 >"$out/configure.log" 2>&1 ||
    { note "configure failed (see configure.log)"; exit 1; }
  # Only what the GPU checks use (GPU time is counted while this builds): the CUDA tests and
  # benchmarks, and the baseline's binaries for the side-by-side run.
  targets=(baseline_train baseline_quantize baseline_eval prepare_corpus)
  for f in test/cuda/*_test.cu; do targets+=("test_cuda_$(basename "$f" _test.cu)"); done
  for f in bench/cuda/*_bench.cu; do targets+=("bench_cuda_$(basename "$f" _bench.cu)"); done
  cmake --build "$build_dir" -j "$jobs" --target "${targets[@]}" >"$out/build.log" 2>&1 ||
    { tail -50 "$out/build.log"; note "build failed (see build.log)"; exit 1; }
fi

if has_step test; then
  # Each CUDA test binary with its full output kept (the model tests print their per-tensor error
  # tables); the summary gets gtest's verdict lines.
  for t in "$build_dir"/test/cuda/test_cuda_*; do
    [ -f "$t" ] && [ -x "$t" ] || continue  # gtest's test_cuda_*.cmake files live beside the programs
    name=$(basename "$t")
    "$t" --gtest_color=no ${PGOLF_TEST_FILTER:+--gtest_filter="$PGOLF_TEST_FILTER"} >"$out/$name.log" 2>&1
    rc=$?
    note "$name: exit $rc"
    grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$out/$name.log" | tee -a "$out/summary.txt"
    [ $rc -ne 0 ] && status=1
  done
fi

if has_step sanitize; then
  if command -v compute-sanitizer >/dev/null 2>&1; then
    for t in "$build_dir"/test/cuda/test_cuda_*; do
      [ -f "$t" ] && [ -x "$t" ] || continue
      name=$(basename "$t")
      # The full-width model tests take minutes under memcheck; the small ones cover the same kernels.
      compute-sanitizer --tool memcheck --error-exitcode 99 "$t" --gtest_filter="${PGOLF_SANITIZE_FILTER:--*Baseline*:*SeedConfigurations*}" \
        >"$out/memcheck-$name.log" 2>&1
      rc=$?
      note "memcheck $name: exit $rc"
      [ $rc -ne 0 ] && status=1
    done
    if [ -x "$build_dir/test/cuda/test_cuda_attention" ]; then
      compute-sanitizer --tool racecheck --error-exitcode 99 "$build_dir/test/cuda/test_cuda_attention" >"$out/racecheck-attention.log" 2>&1
      rc=$?
      note "racecheck test_cuda_attention: exit $rc"
      [ $rc -ne 0 ] && status=1
    fi
  else
    note "compute-sanitizer not found: sanitizer runs skipped"
  fi
fi

if has_step bench; then
  for b in "$build_dir"/bench/bench_cuda_*; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    name=$(basename "$b")
    note "benchmark $name"
    "$b" --benchmark_out="$out/$name.json" --benchmark_out_format=json ${PGOLF_BENCH_FILTER:+--benchmark_filter="$PGOLF_BENCH_FILTER"} \
      >"$out/$name.txt" 2>&1 || status=1
    tail -n +1 "$out/$name.txt" | grep -v "^\*\*\*WARNING" | tail -25
  done
fi

note "done: exit $status"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  tag=$(IFS=-; echo "${steps[*]}")
  tar czf "$OUT/gpu-results-$tag.tar.gz" -C "$out" . && cp "$out/summary.txt" "$OUT/summary-$tag.txt"
fi
exit $status
