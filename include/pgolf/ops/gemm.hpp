// Dense matrix multiply on the CPU: C (+)= op(A) · op(B), row-major, float or double.
//
// The float path is a packed, register-blocked kernel (GotoBLAS structure: pack a panel of A and
// of B, then an MR×NR micro-kernel keeps its C tile in vector registers) written with GCC vector
// extensions, so -march picks the instruction set (AVX2+FMA on the project's machines). The double
// path is a plain triple loop: it exists for finite-difference gradient checks, not for speed.
//
// Determinism: C is split into tiles; one thread owns a tile and walks K in a fixed order, so the
// result does not depend on the number of threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/parallel.hpp"
#include "pgolf/core/platform.hpp"

namespace pgolf::cpu {

enum class Trans : bool { no = false, yes = true };

namespace gemm_detail {

// Micro-kernel tile: 6 rows × 16 columns = 12 eight-float accumulators, which fits the 16 vector
// registers of AVX2 with room for the two B vectors and one broadcast A value (the BLIS Haswell
// choice). Cache blocking: a KC×NR panel of B (16 KB) stays in L1, an MC×KC block of A in L2.
inline constexpr int kMR = 6;
inline constexpr int kNR = 16;
inline constexpr int kKC = 256;
inline constexpr int kMC = 96;   // multiple of kMR
inline constexpr int kNC = 256;  // multiple of kNR

using v8f = float __attribute__((vector_size(32)));

template <class T>
PGOLF_ALWAYS_INLINE T elem(const T* M, std::int64_t ld, Trans t, std::int64_t r, std::int64_t c) {
  return t == Trans::no ? M[r * ld + c] : M[c * ld + r];
}

// Packs rows [i0, i0+mc) × cols [k0, k0+kc) of op(A) into kMR-row panels: panel p holds, for each k,
// kMR consecutive values (zero-padded past the last row).
inline void pack_a(const float* A, std::int64_t lda, Trans ta, std::int64_t i0, int mc, std::int64_t k0, int kc, float* out) {
  for (int p = 0; p < mc; p += kMR) {
    const int rows = std::min(kMR, mc - p);
    for (int k = 0; k < kc; ++k) {
      for (int r = 0; r < kMR; ++r) {
        *out++ = r < rows ? elem(A, lda, ta, i0 + p + r, k0 + k) : 0.0f;
      }
    }
  }
}

// Packs rows [k0, k0+kc) × cols [j0, j0+nc) of op(B) into kNR-column panels (zero-padded).
inline void pack_b(const float* B, std::int64_t ldb, Trans tb, std::int64_t k0, int kc, std::int64_t j0, int nc, float* out) {
  for (int p = 0; p < nc; p += kNR) {
    const int cols = std::min(kNR, nc - p);
    for (int k = 0; k < kc; ++k) {
      if (tb == Trans::no && cols == kNR) {
        const float* src = B + (k0 + k) * ldb + j0 + p;
        for (int c = 0; c < kNR; ++c) out[c] = src[c];
      } else {
        for (int c = 0; c < kNR; ++c) out[c] = c < cols ? elem(B, ldb, tb, k0 + k, j0 + p + c) : 0.0f;
      }
      out += kNR;
    }
  }
}

// acc[6][16] = Σ_k a[k][0..6) ⊗ b[k][0..16), then C tile (+)= acc for the valid rows/cols.
inline void micro_kernel(int kc, const float* PGOLF_RESTRICT a, const float* PGOLF_RESTRICT b, float* C, std::int64_t ldc,
                         int rows, int cols, bool accumulate) {
  v8f c00{}, c01{}, c10{}, c11{}, c20{}, c21{}, c30{}, c31{}, c40{}, c41{}, c50{}, c51{};
  for (int k = 0; k < kc; ++k) {
    v8f b0, b1;
    __builtin_memcpy(&b0, b + 0, sizeof b0);
    __builtin_memcpy(&b1, b + 8, sizeof b1);
    c00 += a[0] * b0;
    c01 += a[0] * b1;
    c10 += a[1] * b0;
    c11 += a[1] * b1;
    c20 += a[2] * b0;
    c21 += a[2] * b1;
    c30 += a[3] * b0;
    c31 += a[3] * b1;
    c40 += a[4] * b0;
    c41 += a[4] * b1;
    c50 += a[5] * b0;
    c51 += a[5] * b1;
    a += kMR;
    b += kNR;
  }
  alignas(32) float acc[kMR][kNR];
  __builtin_memcpy(&acc[0][0], &c00, 32);
  __builtin_memcpy(&acc[0][8], &c01, 32);
  __builtin_memcpy(&acc[1][0], &c10, 32);
  __builtin_memcpy(&acc[1][8], &c11, 32);
  __builtin_memcpy(&acc[2][0], &c20, 32);
  __builtin_memcpy(&acc[2][8], &c21, 32);
  __builtin_memcpy(&acc[3][0], &c30, 32);
  __builtin_memcpy(&acc[3][8], &c31, 32);
  __builtin_memcpy(&acc[4][0], &c40, 32);
  __builtin_memcpy(&acc[4][8], &c41, 32);
  __builtin_memcpy(&acc[5][0], &c50, 32);
  __builtin_memcpy(&acc[5][8], &c51, 32);
  for (int r = 0; r < rows; ++r) {
    float* crow = C + r * ldc;
    if (accumulate) {
      for (int c = 0; c < cols; ++c) crow[c] += acc[r][c];
    } else {
      for (int c = 0; c < cols; ++c) crow[c] = acc[r][c];
    }
  }
}

inline void gemm_f32(Trans ta, Trans tb, std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                     const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) {
  const std::int64_t tiles_m = (M + kMC - 1) / kMC, tiles_n = (N + kNC - 1) / kNC;
  parallel_for(0, tiles_m * tiles_n, 1, [&](std::int64_t t0, std::int64_t t1) {
    thread_local std::vector<float> a_pack, b_pack;
    a_pack.resize(static_cast<std::size_t>(kMC) * kKC);
    b_pack.resize(static_cast<std::size_t>(kNC) * kKC);
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t i0 = (t / tiles_n) * kMC, j0 = (t % tiles_n) * kNC;
      const int mc = static_cast<int>(std::min<std::int64_t>(kMC, M - i0));
      const int nc = static_cast<int>(std::min<std::int64_t>(kNC, N - j0));
      if (K == 0 && !accumulate) {
        for (int r = 0; r < mc; ++r) std::fill_n(C + (i0 + r) * ldc + j0, nc, 0.0f);
      }
      for (std::int64_t k0 = 0; k0 < K; k0 += kKC) {
        const int kc = static_cast<int>(std::min<std::int64_t>(kKC, K - k0));
        pack_a(A, lda, ta, i0, mc, k0, kc, a_pack.data());
        pack_b(B, ldb, tb, k0, kc, j0, nc, b_pack.data());
        const bool acc = accumulate || k0 > 0;
        for (int jp = 0; jp < nc; jp += kNR) {
          for (int ip = 0; ip < mc; ip += kMR) {
            micro_kernel(kc, a_pack.data() + static_cast<std::size_t>(ip) * kc, b_pack.data() + static_cast<std::size_t>(jp) * kc,
                         C + (i0 + ip) * ldc + j0 + jp, ldc, std::min(kMR, mc - ip), std::min(kNR, nc - jp), acc);
          }
        }
      }
    }
  });
}

template <class T>
void gemm_reference(Trans ta, Trans tb, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, std::int64_t lda,
                    const T* B, std::int64_t ldb, T* C, std::int64_t ldc, bool accumulate) {
  parallel_for(0, M, 16, [&](std::int64_t i0, std::int64_t i1) {
    for (std::int64_t i = i0; i < i1; ++i) {
      for (std::int64_t j = 0; j < N; ++j) {
        T s = 0;
        for (std::int64_t k = 0; k < K; ++k) s += elem(A, lda, ta, i, k) * elem(B, ldb, tb, k, j);
        C[i * ldc + j] = accumulate ? C[i * ldc + j] + s : s;
      }
    }
  });
}

}  // namespace gemm_detail

// C[M×N] = (accumulate ? C : 0) + op(A)[M×K] · op(B)[K×N]; op(X) = X or Xᵀ. lda/ldb/ldc are the
// row strides of A, B, C as stored (A is M×K when not transposed, K×M when transposed).
template <class T>
void gemm(Trans ta, Trans tb, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, std::int64_t lda, const T* B,
          std::int64_t ldb, T* C, std::int64_t ldc, bool accumulate) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "gemm is instantiated for float and double");
  PGOLF_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm sizes " << M << "x" << N << "x" << K);
  if (M == 0 || N == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    gemm_detail::gemm_f32(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
  } else {
    gemm_detail::gemm_reference(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
  }
}

// The three products of a linear layer y = x · Wᵀ (W stored (out, in) as in PyTorch):
//   forward   y[N,O]   = x[N,I] · W[O,I]ᵀ
//   backward  dx[N,I] (+)= dy[N,O] · W[O,I]
//             dW[O,I]  += dy[N,O]ᵀ · x[N,I]
template <class T>
void linear_forward(T* y, const T* x, const T* W, std::int64_t n, std::int64_t in, std::int64_t out) {
  gemm(Trans::no, Trans::yes, n, out, in, x, in, W, in, y, out, false);
}

template <class T>
void linear_backward_input(T* dx, const T* dy, const T* W, std::int64_t n, std::int64_t in, std::int64_t out, bool accumulate) {
  gemm(Trans::no, Trans::no, n, in, out, dy, out, W, in, dx, in, accumulate);
}

template <class T>
void linear_backward_weight(T* dW, const T* dy, const T* x, std::int64_t n, std::int64_t in, std::int64_t out) {
  gemm(Trans::yes, Trans::no, out, in, n, dy, out, x, in, dW, in, true);
}

}  // namespace pgolf::cpu
