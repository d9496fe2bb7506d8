// The row-wise machinery of the RMSNorm kernels (rmsnorm.cuh) and the row kernels of
// channel_ops.cuh:
//   - A row of D values is held in registers by a group of kLanes threads of one warp (kLanes =
//     32 once a row has 32 packs, e.g. D >= 128; the smallest power of two >= the pack count for
//     smaller rows, so that few lanes idle: D = 16 uses 4 lanes per row, 8 rows per warp);
//     each lane owns kPerLane packs of kVec consecutive values. kVec = 4 when D % 4 == 0 (16-byte
//     fp32 loads, 8-byte bf16 loads/stores), else 2, else 1: every D from 1 to 2048 works.
//   - A kernel first issues every load of its row (so that they are all in flight at once), then
//     reduces Σx² (or Σ dy·x) per lane in a fixed order and over the lane group with a fixed
//     xor-shuffle tree: the result depends only on D, never on timing (deterministic).
//   - Each element is read and written by the thread that owns it, in that order, so in-place
//     use (out == x, dx == dy) is safe; pointers are therefore not __restrict__.
//   - The memory traffic is the minimum: every input read once, every output written once.
#pragma once

#include <cstdint>
#include <cstring>

#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/rmsnorm.hpp"

namespace pgolf::cuda {

namespace rowwise {

constexpr int next_pow2(int v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

// Values per vector access for rows of D values: the widest of 4, 2, 1 that divides D, so that
// every row starts on a vector boundary when the base pointer does.
template <int D>
inline constexpr int kVecWidth = D % 4 == 0 ? 4 : (D % 2 == 0 ? 2 : 1);

// How one row of D values is spread over the threads of a warp.
template <int D>
struct RowTiling {
  static_assert(D >= 1, "a row needs at least one value");
  static constexpr int kVec = kVecWidth<D>;                                    // values per pack
  static constexpr int kPacks = D / kVec;                                      // packs per row
  static constexpr int kLanes = kPacks < kWarpSize ? next_pow2(kPacks) : kWarpSize;  // threads per row (divides 32)
  static constexpr int kPerLane = (kPacks + kLanes - 1) / kLanes;              // packs per thread
  static constexpr bool kRagged = kPacks % kLanes != 0;                        // some lanes own fewer packs
  static constexpr int kThreads = 256;                                         // threads per block (whole warps)
  static constexpr int kRowsPerBlock = kThreads / kLanes;
  static constexpr int kRowsPerWarp = kWarpSize / kLanes;
  // The row lives in registers: 64 floats per tensor and thread keeps the backward (two tensors)
  // well under the register file without spilling. Wider rows need a block per row.
  static_assert(kPerLane * kVec <= 64, "the row-in-registers kernels support D <= 2048");
};

// The register type of one vector access of B bytes (2, 4, 8 or 16). Packs move through these
// with the __ldcg/__stcg/__ldg intrinsics, which are single PTX vector instructions
// (ld.global.cg.v4.u32 for 16 bytes, .v2.u32 for 8, ...). A plain struct copy is not reliably
// vectorised: nvcc split some 8-byte bf16 stores into two 4-byte ones.
template <int Bytes>
struct RawVec;
template <>
struct RawVec<2> {
  using type = unsigned short;
};
template <>
struct RawVec<4> {
  using type = unsigned int;
};
template <>
struct RawVec<8> {
  using type = uint2;
};
template <>
struct RawVec<16> {
  using type = uint4;
};

// dst[0..V) = float(p[0..V)) with one vector load; p is aligned to V elements. Activations are
// streamed (.cg: cached in L2 only, they are used once); small read-only parameter vectors shared
// by every row (scale, mix) go through the read-only cache (Param = true, ld.global.nc).
template <int V, bool Param = false, class T>
__device__ __forceinline__ void load_pack(float (&dst)[V], const T* p) {
  using R = typename RawVec<static_cast<int>(sizeof(T)) * V>::type;
  R raw;
  if constexpr (Param) {
    raw = __ldg(reinterpret_cast<const R*>(p));
  } else {
    raw = __ldcg(reinterpret_cast<const R*>(p));
  }
  T vals[V];
  memcpy(vals, &raw, sizeof(R));  // a register reinterpretation, no memory traffic
#pragma unroll
  for (int i = 0; i < V; ++i) dst[i] = to_float(vals[i]);
}

// p[0..V) = T(src[0..V)) (round to nearest even for bf16) with one vector store.
template <int V, class T>
__device__ __forceinline__ void store_pack(T* p, const float (&src)[V]) {
  using R = typename RawVec<static_cast<int>(sizeof(T)) * V>::type;
  T vals[V];
#pragma unroll
  for (int i = 0; i < V; ++i) vals[i] = from_float<T>(src[i]);
  R raw;
  memcpy(&raw, vals, sizeof(R));
  __stcg(reinterpret_cast<R*>(p), raw);
}

// Sum over the kLanes threads that share a row (a fixed xor tree: deterministic). All 32 lanes of
// the warp must call it, also those whose row is past the end (they contribute zeros).
template <int Lanes>
__device__ __forceinline__ float lane_group_sum(float v) {
#pragma unroll
  for (int o = Lanes / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Where the calling thread sits: its row, its lane within the row's lane group, and whether the
// row exists. Blocks cover kRowsPerBlock consecutive rows.
template <int D>
struct RowPos {
  using T = RowTiling<D>;
  std::int64_t row;
  int lane;
  bool valid;      // row < n
  bool warp_idle;  // no row of this warp exists: the whole warp may return (a warp-uniform test)

  __device__ __forceinline__ explicit RowPos(std::int64_t n) {
    const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * T::kRowsPerBlock;
    row = first + threadIdx.x / T::kLanes;
    lane = static_cast<int>(threadIdx.x % T::kLanes);
    valid = row < n;
    warp_idle = first + static_cast<std::int64_t>(threadIdx.x / kWarpSize) * T::kRowsPerWarp >= n;
  }
  // Does this thread own pack j (j < kPerLane) of its row?
  __device__ __forceinline__ bool has(int j) const { return valid && (!T::kRagged || j * T::kLanes + lane < T::kPacks); }
  // Column of the first value of pack j.
  __device__ __forceinline__ int col(int j) const { return (j * T::kLanes + lane) * T::kVec; }
  // Element offset of pack j in a (n, D) tensor.
  __device__ __forceinline__ std::int64_t at(int j) const { return row * D + col(j); }
};

template <int D>
using RowRegs = float[RowTiling<D>::kPerLane][RowTiling<D>::kVec];

// Σ over the row of v² (v is the thread's share, zeros where it owns nothing), the same in every
// lane of the row; a fixed order: packs in order within a lane, then the xor tree.
template <int D>
__device__ __forceinline__ float row_sum_squares(const RowRegs<D>& v) {
  using T = RowTiling<D>;
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
#pragma unroll
    for (int i = 0; i < T::kVec; ++i) ss += v[j][i] * v[j][i];
  }
  return lane_group_sum<T::kLanes>(ss);
}

// The second half of every RMSNorm forward: from the row in registers, rstd[row] and
// y[row] = Out(v · rstd · factor). All lanes must call it (it shuffles).
template <int D, class Out>
__device__ __forceinline__ void rmsnorm_rows_out(Out* y, float* rstd, const RowRegs<D>& v, float factor, const RowPos<D>& pos) {
  using T = RowTiling<D>;
  const float ss = row_sum_squares<D>(v);
  // IEEE division and square root (not rsqrtf's 2 ulp): rstd matches the CPU's to ~1 ulp plus
  // the fp32 rounding of Σx².
  const float s = 1.0f / sqrtf(ss / static_cast<float>(D) + static_cast<float>(cpu::kRmsNormEps));
  if (!pos.valid) return;
  if (pos.lane == 0) rstd[pos.row] = s;
  const float k = s * factor;
#pragma unroll
  for (int j = 0; j < T::kPerLane; ++j) {
    if (!pos.has(j)) continue;
    float o[T::kVec];
#pragma unroll
    for (int i = 0; i < T::kVec; ++i) o[i] = v[j][i] * k;
    store_pack<T::kVec>(y + pos.at(j), o);
  }
}

// Blocks for n rows.
template <int D>
unsigned row_blocks(std::int64_t n) {
  const std::int64_t blocks = ceil_div(n, static_cast<std::int64_t>(RowTiling<D>::kRowsPerBlock));
  PGOLF_CHECK(blocks <= 0x7fffffffLL, "row-wise CUDA kernel: " << n << " rows exceed one grid");
  return static_cast<unsigned>(blocks);
}

// Host check of what the vectorised accesses assume: p is aligned to `vec` elements of T (so that
// every row of a (n, D) tensor, D % vec == 0, starts on a vector boundary). nullptr passes.
template <class T>
void check_aligned(const T* p, int vec, const char* op, const char* name, int d) {
  const std::size_t bytes = sizeof(T) * static_cast<std::size_t>(vec);
  PGOLF_CHECK(reinterpret_cast<std::uintptr_t>(p) % bytes == 0,
              op << "<D=" << d << ">: " << name << " = " << static_cast<const void*>(p) << " must be " << bytes
                 << "-byte aligned (the kernel accesses rows as " << vec << "-element vectors); pass a pointer that is a multiple of "
                 << vec << " elements past a cudaMalloc'd base");
}

inline void check_rows(std::int64_t n, const char* op) { PGOLF_CHECK(n >= 0, op << ": negative row count " << n); }

// Host check for kernels where one thread reads elements that another thread writes: the `count`
// elements at a and at b must not overlap at all (equal pointers or any partial overlap).
template <class T, class U>
void check_disjoint(const T* a, const U* b, std::int64_t count, const char* op, const char* name_a, const char* name_b, const char* why) {
  if (count <= 0 || a == nullptr || b == nullptr) return;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a), b0 = reinterpret_cast<std::uintptr_t>(b);
  const auto a1 = a0 + sizeof(T) * static_cast<std::size_t>(count), b1 = b0 + sizeof(U) * static_cast<std::size_t>(count);
  PGOLF_CHECK(a1 <= b0 || b1 <= a0, op << ": " << name_a << " must not overlap " << name_b << " (" << why << ")");
}

}  // namespace rowwise

}  // namespace pgolf::cuda
