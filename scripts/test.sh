#!/usr/bin/env bash
# Configures, builds and runs pgolf's whole test suite.
# CPU tests run everywhere; CUDA translation units are compiled whenever nvcc is present (so a
# CUDA compile error fails here) and their GPU cases run only on a machine with a GPU.
#   PGOLF_BUILD_DIR  build directory (default: build)
#   PGOLF_JOBS       parallel jobs (default: number of cores)
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${PGOLF_BUILD_DIR:-build}
jobs=${PGOLF_JOBS:-$(nproc)}
cuda_args=()
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  cuda_args+=(-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc)
fi

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}"
cmake --build "$build_dir" -j "$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs"
