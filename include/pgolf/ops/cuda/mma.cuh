// Warp-level tensor-core building blocks (sm_80 instructions, also the fast path on sm_90 when
// wgmma is not used): mma.sync m16n8k16 with bf16 inputs and fp32 accumulators, ldmatrix,
// cp.async, and the index maps that say which lane holds which matrix element.
//
// The index maps are constexpr __host__ __device__ functions, so the kernels and the host-only
// tests (test/cuda/attention_test.cu) use the very same code: the tests emulate ldmatrix and mma
// on the host with these maps and compare with plain matrix products.
//
// ------------------------------------------------------------------------------------------------
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32   D(16×8) = A(16×16) · B(16×8) + C(16×8)
// (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"). With
//   g = lane / 4 ("groupID"), t = lane % 4 ("threadID_in_group"):
//
//   A, 4 × .b32 registers per lane, each two bf16 (lower column in the low 16 bits):
//     reg 0 = a0,a1: (row g,     cols 2t, 2t+1)      reg 2 = a4,a5: (row g,     cols 2t+8, 2t+9)
//     reg 1 = a2,a3: (row g + 8, cols 2t, 2t+1)      reg 3 = a6,a7: (row g + 8, cols 2t+8, 2t+9)
//   B (k × n), 2 × .b32 registers:
//     reg 0 = b0,b1: (k rows 2t, 2t+1,   col n = g)  reg 1 = b2,b3: (k rows 2t+8, 2t+9, col n = g)
//   C/D, 4 × f32:
//     c0,c1: (row g, cols 2t, 2t+1)                  c2,c3: (row g + 8, cols 2t, 2t+1)
//
// The C layout of two adjacent n-tiles (cols 0-7 and 8-15) is exactly the A layout of one 16×16
// tile: reg 0 = (c0,c1) of the first, reg 1 = (c2,c3) of the first, reg 2 = (c0,c1) of the
// second, reg 3 = (c2,c3) of the second. So an accumulator (S = Q·Kᵀ, dS, ...) becomes the A
// operand of the next product (P·V, dS·K, ...) without leaving registers (`c_to_a_*`).
//
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 loads four 8×8 b16 matrices: lanes 8i..8i+7
// give the addresses of the 8 rows (16 bytes each) of matrix i, and register i of every lane
// receives a piece of matrix i: without .trans, lane l gets row l/4, elements 2(l%4), 2(l%4)+1;
// with .trans it gets the transposed piece: column l/4, rows 2(l%4) and 2(l%4)+1. Comparing with
// the tables above: an 8×8 block of a row-major [m][k] tile loaded without .trans is one A
// register; an 8×8 block of an [n][k] tile (B stored "column-major", e.g. K for Q·Kᵀ) loaded
// without .trans is one B register; an 8×8 block of a [k][n] tile (B stored row-major, e.g. V for
// P·V) loaded with .trans is one B register. `ldsm_*` give the per-lane row/column of the
// address for each use.
#pragma once

#if !defined(__CUDACC__)
#error "pgolf/ops/cuda/mma.cuh is for CUDA translation units"
#endif

#include <cuda_bf16.h>

#include <cstdint>

#include "pgolf/core/platform.hpp"

namespace pgolf::cuda::mma {

struct RowCol {
  int row, col;
};

// ------------------------------------------------------------------------------ fragment maps
// Element (row, col) of the A tile held in the low half of register `reg` of `lane`; the high
// half holds (row, col + 1).
PGOLF_HD constexpr RowCol frag_a(int lane, int reg) { return {lane / 4 + 8 * (reg % 2), 2 * (lane % 4) + 8 * (reg / 2)}; }
// Element (k, n) of the B tile in the low half of register `reg` (0, 1); the high half is (k + 1, n).
PGOLF_HD constexpr RowCol frag_b(int lane, int reg) { return {2 * (lane % 4) + 8 * reg, lane / 4}; }
// Element (row, col) of the C/D tile held in accumulator `i` (0..3).
PGOLF_HD constexpr RowCol frag_c(int lane, int i) { return {lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2}; }

// C → A: A register `reg` of a 16×16 tile is (c[e], c[e + 1]) of n-tile `c_to_a_tile(reg)` (0 =
// columns 0-7, 1 = columns 8-15) with e = c_to_a_elem(reg).
PGOLF_HD constexpr int c_to_a_tile(int reg) { return reg / 2; }
PGOLF_HD constexpr int c_to_a_elem(int reg) { return 2 * (reg % 2); }

// ------------------------------------------------------------------------------ ldmatrix.x4 addresses
// Offsets (row, col) inside a 16×16 block of the smem row that `lane` must point at.
//
// A operand from a row-major [m][k] tile: matrices (m 0-7, k 0-7), (m 8-15, k 0-7),
// (m 0-7, k 8-15), (m 8-15, k 8-15) → registers 0..3 are A registers 0..3.
PGOLF_HD constexpr RowCol ldsm_a(int lane) { return {lane % 16, 8 * (lane / 16)}; }
// B operands of two n-tiles from an [n][k] tile (rows n, columns k), no .trans: matrices
// (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) → registers {0, 1} are
// B registers {0, 1} of n-tile 0 (n 0-7), registers {2, 3} those of n-tile 1 (n 8-15).
PGOLF_HD constexpr RowCol ldsm_b_nk(int lane) { return {lane % 8 + 8 * (lane / 16), 8 * ((lane / 8) % 2)}; }
// B operands of two n-tiles from a [k][n] tile (rows k, columns n), with .trans: matrices
// (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) → registers {0, 1} are
// B registers {0, 1} of n-tile 0, registers {2, 3} those of n-tile 1. (Same lane pattern as ldsm_a.)
PGOLF_HD constexpr RowCol ldsm_b_kn_trans(int lane) { return {lane % 16, 8 * (lane / 16)}; }

// ------------------------------------------------------------------------------ smem swizzle
// Element offset of (row, col) in a shared-memory tile of rows of `Cols` bf16, stored as 16-byte
// chunks (8 elements) whose chunk index is XOR-ed with bits of the row. ldmatrix reads 8 rows
// (8 consecutive, starting at a multiple of 8) at the same logical chunk in one phase, and the
// 32 banks serve one 128-byte line per phase; without the XOR those 8 rows would sit in the same
// 16 bytes of their lines (an 8-way conflict when rows are 128 or 256 bytes). With it:
//   Cols >= 64: chunk bits 0-2 ^= row % 8       (rows of 128 or 256 bytes)
//   Cols == 32: chunk ^= (row / 2) % 4          (rows of 64 bytes: two rows share a line)
//   Cols == 16: chunk ^= (row / 4) % 2          (rows of 32 bytes: four rows share a line)
// the 8 rows of a phase land in 8 distinct 16-byte slots of the bank space (conflict-free), and the
// cp.async writes (8 consecutive chunks of a row-major tile per 128 bytes) do too. The 8 elements
// of a chunk stay contiguous and 16-byte aligned. Checked on the host by the tests.
template <int Cols>
PGOLF_HD constexpr int swizzle(int row, int col) {
  static_assert(Cols == 16 || Cols == 32 || (Cols >= 64 && Cols % 64 == 0), "swizzle: rows of 16, 32 or a multiple of 64 bf16");
  const int chunk = col / 8;
  int phys = chunk;
  if constexpr (Cols >= 64) {
    phys = (chunk & ~7) | ((chunk ^ row) & 7);
  } else if constexpr (Cols == 32) {
    phys = chunk ^ ((row / 2) % 4);
  } else {
    phys = chunk ^ ((row / 4) % 2);
  }
  return row * Cols + phys * 8 + col % 8;
}

// ------------------------------------------------------------------------------ instructions
// d += a · b (one m16n8k16 product, fp32 accumulation).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ std::uint32_t smem_addr(const void* p) { return static_cast<std::uint32_t>(__cvta_generic_to_shared(p)); }

// Four 8×8 matrices; `p` is this lane's row address (see ldsm_*).
__device__ __forceinline__ void ldsm_x4(std::uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(std::uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}

// Two floats as a bf16 pair (round to nearest even): `lo` in the low 16 bits (the lower column).
__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo, the low half
  std::uint32_t u;
  static_assert(sizeof(v) == sizeof(u));
  __builtin_memcpy(&u, &v, sizeof(u));
  return u;
}

// 2^x with the SFU (ex2.approx.ftz: relative error ~2^-22; ex2(-inf) = +0).
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// 16 bytes global → shared, asynchronously, bypassing L1 (.cg). When `valid` is false nothing is
// read (src-size 0) and the 16 bytes are zero-filled; `gmem` must still be a mapped address.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes) : "memory");
}
// 4 bytes global → shared (.ca: the only cache mode for sizes below 16); zero when !valid.
__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight (groups complete in order).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace pgolf::cuda::mma
