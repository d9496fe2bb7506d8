// Shared pieces of the CUDA benchmarks: GPU timing with CUDA events (UseManualTime), the
// throughput counters every kernel family reports, and a clean skip on machines without a GPU.
//
//   static void BM_Op(benchmark::State& state) {
//     if (!pgolf::bench::require_gpu(state)) return;
//     auto x = pgolf::bench::random_device<float>(n, 1, 1.0f, "x");  // inputs drawn on the GPU
//     ... allocate ...
//     pgolf::bench::time_launches(state, [&] { launch(...); });      // warm-up, then timed calls
//     pgolf::bench::report_flops(state, flops_per_iteration);
//   }
//   BENCHMARK(BM_Op)->UseManualTime();
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "pgolf/core/cuda_runtime.cuh"
#include "pgolf/core/philox.hpp"
#include "pgolf/ops/cuda/common.cuh"

namespace pgolf::bench {

using cuda::DeviceBuffer;

// False (and the benchmark marked skipped) when there is no usable GPU.
inline bool require_gpu(benchmark::State& state) {
  if (cuda::device_count() == 0) {
    state.SkipWithError("no CUDA device (or no driver) on this machine");
    return false;
  }
  return true;
}

// Elapsed GPU time between start() and seconds() on one stream (seconds() synchronises).
class GpuTimer {
 public:
  explicit GpuTimer(cudaStream_t stream = nullptr) : stream_(stream) {
    PGOLF_CUDA_CHECK(cudaEventCreate(&begin_));
    PGOLF_CUDA_CHECK(cudaEventCreate(&end_));
  }
  GpuTimer(const GpuTimer&) = delete;
  GpuTimer& operator=(const GpuTimer&) = delete;
  ~GpuTimer() {
    cudaEventDestroy(begin_);
    cudaEventDestroy(end_);
  }
  void start() { PGOLF_CUDA_CHECK(cudaEventRecord(begin_, stream_)); }
  double seconds() {
    PGOLF_CUDA_CHECK(cudaEventRecord(end_, stream_));
    PGOLF_CUDA_CHECK(cudaEventSynchronize(end_));
    float ms = 0;
    PGOLF_CUDA_CHECK(cudaEventElapsedTime(&ms, begin_, end_));
    return 1e-3 * ms;
  }

 private:
  cudaStream_t stream_;
  cudaEvent_t begin_{}, end_{};
};

// TFLOP/s from the FLOPs of one iteration (a multiply-add counts 2).
inline void report_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["TFLOP/s"] = benchmark::Counter(flops_per_iteration * 1e-12 * static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}

// Peak memory bandwidth the "of_peak" counters divide by: PGOLF_PEAK_GBPS, default 3,350 GB/s
// (the H100 SXM datasheet figure; an H200 has 4,800).
inline double peak_bytes_per_second() {
  const char* env = std::getenv("PGOLF_PEAK_GBPS");
  return (env ? std::atof(env) : 3350.0) * 1e9;
}

// GB/s from the bytes one iteration reads and writes (for memory-bound kernels), and that rate as
// a fraction of the peak bandwidth.
inline void report_bytes(benchmark::State& state, double bytes_per_iteration) {
  const double iterations = static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(bytes_per_iteration * 1e-9 * iterations, benchmark::Counter::kIsRate);
  state.counters["of_peak"] = benchmark::Counter(bytes_per_iteration / peak_bytes_per_second() * iterations, benchmark::Counter::kIsRate);
}

namespace kernels {
// Keeps the stream busy for about `cycles` clock cycles (see time_launches).
template <int = 0>
__global__ void spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

template <class T>
__global__ void fill_normal(T* x, std::int64_t n, RandomStream rng, float std) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    x[i] = cuda::from_float<T>(std * rng.normal(static_cast<std::uint64_t>(i)));
  }
}
}  // namespace kernels

// A device buffer of N(0, std²) values drawn on the GPU (Philox, the project's RandomStream): a
// host loop would spend seconds per benchmark call on the ~100M values of the training shapes, and
// Google Benchmark calls each benchmark function several times (1, 10, 100, ... iterations).
template <class T>
DeviceBuffer<T> random_device(std::int64_t n, std::uint64_t stream, float std, const char* what) {
  DeviceBuffer<T> d(static_cast<std::size_t>(n), what);
  if (n > 0) {
    kernels::fill_normal<T><<<cuda::grid_for(n, 256), 256>>>(d.data(), n, RandomStream(1234, stream), std);
    PGOLF_CUDA_LAUNCH_CHECK();
    PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  }
  return d;
}
inline DeviceBuffer<float> random_f32(std::int64_t n, std::uint64_t stream, float std = 1.0f, const char* what = "bench input (fp32)") {
  return random_device<float>(n, stream, std, what);
}
inline DeviceBuffer<cuda::nv_bf16> random_bf16(std::int64_t n, std::uint64_t stream, float std = 1.0f,
                                               const char* what = "bench input (bf16)") {
  return random_device<cuda::nv_bf16>(n, stream, std, what);
}

// Times `launch` on `stream`: one warm-up call (first-use costs), then one timed call per iteration.
// Before each start event a short spin kernel occupies the stream (20 µs at ~2 GHz), so that the
// first launches are queued behind it and the timed span starts with the GPU's work, not the host's
// launch latency (without it a 30 µs kernel reads ~10% slow). Calls that enqueue for longer than that
// (the optimizer step's ~100 launches, the train step with its host synchronisation) still include
// the host's launch gaps: for them the figure is the step's wall time on the GPU, as in training.
template <class Launch>
void time_launches(benchmark::State& state, Launch&& launch, cudaStream_t stream = nullptr) {
  constexpr long long kSpinCycles = 40'000;
  launch();
  PGOLF_CUDA_CHECK(cudaStreamSynchronize(stream));
  GpuTimer timer(stream);
  for (auto _ : state) {
    kernels::spin<><<<1, 1, 0, stream>>>(kSpinCycles);
    timer.start();
    launch();
    state.SetIterationTime(timer.seconds());
  }
}

inline void report_device(benchmark::State& state) { state.SetLabel(cuda::device_description()); }

// A memory-bound kernel: times `launch` and reports GB/s (and the fraction of peak) for `bytes`
// read and written per call, with the device as the label.
template <class Launch>
void time_memory_bound(benchmark::State& state, double bytes, Launch&& launch) {
  time_launches(state, launch);
  report_bytes(state, bytes);
  report_device(state);
}

// A device buffer of `count` elements holding a constant (values that do not change a memory-bound
// kernel's speed): 0.5 for float, zero bits otherwise.
template <class T>
DeviceBuffer<T> filled(std::int64_t count, const char* what) {
  DeviceBuffer<T> b(static_cast<std::size_t>(count), what);
  if constexpr (std::is_same_v<T, float>) {
    cuda::fill(b.data(), 0.5f, count, nullptr);
  } else {
    b.zero();
  }
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  return b;
}


}  // namespace pgolf::bench
