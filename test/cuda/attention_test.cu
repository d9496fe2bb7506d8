// The CUDA attention kernels (ops/cuda/attention.cuh, ops/cuda/mma.cuh).
//
// Host-only tests (run everywhere, CI included): the per-lane index maps of mma.m16n8k16 and
// ldmatrix against the PTX ISA's tables, the shared-memory swizzle (a bijection, conflict-free for
// every ldmatrix phase and cp.async store), and a host emulation of a whole warp tile of the
// tensor-core kernels — ldmatrix and mma emulated per the PTX ISA, driven by the same address
// functions and loop structure as the kernels' helpers (load_a_frags, mma_abt, c_to_a, mma_ab,
// store_rows) — against plain matrix products. Plus the launchers' argument checks.
//
// GPU tests (skip without a GPU): forward y and lse and backward dq, dk, dv of the tensor-core and
// the simple path against cpu::attention_forward/backward in fp32 on the same bf16-rounded inputs,
// for packed layouts and for the model's strided layout (q, k, v slices of one qkv row; gradients
// into one dqkv row; padded y rows whose padding must stay untouched); determinism (bitwise);
// large score magnitudes (q scaled by 8) for the online-softmax rescaling.
//
// Tolerances. u = kBf16Eps = 2^-8 bounds the relative error of one bf16 rounding (8 significant
// bits, round to nearest: half the 2^-7 spacing in [1, 2)). fp32 differences between the GPU and the
// CPU (other summation orders, ex2.approx) add about 1e-6 relative, covered by 1e-5 terms.
// Element-wise bounds have the form |got − want| <= c·rms(row) + rtol·|want| + floor, where a row
// is the Hd values of one (token, head): gradient magnitudes vary by 10× along the sequence (early
// keys collect many queries), so a bound scaled by the whole tensor's rms would be either loose for
// small rows or tight for large ones. A mistake in an index map or a mask gives errors of about
// 1·rms(row), far above every bound below.
//   y, tensor cores: y = Σ_j bf16(p_j)·v_j / l. Each rounded p_j is off by at most u relative, so
//     |error| <= u·Σ_j (p_j/l)·|v_j| <= u·max|v|, and the output rounding adds u·|y|: floor =
//     u·max|v|, rtol = u + 1e-5 (the rigorous bounds plus fp32 differences; the floor is far above
//     the typical P-rounding error, whose terms have random signs).
//   dq, dk, dv, tensor cores: P and dS are rounded to bf16 before the gradient products (per term
//     u relative, random signs) and the output once. No cheap rigorous bound; a host simulation of
//     exactly this rounding model (T up to 1024, q scaled by 1 and 8, Hd 64) needed c <= 3.1·kBf16Eps
//     with rtol = u: c = 8·kBf16Eps.
//   Relative L2 error (tensor cores, y and gradients): the same simulation gives 1.5e-3..2.0e-3
//     (y) and 2.1e-3..2.5e-3 (gradients); bound 1.5·kBf16Eps = 5.9e-3.
//   Simple path: fp32 throughout, one output rounding: rtol = u + 1e-5 (u rigorous, plus fp32
//     differences), c = 1e-3, relative L2 <= kBf16Eps.
//   Every output buffer is filled with a sentinel (NaN for lse) first, so an element the kernel
//   never writes fails the comparison.
//   lse (both): fp32; sums of up to T exponentials (relative error <= T·2^-24 ≈ 6e-5 worst case at
//     T = 1024, ex2.approx adds 2^-22): atol = 1e-4, rtol = 1e-5.
//   Gradients add floor = 1e-4 (both paths): where the exact gradient is 0 (T = 1: dS = P·(dP −
//   delta) with dP = delta exactly) both sides hold fp32 cancellation noise of ~1e-6·Hd; the
//   relative L2 check is skipped for tensors whose rms is below 1e-3 (noise over noise).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/ops/attention.hpp"
#include "pgolf/ops/cuda/attention.cuh"

namespace pgolf {
namespace {

using cuda::nv_bf16;
using testing::all_close;
using testing::kBf16Eps;
using testing::relative_l2_error;
namespace mma = cuda::mma;

// =============================================================================================
// Host-only: fragment maps.

TEST(AttentionLayout, FragmentMapsFollowThePtxTables) {
  // The formulas of the PTX ISA ("Matrix Fragments for mma.m16n8k16 with floating point type"),
  // element by element (a0..a7, b0..b3, c0..c3), against the maps the kernels use.
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane >> 2, t = lane % 4;
    for (int i = 0; i < 8; ++i) {  // A: register i/2, half i%2
      const int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
      const int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      const mma::RowCol rc = mma::frag_a(lane, i / 2);
      EXPECT_EQ(rc.row, row) << "A lane " << lane << " a" << i;
      EXPECT_EQ(rc.col + i % 2, col) << "A lane " << lane << " a" << i;
    }
    for (int i = 0; i < 4; ++i) {  // B (k × n): register i/2, half i%2
      const int k = t * 2 + (i & 1) + (i >= 2 ? 8 : 0);
      const mma::RowCol rc = mma::frag_b(lane, i / 2);
      EXPECT_EQ(rc.row + i % 2, k) << "B lane " << lane << " b" << i;
      EXPECT_EQ(rc.col, g) << "B lane " << lane << " b" << i;
    }
    for (int i = 0; i < 4; ++i) {  // C/D
      const mma::RowCol rc = mma::frag_c(lane, i);
      EXPECT_EQ(rc.row, i < 2 ? g : g + 8) << "C lane " << lane << " c" << i;
      EXPECT_EQ(rc.col, t * 2 + (i & 1)) << "C lane " << lane << " c" << i;
    }
  }
  // Each map covers its matrix exactly once.
  std::set<int> a, b, c;
  for (int lane = 0; lane < 32; ++lane) {
    for (int r = 0; r < 4; ++r) {
      const auto rc = mma::frag_a(lane, r);
      a.insert(rc.row * 16 + rc.col);
      a.insert(rc.row * 16 + rc.col + 1);
      const auto cc = mma::frag_c(lane, r);
      c.insert(cc.row * 8 + cc.col);
    }
    for (int r = 0; r < 2; ++r) {
      const auto rc = mma::frag_b(lane, r);
      b.insert(rc.row * 8 + rc.col);
      b.insert((rc.row + 1) * 8 + rc.col);
    }
  }
  EXPECT_EQ(a.size(), 256u);
  EXPECT_EQ(b.size(), 128u);
  EXPECT_EQ(c.size(), 128u);
}

TEST(AttentionLayout, AccumulatorPairsFormAFragments) {
  // c_to_a: A register r of a 16×16 tile = elements (e, e+1) of C n-tile c_to_a_tile(r) (columns
  // + 8 for the second n-tile). This is what lets P = softmax(S) feed P·V from registers.
  for (int lane = 0; lane < 32; ++lane) {
    for (int r = 0; r < 4; ++r) {
      const int e = mma::c_to_a_elem(r), tile = mma::c_to_a_tile(r);
      const mma::RowCol lo = mma::frag_c(lane, e), hi = mma::frag_c(lane, e + 1), want = mma::frag_a(lane, r);
      EXPECT_EQ(lo.row, want.row) << "lane " << lane << " reg " << r;
      EXPECT_EQ(lo.col + 8 * tile, want.col) << "lane " << lane << " reg " << r;
      EXPECT_EQ(hi.row, want.row) << "lane " << lane << " reg " << r;
      EXPECT_EQ(hi.col + 8 * tile, want.col + 1) << "lane " << lane << " reg " << r;
    }
  }
}

// =============================================================================================
// Host-only: shared-memory swizzle.

// 16-byte slot (0..7) of the 128-byte bank space that element offset `off` falls in.
constexpr int bank_slot(int off) { return (off * 2 / 16) % 8; }

template <int Cols>
void check_swizzle(int rows) {
  SCOPED_TRACE("rows of " + std::to_string(Cols) + " bf16");
  const int n = rows * Cols;
  std::vector<int> seen(static_cast<std::size_t>(n), 0);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < Cols; ++c) {
      const int off = mma::swizzle<Cols>(r, c);
      ASSERT_GE(off, 0);
      ASSERT_LT(off, n);
      ++seen[static_cast<std::size_t>(off)];
      // Chunks of 8 stay contiguous and 16-byte aligned (cp.async and ldmatrix rows).
      EXPECT_EQ(off - c % 8, mma::swizzle<Cols>(r, c - c % 8)) << r << "," << c;
      EXPECT_EQ(mma::swizzle<Cols>(r, c - c % 8) % 8, 0) << r << "," << c;
    }
  }
  for (int i = 0; i < n; ++i) ASSERT_EQ(seen[static_cast<std::size_t>(i)], 1) << "offset " << i << " hit " << seen[i] << " times";
  // ldmatrix phases: 8 consecutive rows from a multiple of 8, same logical chunk → 8 distinct slots.
  for (int r0 = 0; r0 < rows; r0 += 8) {
    for (int c = 0; c < Cols; c += 8) {
      std::set<int> slots;
      for (int i = 0; i < 8; ++i) slots.insert(bank_slot(mma::swizzle<Cols>(r0 + i, c)));
      EXPECT_EQ(slots.size(), 8u) << "ldmatrix phase at rows " << r0 << "+, column " << c << " has bank conflicts";
    }
  }
  // cp.async stores: each 8 consecutive chunks of the row-major tile (what 8 consecutive threads
  // write) → 8 distinct slots.
  const int chunks_per_row = Cols / 8;
  for (int c0 = 0; c0 < rows * chunks_per_row; c0 += 8) {
    std::set<int> slots;
    for (int i = c0; i < c0 + 8; ++i) slots.insert(bank_slot(mma::swizzle<Cols>(i / chunks_per_row, (i % chunks_per_row) * 8)));
    EXPECT_EQ(slots.size(), 8u) << "cp.async chunks " << c0 << "+ have bank conflicts";
  }
}

TEST(AttentionLayout, SwizzleIsABijectionAndConflictFree) {
  check_swizzle<16>(64);
  check_swizzle<32>(64);
  check_swizzle<64>(64);
  check_swizzle<128>(64);
}

// =============================================================================================
// Host-only: emulation of one warp's tile products.

using Pair = std::array<float, 2>;
using Regs4 = std::array<std::array<Pair, 4>, 32>;  // [lane][register]: the two 16-bit halves (low, high)
using Acc = std::array<std::array<float, 4>, 32>;   // [lane][accumulator]

// ldmatrix.sync.aligned.m8n8.x4{.trans}.b16 as the PTX ISA defines it: addr[l] is the element
// offset of the row that lane l points at; lanes 8i..8i+7 give the rows of matrix i. Without
// .trans lane l receives row l/4, elements 2(l%4), 2(l%4)+1 of matrix i in register i; with .trans
// it receives column l/4, rows 2(l%4) and 2(l%4)+1.
Regs4 ldmatrix_x4(const std::vector<float>& smem, const std::array<int, 32>& addr, bool trans) {
  Regs4 r{};
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 4; ++i) {
      if (!trans) {
        const int a = addr[static_cast<std::size_t>(8 * i + l / 4)];
        r[l][i] = {smem[static_cast<std::size_t>(a + 2 * (l % 4))], smem[static_cast<std::size_t>(a + 2 * (l % 4) + 1)]};
      } else {
        r[l][i] = {smem[static_cast<std::size_t>(addr[static_cast<std::size_t>(8 * i + 2 * (l % 4))] + l / 4)],
                   smem[static_cast<std::size_t>(addr[static_cast<std::size_t>(8 * i + 2 * (l % 4) + 1)] + l / 4)]};
      }
    }
  }
  return r;
}

// One mma.m16n8k16: c += A·B with A given by A registers a[lane][0..3] and B by registers
// (b[lane][r0], b[lane][r1]), each placed by the PTX fragment maps.
void mma_emulate(Acc& c, const Regs4& a, const Regs4& b, int r0, int r1) {
  float A[16][16] = {}, B[16][8] = {};
  for (int l = 0; l < 32; ++l) {
    for (int r = 0; r < 4; ++r) {
      const auto rc = mma::frag_a(l, r);
      A[rc.row][rc.col] = a[l][r][0];
      A[rc.row][rc.col + 1] = a[l][r][1];
    }
    for (int r = 0; r < 2; ++r) {
      const auto rc = mma::frag_b(l, r);
      const Pair& p = b[l][r == 0 ? r0 : r1];
      B[rc.row][rc.col] = p[0];
      B[rc.row + 1][rc.col] = p[1];
    }
  }
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 4; ++i) {
      const auto rc = mma::frag_c(l, i);
      float s = 0;
      for (int kk = 0; kk < 16; ++kk) s += A[rc.row][kk] * B[kk][rc.col];
      c[l][i] += s;
    }
  }
}

template <int Cols>
std::array<int, 32> addresses(int row0, int col0, mma::RowCol (*lane_offset)(int)) {
  std::array<int, 32> a{};
  for (int l = 0; l < 32; ++l) {
    const mma::RowCol rc = lane_offset(l);
    a[static_cast<std::size_t>(l)] = mma::swizzle<Cols>(row0 + rc.row, col0 + rc.col);
  }
  return a;
}

constexpr float small_int(int i, int j, int salt) { return static_cast<float>(((i * 7 + j * 13 + salt * 5) % 5) - 2); }  // in [-2, 2]

// One warp (rows row0..row0+15 of an (M, D) "Q" tile) computes S = Q·Kᵀ (N keys) and O = S·V the
// way the kernels do: load_a_frags, mma_abt, c_to_a, mma_ab, store_rows (values are small integers,
// so the float products are exact and the comparison is exact).
template <int D, int N>
void emulate_warp_tile() {
  SCOPED_TRACE("D = " + std::to_string(D) + ", N = " + std::to_string(N));
  constexpr int M = 32, row0 = 16;  // the second warp of a 32-row tile
  std::vector<float> sQ(M * D), sK(N * D), sV(N * D);
  std::vector<float> Q(M * D), K(N * D), V(N * D);
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < D; ++c) {
      Q[r * D + c] = small_int(r, c, 1);
      sQ[static_cast<std::size_t>(mma::swizzle<D>(r, c))] = Q[r * D + c];
    }
  }
  for (int r = 0; r < N; ++r) {
    for (int c = 0; c < D; ++c) {
      K[r * D + c] = small_int(r, c, 2);
      V[r * D + c] = small_int(r, c, 3);
      sK[static_cast<std::size_t>(mma::swizzle<D>(r, c))] = K[r * D + c];
      sV[static_cast<std::size_t>(mma::swizzle<D>(r, c))] = V[r * D + c];
    }
  }
  // load_a_frags
  std::vector<Regs4> qf(D / 16);
  for (int kk = 0; kk < D / 16; ++kk) qf[kk] = ldmatrix_x4(sQ, addresses<D>(row0, kk * 16, mma::ldsm_a), false);
  // mma_abt: S = Q·Kᵀ
  std::vector<Acc> s(N / 8, Acc{});
  for (int kk = 0; kk < D / 16; ++kk) {
    for (int np = 0; np < N / 16; ++np) {
      const Regs4 b = ldmatrix_x4(sK, addresses<D>(np * 16, kk * 16, mma::ldsm_b_nk), false);
      mma_emulate(s[2 * np], qf[kk], b, 0, 1);
      mma_emulate(s[2 * np + 1], qf[kk], b, 2, 3);
    }
  }
  std::vector<float> S(16 * N, 0.0f);
  for (int r = 0; r < 16; ++r) {
    for (int j = 0; j < N; ++j) {
      for (int d = 0; d < D; ++d) S[r * N + j] += Q[(row0 + r) * D + d] * K[j * D + d];
    }
  }
  for (int nt = 0; nt < N / 8; ++nt) {
    for (int l = 0; l < 32; ++l) {
      for (int i = 0; i < 4; ++i) {
        const auto rc = mma::frag_c(l, i);
        ASSERT_EQ(s[nt][l][i], S[rc.row * N + nt * 8 + rc.col]) << "S n-tile " << nt << " lane " << l << " acc " << i;
      }
    }
  }
  // c_to_a: the accumulators as A fragments (k = keys)
  std::vector<Regs4> pa(N / 16);
  for (int kk = 0; kk < N / 16; ++kk) {
    for (int l = 0; l < 32; ++l) {
      for (int r = 0; r < 4; ++r) {
        const auto& src = s[2 * kk + mma::c_to_a_tile(r)][l];
        const int e = mma::c_to_a_elem(r);
        pa[kk][l][r] = {src[e], src[e + 1]};
      }
    }
  }
  // mma_ab: O = S·V with V read through ldmatrix.trans
  std::vector<Acc> o(D / 8, Acc{});
  for (int kk = 0; kk < N / 16; ++kk) {
    for (int dp = 0; dp < D / 16; ++dp) {
      const Regs4 b = ldmatrix_x4(sV, addresses<D>(kk * 16, dp * 16, mma::ldsm_b_kn_trans), true);
      mma_emulate(o[2 * dp], pa[kk], b, 0, 1);
      mma_emulate(o[2 * dp + 1], pa[kk], b, 2, 3);
    }
  }
  // store_rows: lane l writes (row0 + row, 8·nt + col) and the next column from accumulators
  // (2·half, 2·half + 1) with (row, col) = frag_c(l, 2·half).
  std::vector<float> out(M * D, NAN);
  for (int l = 0; l < 32; ++l) {
    for (int half = 0; half < 2; ++half) {
      const auto rc = mma::frag_c(l, 2 * half);
      for (int nt = 0; nt < D / 8; ++nt) {
        out[(row0 + rc.row) * D + nt * 8 + rc.col] = o[nt][l][2 * half];
        out[(row0 + rc.row) * D + nt * 8 + rc.col + 1] = o[nt][l][2 * half + 1];
      }
    }
  }
  for (int r = 0; r < 16; ++r) {
    for (int d = 0; d < D; ++d) {
      float want = 0.0f;
      for (int j = 0; j < N; ++j) want += S[r * N + j] * V[j * D + d];
      ASSERT_EQ(out[(row0 + r) * D + d], want) << "O row " << r << " column " << d;
    }
  }
}

TEST(AttentionLayout, EmulatedWarpTileMatchesMatrixProducts) {
  emulate_warp_tile<32, 64>();
  emulate_warp_tile<64, 64>();
  emulate_warp_tile<128, 32>();
  emulate_warp_tile<128, 64>();
}

// =============================================================================================
// Host-only: the tile schedule and the masks of the tensor-core kernels (attn::key_tiles,
// block_has_visible/hidden, causal_hidden, query_blocks_per_head, dkdv_step,
// dkdv_block_needs_mask, dkdv_masked), by enumerating every CTA, warp, tile and element the way
// the kernels do. A pair (query i, key j) "reaches" the result when the kernel leaves it unmasked.
// Required: every pair j <= i < T reaches it exactly once (per query head for dK/dV), and no other
// pair does — in particular no key >= T (zero-filled K rows: score 0, so P = 2^(−m) ≠ 0 unless
// masked) and no query >= T in dK/dV (zero-filled Q rows and lse = 0: P = 1 unless masked). Rows
// (forward, dQ) or keys (dK/dV) of a warp past T are computed but never stored; they are skipped.

// The functions the kernels use; the broken variants below override one each.
struct KernelSchedule {
  static constexpr int key_tiles(int i0, int m, int n, int seq) { return cuda::attn::key_tiles(i0, m, n, seq); }
  static constexpr bool has_visible(int q0, int nq, int k0) { return cuda::attn::block_has_visible(q0, nq, k0); }
  static constexpr bool has_hidden(int q0, int k0, int nk) { return cuda::attn::block_has_hidden(q0, k0, nk); }
  static constexpr bool hidden(int query, int key) { return cuda::attn::causal_hidden(query, key); }
  static constexpr int per_head(int j0, int m, int seq) { return cuda::attn::query_blocks_per_head(j0, m, seq); }
  static constexpr cuda::attn::DkvStep step(int kh, int group, int j0, int m, int per_head, int s) {
    return cuda::attn::dkdv_step(kh, group, j0, m, per_head, s);
  }
  static constexpr bool dkdv_needs_mask(int key0, int i0, int m, int seq) { return cuda::attn::dkdv_block_needs_mask(key0, i0, m, seq); }
  static constexpr bool dkdv_masked(int query, int key, int seq) { return cuda::attn::dkdv_masked(query, key, seq); }
};

// Forward and dQ: CTAs of M queries (4 warps of 16), key tiles of N.
template <class S = KernelSchedule>
::testing::AssertionResult check_query_major_schedule(int M, int N, int seq) {
  using cuda::attn::kWarpRows;
  std::vector<int> count(static_cast<std::size_t>(seq) * seq, 0);
  for (int i0 = 0; i0 < seq; i0 += M) {
    const int n_tiles = S::key_tiles(i0, M, N, seq);
    const int last_query = std::min(i0 + M, seq) - 1;
    if (n_tiles < 1 || (n_tiles - 1) * N > last_query) {  // tiles wholly after the CTA's queries are never loaded
      return ::testing::AssertionFailure() << "T=" << seq << " query block " << i0 << ": " << n_tiles << " key tiles for queries up to "
                                           << last_query;
    }
    for (int warp = 0; warp < M / kWarpRows; ++warp) {
      const int row0 = i0 + kWarpRows * warp;
      if (row0 >= seq) continue;  // warp_active
      for (int t = 0; t < n_tiles; ++t) {
        const int j0 = t * N;
        if (!S::has_visible(row0, kWarpRows, j0)) continue;
        const bool crosses = S::has_hidden(row0, j0, N);
        for (int r = 0; r < kWarpRows; ++r) {
          const int q = row0 + r;
          if (q >= seq) continue;
          for (int c = 0; c < N; ++c) {
            const int key = j0 + c;
            const bool masked = crosses && S::hidden(q, key);
            if (!masked && key > q) return ::testing::AssertionFailure() << "T=" << seq << " query " << q << " sees key " << key;
            if (!masked) ++count[static_cast<std::size_t>(q) * seq + key];
          }
        }
      }
    }
  }
  for (int q = 0; q < seq; ++q) {
    for (int key = 0; key <= q; ++key) {
      const int n = count[static_cast<std::size_t>(q) * seq + key];
      if (n != 1) return ::testing::AssertionFailure() << "T=" << seq << " query " << q << " key " << key << " used " << n << " times";
    }
  }
  return ::testing::AssertionSuccess();
}

// dK/dV: CTAs of N keys (4 warps of 16) of KV head kh, query blocks of M, `group` query heads per
// KV head.
template <class S = KernelSchedule>
::testing::AssertionResult check_key_major_schedule(int N, int M, int group, int kh, int seq) {
  using cuda::attn::kWarpRows;
  std::vector<int> count(static_cast<std::size_t>(group) * seq * seq, 0);  // [head − kh·group][key][query]
  for (int j0 = 0; j0 < seq; j0 += N) {
    const int per_head = S::per_head(j0, M, seq), steps = group * per_head;
    for (int s = 0; s < steps; ++s) {
      const cuda::attn::DkvStep sp = S::step(kh, group, j0, M, per_head, s);
      if (sp.head / group != kh || sp.i0 < 0 || sp.i0 >= seq || sp.i0 % M != 0) {
        return ::testing::AssertionFailure() << "T=" << seq << " key block " << j0 << " step " << s << ": head " << sp.head << ", queries from "
                                             << sp.i0;
      }
    }
    for (int warp = 0; warp < N / kWarpRows; ++warp) {
      const int key0 = j0 + kWarpRows * warp;
      if (key0 >= seq) continue;  // warp_active
      for (int s = 0; s < steps; ++s) {
        const cuda::attn::DkvStep sp = S::step(kh, group, j0, M, per_head, s);
        if (!S::has_visible(sp.i0, M, key0)) continue;
        const bool mask = S::dkdv_needs_mask(key0, sp.i0, M, seq);
        for (int r = 0; r < kWarpRows; ++r) {
          const int key = key0 + r;
          if (key >= seq) continue;
          for (int c = 0; c < M; ++c) {
            const int q = sp.i0 + c;
            const bool masked = mask && S::dkdv_masked(q, key, seq);
            if (!masked && (q < key || q >= seq)) {
              return ::testing::AssertionFailure() << "T=" << seq << " head " << sp.head << " key " << key << " reaches query " << q;
            }
            if (!masked) ++count[(static_cast<std::size_t>(sp.head - kh * group) * seq + key) * seq + q];
          }
        }
      }
    }
  }
  for (int hh = 0; hh < group; ++hh) {
    for (int key = 0; key < seq; ++key) {
      for (int q = key; q < seq; ++q) {
        const int n = count[(static_cast<std::size_t>(hh) * seq + key) * seq + q];
        if (n != 1) {
          return ::testing::AssertionFailure() << "T=" << seq << " head " << kh * group + hh << " key " << key << " query " << q << " used " << n
                                               << " times";
        }
      }
    }
  }
  return ::testing::AssertionSuccess();
}

std::vector<int> schedule_lengths() {
  std::vector<int> seqs;
  for (int t = 1; t <= 140; ++t) seqs.push_back(t);
  for (int t : {191, 192, 193, 255, 256, 257, 300, 511, 512, 513}) seqs.push_back(t);
  return seqs;
}

template <int D>
void check_schedules() {
  using Tl = cuda::attn::Tiles<D>;
  SCOPED_TRACE("D = " + std::to_string(D));
  for (int seq : schedule_lengths()) {
    ASSERT_TRUE(check_query_major_schedule(Tl::kFwdM, Tl::kFwdN, seq)) << "forward";
    ASSERT_TRUE(check_query_major_schedule(Tl::kDqM, Tl::kDqN, seq)) << "dQ";
    ASSERT_TRUE(check_key_major_schedule(Tl::kDkvN, Tl::kDkvM, 1, 0, seq)) << "dK/dV";
    ASSERT_TRUE(check_key_major_schedule(Tl::kDkvN, Tl::kDkvM, 3, 2, seq)) << "dK/dV, group of 3";
  }
}

TEST(AttentionSchedule, EveryVisiblePairOnceAndNothingElse) {
  check_schedules<32>();
  check_schedules<64>();
  check_schedules<128>();
  // Other tile shapes (key tiles wider or narrower than the query blocks) keep the invariants.
  for (int seq : {1, 15, 16, 17, 100, 200, 257}) {
    EXPECT_TRUE(check_query_major_schedule(64, 128, seq));
    EXPECT_TRUE(check_query_major_schedule(64, 16, seq));
    EXPECT_TRUE(check_key_major_schedule(64, 128, 2, 1, seq));
  }
}

// The checks are not vacuous: each plausible mistake below is caught.
struct MasksTheDiagonal : KernelSchedule {  // key >= query hidden
  static constexpr bool hidden(int query, int key) { return key >= query; }
};
struct MasksOnlyBelowTheTileEnd : KernelSchedule {  // "crosses the diagonal" tested on the first key only
  static constexpr bool has_hidden(int q0, int k0, int) { return k0 > q0; }
};
struct OneKeyTileShort : KernelSchedule {
  static constexpr int key_tiles(int i0, int m, int n, int seq) { return (std::min(i0 + m, seq) - 1) / n; }
};
struct SkipsTheDiagonalTile : KernelSchedule {  // visible only if the first key is before the first query
  static constexpr bool has_visible(int q0, int, int k0) { return k0 < q0; }
};
struct SkipsPartlyVisibleBlocks : KernelSchedule {  // visible only if the first key is at most the first query
  static constexpr bool has_visible(int q0, int, int k0) { return k0 <= q0; }
};
struct DkdvMasksTheDiagonal : KernelSchedule {
  static constexpr bool dkdv_masked(int query, int key, int seq) { return key >= query || query >= seq; }
};
struct NoMaskPastTheEnd : KernelSchedule {  // dK/dV: the diagonal only, queries >= T pass
  static constexpr bool dkdv_needs_mask(int key0, int i0, int, int) { return cuda::attn::block_has_hidden(i0, key0, cuda::attn::kWarpRows); }
};
struct StartsOneQueryBlockLate : KernelSchedule {
  static constexpr int per_head(int j0, int m, int seq) { return std::max(1, cuda::attn::query_blocks_per_head(j0, m, seq) - 1); }
  static constexpr cuda::attn::DkvStep step(int kh, int group, int j0, int m, int per_head, int s) {
    const int first = std::min(j0 / m + 1, (j0 / m + per_head) - 1);
    return {kh * group + s / per_head, (first + s % per_head) * m};
  }
};

TEST(AttentionSchedule, ChecksCatchBrokenSchedules) {
  EXPECT_FALSE(check_query_major_schedule<MasksTheDiagonal>(64, 64, 100));
  EXPECT_FALSE(check_query_major_schedule<MasksOnlyBelowTheTileEnd>(64, 64, 100));
  EXPECT_FALSE(check_query_major_schedule<OneKeyTileShort>(64, 64, 100));
  EXPECT_FALSE(check_query_major_schedule<SkipsTheDiagonalTile>(64, 64, 100));
  EXPECT_FALSE(check_key_major_schedule<DkdvMasksTheDiagonal>(64, 64, 1, 0, 100));
  EXPECT_FALSE(check_key_major_schedule<SkipsPartlyVisibleBlocks>(64, 64, 1, 0, 100));
  EXPECT_FALSE(check_key_major_schedule<NoMaskPastTheEnd>(64, 64, 1, 0, 100));
  EXPECT_FALSE(check_key_major_schedule<StartsOneQueryBlockLate>(64, 64, 1, 0, 200));
}

TEST(AttentionLayout, TileConfiguration) {
  using cuda::attn::Tiles;
  EXPECT_EQ(Tiles<64>::kFwdSmem, 40 * 1024);  // Q + 2 × (K, V), 64 × 64 bf16 each
  EXPECT_EQ(Tiles<128>::kFwdSmem, 80 * 1024);
  EXPECT_EQ(Tiles<64>::kDqSmem, 48 * 1024);
  EXPECT_EQ(Tiles<64>::kDkvSmem, 48 * 1024 + 1024);  // + 2 stages × (lse, delta) × 64 floats
  EXPECT_TRUE(cuda::attn::kTensorCore<64>);
  EXPECT_FALSE(cuda::attn::kTensorCore<8>);
  EXPECT_EQ((cuda::attention_backward_scratch_bytes<8, 4, 64>(2, 100)), 2u * 8u * 100u * sizeof(float));
  // The model sizes scratch for (1, B·T): it must cover (B, T).
  EXPECT_EQ((cuda::attention_backward_scratch_bytes<8, 4, 64>(1, 200)), (cuda::attention_backward_scratch_bytes<8, 4, 64>(2, 100)));
}

// =============================================================================================
// Host-only: argument checks (they throw before anything touches the GPU).

void expect_rejected(const std::function<void()>& call, const std::string& what) {
  try {
    call();
    ADD_FAILURE() << "accepted: " << what;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention"), std::string::npos) << what << ": rejected for another reason: " << e.what();
  }
}

TEST(AttentionArgs, RejectsBadExtentsStridesAndPointers) {
  // Fake, aligned device addresses: never dereferenced, the host checks throw first.
  auto* p = reinterpret_cast<nv_bf16*>(std::uintptr_t{1} << 20);
  auto* f = reinterpret_cast<float*>(std::uintptr_t{1} << 21);
  constexpr std::int64_t QW = 8 * 64, KW = 4 * 64;
  auto fwd = [&](nv_bf16* q, std::int64_t ldq, std::int64_t ldy, std::int64_t batch, std::int64_t seq) {
    return [=] { cuda::attention_forward<8, 4, 64>(p, ldy, f, q, ldq, p, KW, p, KW, batch, seq, nullptr); };
  };
  expect_rejected(fwd(p, QW, QW - 8, 2, 16), "ldy below Heads·HeadDim");
  expect_rejected(fwd(p, QW + 4, QW, 2, 16), "ldq not a multiple of 8");
  expect_rejected(fwd(p + 2, QW, QW, 2, 16), "q not 16-byte aligned");
  expect_rejected(fwd(nullptr, QW, QW, 2, 16), "q null");
  expect_rejected(fwd(p, QW, QW, 0, 16), "batch 0");
  expect_rejected(fwd(p, QW, QW, 2, 0), "seq 0");
  expect_rejected(
      [&] {
        cuda::attention_backward<8, 4, 64>(p, QW, p, KW, p, KW, p, QW, p, QW, f, p, QW, p, KW, p, KW, 2, 16, nullptr, nullptr);
      },
      "backward without scratch");
  expect_rejected(
      [&] {
        cuda::attention_backward<8, 4, 64>(p, QW, p, KW - 8, p, KW, p, QW, p, QW, f, p, QW, p, KW, p, KW, 2, 16, f, nullptr);
      },
      "lddk below KvHeads·HeadDim");
  // The simple path (HeadDim 8) needs only 4-byte alignment and even strides.
  expect_rejected([&] { cuda::attention_forward<4, 2, 8>(p, 32, f, p, 33, p, 16, p, 16, 1, 4, nullptr); }, "odd ldq (simple path)");
  expect_rejected([&] { cuda::attention_forward<4, 2, 8>(p, 32, f, p + 1, 32, p, 16, p, 16, 1, 4, nullptr); },
                  "q not 4-byte aligned (simple path)");
}

// =============================================================================================
// GPU: parity with the CPU oracle.

enum class Layout {
  packed,  // q, k, v, y, dy, dq, dk, dv in separate buffers, rows of exactly their width
  qkv,     // the model's: q, k, v slices of one (N, (H + 2·Hkv)·Hd) row, dq/dk/dv likewise; y, dy rows padded by 8
};

struct Case {
  std::int64_t batch = 2, seq = 17;
  Layout layout = Layout::qkv;
  float q_scale = 1.0f;       // q ~ N(0, q_scale²): 8 gives sharp softmaxes (max rescaling, lse ≫ 0)
  bool force_simple = false;  // run attention_*_simple instead of the dispatching entry points
  bool repeat = false;        // run forward and backward twice, compare bits
};

constexpr float kSentinel = 12345.0f;  // padding of output rows: must stay (bf16 12352)

// (n, ld) bf16 host image: tensor `values` (n, width) at columns [col, col + width), the rest `fill`.
struct Slot {
  const std::vector<float>* values;
  std::int64_t col, width;
};
cuda::DeviceBuffer<nv_bf16> upload(std::int64_t n, std::int64_t ld, std::initializer_list<Slot> slots, float fill = kSentinel) {
  std::vector<float> img(static_cast<std::size_t>(n * ld), fill);
  for (const Slot& s : slots) {
    if (s.values == nullptr) continue;
    for (std::int64_t r = 0; r < n; ++r) {
      for (std::int64_t c = 0; c < s.width; ++c) img[r * ld + s.col + c] = (*s.values)[r * s.width + c];
    }
  }
  return testing::to_device_bf16(img);
}
std::vector<float> extract(const std::vector<float>& img, std::int64_t n, std::int64_t ld, std::int64_t col, std::int64_t width) {
  std::vector<float> out(static_cast<std::size_t>(n * width));
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t c = 0; c < width; ++c) out[r * width + c] = img[r * ld + col + c];
  }
  return out;
}
template <class T>
std::vector<std::uint8_t> raw_bytes(const cuda::DeviceBuffer<T>& d) {
  std::vector<std::uint8_t> out(d.bytes());
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  if (!out.empty()) PGOLF_CUDA_CHECK(cudaMemcpy(out.data(), d.data(), out.size(), cudaMemcpyDeviceToHost));
  return out;
}
::testing::AssertionResult same_bytes(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b, const char* what) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << what << ": sizes differ";
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return ::testing::AssertionFailure() << what << ": run 2 differs from run 1 first at byte " << i;
  }
  return ::testing::AssertionSuccess();
}
double rms(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return v.empty() ? 0.0 : std::sqrt(s / static_cast<double>(v.size()));
}
double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// got vs want, (n, heads, D) tensors: every element within c·rms(its row of D) + rtol·|want| +
// floor, and (when the tensor is not ~0) the relative L2 error within l2. A failure names the
// worst element by batch, position, head and dimension, the count of elements off, and the first
// position with an error (masking and tile-boundary mistakes start at a recognisable position).
void expect_close(const char* name, const std::vector<float>& got, const std::vector<float>& want, int heads, int D, std::int64_t seq,
                  double c, double rtol, double floor, double l2) {
  ASSERT_EQ(got.size(), want.size()) << name;
  const std::size_t rows = want.size() / static_cast<std::size_t>(D);
  std::size_t bad = 0, worst = 0;
  double worst_ratio = 0, max_ratio = 0;
  std::int64_t first_pos = -1;
  for (std::size_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int d = 0; d < D; ++d) ss += static_cast<double>(want[r * D + d]) * want[r * D + d];
    const double row_rms = std::sqrt(ss / D);
    for (int d = 0; d < D; ++d) {
      const std::size_t i = r * D + d;
      const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
      const double tol = c * row_rms + rtol * std::fabs(want[i]) + floor;
      const double ratio = std::isfinite(err) ? err / tol : INFINITY;
      max_ratio = std::max(max_ratio, ratio);
      if (!(err <= tol)) {
        ++bad;
        const std::int64_t pos = static_cast<std::int64_t>(r / heads) % seq;
        if (first_pos < 0 || pos < first_pos) first_pos = pos;
        if (!(ratio <= worst_ratio)) {
          worst_ratio = ratio;
          worst = i;
        }
      }
    }
  }
  if (bad > 0) {
    const std::size_t r = worst / D;
    const std::int64_t token = static_cast<std::int64_t>(r / heads);
    ADD_FAILURE() << name << ": " << bad << " of " << got.size() << " elements off (bound " << c << "·rms(row) + " << rtol << "·|want| + "
                  << floor << "); worst at batch " << token / seq << ", position " << token % seq << ", head " << r % heads << ", dim "
                  << worst % D << ": got " << got[worst] << ", expected " << want[worst] << " (" << worst_ratio
                  << "x its bound); first position with an error: " << first_pos;
  }
  if (rms(want) > 1e-3) {
    const double e = relative_l2_error(got, want);
    EXPECT_LE(e, l2) << name << ": relative L2 error " << e << " (rms of expected " << rms(want) << "); largest error/bound " << max_ratio;
  }
}

template <int H, int Hkv, int D>
void check_case(const Case& cs) {
  constexpr std::int64_t QW = std::int64_t{H} * D, KW = std::int64_t{Hkv} * D;
  const std::int64_t B = cs.batch, T = cs.seq, n = B * T;
  const bool tc = cuda::attn::kTensorCore<D> && !cs.force_simple;
  std::ostringstream label;
  label << "H=" << H << " Hkv=" << Hkv << " Hd=" << D << " B=" << B << " T=" << T << " layout=" << (cs.layout == Layout::qkv ? "qkv" : "packed")
        << " q_scale=" << cs.q_scale << " path=" << (tc ? "tensor-core" : "simple");
  SCOPED_TRACE(label.str());

  // Inputs, bf16-rounded: what both sides compute from.
  const std::uint64_t salt = static_cast<std::uint64_t>(T * 131 + H * 17 + Hkv * 5 + D);
  const auto q = testing::bf16_rounded(testing::normal_floats(static_cast<std::size_t>(n * QW), salt * 8 + 1, cs.q_scale));
  const auto k = testing::bf16_rounded(testing::normal_floats(static_cast<std::size_t>(n * KW), salt * 8 + 2));
  const auto v = testing::bf16_rounded(testing::normal_floats(static_cast<std::size_t>(n * KW), salt * 8 + 3));
  const auto dy = testing::bf16_rounded(testing::normal_floats(static_cast<std::size_t>(n * QW), salt * 8 + 4));

  // CPU oracle, forward; the backward gets bf16(y_ref) and lse_ref on both sides, so it is tested
  // on its own (a forward error does not propagate into the backward comparison).
  std::vector<float> y_ref(static_cast<std::size_t>(n * QW)), lse_ref(static_cast<std::size_t>(B * H * T));
  cpu::attention_forward<H, Hkv, D, float>(y_ref.data(), lse_ref.data(), q.data(), k.data(), v.data(), B, T);
  const auto y_in = testing::bf16_rounded(y_ref);
  std::vector<float> dq_ref(q.size()), dk_ref(k.size()), dv_ref(v.size());
  cpu::attention_backward<H, Hkv, D, float>(dq_ref.data(), dk_ref.data(), dv_ref.data(), dy.data(), y_in.data(), lse_ref.data(), q.data(),
                                            k.data(), v.data(), B, T);

  // Device layouts.
  const bool strided = cs.layout == Layout::qkv;
  const std::int64_t ld_qkv = QW + 2 * KW, ld_row = QW + 8;  // ld_row: padded y / dy rows
  std::vector<cuda::DeviceBuffer<nv_bf16>> bufs;
  auto add = [&](cuda::DeviceBuffer<nv_bf16> b) -> nv_bf16* {
    bufs.push_back(std::move(b));
    return bufs.back().data();
  };
  bufs.reserve(16);
  nv_bf16 *dq_p, *dk_p, *dv_p, *qp, *kp, *vp, *yp, *dyp, *yinp;
  std::int64_t ldq, ldk, ldv, ldy;  // gradients use the same strides as their inputs
  std::size_t grads, y_buf;
  if (strided) {
    ldq = ldk = ldv = ld_qkv;
    ldy = ld_row;
    qp = add(upload(n, ld_qkv, {{&q, 0, QW}, {&k, QW, KW}, {&v, QW + KW, KW}}));
    kp = qp + QW;
    vp = qp + QW + KW;
    grads = bufs.size();
    dq_p = add(upload(n, ld_qkv, {}));
    dk_p = dq_p + QW;
    dv_p = dq_p + QW + KW;
    y_buf = bufs.size();
    yp = add(upload(n, ld_row, {}));
    dyp = add(upload(n, ld_row, {{&dy, 0, QW}}));
    yinp = add(upload(n, ld_row, {{&y_in, 0, QW}}));
  } else {
    ldq = ldy = QW;
    ldk = ldv = KW;
    qp = add(upload(n, QW, {{&q, 0, QW}}));
    kp = add(upload(n, KW, {{&k, 0, KW}}));
    vp = add(upload(n, KW, {{&v, 0, KW}}));
    grads = bufs.size();
    dq_p = add(upload(n, QW, {}));
    dk_p = add(upload(n, KW, {}));
    dv_p = add(upload(n, KW, {}));
    y_buf = bufs.size();
    yp = add(upload(n, QW, {}));
    dyp = add(upload(n, QW, {{&dy, 0, QW}}));
    yinp = add(upload(n, QW, {{&y_in, 0, QW}}));
  }
  cuda::DeviceBuffer<float> lse(static_cast<std::size_t>(B * H * T), "lse");
  lse.upload(std::vector<float>(lse.size(), std::numeric_limits<float>::quiet_NaN()));  // unwritten → NaN → fails
  auto lse_in = testing::to_device_f32(lse_ref, "lse (oracle)");
  cuda::DeviceBuffer<std::uint8_t> scratch(cuda::attention_backward_scratch_bytes<H, Hkv, D>(B, T), "attention scratch");

  auto forward = [&] {
    if (cs.force_simple) {
      cuda::attention_forward_simple<H, Hkv, D>(yp, ldy, lse.data(), qp, ldq, kp, ldk, vp, ldv, B, T, nullptr);
    } else {
      cuda::attention_forward<H, Hkv, D>(yp, ldy, lse.data(), qp, ldq, kp, ldk, vp, ldv, B, T, nullptr);
    }
    PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  };
  auto backward = [&] {
    if (cs.force_simple) {
      cuda::attention_backward_simple<H, Hkv, D>(dq_p, ldq, dk_p, ldk, dv_p, ldv, dyp, ldy, yinp, ldy, lse_in.data(), qp, ldq, kp, ldk, vp,
                                                 ldv, B, T, scratch.data(), nullptr);
    } else {
      cuda::attention_backward<H, Hkv, D>(dq_p, ldq, dk_p, ldk, dv_p, ldv, dyp, ldy, yinp, ldy, lse_in.data(), qp, ldq, kp, ldk, vp, ldv, B,
                                          T, scratch.data(), nullptr);
    }
    PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  };

  // ---- forward
  forward();
  const auto y_img = testing::to_host_floats(bufs[y_buf]);
  const auto y_got = extract(y_img, n, ldy, 0, QW);
  const auto lse_got = testing::to_host_floats(lse);
  const double u = kBf16Eps;  // one bf16 rounding (file comment)
  if (tc) {
    expect_close("y", y_got, y_ref, H, D, T, 0.0, u + 1e-5, u * max_abs(v), 1.5 * kBf16Eps);
  } else {
    expect_close("y", y_got, y_ref, H, D, T, 0.0, u + 1e-5, 1e-5, kBf16Eps);
  }
  EXPECT_TRUE(all_close(lse_got, lse_ref, 1e-4, 1e-5)) << "lse (element index = (batch·H + head)·T + position)";
  if (ldy > QW) {  // the padding of y's rows is not written
    const auto pad = extract(y_img, n, ldy, QW, ldy - QW);
    const float s = bf16::from_float(kSentinel).to_float();
    EXPECT_TRUE(std::all_of(pad.begin(), pad.end(), [s](float x) { return x == s; })) << "y's row padding was overwritten";
  }

  // ---- backward
  backward();
  std::vector<float> dq_got, dk_got, dv_got;
  if (strided) {
    const auto img = testing::to_host_floats(bufs[grads]);
    dq_got = extract(img, n, ld_qkv, 0, QW);
    dk_got = extract(img, n, ld_qkv, QW, KW);
    dv_got = extract(img, n, ld_qkv, QW + KW, KW);
  } else {
    dq_got = testing::to_host_floats(bufs[grads]);
    dk_got = testing::to_host_floats(bufs[grads + 1]);
    dv_got = testing::to_host_floats(bufs[grads + 2]);
  }
  auto check_grad = [&](const char* name, const std::vector<float>& got, const std::vector<float>& want, int heads) {
    if (tc) {
      expect_close(name, got, want, heads, D, T, 8 * kBf16Eps, u + 1e-5, 1e-4, 1.5 * kBf16Eps);
    } else {
      expect_close(name, got, want, heads, D, T, 1e-3, u + 1e-5, 1e-4, kBf16Eps);
    }
  };
  check_grad("dq", dq_got, dq_ref, H);
  check_grad("dk", dk_got, dk_ref, Hkv);
  check_grad("dv", dv_got, dv_ref, Hkv);

  // ---- determinism: the same bits on a second run (outputs cleared in between)
  if (cs.repeat) {
    const auto y1 = raw_bytes(bufs[y_buf]);
    const auto l1 = raw_bytes(lse);
    std::vector<std::vector<std::uint8_t>> g1;
    for (std::size_t i = grads; i < y_buf; ++i) g1.push_back(raw_bytes(bufs[i]));
    PGOLF_CUDA_CHECK(cudaMemset(bufs[y_buf].data(), 0, bufs[y_buf].bytes()));
    lse.zero();
    for (std::size_t i = grads; i < y_buf; ++i) bufs[i].zero();
    forward();
    backward();
    EXPECT_TRUE(same_bytes(y1, raw_bytes(bufs[y_buf]), "y"));
    EXPECT_TRUE(same_bytes(l1, raw_bytes(lse), "lse"));
    for (std::size_t i = grads; i < y_buf; ++i) EXPECT_TRUE(same_bytes(g1[i - grads], raw_bytes(bufs[i]), "dq/dk/dv"));
  }
}

class AttentionGpu : public testing::GpuTest {};

// Tensor cores, head dim 64, groups of 2 (the baseline's 8/4): every sequence length, the model's layout.
TEST_F(AttentionGpu, TensorCoreHd64Group2) {
  for (const std::int64_t T : {1, 17, 64, 100, 257, 1024}) check_case<8, 4, 64>({.seq = T, .repeat = T == 257});
  check_case<8, 4, 64>({.seq = 100, .layout = Layout::packed});
}

TEST_F(AttentionGpu, TensorCoreHd64Group4) {
  for (const std::int64_t T : {17, 64, 257}) check_case<8, 2, 64>({.seq = T});
}

TEST_F(AttentionGpu, TensorCoreHd32Group1) {
  for (const std::int64_t T : {1, 17, 100, 257}) check_case<4, 4, 32>({.seq = T, .layout = Layout::packed});
  check_case<4, 4, 32>({.seq = 257});
}

TEST_F(AttentionGpu, TensorCoreHd128Group2) {
  for (const std::int64_t T : {17, 100, 257}) check_case<4, 2, 128>({.seq = T, .repeat = T == 257});
}

// Scores of magnitude ~30: the running max changes between key tiles and P has entries near 1.
TEST_F(AttentionGpu, TensorCoreLargeScores) {
  for (const std::int64_t T : {257, 1024}) check_case<8, 4, 64>({.seq = T, .q_scale = 8.0f, .repeat = T == 1024});
}

// The simple path through the dispatching entry points (head dim 8), groups 1, 2 and 4.
TEST_F(AttentionGpu, SimpleHd8) {
  for (const std::int64_t T : {1, 17, 100, 257}) check_case<4, 4, 8>({.seq = T, .layout = Layout::packed});
  for (const std::int64_t T : {1, 17, 257}) check_case<8, 4, 8>({.seq = T, .repeat = T == 17});
  for (const std::int64_t T : {17, 100}) check_case<8, 2, 8>({.seq = T});
  check_case<8, 4, 8>({.seq = 100, .q_scale = 8.0f});
}

// The simple kernels at a tensor-core head dim (the two paths agree through the oracle).
TEST_F(AttentionGpu, SimpleAtTensorCoreHeadDim) {
  for (const std::int64_t T : {17, 257}) check_case<8, 4, 64>({.seq = T, .force_simple = true, .repeat = T == 17});
}

}  // namespace
}  // namespace pgolf
