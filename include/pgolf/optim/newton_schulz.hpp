// Muon's orthogonalisation: the quintic Newton–Schulz iteration of the reference
// (zeropower_via_newtonschulz5, from modded-nanogpt):
//   X = G / (‖G‖_F + 1e-7);  if rows > cols: X = Xᵀ
//   repeat steps:  A = X Xᵀ;  B = b·A + (c·A)·A;  X = a·X + B·X     (a, b, c) = (3.4445, −4.7750, 2.0315)
// (Python evaluates `c * A @ A` left to right: the scalar multiplies A before the product.)
// The reference runs it in bfloat16. Precision::bf16 reproduces that by rounding every
// intermediate to bf16 (GEMMs accumulate in fp32 and round their output, as cuBLAS and oneDNN
// do); Precision::fp32 keeps everything in float.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "pgolf/core/numeric_types.hpp"
#include "pgolf/ops/gemm.hpp"

namespace pgolf {

enum class NsPrecision : std::uint8_t { bf16, fp32 };

inline constexpr float kNsA = 3.4445f, kNsB = -4.7750f, kNsC = 2.0315f;  // zeropower_via_newtonschulz5
inline constexpr float kNsNormEps = 1e-7f;

// G (rows × cols) → out (rows × cols), the approximately orthogonalised update.
inline void newton_schulz5(float* out, const float* G, std::int64_t rows, std::int64_t cols, int steps, NsPrecision precision) {
  const bool bf = precision == NsPrecision::bf16;
  auto rnd = [bf](float v) { return bf ? round_to_bf16(v) : v; };
  const bool transposed = rows > cols;
  const std::int64_t m = transposed ? cols : rows, n = transposed ? rows : cols;  // X is m × n, m <= n
  const std::int64_t count = rows * cols;
  std::vector<float> X(static_cast<std::size_t>(count)), A(static_cast<std::size_t>(m * m)), cA(A.size()), B(A.size()),
      cAA(A.size()), BX(X.size());
  double ss = 0;
  for (std::int64_t i = 0; i < count; ++i) {
    const float g = rnd(G[i]);
    ss += static_cast<double>(g) * g;
  }
  const float denom = rnd(rnd(static_cast<float>(std::sqrt(ss))) + kNsNormEps);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) {
      const float v = rnd(rnd(G[r * cols + c]) / denom);
      if (transposed) X[c * rows + r] = v;
      else X[r * cols + c] = v;
    }
  }
  for (int s = 0; s < steps; ++s) {
    cpu::gemm(cpu::Trans::no, cpu::Trans::yes, m, m, n, X.data(), n, X.data(), n, A.data(), m, false);  // A = X Xᵀ
    for (auto& v : A) v = rnd(v);
    for (std::size_t i = 0; i < A.size(); ++i) cA[i] = rnd(kNsC * A[i]);
    cpu::gemm(cpu::Trans::no, cpu::Trans::no, m, m, m, cA.data(), m, A.data(), m, cAA.data(), m, false);  // (c·A)·A
    for (std::size_t i = 0; i < A.size(); ++i) B[i] = rnd(rnd(kNsB * A[i]) + rnd(cAA[i]));
    cpu::gemm(cpu::Trans::no, cpu::Trans::no, m, n, m, B.data(), m, X.data(), n, BX.data(), n, false);  // B·X
    for (std::size_t i = 0; i < X.size(); ++i) X[i] = rnd(rnd(kNsA * X[i]) + rnd(BX[i]));
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < cols; ++c) out[r * cols + c] = transposed ? X[c * rows + r] : X[r * cols + c];
  }
}

}  // namespace pgolf
