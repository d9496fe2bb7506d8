// Row-major GEMMs on the GPU through cuBLASLt: bf16 inputs, fp32 accumulation, bf16 or fp32 output.
//
//   D[M×N] = alpha · op(A)[M×K] · op(B)[K×N] + beta · C        (row-major, like ops/gemm.hpp)
//
// C is D itself (accumulate in place) or another buffer with D's layout and type. A batch of
// equally strided problems runs as one strided-batched call (Muon's Newton–Schulz iterations).
//
// cuBLASLt is column-major; a row-major D is a column-major Dᵀ, so the call computes
// Dᵀ = op(B)ᵀ · op(A)ᵀ with the operands swapped. An algorithm is chosen by cuBLASLt's heuristic
// once per (shape, transposes, types, batch, pointer alignment) and cached, so a training step does
// no heuristic search after its first micro-batch. cuBLASLt gives the same bits run to run on the
// same GPU model (its reductions, split-K included, have a fixed order). With a bf16 output, split-K
// is restricted to fp32 partial sums (CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE), so the accumulation
// stays fp32 up to the single final rounding.
#pragma once

#if !defined(__CUDACC__)
#error "pgolf/ops/cuda/gemm.cuh is for CUDA translation units"
#endif

#include <cublasLt.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/gemm.hpp"

namespace pgolf::cuda {

#define PGOLF_CUBLAS_CHECK(expr)                                                                                       \
  do {                                                                                                                 \
    const cublasStatus_t pgolf_st_ = (expr);                                                                           \
    if (pgolf_st_ != CUBLAS_STATUS_SUCCESS) {                                                                          \
      ::pgolf::detail::raise("cuBLASLt", std::string(#expr) + " failed with status " + std::to_string(static_cast<int>(pgolf_st_)), \
                             __FILE__, __LINE__);                                                                      \
    }                                                                                                                  \
  } while (0)

using cpu::Trans;

enum class OutType : std::uint8_t { bf16, f32 };

// Equally strided problems: operand i starts at ptr + i·stride (elements).
struct GemmBatch {
  int count = 1;
  std::int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

// 32 MiB of workspace, as llm.c gives cuBLASLt, so that split-K algorithms are available for the
// weight-gradient GEMMs (small M×N, large K).
inline constexpr std::size_t kGemmWorkspaceBytes = 32u << 20;
// cuBLASLt's default assumption about operand alignment; smaller alignments are declared.
inline constexpr unsigned kMaxDeclaredAlignment = 256;

// The largest power of two (at most kMaxDeclaredAlignment) dividing a byte address or byte offset.
inline unsigned byte_alignment(std::uint64_t bytes) {
  unsigned align = kMaxDeclaredAlignment;
  while (align > 1 && (bytes % align) != 0) align /= 2;
  return align;
}
inline unsigned pointer_alignment(const void* p) { return byte_alignment(reinterpret_cast<std::uintptr_t>(p)); }

// One engine serves one stream at a time: its cuBLASLt workspace is shared by every call.
class GemmEngine {
 public:
  GemmEngine() {
    workspace_ = DeviceBuffer<std::uint8_t>(kGemmWorkspaceBytes, "cuBLASLt workspace");  // first: a throw here leaks no handle
    PGOLF_CUBLAS_CHECK(cublasLtCreate(&handle_));
  }
  GemmEngine(const GemmEngine&) = delete;
  GemmEngine& operator=(const GemmEngine&) = delete;
  ~GemmEngine() {
    for (auto& [key, plan] : plans_) plan.destroy();
    if (handle_) cublasLtDestroy(handle_);
  }

  // D = alpha · op(A) · op(B) + beta · C. A (M×K, or K×M when transposed) and B (K×N, or N×K) are
  // bf16 with row strides lda/ldb; C and D have type `out` and row stride ldd; C may equal D and
  // is not read when beta == 0.
  void gemm(Trans ta, Trans tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const nv_bf16* A, std::int64_t lda,
            const nv_bf16* B, std::int64_t ldb, float beta, const void* C, void* D, std::int64_t ldd, OutType out, cudaStream_t stream,
            GemmBatch batch = {}) {
    if (M == 0 || N == 0 || batch.count == 0) return;
    PGOLF_CHECK(K > 0, "GEMM with K = 0 (" << M << "x" << N << "): nothing to multiply");
    PGOLF_CHECK(beta == 0.0f || C != nullptr, "GEMM with beta = " << beta << " needs a C operand");
    if (beta == 0.0f) C = D;
    // cuBLASLt assumes every operand (each problem of a batch, each row) is as aligned as declared:
    // declare the alignment that the pointers, row strides and batch strides all share.
    const std::uint64_t out_bytes = out == OutType::bf16 ? 2 : 4;
    const unsigned align = std::min({pointer_alignment(A), pointer_alignment(B), pointer_alignment(C), pointer_alignment(D),
                                     byte_alignment(2 * static_cast<std::uint64_t>(lda)), byte_alignment(2 * static_cast<std::uint64_t>(ldb)),
                                     byte_alignment(out_bytes * static_cast<std::uint64_t>(ldd)),
                                     byte_alignment(2 * static_cast<std::uint64_t>(batch.count > 1 ? batch.stride_a : 0)),
                                     byte_alignment(2 * static_cast<std::uint64_t>(batch.count > 1 ? batch.stride_b : 0)),
                                     byte_alignment(out_bytes * static_cast<std::uint64_t>(batch.count > 1 ? batch.stride_c : 0))});
    const Key key{static_cast<int>(ta), static_cast<int>(tb), M, N, K, lda, ldb, ldd, static_cast<int>(out),
                  batch.count, batch.stride_a, batch.stride_b, batch.stride_c, align};
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, make_plan(key)).first;
    const Plan& p = it->second;
    // Column-major view: D'(N×M) = op(B)' · op(A)'.
    PGOLF_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, B, p.first, A, p.second, &beta, C, p.out, D, p.out, &p.algo, workspace_.data(),
                                      workspace_.bytes(), stream));
  }

  // The three products of a linear layer y = x · Wᵀ with W stored (out, in) as in PyTorch:
  //   forward          y[n, out]  = x[n, in] · W[out, in]ᵀ
  //   backward input   dx[n, in] (+)= dy[n, out] · W[out, in]
  //   backward weight  dW[out, in] += dy[n, out]ᵀ · x[n, in]      (fp32 gradient accumulation)
  // ld* are row strides (default: packed).
  void linear_forward(void* y, OutType y_type, const nv_bf16* x, const nv_bf16* W, std::int64_t n, std::int64_t in, std::int64_t out,
                      cudaStream_t stream, std::int64_t ldx = 0, std::int64_t ldy = 0) {
    gemm(Trans::no, Trans::yes, n, out, in, 1.0f, x, ldx ? ldx : in, W, in, 0.0f, nullptr, y, ldy ? ldy : out, y_type, stream);
  }
  void linear_backward_input(void* dx, OutType dx_type, const nv_bf16* dy, const nv_bf16* W, std::int64_t n, std::int64_t in,
                             std::int64_t out, bool accumulate, cudaStream_t stream, std::int64_t lddy = 0, std::int64_t lddx = 0) {
    gemm(Trans::no, Trans::no, n, in, out, 1.0f, dy, lddy ? lddy : out, W, in, accumulate ? 1.0f : 0.0f, dx, dx, lddx ? lddx : in, dx_type,
         stream);
  }
  void linear_backward_weight(float* dW, const nv_bf16* dy, const nv_bf16* x, std::int64_t n, std::int64_t in, std::int64_t out,
                              cudaStream_t stream, std::int64_t lddy = 0, std::int64_t ldx = 0) {
    gemm(Trans::yes, Trans::no, out, in, n, 1.0f, dy, lddy ? lddy : out, x, ldx ? ldx : in, 1.0f, dW, dW, in, OutType::f32, stream);
  }

  std::size_t cached_plans() const { return plans_.size(); }

 private:
  using Key = std::tuple<int, int, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, int, int,
                         std::int64_t, std::int64_t, std::int64_t, unsigned>;
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t first = nullptr, second = nullptr, out = nullptr;
    cublasLtMatmulAlgo_t algo{};
    void destroy() {
      if (op) cublasLtMatmulDescDestroy(op);
      if (first) cublasLtMatrixLayoutDestroy(first);
      if (second) cublasLtMatrixLayoutDestroy(second);
      if (out) cublasLtMatrixLayoutDestroy(out);
      op = nullptr;
      first = second = out = nullptr;
    }
  };

  static void set_batch(cublasLtMatrixLayout_t layout, int count, std::int64_t stride) {
    if (count <= 1) return;
    PGOLF_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
    PGOLF_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }

  Plan make_plan(const Key& key) {
    const auto [ta_i, tb_i, M, N, K, lda, ldb, ldd, out_i, count, stride_a, stride_b, stride_c, align] = key;
    const auto ta = static_cast<Trans>(ta_i), tb = static_cast<Trans>(tb_i);
    const auto out_type = static_cast<OutType>(out_i);
    Plan p;
    try {
      PGOLF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      // Swapped operands: the first is B (op = tb), the second is A (op = ta).
      const cublasOperation_t op_first = tb == Trans::yes ? CUBLAS_OP_T : CUBLAS_OP_N;
      const cublasOperation_t op_second = ta == Trans::yes ? CUBLAS_OP_T : CUBLAS_OP_N;
      PGOLF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof op_first));
      PGOLF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof op_second));
      // Stored shapes in column-major terms: row-major X[r×c] is column-major c×r.
      const std::uint64_t first_rows = tb == Trans::yes ? K : N, first_cols = tb == Trans::yes ? N : K;
      const std::uint64_t second_rows = ta == Trans::yes ? M : K, second_cols = ta == Trans::yes ? K : M;
      PGOLF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.first, CUDA_R_16BF, first_rows, first_cols, ldb));
      PGOLF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.second, CUDA_R_16BF, second_rows, second_cols, lda));
      PGOLF_CUBLAS_CHECK(
          cublasLtMatrixLayoutCreate(&p.out, out_type == OutType::bf16 ? CUDA_R_16BF : CUDA_R_32F, N, M, ldd));
      set_batch(p.first, count, stride_b);
      set_batch(p.second, count, stride_a);
      set_batch(p.out, count, stride_c);
      cublasLtMatmulPreference_t pref = nullptr;
      PGOLF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const std::uint64_t ws = kGemmWorkspaceBytes;
      const std::uint32_t al = align;
      cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
      for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
        if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtMatmulPreferenceSetAttribute(pref, attr, &al, sizeof al);
      }
      if (out_type == OutType::bf16 && st == CUBLAS_STATUS_SUCCESS) {
        // Split-K partial sums in fp32 (or no split): the in-place and output-type schemes would add
        // the partial sums in bf16, and this header promises fp32 accumulation.
        const std::uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;  // | NONE (0), always allowed
        st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof schemes);
      }
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      if (st == CUBLAS_STATUS_SUCCESS) {
        st = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.first, p.second, p.out, p.out, pref, 1, &result, &found);
      }
      cublasLtMatmulPreferenceDestroy(pref);
      if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
        PGOLF_FAIL("cuBLASLt has no algorithm for a " << M << "x" << N << "x" << K << " bf16 GEMM (trans " << ta_i << tb_i << ", batch "
                                                      << count << ", alignment " << align << " B, status " << static_cast<int>(st)
                                                      << ")");
      }
      p.algo = result.algo;
    } catch (...) {
      p.destroy();
      throw;
    }
    return p;
  }

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<std::uint8_t> workspace_;
  std::map<Key, Plan> plans_;
};

}  // namespace pgolf::cuda
