// Weightless RMSNorm on the GPU (the CPU oracle is ops/rmsnorm.hpp), alone and fused with the
// element-wise work that produces its input in a transformer block:
//
//   rmsnorm_forward              y = Out(x · rstd · factor),   rstd[r] = 1 / sqrt(mean(x[r]²) + eps)
//   rmsnorm_backward             dx (+)= factor · (s·dy − s³/D · x · Σ(dy·x))
//   resid_mix_rmsnorm_forward    x_mix = mix[0]⊙x + mix[1]⊙x0;  h = bf16(rmsnorm(x_mix) · factor)
//   scaled_add_rmsnorm_forward   out = x + scale⊙a;             h = bf16(rmsnorm(out) · factor)
//
// eps is cpu::kRmsNormEps (the float32 machine epsilon, as F.rms_norm uses for fp32 and bf16).
// `factor` is the records' LN scale 1/√(l+1) (1 in the baseline), folded into the kernels so that
// no extra pass over the activations is needed.
//
// Design: the row-wise machinery of rowwise.cuh (a row in registers, a fixed reduction tree).
#pragma once

#include <cstdint>
#include <type_traits>

#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/rowwise.cuh"
#include "pgolf/ops/rmsnorm.hpp"

namespace pgolf::cuda {

// ---------------------------------------------------------------------------------------------
// Kernels.
// ---------------------------------------------------------------------------------------------
namespace kernels {

template <int D, class Out>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    rmsnorm_forward(Out* y, float* rstd, const float* x, float factor, std::int64_t n) {
  using T = rowwise::RowTiling<D>;
  const rowwise::RowPos<D> pos(n);
  if (pos.warp_idle) return;
  rowwise::RowRegs<D> v = {};
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (pos.has(j)) rowwise::load_pack<T::kVec>(v[j], x + pos.at(j));
  }
  rowwise::rmsnorm_rows_out<D>(y, rstd, v, factor, pos);
}

template <int D>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    rmsnorm_backward(float* dx, const float* dy, const float* x, const float* rstd, float factor, std::int64_t n, bool accumulate) {
  using T = rowwise::RowTiling<D>;
  const rowwise::RowPos<D> pos(n);
  if (pos.warp_idle) return;
  // All loads first (the row of x, of dy, of dx when accumulating, and rstd), so that they are in
  // flight together; dx is read before it is written, by the same thread (dx == dy is safe). A
  // third register row fits up to 32 values per thread (D <= 1024); wider rows load the old dx in
  // the store loop instead, so the kernel does not spill.
  constexpr bool kPrefetchOld = T::kPerLane * T::kVec <= 32;
  rowwise::RowRegs<D> xv = {}, g = {};
  [[maybe_unused]] std::conditional_t<kPrefetchOld, rowwise::RowRegs<D>, int> old = {};
  const float s = pos.valid ? rstd[pos.row] : 0.0f;
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.has(j)) continue;
    rowwise::load_pack<T::kVec>(xv[j], x + pos.at(j));
    rowwise::load_pack<T::kVec>(g[j], dy + pos.at(j));
    if constexpr (kPrefetchOld) {
      if (accumulate) rowwise::load_pack<T::kVec>(old[j], dx + pos.at(j));
    }
  }
  float dot = 0.0f;
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
#pragma unroll
    for (int i = 0; i < T::kVec; ++i) dot += g[j][i] * xv[j][i];
  }
  dot = rowwise::lane_group_sum<T::kLanes>(dot);
  if (!pos.valid) return;
  const float a = factor * s;                                           // coefficient of dy
  const float c = factor * (s * s * s) * (dot / static_cast<float>(D));  // coefficient of x
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.has(j)) continue;
    float prev[T::kVec] = {};
    if (accumulate) {
      if constexpr (kPrefetchOld) {
#pragma unroll
        for (int i = 0; i < T::kVec; ++i) prev[i] = old[j][i];
      } else {
        rowwise::load_pack<T::kVec>(prev, dx + pos.at(j));
      }
    }
    float o[T::kVec];
#pragma unroll
    for (int i = 0; i < T::kVec; ++i) o[i] = (accumulate ? prev[i] : 0.0f) + (a * g[j][i] - c * xv[j][i]);
    rowwise::store_pack<T::kVec>(dx + pos.at(j), o);
  }
}

template <int D>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    resid_mix_rmsnorm_forward(float* x_mix, nv_bf16* h, float* rstd, const float* x, const float* x0, const float* mix, float factor,
                              std::int64_t n) {
  using T = rowwise::RowTiling<D>;
  const rowwise::RowPos<D> pos(n);
  if (pos.warp_idle) return;
  rowwise::RowRegs<D> xv = {}, x0v = {};
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.has(j)) continue;
    rowwise::load_pack<T::kVec>(xv[j], x + pos.at(j));
    rowwise::load_pack<T::kVec>(x0v[j], x0 + pos.at(j));
  }
  // mix (2, D) is tiny and shared by every row: these loads hit L1/L2.
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.has(j)) continue;
    float m0[T::kVec], m1[T::kVec];
    rowwise::load_pack<T::kVec, true>(m0, mix + pos.col(j));
    rowwise::load_pack<T::kVec, true>(m1, mix + D + pos.col(j));
#pragma unroll
    for (int i = 0; i < T::kVec; ++i) xv[j][i] = m0[i] * xv[j][i] + m1[i] * x0v[j][i];  // xv becomes x_mix
    rowwise::store_pack<T::kVec>(x_mix + pos.at(j), xv[j]);
  }
  rowwise::rmsnorm_rows_out<D>(h, rstd, xv, factor, pos);
}

template <int D>
__global__ void __launch_bounds__(rowwise::RowTiling<D>::kThreads)
    scaled_add_rmsnorm_forward(float* out, nv_bf16* h, float* rstd, const float* x, const nv_bf16* a, const float* scale, float factor,
                               std::int64_t n) {
  using T = rowwise::RowTiling<D>;
  const rowwise::RowPos<D> pos(n);
  if (pos.warp_idle) return;
  rowwise::RowRegs<D> xv = {}, av = {};
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.has(j)) continue;
    rowwise::load_pack<T::kVec>(xv[j], x + pos.at(j));
    rowwise::load_pack<T::kVec>(av[j], a + pos.at(j));
  }
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.has(j)) continue;
    float sc[T::kVec];
    rowwise::load_pack<T::kVec, true>(sc, scale + pos.col(j));
#pragma unroll
    for (int i = 0; i < T::kVec; ++i) xv[j][i] = xv[j][i] + sc[i] * av[j][i];  // xv becomes out
    rowwise::store_pack<T::kVec>(out + pos.at(j), xv[j]);
  }
  rowwise::rmsnorm_rows_out<D>(h, rstd, xv, factor, pos);
}

}  // namespace kernels

// ---------------------------------------------------------------------------------------------
// Launchers. Pointers are device memory; vectorised accesses need every tensor pointer aligned
// to kVecWidth<D> elements (checked on the host, with a message that says so). n == 0 is a no-op.
// ---------------------------------------------------------------------------------------------

// y (n, D) = Out(x · rstd · factor); rstd (n) = 1 / sqrt(mean(x²) + eps); x (n, D) fp32.
// Out = float or nv_bf16. y may alias x when Out = float.
template <int D, class Out>
void rmsnorm_forward(Out* y, float* rstd, const float* x, float factor, std::int64_t n, cudaStream_t stream) {
  static_assert(std::is_same_v<Out, float> || std::is_same_v<Out, nv_bf16>, "rmsnorm_forward writes float or nv_bf16");
  using T = rowwise::RowTiling<D>;
  constexpr const char* op = "rmsnorm_forward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(y, T::kVec, op, "y", D);
  rowwise::check_aligned(x, T::kVec, op, "x", D);
  if (n == 0) return;
  kernels::rmsnorm_forward<D, Out><<<rowwise::row_blocks<D>(n), T::kThreads, 0, stream>>>(y, rstd, x, factor, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// dx (n, D) (+)= factor · (s·dy − s³/D · x · Σ(dy·x)), s = rstd[r]: the gradient through
// y = rmsnorm(x) · factor. dy (n, D) fp32, x (n, D) the forward's input, rstd (n) its output.
// dx may alias dy when !accumulate.
template <int D>
void rmsnorm_backward(float* dx, const float* dy, const float* x, const float* rstd, float factor, std::int64_t n, bool accumulate,
                      cudaStream_t stream) {
  using T = rowwise::RowTiling<D>;
  constexpr const char* op = "rmsnorm_backward";
  rowwise::check_rows(n, op);
  PGOLF_CHECK(!(accumulate && dx == dy), op << ": dx may alias dy only when not accumulating");
  rowwise::check_aligned(dx, T::kVec, op, "dx", D);
  rowwise::check_aligned(dy, T::kVec, op, "dy", D);
  rowwise::check_aligned(x, T::kVec, op, "x", D);
  if (n == 0) return;
  kernels::rmsnorm_backward<D><<<rowwise::row_blocks<D>(n), T::kThreads, 0, stream>>>(dx, dy, x, rstd, factor, n, accumulate);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// The block input: x_mix (n, D) = mix[0:D]⊙x + mix[D:2D]⊙x0 (mix (2, D), the reference's
// resid_mix); h (n, D) = bf16(rmsnorm(x_mix) · factor); rstd (n). x, x0 (n, D) fp32.
// x_mix may alias x (the backward needs x, so the model keeps them apart).
template <int D>
void resid_mix_rmsnorm_forward(float* x_mix, nv_bf16* h, float* rstd, const float* x, const float* x0, const float* mix, float factor,
                               std::int64_t n, cudaStream_t stream) {
  using T = rowwise::RowTiling<D>;
  constexpr const char* op = "resid_mix_rmsnorm_forward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(x_mix, T::kVec, op, "x_mix", D);
  rowwise::check_aligned(h, T::kVec, op, "h", D);
  rowwise::check_aligned(x, T::kVec, op, "x", D);
  rowwise::check_aligned(x0, T::kVec, op, "x0", D);
  rowwise::check_aligned(mix, T::kVec, op, "mix", D);
  if (n == 0) return;
  kernels::resid_mix_rmsnorm_forward<D><<<rowwise::row_blocks<D>(n), T::kThreads, 0, stream>>>(x_mix, h, rstd, x, x0, mix, factor, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// A residual branch and the next norm: out (n, D) = x + scale⊙a (x fp32 (n, D), a the branch's
// bf16 output (n, D), scale (D)); h (n, D) = bf16(rmsnorm(out) · factor); rstd (n). out may alias x.
template <int D>
void scaled_add_rmsnorm_forward(float* out, nv_bf16* h, float* rstd, const float* x, const nv_bf16* a, const float* scale, float factor,
                                std::int64_t n, cudaStream_t stream) {
  using T = rowwise::RowTiling<D>;
  constexpr const char* op = "scaled_add_rmsnorm_forward";
  rowwise::check_rows(n, op);
  rowwise::check_aligned(out, T::kVec, op, "out", D);
  rowwise::check_aligned(h, T::kVec, op, "h", D);
  rowwise::check_aligned(x, T::kVec, op, "x", D);
  rowwise::check_aligned(a, T::kVec, op, "a", D);
  rowwise::check_aligned(scale, T::kVec, op, "scale", D);
  if (n == 0) return;
  kernels::scaled_add_rmsnorm_forward<D><<<rowwise::row_blocks<D>(n), T::kThreads, 0, stream>>>(out, h, rstd, x, a, scale, factor, n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

}  // namespace pgolf::cuda
