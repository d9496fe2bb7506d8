// The attention-stage features of the records on the GPU (the CPU oracle is ops/features.hpp:
// cpu::xsa_forward/_backward and cpu::head_gate_forward/_backward, chained as gpt_cpu.hpp's
// block_forward/block_backward do; formulas and sources in docs/features.md):
//
//   XSA (exclusive self-attention)   out_h = y_h − (y_h·v̂) v̂,  v̂ = v_k / max(‖v_k‖, 1e-12)
//       for query head h of KV head k = h / (H/Hkv), applied to the attention output before the
//       output projection.
//   per-head gates                   y_h ← g_h · y_h,  g = m·σ(z),  z = s·(W·h[:Win] + b)
//       headwise_bias (b, Win = D), full (Win = D), output_gate (m = 2, Win = gate_window),
//       sparse (s = sparse_gate_scale, Win = gate_window); h is the attention input (N, D).
//
// Precision (the reference's autocast): y, v, h and dy are bf16; the math is fp32; dv (the values'
// gradient, which the value residual / embedding chain continues) is fp32; dh is added into an
// fp32 (N, D) buffer; W, bias, z and every parameter gradient are fp32 device memory.
//
// Thread layout. A head of Hd values is owned by kTph adjacent lanes holding kE = Hd / kTph
// consecutive values each (HeadTiling: kE >= 8 where Hd allows, so Hd = 64 is 8 lanes with one
// 16-byte bf16 access each; Hd = 4 is one lane). Dot products over a head are a fixed xor
// butterfly over those lanes.
//   - XSA: one lane group per (token, KV head). It loads v once, keeps v̂ in registers and serves
//     the H/Hkv query heads of that KV head; the backward also accumulates d û over them and adds
//     dv in the same pass. Every element is read and written by the thread that owns it, so
//     out == y and dy == dout are safe.
//   - Gate forward: a block of kFwdRows tokens stages W (H·Win fp32) in shared memory; lane groups
//     of kZLanes lanes each compute the H dot products of kZRows tokens (the W values read from
//     shared memory serve kZRows tokens); the gates go through shared memory to lane groups of the
//     head layout, which scale y.
//   - Gate backward: one block per chunk of kReduceRows (256) tokens, the chunks of reduce.cuh.
//     Phase 1 (head layout): dg = Σ_d dy·y_in per (token, head), dz = dg·m·σ'(z)·s into shared
//     memory, dy_in = g·dy. Phase 2 (column layout over the window): a thread owns kCV window
//     columns and keeps W[:, cols] in registers; it walks the chunk's rows adding Σ_h dz·W into dh
//     and accumulating Σ_rows dz·h (the dW partial) in fp32 registers. Row groups (when the window
//     is narrow) are combined through shared memory in a fixed order; the per-chunk partials are
//     added in chunk order in fp64 by reduce.cuh's add_partials. dbias likewise. No float atomics:
//     the bits depend on n and the sizes only.
#pragma once

#include <cstdint>

#include "pgolf/core/error.hpp"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/reduce.cuh"
#include "pgolf/ops/cuda/rowwise.cuh"
#include "pgolf/ops/cuda/scalar_ops.cuh"
#include "pgolf/ops/features.hpp"

namespace pgolf::cuda {

using GateForm = cpu::GateForm;  // sigmoid: g = σ(z); twice_sigmoid: g = 2σ(z) (output_gate)

namespace feat {

inline constexpr float kNormalizeEps = static_cast<float>(cpu::kNormalizeEps);  // F.normalize's 1e-12

// 1 / max(‖v‖, 1e-12) from ‖v‖² (IEEE sqrt and division, as the oracle).
PGOLF_HD inline float xsa_inv_norm(float sum_squares) { return 1.0f / fmaxf(sqrtf(sum_squares), kNormalizeEps); }

PGOLF_HD constexpr float gate_multiplier(GateForm form) { return form == GateForm::twice_sigmoid ? 2.0f : 1.0f; }

// How a head of Hd values is spread over lanes.
template <int Hd>
struct HeadTiling {
  static_assert(Hd >= 1, "a head needs at least one value");
  static constexpr int lanes() {
    int t = 1;
    while (2 * t <= kWarpSize && Hd % (2 * t) == 0 && Hd / (2 * t) >= 8) t *= 2;
    return t;
  }
  static constexpr int kTph = lanes();                  // lanes per head (a power of two <= 32)
  static constexpr int kE = Hd / kTph;                  // consecutive values per lane
  static constexpr int kVec = widest_divisor(kE, 8);    // bf16 values per access (<= 16 bytes)
  static constexpr int kVecF32 = widest_divisor(kE, 4);  // fp32 values per access (<= 16 bytes)
  static_assert(kE <= 64, "HeadTiling: head_dim too large for a head in registers (at most 32 lanes x 64 values)");
};

// Butterfly sum over aligned groups of G lanes (every lane of the warp must call it).
template <int G>
__device__ __forceinline__ float group_sum(float v) {
  return rowwise::lane_group_sum<G>(v);
}

inline constexpr int kBlockThreads = 256;

template <int H, int Hkv, int Hd>
constexpr void check_xsa_shape() {
  static_assert(H > 0 && Hkv > 0 && H % Hkv == 0, "XSA: num_heads must be a positive multiple of num_kv_heads");
  static_assert(Hd > 0, "XSA: head_dim must be positive");
}

// The gate kernels' tilings.
template <int D, int H, int Hd, int Win>
struct GateTiling {
  static_assert(D > 0 && H > 0 && Hd > 0, "head gate: D, H and Hd must be positive");
  static_assert(Win >= 1 && Win <= D, "head gate: the window must be 1..D channels of the attention input");
  using L = HeadTiling<Hd>;
  static constexpr int kThreads = kBlockThreads;
  static constexpr int kG = gcd(Win, D);  // vector widths must divide both (rows of h are D apart)

  // Forward, z: a token's window over kZLanes lanes, kZV values per access, kZPerLane accesses.
  static constexpr int kZV = widest_divisor(kG, 4);
  static constexpr int kZPacks = Win / kZV;
  static constexpr int kZLanes = kZPacks < kWarpSize ? rowwise::next_pow2(kZPacks) : kWarpSize;
  static constexpr int kZPerLane = (kZPacks + kZLanes - 1) / kZLanes;
  static constexpr bool kZRagged = kZPacks % kZLanes != 0;
  static constexpr int kZRows = kZLanes >= 16 ? 2 : 1;  // tokens per lane group at once (share each W read)
  static constexpr int kZGroups = kThreads / kZLanes;
  static constexpr int kFwdRows = 64;  // tokens per forward block
  static_assert(H * Win + kFwdRows * H <= 12 * 1024 - 64,
                "head_gate_forward stages W (H x Win fp32) in 48 KiB of shared memory: H x Win is too large");

  // Backward, phase 2: kCV window columns per thread (the widest of 4/2/1 that still gives every
  // thread a column when the window is wide), kColThreads column threads x kRowGroups row groups.
  static constexpr int pick_cv() {
    for (int w = 4; w >= 1; w /= 2) {
      if (kG % w == 0 && Win / w >= kThreads) return w;
    }
    return widest_divisor(kG, 4);
  }
  static constexpr int kCV = pick_cv();
  static constexpr int kCPacks = Win / kCV;
  static constexpr int kColThreads = kCPacks < kThreads ? kCPacks : kThreads;
  static constexpr int kRowGroups = kThreads / kColThreads < 32 ? kThreads / kColThreads : 32;
  static constexpr int kColPasses = (kCPacks + kColThreads - 1) / kColThreads;
  static constexpr int kRowsPerThread = (kReduceRows + kRowGroups - 1) / kRowGroups;
  // Rows whose loads are issued together (8 for the 2-column tiles of a full window: ~24 KiB in
  // flight per block).
  static constexpr int kUnroll = kRowsPerThread < (kCV <= 2 ? 8 : 4) ? kRowsPerThread : (kCV <= 2 ? 8 : 4);
  // Row-group combination: kCombineHeads heads at a time through shared memory (<= 8 KiB).
  static constexpr int combine_heads() {
    const int per_head = kRowGroups * Win;
    const int k = 2048 / per_head;
    return k < 1 ? 1 : (k > H ? H : k);
  }
  static constexpr int kCombineHeads = combine_heads();
  static constexpr int kPartFloats = kRowGroups > 1 ? kRowGroups * kCombineHeads * Win : 1;
  // dbias: kBiasSlices slices of kBiasRows rows per head, then the slices in order.
  static constexpr int kBiasSlices = kThreads / H > 0 ? kThreads / H : 1;
  static constexpr int kBiasRows = (kReduceRows + kBiasSlices - 1) / kBiasSlices;
  // Phase 1: units (token, head) of kTph lanes, two passes' loads in flight at once.
  static constexpr int kUnitsPerPass = kThreads / L::kTph;
  static constexpr int kUnits = kReduceRows * H;
  static constexpr int kP1Unroll = 2;
  static_assert(H <= kThreads, "head gate: at most 256 heads");
  static_assert((kReduceRows * H + kPartFloats + kBiasSlices * H) * 4 <= 48 * 1024,
                "head_gate_backward: shared memory over 48 KiB for this H / Win");
};

}  // namespace feat

namespace kernels {

// ------------------------------------------------------------------------------ XSA
// One lane group (kTph lanes) per (token, KV head); `units` = n·Hkv. WV: bf16 values per access of v.
template <int H, int Hkv, int Hd, int WV>
__global__ void __launch_bounds__(feat::kBlockThreads)
    xsa_forward(nv_bf16* out, const nv_bf16* y, const nv_bf16* v, std::int64_t ldv, std::int64_t units) {
  using L = feat::HeadTiling<Hd>;
  constexpr int E = L::kE, G = H / Hkv, WY = L::kVec;
  const std::int64_t gid = static_cast<std::int64_t>(blockIdx.x) * feat::kBlockThreads + threadIdx.x;
  const std::int64_t unit = gid / L::kTph;
  const int sub = static_cast<int>(gid % L::kTph);
  // Lanes past the end take part in the butterflies with zeros and store nothing.
  const bool active = unit < units;
  const std::int64_t row = active ? unit / Hkv : 0;
  const int k = static_cast<int>(unit % Hkv);
  float vv[E] = {}, yv[G][E] = {};
  if (active) {
    feat::load_run<E, WV>(vv, v + row * ldv + static_cast<std::int64_t>(k) * Hd + sub * E);
#pragma unroll
    for (int g = 0; g < G; ++g) feat::load_run<E, WY>(yv[g], y + (row * H + k * G + g) * Hd + sub * E);
  }
  float nn = 0.0f;
#pragma unroll
  for (int i = 0; i < E; ++i) nn += vv[i] * vv[i];
  nn = feat::group_sum<L::kTph>(nn);
  const float inv = feat::xsa_inv_norm(nn);
#pragma unroll
  for (int i = 0; i < E; ++i) vv[i] *= inv;  // v̂
  float dot[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float d = 0.0f;
#pragma unroll
    for (int i = 0; i < E; ++i) d += yv[g][i] * vv[i];
    dot[g] = feat::group_sum<L::kTph>(d);
  }
  if (!active) return;
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int i = 0; i < E; ++i) yv[g][i] -= dot[g] * vv[i];
    feat::store_run<E, WY>(out + (row * H + k * G + g) * Hd + sub * E, yv[g]);
  }
}

// For out_h = y_h − (y_h·û)û, û = v / max(‖v‖, eps):
//   dy_h = dout_h − (dout_h·û)û;   dû = −Σ_h [(y_h·û) dout_h + (dout_h·û) y_h];
//   dv += (dû − (dû·û)û) / ‖v‖, or dû / eps where the norm is clamped.
template <int H, int Hkv, int Hd, int WV>
__global__ void __launch_bounds__(feat::kBlockThreads)
    xsa_backward(nv_bf16* dy, float* dv, const nv_bf16* dout, const nv_bf16* y, const nv_bf16* v, std::int64_t ldv, std::int64_t units) {
  using L = feat::HeadTiling<Hd>;
  constexpr int E = L::kE, G = H / Hkv, WY = L::kVec, WF = L::kVecF32;
  const std::int64_t gid = static_cast<std::int64_t>(blockIdx.x) * feat::kBlockThreads + threadIdx.x;
  const std::int64_t unit = gid / L::kTph;
  const int sub = static_cast<int>(gid % L::kTph);
  const bool active = unit < units;
  const std::int64_t row = active ? unit / Hkv : 0;
  const int k = static_cast<int>(unit % Hkv);
  float vv[E] = {}, yv[G][E] = {}, gv[G][E] = {}, dvv[E] = {};
  float* dv_at = dv + (row * Hkv + k) * Hd + sub * E;
  if (active) {
    feat::load_run<E, WV>(vv, v + row * ldv + static_cast<std::int64_t>(k) * Hd + sub * E);
#pragma unroll
    for (int g = 0; g < G; ++g) {
      feat::load_run<E, WY>(yv[g], y + (row * H + k * G + g) * Hd + sub * E);
      feat::load_run<E, WY>(gv[g], dout + (row * H + k * G + g) * Hd + sub * E);
    }
    feat::load_run<E, WF>(dvv, dv_at);
  }
  float nn = 0.0f;
#pragma unroll
  for (int i = 0; i < E; ++i) nn += vv[i] * vv[i];
  nn = feat::group_sum<L::kTph>(nn);
  const float norm = sqrtf(nn);
  const bool clamped = norm < feat::kNormalizeEps;
  const float inv = 1.0f / (clamped ? feat::kNormalizeEps : norm);
#pragma unroll
  for (int i = 0; i < E; ++i) vv[i] *= inv;  // û
  float du[E] = {};
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float yu = 0.0f, gu = 0.0f;
#pragma unroll
    for (int i = 0; i < E; ++i) {
      yu += yv[g][i] * vv[i];
      gu += gv[g][i] * vv[i];
    }
    yu = feat::group_sum<L::kTph>(yu);
    gu = feat::group_sum<L::kTph>(gu);
#pragma unroll
    for (int i = 0; i < E; ++i) {
      du[i] -= yu * gv[g][i] + gu * yv[g][i];
      gv[g][i] = gv[g][i] - gu * vv[i];  // dy_h
    }
  }
  float duu = 0.0f;
#pragma unroll
  for (int i = 0; i < E; ++i) duu += du[i] * vv[i];
  duu = feat::group_sum<L::kTph>(duu);
  if (!active) return;
#pragma unroll
  for (int g = 0; g < G; ++g) feat::store_run<E, WY>(dy + (row * H + k * G + g) * Hd + sub * E, gv[g]);
#pragma unroll
  for (int i = 0; i < E; ++i) dvv[i] += clamped ? du[i] * inv : (du[i] - duu * vv[i]) * inv;
  feat::store_run<E, WF>(dv_at, dvv);
}

// ------------------------------------------------------------------------------ head gates
// Block b: tokens [b·kFwdRows, (b + 1)·kFwdRows). z (n, H) written; y_out = m·σ(z)_h · y_in.
template <int D, int H, int Hd, int Win>
__global__ void __launch_bounds__(feat::kBlockThreads)
    head_gate_forward(nv_bf16* y_out, float* z, const nv_bf16* y_in, const nv_bf16* h, const float* W, const float* bias, float scale,
                      float mult, std::int64_t n) {
  using T = feat::GateTiling<D, H, Hd, Win>;
  using L = typename T::L;
  constexpr int ZV = T::kZV, E = L::kE;
  __shared__ __align__(16) float w_s[H * Win];
  __shared__ float g_s[T::kFwdRows * H];
  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t r0 = static_cast<std::int64_t>(blockIdx.x) * T::kFwdRows;
  for (int i = tid; i < H * Win; i += T::kThreads) w_s[i] = __ldg(W + i);
  __syncthreads();

  // z for the block's tokens: lane group `grp` takes kZRows consecutive tokens per pass.
  const int sub = tid % T::kZLanes, grp = tid / T::kZLanes;
  for (int p0 = 0; p0 < T::kFwdRows; p0 += T::kZGroups * T::kZRows) {  // the same trip count in every thread
    float hv[T::kZRows][T::kZPerLane][ZV] = {};
    bool act[T::kZRows];
#pragma unroll
    for (int t = 0; t < T::kZRows; ++t) {
      const int rl = p0 + grp * T::kZRows + t;
      act[t] = rl < T::kFwdRows && r0 + rl < n;
      if (!act[t]) continue;
#pragma unroll
      for (int j = 0; j < T::kZPerLane; ++j) {
        const int pk = j * T::kZLanes + sub;
        if (T::kZRagged && pk >= T::kZPacks) continue;
        rowwise::load_pack<ZV>(hv[t][j], h + (r0 + rl) * D + pk * ZV);
      }
    }
    float acc[T::kZRows][H] = {};
#pragma unroll
    for (int j = 0; j < T::kZPerLane; ++j) {
      const int pk = j * T::kZLanes + sub;
      if (T::kZRagged && pk >= T::kZPacks) continue;
#pragma unroll
      for (int hh = 0; hh < H; ++hh) {
        float w[ZV];
        if constexpr (ZV == 4) {
          const float4 w4 = *reinterpret_cast<const float4*>(w_s + hh * Win + pk * ZV);
          w[0] = w4.x, w[1] = w4.y, w[2] = w4.z, w[3] = w4.w;
        } else {
#pragma unroll
          for (int i = 0; i < ZV; ++i) w[i] = w_s[hh * Win + pk * ZV + i];
        }
#pragma unroll
        for (int t = 0; t < T::kZRows; ++t) {
#pragma unroll
          for (int i = 0; i < ZV; ++i) acc[t][hh] += w[i] * hv[t][j][i];
        }
      }
    }
#pragma unroll
    for (int t = 0; t < T::kZRows; ++t) {
#pragma unroll
      for (int hh = 0; hh < H; ++hh) acc[t][hh] = feat::group_sum<T::kZLanes>(acc[t][hh]);
    }
#pragma unroll
    for (int t = 0; t < T::kZRows; ++t) {
      if (!act[t]) continue;
      const int rl = p0 + grp * T::kZRows + t;
#pragma unroll
      for (int hh = 0; hh < H; ++hh) {
        if (hh % T::kZLanes != sub) continue;
        const float zz = (acc[t][hh] + (bias != nullptr ? __ldg(bias + hh) : 0.0f)) * scale;
        z[(r0 + rl) * H + hh] = zz;
        g_s[rl * H + hh] = mult * feat::sigmoid(zz);
      }
    }
  }
  __syncthreads();

  // y_out = g · y_in, unit u = (token r0 + u / H, head u % H): g_s[u].
  const int hsub = tid % L::kTph;
  constexpr int kUnitsPerPass = T::kThreads / L::kTph;
#pragma unroll 4
  for (int u0 = 0; u0 < T::kFwdRows * H; u0 += kUnitsPerPass) {
    const int u = u0 + tid / L::kTph;
    if (u >= T::kFwdRows * H || r0 + u / H >= n) continue;
    const std::int64_t off = (r0 * H + u) * Hd + hsub * E;
    float yv[E];
    feat::load_run<E, L::kVec>(yv, y_in + off);
    const float g = g_s[u];
#pragma unroll
    for (int i = 0; i < E; ++i) yv[i] *= g;
    feat::store_run<E, L::kVec>(y_out + off, yv);
  }
}

// Block b: tokens [256·b, 256·b + 256), chunk b of reduce.cuh. Writes dy_in, adds into dh, and
// writes the chunk's partials: dW at partials[b·H·Win + h·Win + i], dbias at partials_b[b·H + h].
template <int D, int H, int Hd, int Win>
__global__ void __launch_bounds__(feat::kBlockThreads)
    head_gate_backward(nv_bf16* dy_in, float* dh, float* partials, float* partials_b, const nv_bf16* dy, const nv_bf16* y_in,
                       const float* z, const nv_bf16* h, const float* W, float scale, float mult, std::int64_t n) {
  using T = feat::GateTiling<D, H, Hd, Win>;
  using L = typename T::L;
  constexpr int E = L::kE, CV = T::kCV;
  __shared__ float dz_s[T::kUnits];  // [row][head]
  __shared__ float part[T::kPartFloats];
  __shared__ float bpart[T::kBiasSlices * H];
  const int tid = static_cast<int>(threadIdx.x);
  const std::int64_t chunk = blockIdx.x;
  const std::int64_t r0 = chunk * kReduceRows;
  const int rows_here = static_cast<int>(n - r0 < kReduceRows ? n - r0 : kReduceRows);

  // ---- phase 1: dg, dz, dy_in per (token, head)
  {
    const int sub = tid % L::kTph, ul = tid / L::kTph;
    for (int u0 = 0; u0 < T::kUnits; u0 += T::kUnitsPerPass * T::kP1Unroll) {  // the same trip count in every thread
      float gv[T::kP1Unroll][E] = {}, yv[T::kP1Unroll][E] = {}, zv[T::kP1Unroll] = {};
      bool act[T::kP1Unroll];
#pragma unroll
      for (int q = 0; q < T::kP1Unroll; ++q) {
        const int u = u0 + q * T::kUnitsPerPass + ul;
        act[q] = u < T::kUnits && u / H < rows_here;
        if (!act[q]) continue;
        const std::int64_t off = (r0 * H + u) * Hd + sub * E;
        feat::load_run<E, L::kVec>(gv[q], dy + off);
        feat::load_run<E, L::kVec>(yv[q], y_in + off);
        zv[q] = z[r0 * H + u];
      }
#pragma unroll
      for (int q = 0; q < T::kP1Unroll; ++q) {
        const int u = u0 + q * T::kUnitsPerPass + ul;
        float dg = 0.0f;
#pragma unroll
        for (int i = 0; i < E; ++i) dg += gv[q][i] * yv[q][i];
        dg = feat::group_sum<L::kTph>(dg);
        if (!act[q]) {
          if (u < T::kUnits && sub == 0) dz_s[u] = 0.0f;
          continue;
        }
        const float s = feat::sigmoid(zv[q]);
        const float dz = dg * mult * s * (1.0f - s) * scale;  // the oracle's order
        const float g = mult * s;
        if (sub == 0) dz_s[u] = dz;
#pragma unroll
        for (int i = 0; i < E; ++i) gv[q][i] *= g;
        feat::store_run<E, L::kVec>(dy_in + (r0 * H + u) * Hd + sub * E, gv[q]);
      }
    }
  }
  __syncthreads();

  // ---- dbias partial: slices of kBiasRows rows per head, then the slices in order.
  if (partials_b != nullptr) {  // uniform over the block
    if (tid < T::kBiasSlices * H) {
      const int hh = tid % H, sl = tid / H;
      float s = 0.0f;
      for (int r = sl * T::kBiasRows; r < (sl + 1) * T::kBiasRows && r < kReduceRows; ++r) s += dz_s[r * H + hh];
      bpart[sl * H + hh] = s;
    }
    __syncthreads();
    if (tid < H) {
      float s = 0.0f;
      for (int sl = 0; sl < T::kBiasSlices; ++sl) s += bpart[sl * H + tid];
      partials_b[chunk * H + tid] = s;
    }
  }

  // ---- phase 2: dh += Σ_h dz·W[h, cols], dW partial Σ_rows dz·h[:, cols]
  const int ct = tid % T::kColThreads, rg = tid / T::kColThreads;
  const bool col_worker = rg < T::kRowGroups;
#pragma unroll 1
  for (int pass = 0; pass < T::kColPasses; ++pass) {
    const int pk = pass * T::kColThreads + ct;
    const bool has_col = col_worker && pk < T::kCPacks;
    const int col = pk * CV;
    float wr[H][CV] = {}, acc[H][CV] = {};
    if (has_col) {
#pragma unroll
      for (int hh = 0; hh < H; ++hh) {
#pragma unroll
        for (int i = 0; i < CV; ++i) wr[hh][i] = __ldg(W + hh * Win + col + i);
      }
      for (int k0 = 0; k0 < T::kRowsPerThread; k0 += T::kUnroll) {
        float hv[T::kUnroll][CV] = {}, dhv[T::kUnroll][CV] = {};
#pragma unroll
        for (int q = 0; q < T::kUnroll; ++q) {
          const int r = rg + (k0 + q) * T::kRowGroups;
          if (k0 + q >= T::kRowsPerThread || r >= rows_here) continue;
          rowwise::load_pack<CV>(hv[q], h + (r0 + r) * D + col);
          rowwise::load_pack<CV>(dhv[q], dh + (r0 + r) * D + col);
        }
#pragma unroll
        for (int q = 0; q < T::kUnroll; ++q) {
          const int r = rg + (k0 + q) * T::kRowGroups;
          if (k0 + q >= T::kRowsPerThread || r >= rows_here) continue;
          float dzr[H];
#pragma unroll
          for (int hh = 0; hh < H; ++hh) dzr[hh] = dz_s[r * H + hh];
#pragma unroll
          for (int i = 0; i < CV; ++i) {
            float o = 0.0f;
#pragma unroll
            for (int hh = 0; hh < H; ++hh) {
              o += dzr[hh] * wr[hh][i];
              acc[hh][i] += dzr[hh] * hv[q][i];
            }
            dhv[q][i] += o;
          }
          rowwise::store_pack<CV>(dh + (r0 + r) * D + col, dhv[q]);
        }
      }
    }
    if constexpr (T::kRowGroups == 1) {
      if (has_col) {
#pragma unroll
        for (int hh = 0; hh < H; ++hh) {
#pragma unroll
          for (int i = 0; i < CV; ++i) partials[chunk * (H * Win) + hh * Win + col + i] = acc[hh][i];
        }
      }
    } else {
      // kColPasses == 1 here: the column workers hold every column. Row groups in order, a
      // batch of kCombineHeads heads at a time.
#pragma unroll
      for (int hb = 0; hb < H; hb += T::kCombineHeads) {
        if (has_col) {
#pragma unroll
          for (int j = 0; j < T::kCombineHeads; ++j) {
            if (hb + j >= H) continue;
#pragma unroll
            for (int i = 0; i < CV; ++i) part[(rg * T::kCombineHeads + j) * Win + col + i] = acc[hb + j][i];
          }
        }
        __syncthreads();
        for (int q = tid; q < T::kCombineHeads * Win; q += T::kThreads) {
          const int j = q / Win, c = q % Win;
          if (hb + j >= H) continue;
          float s = 0.0f;
          for (int g = 0; g < T::kRowGroups; ++g) s += part[(g * T::kCombineHeads + j) * Win + c];
          partials[chunk * (H * Win) + (hb + j) * Win + c] = s;
        }
        __syncthreads();
      }
    }
  }
}

}  // namespace kernels

// ---------------------------------------------------------------------------------------------
// Launchers. Pointers are device memory. n = tokens; n == 0 is a no-op. Every launcher checks its
// arguments on the host (alignment of the vector accesses, strides, scratch), launches on
// `stream`, never synchronises, and checks the launch.
// ---------------------------------------------------------------------------------------------

namespace feat {

template <int H, int Hkv, int Hd>
unsigned xsa_blocks(std::int64_t n, const char* op) {
  const std::int64_t threads = n * Hkv * HeadTiling<Hd>::kTph;
  const std::int64_t blocks = ceil_div(threads, static_cast<std::int64_t>(kBlockThreads));
  PGOLF_CHECK(blocks <= 0x7fffffffLL, op << ": " << n << " tokens exceed one grid");
  return static_cast<unsigned>(blocks);
}

// Whether v (row stride ldv) allows the vector accesses of the head layout; else one bf16 per access.
template <int Hd>
bool xsa_v_vector(const nv_bf16* v, std::int64_t ldv) {
  constexpr int W = HeadTiling<Hd>::kVec;
  return ldv % W == 0 && aligned_to(v, sizeof(nv_bf16) * W);
}

}  // namespace feat

// XSA forward. y (n, H·Hd) bf16, the attention output; v: the values, row r of KV head k at
// v + r·ldv + k·Hd (ldv >= Hkv·Hd: packed, or a slice of the q|k|v GEMM output); out (n, H·Hd)
// bf16, may be y. out_h = y_h − (y_h·v̂)v̂ with v̂ the unit value of KV head h / (H/Hkv).
// y and out must be aligned to HeadTiling<Hd>::kVec elements (16 bytes for Hd = 64); v may have
// any alignment and stride (a misaligned v takes one-element accesses).
template <int H, int Hkv, int Hd>
void xsa_forward(nv_bf16* out, const nv_bf16* y, const nv_bf16* v, std::int64_t ldv, std::int64_t n, cudaStream_t stream) {
  feat::check_xsa_shape<H, Hkv, Hd>();
  using L = feat::HeadTiling<Hd>;
  constexpr const char* op = "xsa_forward";
  PGOLF_CHECK(n >= 0, op << ": negative token count " << n);
  PGOLF_CHECK(ldv >= Hkv * Hd, op << ": ldv " << ldv << " is narrower than the Hkv·Hd = " << Hkv * Hd << " values of a token");
  feat::check_aligned(out, L::kVec, op, "out");
  feat::check_aligned(y, L::kVec, op, "y");
  if (n == 0) return;
  const unsigned blocks = feat::xsa_blocks<H, Hkv, Hd>(n, op);
  if (feat::xsa_v_vector<Hd>(v, ldv)) {
    kernels::xsa_forward<H, Hkv, Hd, L::kVec><<<blocks, feat::kBlockThreads, 0, stream>>>(out, y, v, ldv, n * Hkv);
  } else {
    kernels::xsa_forward<H, Hkv, Hd, 1><<<blocks, feat::kBlockThreads, 0, stream>>>(out, y, v, ldv, n * Hkv);
  }
  PGOLF_CUDA_LAUNCH_CHECK();
}

// XSA backward (cpu::xsa_backward). dout (n, H·Hd) bf16, the gradient of out; y, v as in the
// forward (y is the forward's input). dy (n, H·Hd) bf16 written (may be dout); dv (n, Hkv·Hd) fp32,
// packed, += the gradient through v̂ (dv must hold the other contributions or zeros).
// dv must be aligned to HeadTiling<Hd>::kVecF32 floats.
template <int H, int Hkv, int Hd>
void xsa_backward(nv_bf16* dy, float* dv, const nv_bf16* dout, const nv_bf16* y, const nv_bf16* v, std::int64_t ldv, std::int64_t n,
                  cudaStream_t stream) {
  feat::check_xsa_shape<H, Hkv, Hd>();
  using L = feat::HeadTiling<Hd>;
  constexpr const char* op = "xsa_backward";
  PGOLF_CHECK(n >= 0, op << ": negative token count " << n);
  PGOLF_CHECK(ldv >= Hkv * Hd, op << ": ldv " << ldv << " is narrower than the Hkv·Hd = " << Hkv * Hd << " values of a token");
  feat::check_aligned(dy, L::kVec, op, "dy");
  feat::check_aligned(dout, L::kVec, op, "dout");
  feat::check_aligned(y, L::kVec, op, "y");
  feat::check_aligned(dv, L::kVecF32, op, "dv");
  if (n == 0) return;
  const unsigned blocks = feat::xsa_blocks<H, Hkv, Hd>(n, op);
  if (feat::xsa_v_vector<Hd>(v, ldv)) {
    kernels::xsa_backward<H, Hkv, Hd, L::kVec><<<blocks, feat::kBlockThreads, 0, stream>>>(dy, dv, dout, y, v, ldv, n * Hkv);
  } else {
    kernels::xsa_backward<H, Hkv, Hd, 1><<<blocks, feat::kBlockThreads, 0, stream>>>(dy, dv, dout, y, v, ldv, n * Hkv);
  }
  PGOLF_CUDA_LAUNCH_CHECK();
}

// Per-head gate forward. h (n, D) bf16, the attention input (only its first Win channels are read);
// W (H, Win) fp32; bias (H) fp32 or null; y_in (n, H·Hd) bf16. Writes z (n, H) fp32,
// z = scale·(W·h[:Win] + bias), kept for the backward, and y_out (n, H·Hd) bf16 = g_h · y_in_h with
// g = σ(z) (GateForm::sigmoid) or 2σ(z) (twice_sigmoid). y_out may be y_in.
// Alignment: y_in, y_out to HeadTiling<Hd>::kVec elements, h to GateTiling::kZV elements (W and
// bias: any).
template <int D, int H, int Hd, int Win>
void head_gate_forward(nv_bf16* y_out, float* z, const nv_bf16* y_in, const nv_bf16* h, const float* W, const float* bias, float scale,
                       GateForm form, std::int64_t n, cudaStream_t stream) {
  using T = feat::GateTiling<D, H, Hd, Win>;
  using L = typename T::L;
  constexpr const char* op = "head_gate_forward";
  PGOLF_CHECK(n >= 0, op << ": negative token count " << n);
  feat::check_aligned(y_out, L::kVec, op, "y_out");
  feat::check_aligned(y_in, L::kVec, op, "y_in");
  feat::check_aligned(h, T::kZV, op, "h");
  if (n == 0) return;
  PGOLF_CHECK(y_out != nullptr && z != nullptr && y_in != nullptr && h != nullptr && W != nullptr, op << ": null tensor pointer");
  const std::int64_t blocks = ceil_div(n, static_cast<std::int64_t>(T::kFwdRows));
  PGOLF_CHECK(blocks <= 0x7fffffffLL, op << ": " << n << " tokens exceed one grid");
  kernels::head_gate_forward<D, H, Hd, Win><<<static_cast<unsigned>(blocks), T::kThreads, 0, stream>>>(
      y_out, z, y_in, h, W, bias, scale, feat::gate_multiplier(form), n);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// Scratch bytes head_gate_backward needs for n tokens: the per-chunk partials of dW (H·Win floats)
// and dbias (H floats) for reduce_chunks(n) chunks of 256 tokens. 4-byte aligned.
template <int H, int Win>
constexpr std::int64_t head_gate_backward_scratch_bytes(std::int64_t n) {
  return n <= 0 ? 0 : ceil_div(n, static_cast<std::int64_t>(kReduceRows)) * (static_cast<std::int64_t>(H) * Win + H) * 4;
}

// Per-head gate backward (cpu::head_gate_backward). dy (n, H·Hd) bf16, the gradient of y_out;
// y_in, z, h, W, scale, form as in the forward. Writes dy_in (n, H·Hd) bf16 = g·dy (may be dy);
// adds dh[:, :Win] += Σ_h dz_h·W[h, :] into the fp32 (n, D) buffer dh; adds dW (H, Win) += Σ_n
// dz[n, h]·h[n, :Win] and, when dbias is non-null, dbias (H) += Σ_n dz[n, h], deterministically
// (dz = dy_h·y_in_h · m·σ'(z)·scale). scratch: head_gate_backward_scratch_bytes<H, Win>(n) bytes.
// Alignment: dy, dy_in, y_in to HeadTiling<Hd>::kVec elements; h and dh to GateTiling::kCV.
template <int D, int H, int Hd, int Win>
void head_gate_backward(nv_bf16* dy_in, float* dh, float* dW, float* dbias, const nv_bf16* dy, const nv_bf16* y_in, const float* z,
                        const nv_bf16* h, const float* W, float scale, GateForm form, std::int64_t n, void* scratch, cudaStream_t stream) {
  using T = feat::GateTiling<D, H, Hd, Win>;
  using L = typename T::L;
  constexpr const char* op = "head_gate_backward";
  PGOLF_CHECK(n >= 0, op << ": negative token count " << n);
  feat::check_aligned(dy_in, L::kVec, op, "dy_in");
  feat::check_aligned(dy, L::kVec, op, "dy");
  feat::check_aligned(y_in, L::kVec, op, "y_in");
  feat::check_aligned(h, T::kCV, op, "h");
  feat::check_aligned(dh, T::kCV, op, "dh");
  if (n == 0) return;
  PGOLF_CHECK(dy_in != nullptr && dh != nullptr && dW != nullptr && dy != nullptr && y_in != nullptr && z != nullptr && h != nullptr &&
                  W != nullptr,
              op << ": null tensor pointer");
  const std::int64_t chunks = reduce_chunks(n);
  PGOLF_CHECK(chunks <= 0x7fffffffLL, op << ": " << n << " tokens exceed one grid");
  PGOLF_CHECK(scratch != nullptr && feat::aligned_to(scratch, sizeof(float)),
              op << ": needs a 4-byte aligned scratch of head_gate_backward_scratch_bytes<" << H << ", " << Win << ">(" << n
                 << ") = " << (head_gate_backward_scratch_bytes<H, Win>(n)) << " bytes, got " << scratch);
  auto* partials = static_cast<float*>(scratch);
  float* partials_b = dbias != nullptr ? partials + chunks * H * Win : nullptr;
  kernels::head_gate_backward<D, H, Hd, Win><<<static_cast<unsigned>(chunks), T::kThreads, 0, stream>>>(
      dy_in, dh, partials, partials_b, dy, y_in, z, h, W, scale, feat::gate_multiplier(form), n);
  PGOLF_CUDA_LAUNCH_CHECK();
  add_partials(dW, partials, chunks, H * Win, stream);
  if (dbias != nullptr) add_partials(dbias, partials_b, chunks, H, stream);
}

}  // namespace pgolf::cuda
