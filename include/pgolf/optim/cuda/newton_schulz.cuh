// Muon's orthogonalisation on the GPU: the quintic Newton–Schulz iteration of the reference
// (zeropower_via_newtonschulz5, see optim/newton_schulz.hpp) for many matrices at once, in bf16, as
// batched cuBLASLt GEMMs.
//
// The matrices (anywhere in a flat fp32 buffer: the parameter layout) are grouped by oriented
// shape m × n (m <= n: a matrix with rows > cols is transposed). Each group owns one contiguous bf16
// workspace of count × m × n (each matrix rounded up to 8 elements), so that one strided-batched
// GEMM serves the whole group:
//
//   prepare   (one kernel over 32×32 tiles of every matrix)  optional Nesterov momentum in fp32
//             (buf = μ·buf + g; g' = g + μ·buf), X = bf16(g') written oriented (transposed through
//             shared memory, so both the reads and the writes are coalesced), and per tile the fp64
//             sum of squares of the bf16 values;
//   denoms    (one block per matrix) the tiles' partial sums added in a fixed order (deterministic)
//             → denom = bf16(bf16(‖X‖_F) + 1e-7), the reference's `X /= X.norm() + eps` in bf16;
//   scale     X = bf16(X / denom);
//   iterate   per group and step, the reference's bf16 ops in its order (Python evaluates
//             `c * A @ A` as (c·A)·A): three batched GEMMs (fp32 accumulation, bf16 output, no
//             epilogue arithmetic) and three element-wise passes, each rounding where eager
//             PyTorch does (the script compiles this function, and Inductor's fused element-wise
//             kernels may skip some of these roundings, e.g. the inner bf16(b·A); docs/cuda-backend.md):
//               A  = bf16(X·Xᵀ)
//               cA = bf16(c·A)                      (ns_scale_bf16)
//               T  = bf16(cA·A)
//               B  = bf16(bf16(b·A) + T)            (ns_axpy_bf16, in place over T)
//               U  = bf16(B·X)                      (into the ping-pong buffer)
//               X' = bf16(bf16(a·X) + U)            (ns_axpy_bf16, in place over U)
//   apply     (tiles again, un-transposing through shared memory)
//               p ← p·(1 − lr·wd) − lr·bf16(aspect·O),  aspect = √max(1, rows/cols).
//
// ROUNDING VERSUS THE CPU EMULATION. The rounding points are the CPU's newton_schulz5(bf16) ones,
// which are eager PyTorch's; what differs is the GEMMs' summation order (cuBLASLt's tiles and split
// versus the CPU's loop), and the quintic's slope of up to ~3.4 per step amplifies a single-ulp
// difference over five steps. A CPU model with another summation order (K in reversed 16-blocks)
// put the update within 2.4% (relative Frobenius) of the CPU's emulation after five steps, 0 after
// one (worst of 6–60 random matrices per shape, 5×7 to 256×512); the emulation itself is 2.6–6.5%
// from the fp32 iteration (bf16 rounding). test/cuda/optimizer_test.cu bounds both. (Rounding once
// per GEMM in cuBLASLt's epilogue instead, c·(A·A) + b·A and B·X + a·X, would save the three passes
// and lands closer to fp32, 1–3%, but 3–6% away from the reference's bits: not the reference's
// computation.)
//
// Everything is launched on one stream without host synchronisation. The GEMMs of different groups
// run one after another: GemmEngine has one cuBLASLt workspace, so its calls must not overlap.
#pragma once

#if !defined(__CUDACC__)
#error "pgolf/optim/cuda/newton_schulz.cuh is for CUDA translation units"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "pgolf/core/cuda_runtime.cuh"
#include "pgolf/core/error.hpp"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/gemm.cuh"
#include "pgolf/optim/newton_schulz.hpp"

namespace pgolf::cuda {

// A matrix to orthogonalise: rows × cols, row-major at `offset` in a flat fp32 buffer.
struct NsInput {
  std::int64_t offset = 0;
  std::int64_t rows = 0, cols = 0;
};

// One matrix as the kernels see it (device table).
struct NsMatrix {
  std::int64_t src_offset;  // in the flat fp32 buffers (gradients, momentum, parameters)
  std::int64_t ws_offset;   // in the bf16 workspaces (its group's base + index · ns_batch_stride(m·n))
  int rows, cols;           // stored shape
  int tile_begin;           // its first 32×32 tile in the tile numbering of prepare/apply
  int tiles_c;              // tiles across its columns
  int transposed;           // rows > cols: X = Gᵀ
  float aspect;             // √max(1, rows/cols)
};

inline constexpr int kNsTile = 32;               // tile edge of the prepare/apply kernels
inline constexpr int kNsTileThreads = 256;       // 32 columns × 8 row lanes
inline constexpr int kNsTileRows = kNsTileThreads / kNsTile;
inline constexpr int kNsScaleThreads = 256;
inline constexpr std::int64_t kNsAlignElems = 128;  // group bases on 256-byte boundaries (cuBLASLt alignment)

namespace kernels {

// One block per 32×32 tile of one matrix (tile_matrix maps a tile to its matrix).
template <bool Momentum>
__global__ void __launch_bounds__(kNsTileThreads) ns_prepare(nv_bf16* __restrict__ X, double* __restrict__ partials,
                                                             const float* __restrict__ G, float* __restrict__ buf, float mu,
                                                             const float* __restrict__ clip_coef, const NsMatrix* __restrict__ mats,
                                                             const int* __restrict__ tile_matrix) {
  __shared__ float tile[kNsTile][kNsTile + 1];
  __shared__ double scratch[kNsTileThreads / kWarpSize];
  const int t = static_cast<int>(blockIdx.x);
  const NsMatrix M = mats[tile_matrix[t]];
  const int local = t - M.tile_begin;
  const int r0 = (local / M.tiles_c) * kNsTile, c0 = (local % M.tiles_c) * kNsTile;
  const int tx = static_cast<int>(threadIdx.x) % kNsTile, ty = static_cast<int>(threadIdx.x) / kNsTile;
  const float coef = clip_coef ? *clip_coef : 1.0f;
  double ss = 0.0;
  for (int i = ty; i < kNsTile; i += kNsTileRows) {
    const int r = r0 + i, c = c0 + tx;
    float x = 0.0f;
    if (r < M.rows && c < M.cols) {
      const std::int64_t idx = M.src_offset + static_cast<std::int64_t>(r) * M.cols + c;
      const float g = G[idx] * coef;  // the CPU clips in place (grads *= c) before reading them
      if constexpr (Momentum) {
        const float b = mu * buf[idx] + g;  // buf = μ·buf + g
        buf[idx] = b;
        x = round_bf16(g + mu * b);         // Nesterov g' = g + μ·buf, then G.bfloat16()
      } else {
        x = round_bf16(g);
      }
      ss += static_cast<double>(x) * x;  // exact products; fp64 sum like the CPU's
      if (!M.transposed) X[M.ws_offset + static_cast<std::int64_t>(r) * M.cols + c] = __float2bfloat16_rn(x);
    }
    tile[i][tx] = x;
  }
  if (M.transposed) {  // uniform per block
    __syncthreads();
    for (int i = ty; i < kNsTile; i += kNsTileRows) {
      const int c = c0 + i, r = r0 + tx;  // X[c, r] = G[r, c]; consecutive threads write consecutive r
      if (r < M.rows && c < M.cols) X[M.ws_offset + static_cast<std::int64_t>(c) * M.rows + r] = __float2bfloat16_rn(tile[tx][i]);
    }
  }
  ss = block_sum<kNsTileThreads>(ss, scratch);
  if (threadIdx.x == 0) partials[t] = ss;
}

// One block per matrix: its tiles' partial sums in a fixed order → the bf16 denominator.
template <int = 0>  // header kernels are templates: one definition per program, however many units include them
__global__ void __launch_bounds__(kNsScaleThreads) ns_denoms(float* __restrict__ denom, const double* __restrict__ partials,
                                                            const NsMatrix* __restrict__ mats) {
  __shared__ double scratch[kNsScaleThreads / kWarpSize];
  const NsMatrix M = mats[blockIdx.x];
  const int tiles = static_cast<int>(ceil_div(M.rows, kNsTile)) * M.tiles_c;
  double acc = 0.0;
  for (int k = static_cast<int>(threadIdx.x); k < tiles; k += kNsScaleThreads) acc += partials[M.tile_begin + k];
  acc = block_sum<kNsScaleThreads>(acc, scratch);
  // CPU: rnd(rnd(float(sqrt(ss))) + 1e-7f) — X.norm() is a bf16 tensor, and so is norm + eps.
  if (threadIdx.x == 0) denom[blockIdx.x] = round_bf16(round_bf16(static_cast<float>(sqrt(acc))) + kNsNormEps);
}

// X = bf16(X / denom) per matrix (blockIdx.y), IEEE division like the CPU's.
template <int = 0>
__global__ void __launch_bounds__(kNsScaleThreads) ns_scale(nv_bf16* __restrict__ X, const float* __restrict__ denom,
                                                           const NsMatrix* __restrict__ mats) {
  const NsMatrix M = mats[blockIdx.y];
  const float d = denom[blockIdx.y];
  const std::int64_t n = static_cast<std::int64_t>(M.rows) * M.cols;
  nv_bf16* x = X + M.ws_offset;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    x[i] = __float2bfloat16_rn(__bfloat162float(x[i]) / d);
  }
}

// Tiles of the parameter layout; O is read from the oriented workspace F (un-transposed through
// shared memory). WriteOnly: out = bf16(aspect·O); else out = out·decay − lr·bf16(aspect·O).
template <bool WriteOnly>
__global__ void __launch_bounds__(kNsTileThreads) ns_apply(float* __restrict__ out, const nv_bf16* __restrict__ F, float lr, float decay,
                                                           const NsMatrix* __restrict__ mats, const int* __restrict__ tile_matrix) {
  __shared__ float tile[kNsTile][kNsTile + 1];
  const int t = static_cast<int>(blockIdx.x);
  const NsMatrix M = mats[tile_matrix[t]];
  const int local = t - M.tile_begin;
  const int r0 = (local / M.tiles_c) * kNsTile, c0 = (local % M.tiles_c) * kNsTile;
  const int tx = static_cast<int>(threadIdx.x) % kNsTile, ty = static_cast<int>(threadIdx.x) / kNsTile;
  if (M.transposed) {
    for (int i = ty; i < kNsTile; i += kNsTileRows) {
      const int c = c0 + i, r = r0 + tx;
      tile[tx][i] = (r < M.rows && c < M.cols) ? __bfloat162float(F[M.ws_offset + static_cast<std::int64_t>(c) * M.rows + r]) : 0.0f;
    }
    __syncthreads();
  }
  for (int i = ty; i < kNsTile; i += kNsTileRows) {
    const int r = r0 + i, c = c0 + tx;
    if (r >= M.rows || c >= M.cols) continue;
    const float o = M.transposed ? tile[i][tx] : __bfloat162float(F[M.ws_offset + static_cast<std::int64_t>(r) * M.cols + c]);
    const float u = round_bf16(o * M.aspect);  // `g *= max(1, rows/cols)**0.5` on the bf16 update
    const std::int64_t idx = M.src_offset + static_cast<std::int64_t>(r) * M.cols + c;
    if constexpr (WriteOnly) {
      out[idx] = u;
    } else {
      out[idx] = out[idx] * decay - lr * u;
    }
  }
}

// out = bf16(s · in): a Python float times a bf16 tensor in PyTorch (fp32 math, one rounding).
template <int = 0>
__global__ void ns_scale_bf16(nv_bf16* __restrict__ out, const nv_bf16* __restrict__ in, float s, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __float2bfloat16_rn(s * __bfloat162float(in[i]));
  }
}

// io = bf16(bf16(s · x) + io): PyTorch's `s * x + io` on bf16 tensors (two ops, two roundings).
template <int = 0>
__global__ void ns_axpy_bf16(nv_bf16* __restrict__ io, const nv_bf16* __restrict__ x, float s, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const float sx = __bfloat162float(__float2bfloat16_rn(s * __bfloat162float(x[i])));
    io[i] = __float2bfloat16_rn(sx + __bfloat162float(io[i]));
  }
}

}  // namespace kernels

// Batch strides: every problem of a batch starts on a 16-byte boundary (GemmEngine declares the
// smallest alignment over the pointers, row strides and batch strides, so an odd stride would send
// every NS GEMM down cuBLASLt's 2-byte-aligned paths).
inline std::int64_t ns_batch_stride(std::int64_t elems) { return ceil_div(elems, std::int64_t{8}) * 8; }

// The NS5 iteration on one group: `count` matrices X (m × n, m <= n, rows packed, batch stride
// ns_batch_stride(m·n)) in `x`; `y` is the ping-pong buffer of the same size; `a`, `b` and `ca`
// hold count matrices m × m (stride ns_batch_stride(m·m)) each. Returns the buffer that holds the
// result (x after an even number of steps, y after an odd one). The element-wise passes run over
// the whole strided range, padding included (never read by the GEMMs).
inline nv_bf16* newton_schulz5_iterate(GemmEngine& gemm, nv_bf16* x, nv_bf16* y, nv_bf16* a, nv_bf16* b, nv_bf16* ca, std::int64_t m,
                                       std::int64_t n, int count, int steps, cudaStream_t stream) {
  const std::int64_t mn = ns_batch_stride(m * n), mm = ns_batch_stride(m * m);
  const std::int64_t all_mm = count * mm, all_mn = count * mn;
  const unsigned grid_mm = grid_for(all_mm, kElementwiseThreads), grid_mn = grid_for(all_mn, kElementwiseThreads);
  for (int s = 0; s < steps; ++s) {
    // A = bf16(X·Xᵀ)
    gemm.gemm(Trans::no, Trans::yes, m, m, n, 1.0f, x, n, x, n, 0.0f, nullptr, a, m, OutType::bf16, stream, GemmBatch{count, mn, mn, mm});
    // cA = bf16(c·A); T = bf16(cA·A) into b; B = bf16(bf16(b·A) + T) in place
    kernels::ns_scale_bf16<><<<grid_mm, kElementwiseThreads, 0, stream>>>(ca, a, kNsC, all_mm);
    PGOLF_CUDA_LAUNCH_CHECK();
    gemm.gemm(Trans::no, Trans::no, m, m, m, 1.0f, ca, m, a, m, 0.0f, nullptr, b, m, OutType::bf16, stream, GemmBatch{count, mm, mm, mm});
    kernels::ns_axpy_bf16<><<<grid_mm, kElementwiseThreads, 0, stream>>>(b, a, kNsB, all_mm);
    PGOLF_CUDA_LAUNCH_CHECK();
    // U = bf16(B·X) into the other buffer; X' = bf16(bf16(a·X) + U) in place there
    gemm.gemm(Trans::no, Trans::no, m, n, m, 1.0f, b, m, x, n, 0.0f, nullptr, y, n, OutType::bf16, stream, GemmBatch{count, mm, mn, mn});
    kernels::ns_axpy_bf16<><<<grid_mn, kElementwiseThreads, 0, stream>>>(y, x, kNsA, all_mn);
    PGOLF_CUDA_LAUNCH_CHECK();
    std::swap(x, y);
  }
  return x;
}

// FLOPs of one NS step on one m × n matrix (a multiply-add counts 2): X·Xᵀ, A·A, B·X.
inline double newton_schulz_step_flops(std::int64_t m, std::int64_t n) {
  const double M = static_cast<double>(m), N = static_cast<double>(n);
  return 2.0 * M * M * N + 2.0 * M * M * M + 2.0 * M * M * N;
}

// A fixed set of matrices orthogonalised together: the grouping, the device tables and every
// workspace are made once (the constructor synchronises); prepare/iterate/apply launch only.
class NewtonSchulzBatch {
 public:
  struct Group {
    std::int64_t m = 0, n = 0;    // oriented shape, m <= n
    int count = 0;                // matrices in the group
    std::int64_t ws_offset = 0;   // base of the group in the workspaces (bf16 elements); matrix j
                                  // at ws_offset + j·ns_batch_stride(m·n)
  };

  NewtonSchulzBatch() = default;

  explicit NewtonSchulzBatch(std::span<const NsInput> inputs) {
    // Group by oriented shape, groups in order of first appearance, matrices in input order.
    std::vector<std::vector<std::size_t>> members;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
      const NsInput& in = inputs[i];
      PGOLF_CHECK(in.rows > 0 && in.cols > 0 && in.offset >= 0, "Newton-Schulz input " << i << ": " << in.rows << "x" << in.cols);
      PGOLF_CHECK(in.rows <= (1 << 30) / in.cols, "Newton-Schulz input " << i << " is too large: " << in.rows << "x" << in.cols);
      const std::int64_t m = std::min(in.rows, in.cols), n = std::max(in.rows, in.cols);
      std::size_t g = 0;
      while (g < groups_.size() && !(groups_[g].m == m && groups_[g].n == n)) ++g;
      if (g == groups_.size()) {
        groups_.push_back(Group{m, n, 0, 0});
        members.emplace_back();
      }
      ++groups_[g].count;
      members[g].push_back(i);
    }
    std::int64_t ws = 0, scratch = 0;
    int tiles = 0;
    std::vector<NsMatrix> mats;
    std::vector<int> tile_matrix;
    for (std::size_t g = 0; g < groups_.size(); ++g) {
      Group& grp = groups_[g];
      grp.ws_offset = ws;
      ws += ceil_div(grp.count * ns_batch_stride(grp.m * grp.n), kNsAlignElems) * kNsAlignElems;
      scratch = std::max(scratch, ceil_div(grp.count * ns_batch_stride(grp.m * grp.m), kNsAlignElems) * kNsAlignElems);
      for (std::size_t j = 0; j < members[g].size(); ++j) {
        const NsInput& in = inputs[members[g][j]];
        NsMatrix M{};
        M.src_offset = in.offset;
        M.ws_offset = grp.ws_offset + static_cast<std::int64_t>(j) * ns_batch_stride(grp.m * grp.n);
        M.rows = static_cast<int>(in.rows);
        M.cols = static_cast<int>(in.cols);
        M.transposed = in.rows > in.cols ? 1 : 0;
        M.aspect = static_cast<float>(std::sqrt(std::max(1.0, static_cast<double>(in.rows) / static_cast<double>(in.cols))));
        M.tile_begin = tiles;
        M.tiles_c = static_cast<int>(ceil_div(in.cols, kNsTile));
        const int count = static_cast<int>(ceil_div(in.rows, kNsTile)) * M.tiles_c;
        tile_matrix.insert(tile_matrix.end(), static_cast<std::size_t>(count), static_cast<int>(mats.size()));
        tiles += count;
        max_numel_ = std::max(max_numel_, in.rows * in.cols);
        mats.push_back(M);
      }
    }
    host_mats_ = mats;
    tiles_ = tiles;
    if (mats.empty()) return;
    mats_ = to_device<NsMatrix>(mats, "Newton-Schulz matrix table");
    tile_matrix_ = to_device<int>(tile_matrix, "Newton-Schulz tile table");
    partials_ = DeviceBuffer<double>(static_cast<std::size_t>(tiles), "Newton-Schulz norm partials");
    denom_ = DeviceBuffer<float>(mats.size(), "Newton-Schulz norms");
    x_ = DeviceBuffer<nv_bf16>(static_cast<std::size_t>(ws), "Newton-Schulz X");
    y_ = DeviceBuffer<nv_bf16>(static_cast<std::size_t>(ws), "Newton-Schulz X (ping-pong)");
    a_ = DeviceBuffer<nv_bf16>(static_cast<std::size_t>(scratch), "Newton-Schulz A = X Xt");
    b_ = DeviceBuffer<nv_bf16>(static_cast<std::size_t>(scratch), "Newton-Schulz B");
    ca_ = DeviceBuffer<nv_bf16>(static_cast<std::size_t>(scratch), "Newton-Schulz c·A");
    // The padding between and after the matrices is never written by the GEMMs; zero it once (the
    // element-wise passes compute on it, harmlessly, and nothing reads it back).
    x_.zero();
    y_.zero();
    a_.zero();
    b_.zero();
    ca_.zero();
    PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  }

  NewtonSchulzBatch(NewtonSchulzBatch&&) noexcept = default;
  NewtonSchulzBatch& operator=(NewtonSchulzBatch&&) noexcept = default;

  bool empty() const { return host_mats_.empty(); }
  std::size_t matrices() const { return host_mats_.size(); }
  const std::vector<Group>& groups() const { return groups_; }
  const std::vector<NsMatrix>& matrix_table() const { return host_mats_; }

  // X = bf16(G') oriented and normalised, where G' is coef·G (momentum == nullptr) or Nesterov's
  // g + μ·buf after buf = μ·buf + g with g = coef·G (momentum: the fp32 buffers, same layout as G).
  // clip_coef: a device float (nullptr = 1).
  void prepare(const float* G, float* momentum, float mu, const float* clip_coef, cudaStream_t stream) {
    if (empty()) return;
    if (momentum) {
      kernels::ns_prepare<true><<<static_cast<unsigned>(tiles_), kNsTileThreads, 0, stream>>>(x_.data(), partials_.data(), G, momentum, mu,
                                                                                              clip_coef, mats_.data(), tile_matrix_.data());
    } else {
      kernels::ns_prepare<false><<<static_cast<unsigned>(tiles_), kNsTileThreads, 0, stream>>>(x_.data(), partials_.data(), G, nullptr, 0.0f,
                                                                                               clip_coef, mats_.data(), tile_matrix_.data());
    }
    PGOLF_CUDA_LAUNCH_CHECK();
    kernels::ns_denoms<><<<static_cast<unsigned>(matrices()), kNsScaleThreads, 0, stream>>>(denom_.data(), partials_.data(), mats_.data());
    PGOLF_CUDA_LAUNCH_CHECK();
    const dim3 grid(static_cast<unsigned>(std::min<std::int64_t>(ceil_div(max_numel_, kNsScaleThreads * 4), 1024)),
                    static_cast<unsigned>(matrices()));
    kernels::ns_scale<><<<grid, kNsScaleThreads, 0, stream>>>(x_.data(), denom_.data(), mats_.data());
    PGOLF_CUDA_LAUNCH_CHECK();
    result_ = x_.data();
  }

  // `steps` NS5 steps on every group (after prepare).
  void iterate(GemmEngine& gemm, int steps, cudaStream_t stream) {
    if (empty()) return;
    for (const Group& g : groups_) {
      newton_schulz5_iterate(gemm, x_.data() + g.ws_offset, y_.data() + g.ws_offset, a_.data(), b_.data(), ca_.data(), g.m, g.n, g.count,
                             steps, stream);
    }
    result_ = steps % 2 == 0 ? x_.data() : y_.data();  // every group alternates the same way
  }

  // params ← params·decay − lr·bf16(aspect·O) for every matrix (after iterate).
  void apply(float* params, float lr, float decay, cudaStream_t stream) {
    if (empty()) return;
    kernels::ns_apply<false><<<static_cast<unsigned>(tiles_), kNsTileThreads, 0, stream>>>(params, result_, lr, decay, mats_.data(),
                                                                                           tile_matrix_.data());
    PGOLF_CUDA_LAUNCH_CHECK();
  }

  // out = bf16(aspect·O) at every matrix's offset (tests and benchmarks).
  void write_update(float* out, cudaStream_t stream) {
    if (empty()) return;
    kernels::ns_apply<true><<<static_cast<unsigned>(tiles_), kNsTileThreads, 0, stream>>>(out, result_, 0.0f, 1.0f, mats_.data(),
                                                                                          tile_matrix_.data());
    PGOLF_CUDA_LAUNCH_CHECK();
  }

  // FLOPs of `steps` NS steps over every matrix.
  double flops(int steps) const {
    double f = 0;
    for (const Group& g : groups_) f += g.count * newton_schulz_step_flops(g.m, g.n);
    return f * steps;
  }

  // The group workspaces (bf16 X) as prepare left them (tests).
  const nv_bf16* workspace() const { return x_.data(); }
  std::size_t workspace_size() const { return x_.size(); }

 private:
  std::vector<Group> groups_;
  std::vector<NsMatrix> host_mats_;
  int tiles_ = 0;
  std::int64_t max_numel_ = 0;
  DeviceBuffer<NsMatrix> mats_;
  DeviceBuffer<int> tile_matrix_;
  DeviceBuffer<double> partials_;
  DeviceBuffer<float> denom_;
  DeviceBuffer<nv_bf16> x_, y_, a_, b_, ca_;
  nv_bf16* result_ = nullptr;
};

}  // namespace pgolf::cuda
