// GemmEngine (cuBLASLt, bf16 inputs, fp32 accumulation) against the CPU's float GEMM on the same
// bf16-rounded inputs: every transpose combination, odd shapes, both output types, alpha/beta with
// C in place and separate, strided batches and the linear-layer helpers with padded rows.
//
// Tolerance: the GPU and the CPU both accumulate in fp32 but in different orders, which differ by
// about K·2⁻²⁴·Σ|a·b| (≤ 1e-5·K for N(0,1) inputs); a bf16 output adds one rounding, at most half
// an ulp: 2⁻⁸ of the value. Layout or transpose mistakes give errors of the order of the values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/ops/cuda/gemm.cuh"
#include "pgolf/ops/gemm.hpp"

namespace pgolf {
namespace {

using cuda::GemmBatch;
using cuda::GemmEngine;
using cuda::OutType;
using cpu::Trans;
using testing::all_close;
using testing::kBf16Eps;

constexpr float kPad = std::numeric_limits<float>::quiet_NaN();  // padding a GEMM must neither read nor write

// A row-major rows × cols matrix with row stride ld >= cols; the padding holds NaN.
struct HostMat {
  std::int64_t rows = 0, cols = 0, ld = 0;
  std::vector<float> v;
  HostMat(std::int64_t r, std::int64_t c, std::int64_t ld_, std::uint64_t stream, bool bf16_values = true)
      : rows(r), cols(c), ld(ld_), v(static_cast<std::size_t>(r * ld_), kPad) {
    const auto src = testing::normal_floats(static_cast<std::size_t>(r * c), stream);
    for (std::int64_t i = 0; i < r; ++i) {
      for (std::int64_t j = 0; j < c; ++j) {
        const float x = src[static_cast<std::size_t>(i * c + j)];
        v[static_cast<std::size_t>(i * ld + j)] = bf16_values ? round_to_bf16(x) : x;
      }
    }
  }
  std::vector<float> packed() const;
};

// The packed rows × cols values of a matrix stored with row stride ld.
std::vector<float> packed(const std::vector<float>& from, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) out[static_cast<std::size_t>(i * cols + j)] = from[static_cast<std::size_t>(i * ld + j)];
  }
  return out;
}
std::vector<float> HostMat::packed() const { return pgolf::packed(v, rows, cols, ld); }

// Reference: alpha·op(A)·op(B) + beta·C in float, with cpu::gemm for the product (packed M × N).
std::vector<float> reference(Trans ta, Trans tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const HostMat& A,
                             const HostMat& B, float beta, const std::vector<float>* C) {
  std::vector<float> prod(static_cast<std::size_t>(M * N));
  cpu::gemm<float>(ta, tb, M, N, K, A.packed().data(), A.cols, B.packed().data(), B.cols, prod.data(), N, false);
  for (std::size_t i = 0; i < prod.size(); ++i) prod[i] = alpha * prod[i] + (C ? beta * (*C)[i] : 0.0f);
  return prod;
}

double atol_for(std::int64_t K, float alpha = 1.0f) { return 1e-5 * static_cast<double>(K) * std::max(1.0f, std::fabs(alpha)) + 1e-6; }
double rtol_for(OutType out) { return out == OutType::bf16 ? 1.05 * kBf16Eps : 1e-5; }

// Device buffer of `out` type from host floats (bf16: rounded), and back.
struct DevOut {
  OutType type;
  cuda::DeviceBuffer<float> f;
  cuda::DeviceBuffer<cuda::nv_bf16> b;
  DevOut(OutType t, const std::vector<float>& host) : type(t) {
    if (t == OutType::f32) f = testing::to_device_f32(host);
    else b = testing::to_device_bf16(host);
  }
  void* ptr() { return type == OutType::f32 ? static_cast<void*>(f.data()) : static_cast<void*>(b.data()); }
  std::vector<float> host() const { return type == OutType::f32 ? testing::to_host_floats(f) : testing::to_host_floats(b); }
};

std::string name(Trans ta, Trans tb, std::int64_t M, std::int64_t N, std::int64_t K, OutType out) {
  return std::string(ta == Trans::yes ? "T" : "N") + (tb == Trans::yes ? "T" : "N") + " " + std::to_string(M) + "x" + std::to_string(N) +
         "x" + std::to_string(K) + (out == OutType::bf16 ? " bf16 out" : " fp32 out");
}

// The NaN padding of D's rows is still there: the GEMM wrote no element outside M × N.
::testing::AssertionResult padding_untouched(const std::vector<float>& d, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = cols; j < ld; ++j) {
      if (!std::isnan(d[static_cast<std::size_t>(i * ld + j)])) {
        return ::testing::AssertionFailure() << "padding element (" << i << ", " << j << ") was overwritten";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// The engine is created inside each test: a fixture member would be constructed (and need a GPU)
// before SetUp could skip.
class Gemm : public testing::GpuTest {};

TEST_F(Gemm, AllTransposesOddShapesBothOutputs) {
  GemmEngine engine;
  const std::int64_t shapes[][3] = {{1, 1, 1}, {7, 17, 5}, {97, 263, 300}};
  std::uint64_t seed = 100;
  for (const auto& s : shapes) {
    const std::int64_t M = s[0], N = s[1], K = s[2];
    for (Trans ta : {Trans::no, Trans::yes}) {
      for (Trans tb : {Trans::no, Trans::yes}) {
        for (OutType out : {OutType::bf16, OutType::f32}) {
          const HostMat A(ta == Trans::no ? M : K, ta == Trans::no ? K : M, ta == Trans::no ? K : M, seed++);
          const HostMat B(tb == Trans::no ? K : N, tb == Trans::no ? N : K, tb == Trans::no ? N : K, seed++);
          auto dA = testing::to_device_bf16(A.v), dB = testing::to_device_bf16(B.v);
          DevOut D(out, std::vector<float>(static_cast<std::size_t>(M * N), 0.0f));
          engine.gemm(ta, tb, M, N, K, 1.0f, dA.data(), A.ld, dB.data(), B.ld, 0.0f, nullptr, D.ptr(), N, out, nullptr);
          PGOLF_CUDA_CHECK(cudaGetLastError());
          EXPECT_TRUE(all_close(D.host(), reference(ta, tb, M, N, K, 1.0f, A, B, 0.0f, nullptr), atol_for(K), rtol_for(out)))
              << name(ta, tb, M, N, K, out);
        }
      }
    }
  }
}

TEST_F(Gemm, BetaOneAccumulatesInPlace) {
  GemmEngine engine;
  const std::int64_t M = 33, N = 70, K = 129;
  for (OutType out : {OutType::f32, OutType::bf16}) {
    const bool bf = out == OutType::bf16;
    const HostMat A(M, K, K, 200), B(N, K, K, 201);
    const HostMat C0(M, N, N, 202, /*bf16_values=*/bf);
    auto dA = testing::to_device_bf16(A.v), dB = testing::to_device_bf16(B.v);
    DevOut D(out, C0.v);
    // Twice: D = A·Bᵀ + D, then again.
    for (int rep = 0; rep < 2; ++rep) {
      engine.gemm(Trans::no, Trans::yes, M, N, K, 1.0f, dA.data(), K, dB.data(), K, 1.0f, D.ptr(), D.ptr(), N, out, nullptr);
    }
    PGOLF_CUDA_CHECK(cudaGetLastError());
    // The first result as D holds it (bf16: rounded), then the second accumulation, unrounded.
    auto first = reference(Trans::no, Trans::yes, M, N, K, 1.0f, A, B, 1.0f, &C0.v);
    if (bf) {
      for (auto& v : first) v = round_to_bf16(v);
    }
    const auto want = reference(Trans::no, Trans::yes, M, N, K, 1.0f, A, B, 1.0f, &first);
    // Per element: the accumulation-order noise of two GEMMs, half a bf16 ulp of the final value
    // and, should the first rounding have gone the other way at a near-tie, one ulp of the first.
    const auto got = D.host();
    std::size_t bad = 0, worst = 0;
    double worst_excess = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const double tol = 2 * atol_for(K) + (bf ? kBf16Eps * std::fabs(want[i]) + 2 * kBf16Eps * std::fabs(first[i]) : 1e-5 * std::fabs(want[i]));
      const double excess = std::fabs(static_cast<double>(got[i]) - want[i]) - tol;
      if (!(excess <= 0)) {
        ++bad;
        if (!(excess <= worst_excess)) {
          worst_excess = excess;
          worst = i;
        }
      }
    }
    EXPECT_EQ(bad, 0u) << (bf ? "bf16" : "fp32") << " output: worst at " << worst << ": got " << got[worst] << ", expected "
                       << want[worst] << " (first accumulation " << first[worst] << ")";
  }
}

TEST_F(Gemm, AlphaBetaWithSeparateC) {
  GemmEngine engine;
  const std::int64_t M = 45, N = 31, K = 66;
  const float alpha = 0.5f, beta = -1.25f;
  for (OutType out : {OutType::f32, OutType::bf16}) {
    const HostMat A(K, M, M, 300), B(K, N, N, 301);  // op(A) = Aᵀ, op(B) = B
    const HostMat C(M, N, N, 302, out == OutType::bf16);
    auto dA = testing::to_device_bf16(A.v), dB = testing::to_device_bf16(B.v);
    DevOut dC(out, C.v), D(out, std::vector<float>(static_cast<std::size_t>(M * N), 7.0f));
    engine.gemm(Trans::yes, Trans::no, M, N, K, alpha, dA.data(), M, dB.data(), N, beta, dC.ptr(), D.ptr(), N, out, nullptr);
    PGOLF_CUDA_CHECK(cudaGetLastError());
    EXPECT_TRUE(all_close(D.host(), reference(Trans::yes, Trans::no, M, N, K, alpha, A, B, beta, &C.v), atol_for(K, alpha) + 1e-5,
                          rtol_for(out)))
        << (out == OutType::bf16 ? "bf16" : "fp32") << " output";
    EXPECT_TRUE(all_close(dC.host(), C.v, 0, 0)) << "C must not be written";
  }
}

TEST_F(Gemm, StridedBatchOfThree) {
  GemmEngine engine;
  const std::int64_t M = 24, N = 40, K = 56;
  const int count = 3;
  // Strides larger than the matrices (a gap of 64 elements between problems, multiples of 8 keep
  // every problem 16-byte aligned).
  const std::int64_t sa = M * K + 64, sb = N * K + 64, sc = M * N + 64;
  const float alpha = 1.5f, beta = 0.75f;
  for (OutType out : {OutType::bf16, OutType::f32}) {
    std::vector<HostMat> As, Bs, Cs;
    std::vector<float> a(static_cast<std::size_t>(sa * count), kPad), b(static_cast<std::size_t>(sb * count), kPad),
        c(static_cast<std::size_t>(sc * count), 0.0f), d(static_cast<std::size_t>(sc * count), 3.0f);
    for (int i = 0; i < count; ++i) {
      As.emplace_back(M, K, K, 400 + i);
      Bs.emplace_back(N, K, K, 410 + i);  // op(B) = Bᵀ
      Cs.emplace_back(M, N, N, 420 + i, out == OutType::bf16);
      std::copy(As[i].v.begin(), As[i].v.end(), a.begin() + i * sa);
      std::copy(Bs[i].v.begin(), Bs[i].v.end(), b.begin() + i * sb);
      std::copy(Cs[i].v.begin(), Cs[i].v.end(), c.begin() + i * sc);
    }
    auto dA = testing::to_device_bf16(a), dB = testing::to_device_bf16(b);
    DevOut dC(out, c), D(out, d);
    engine.gemm(Trans::no, Trans::yes, M, N, K, alpha, dA.data(), K, dB.data(), K, beta, dC.ptr(), D.ptr(), N, out, nullptr,
                GemmBatch{count, sa, sb, sc});
    PGOLF_CUDA_CHECK(cudaGetLastError());
    const auto got = D.host();
    for (int i = 0; i < count; ++i) {
      const std::vector<float> gi(got.begin() + i * sc, got.begin() + i * sc + M * N);
      EXPECT_TRUE(all_close(gi, reference(Trans::no, Trans::yes, M, N, K, alpha, As[i], Bs[i], beta, &Cs[i].v), atol_for(K, alpha),
                            rtol_for(out)))
          << "problem " << i << (out == OutType::bf16 ? " (bf16 out)" : " (fp32 out)");
      for (std::int64_t k = M * N; k < sc; ++k) ASSERT_EQ(got[static_cast<std::size_t>(i * sc + k)], 3.0f) << "gap after problem " << i;
    }
  }
}

TEST_F(Gemm, StridedBatchWithOddStrides) {
  // Packed 7×5 problems: every problem after the first starts on a 2-byte boundary only, while the
  // base pointers are 256-byte aligned. GemmEngine must declare the alignment of the batch strides
  // too (2 bytes here): had it declared the base pointers' alignment, cuBLASLt would take it to
  // hold for every problem, and this test would see wrong values or a fault.
  GemmEngine engine;
  const std::int64_t M = 7, N = 5, K = 9;
  const int count = 3;
  const std::int64_t sa = M * K, sb = K * N, sc = M * N;
  std::vector<HostMat> As, Bs;
  std::vector<float> a, b;
  for (int i = 0; i < count; ++i) {
    As.emplace_back(M, K, K, 450 + i);
    Bs.emplace_back(K, N, N, 460 + i);
    a.insert(a.end(), As[i].v.begin(), As[i].v.end());
    b.insert(b.end(), Bs[i].v.begin(), Bs[i].v.end());
  }
  auto dA = testing::to_device_bf16(a), dB = testing::to_device_bf16(b);
  cuda::DeviceBuffer<cuda::nv_bf16> D(static_cast<std::size_t>(sc * count), "D");
  engine.gemm(Trans::no, Trans::no, M, N, K, 1.0f, dA.data(), K, dB.data(), N, 0.0f, nullptr, D.data(), N, OutType::bf16, nullptr,
              GemmBatch{count, sa, sb, sc});
  PGOLF_CUDA_CHECK(cudaGetLastError());
  const auto got = testing::to_host_floats(D);
  for (int i = 0; i < count; ++i) {
    const std::vector<float> gi(got.begin() + i * sc, got.begin() + (i + 1) * sc);
    EXPECT_TRUE(all_close(gi, reference(Trans::no, Trans::no, M, N, K, 1.0f, As[i], Bs[i], 0.0f, nullptr), atol_for(K),
                          rtol_for(OutType::bf16)))
        << "problem " << i;
  }
}

TEST_F(Gemm, LinearHelpersWithPaddedRows) {
  GemmEngine engine;
  const std::int64_t n = 50, in = 72, out = 40;
  const std::int64_t ldx = in + 8, ldy = out + 16, lddx = in + 24;  // non-packed row strides
  const HostMat x(n, in, ldx, 500), W(out, in, in, 501), dy(n, out, ldy, 502);
  auto d_x = testing::to_device_bf16(x.v), d_W = testing::to_device_bf16(W.v), d_dy = testing::to_device_bf16(dy.v);

  // forward y[n, out] = x · Wᵀ, into a padded fp32 and a padded bf16 output.
  for (OutType t : {OutType::f32, OutType::bf16}) {
    DevOut y(t, std::vector<float>(static_cast<std::size_t>(n * ldy), kPad));
    engine.linear_forward(y.ptr(), t, d_x.data(), d_W.data(), n, in, out, nullptr, ldx, ldy);
    PGOLF_CUDA_CHECK(cudaGetLastError());
    const auto got = y.host();
    EXPECT_TRUE(all_close(packed(got, n, out, ldy), reference(Trans::no, Trans::yes, n, out, in, 1.0f, x, W, 0.0f, nullptr), atol_for(in),
                          rtol_for(t)))
        << "linear_forward";
    EXPECT_TRUE(padding_untouched(got, n, out, ldy)) << "linear_forward";
  }

  // backward input dx[n, in] = dy · W, then accumulated once more (+=), fp32.
  {
    const HostMat start(n, in, lddx, 503, false);  // overwritten: its values must not leak into the result
    DevOut dx(OutType::f32, start.v);
    engine.linear_backward_input(dx.ptr(), OutType::f32, d_dy.data(), d_W.data(), n, in, out, /*accumulate=*/false, nullptr, ldy, lddx);
    auto want = reference(Trans::no, Trans::no, n, in, out, 1.0f, dy, W, 0.0f, nullptr);
    auto got = dx.host();
    EXPECT_TRUE(all_close(packed(got, n, in, lddx), want, atol_for(out), 1e-5)) << "linear_backward_input (overwrite)";
    EXPECT_TRUE(padding_untouched(got, n, in, lddx)) << "linear_backward_input";
    engine.linear_backward_input(dx.ptr(), OutType::f32, d_dy.data(), d_W.data(), n, in, out, /*accumulate=*/true, nullptr, ldy, lddx);
    for (auto& v : want) v *= 2.0f;
    got = dx.host();
    EXPECT_TRUE(all_close(packed(got, n, in, lddx), want, 2 * atol_for(out), 1e-5)) << "linear_backward_input (accumulate)";
  }

  // backward weight dW[out, in] += dyᵀ · x (fp32 accumulation into a non-zero gradient).
  {
    const HostMat dW0(out, in, in, 504, false);
    auto d_dW = testing::to_device_f32(dW0.v);
    engine.linear_backward_weight(d_dW.data(), d_dy.data(), d_x.data(), n, in, out, nullptr, ldy, ldx);
    PGOLF_CUDA_CHECK(cudaGetLastError());
    const auto want = reference(Trans::yes, Trans::no, out, in, n, 1.0f, dy, x, 1.0f, &dW0.v);
    EXPECT_TRUE(all_close(testing::to_host_floats(d_dW), want, atol_for(n), 1e-5)) << "linear_backward_weight";
  }
}

TEST_F(Gemm, PlansAreCachedPerShape) {
  GemmEngine engine;
  const HostMat A(16, 32, 32, 600), B(24, 32, 32, 601);
  auto dA = testing::to_device_bf16(A.v), dB = testing::to_device_bf16(B.v);
  cuda::DeviceBuffer<float> D(16 * 24, "D");
  for (int i = 0; i < 3; ++i) engine.linear_forward(D.data(), OutType::f32, dA.data(), dB.data(), 16, 32, 24, nullptr);
  EXPECT_EQ(engine.cached_plans(), 1u);
  engine.linear_forward(D.data(), OutType::f32, dA.data(), dB.data(), 8, 32, 24, nullptr);
  EXPECT_EQ(engine.cached_plans(), 2u);
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace pgolf
