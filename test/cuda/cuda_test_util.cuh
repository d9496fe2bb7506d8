// Shared pieces of the CUDA tests: skip cleanly when no GPU is present, move bf16/fp32 data
// between host vectors and the device, and compare a GPU result with the CPU oracle.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "pgolf/core/cuda_runtime.cuh"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/core/philox.hpp"
#include "pgolf/ops/cuda/common.cuh"

namespace pgolf::testing {

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device (or no driver) on this machine";
  }
};

// n draws of N(0, std) from Philox stream `stream` (seed 20240520, like the CPU tests).
inline std::vector<float> normal_floats(std::size_t n, std::uint64_t stream, float std = 1.0f) {
  const RandomStream rng(20240520, stream);
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std * rng.normal(i);
  return v;
}

// The values bf16 storage holds for v (round to nearest even): the CPU oracle gets these, so that
// a comparison measures the kernel, not the input rounding.
inline std::vector<float> bf16_rounded(std::span<const float> v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = bf16::from_float(v[i]).to_float();
  return out;
}

inline cuda::DeviceBuffer<cuda::nv_bf16> to_device_bf16(std::span<const float> v, const char* what = "test input (bf16)") {
  std::vector<std::uint16_t> bits(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) bits[i] = bf16::from_float(v[i]).bits;
  cuda::DeviceBuffer<cuda::nv_bf16> d(v.size(), what);
  PGOLF_CUDA_CHECK(cudaMemcpy(d.data(), bits.data(), bits.size() * sizeof(std::uint16_t), cudaMemcpyHostToDevice));
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());  // see to_device_f32
  return d;
}

inline cuda::DeviceBuffer<float> to_device_f32(std::span<const float> v, const char* what = "test input (fp32)") {
  cuda::DeviceBuffer<float> d(v.size(), what);
  if (!v.empty()) PGOLF_CUDA_CHECK(cudaMemcpy(d.data(), v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  // A pageable-memory cudaMemcpy may return once the data is staged, before the DMA (ordered on the
  // legacy stream) lands; a test that then launches on a non-blocking stream must not race it.
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

inline std::vector<float> to_host_floats(const cuda::DeviceBuffer<cuda::nv_bf16>& d) {
  std::vector<std::uint16_t> bits(d.size());
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  if (!bits.empty()) PGOLF_CUDA_CHECK(cudaMemcpy(bits.data(), d.data(), bits.size() * sizeof(std::uint16_t), cudaMemcpyDeviceToHost));
  std::vector<float> out(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) out[i] = bf16{bits[i]}.to_float();
  return out;
}

inline std::vector<float> to_host_floats(const cuda::DeviceBuffer<float>& d) {
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  return d.to_host();
}

// Every element must satisfy |got − want| <= atol + rtol·|want|. Reports the count of failures,
// the worst element and the largest absolute and relative errors, so a failing parity test says
// how far off it is.
inline ::testing::AssertionResult all_close(std::span<const float> got, std::span<const float> want, double atol, double rtol) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " vs expected " << want.size();
  }
  std::size_t bad = 0, worst = 0;
  double worst_excess = -1, max_abs = 0, max_rel = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i], err = std::fabs(g - w), tol = atol + rtol * std::fabs(w);
    if ((!std::isfinite(g) && std::isfinite(w)) || (std::isnan(w) && !std::isnan(g))) {
      ++bad;
      worst = i;
      worst_excess = INFINITY;
      continue;
    }
    max_abs = std::max(max_abs, err);
    if (std::fabs(w) > atol) max_rel = std::max(max_rel, err / std::fabs(w));
    if (err > tol) {
      ++bad;
      if (err - tol > worst_excess) {
        worst_excess = err - tol;
        worst = i;
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess() << "max abs err " << max_abs << ", max rel err " << max_rel;
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " elements off (atol " << atol << ", rtol " << rtol
                                       << "); worst at " << worst << ": got " << got[worst] << ", expected " << want[worst]
                                       << "; max abs err " << max_abs << ", max rel err " << max_rel;
}

// Relative error of the whole tensor: ‖got − want‖₂ / ‖want‖₂ (for quantities summed over many
// bf16 products, where per-element bounds are loose but the aggregate error is tight). When want is
// all zeros this is ‖got‖₂, an absolute figure: callers with tiny tensors check that case
// themselves. Tensors of different sizes give +inf.
inline double relative_l2_error(std::span<const float> got, std::span<const float> want) {
  if (got.size() != want.size()) return INFINITY;
  double num = 0, den = 0;
  for (std::size_t i = 0; i < got.size() && i < want.size(); ++i) {
    num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
    den += static_cast<double>(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Every element must satisfy |got − want| <= bound[i] (a per-element bound derived from the
// kernel's arithmetic); on failure: the count, the worst element (row and column for rows of
// length `row`) and how far over its bound it is.
inline ::testing::AssertionResult within(std::span<const float> got, std::span<const float> want, std::span<const double> bound, int row) {
  if (got.size() != want.size() || got.size() != bound.size()) {
    return ::testing::AssertionFailure() << "sizes " << got.size() << ", " << want.size() << ", " << bound.size();
  }
  std::size_t bad = 0, worst = 0;
  double worst_ratio = 0, max_ratio = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    const double ratio = std::isfinite(err) ? err / std::max(bound[i], 1e-300) : INFINITY;
    max_ratio = std::max(max_ratio, ratio);
    if (!(err <= bound[i])) {
      ++bad;
      if (!(ratio <= worst_ratio)) {
        worst_ratio = ratio;
        worst = i;
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess() << "largest error/bound " << max_ratio;
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " elements off; worst at row " << worst / row << ", column "
                                       << worst % row << ": got " << got[worst] << ", expected " << want[worst] << ", error "
                                       << std::fabs(static_cast<double>(got[worst]) - want[worst]) << " vs bound " << bound[worst]
                                       << " (" << worst_ratio << "x)";
}

// Bitwise equality of two downloads (determinism checks).
template <class T>
::testing::AssertionResult same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes " << a.size() << " vs " << b.size();
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure() << "first difference at element " << i;
    }
  }
  return ::testing::AssertionSuccess();
}

// The unit roundoff of fp32: relative error of one rounding (the kernels' derived error bounds).
inline constexpr double kU = 0x1p-24;

// The unit roundoff of bf16 (8 significant bits): relative error of one rounding.
inline constexpr double kBf16Eps = 1.0 / 256.0;

}  // namespace pgolf::testing
