// Dense linear algebra in double precision for initialisation schemes: orthonormal columns
// (OrthoInit) and the singular value decomposition (the overtone embedding). They run once per
// model; they are written for clarity and reasonable speed (contiguous vectors, pairs of columns
// processed in parallel), not for peak FLOP/s. Results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "pgolf/core/error.hpp"
#include "pgolf/core/parallel.hpp"

namespace pgolf::cpu {

namespace linalg_detail {
inline double dot(const double* a, const double* b, std::int64_t n) {
  double s = 0;
  for (std::int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
}  // namespace linalg_detail

// Orthonormalises the n columns of a row-major m×n matrix (m >= n) in place: the Q of A = QR with
// a positive diagonal in R, torch.nn.init.orthogonal_'s sign convention. Classical Gram–Schmidt
// applied twice ("CGS2"), which is as accurate as modified Gram–Schmidt and parallel per column.
inline void orthonormalize_columns(std::vector<double>& a, std::int64_t m, std::int64_t n) {
  PGOLF_CHECK(m >= n, "orthonormalize_columns needs at least as many rows as columns (" << m << " x " << n << ")");
  std::vector<double> q(static_cast<std::size_t>(m * n));  // column-major: column j at q + j·m
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) q[j * m + i] = a[i * n + j];
  std::vector<double> coef(static_cast<std::size_t>(n));
  for (std::int64_t j = 0; j < n; ++j) {
    double* col = q.data() + j * m;
    for (int pass = 0; pass < 2; ++pass) {
      parallel_for(0, j, 32, [&](std::int64_t k0, std::int64_t k1) {
        for (std::int64_t k = k0; k < k1; ++k) coef[k] = linalg_detail::dot(q.data() + k * m, col, m);
      });
      parallel_for(0, m, 4096, [&](std::int64_t i0, std::int64_t i1) {
        for (std::int64_t k = 0; k < j; ++k) {
          const double c = coef[k];
          const double* qk = q.data() + k * m;
          for (std::int64_t i = i0; i < i1; ++i) col[i] -= c * qk[i];
        }
      });
    }
    const double norm = std::sqrt(linalg_detail::dot(col, col, m));
    PGOLF_CHECK(norm > 0, "orthonormalize_columns: column " << j << " is linearly dependent");
    for (std::int64_t i = 0; i < m; ++i) col[i] /= norm;
  }
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) a[i * n + j] = q[j * m + i];
}

// Singular value decomposition of a row-major m×n matrix W (m >= n) by one-sided Jacobi: column
// rotations V make the columns of B = W V mutually orthogonal, so that B = U S. Returns the
// singular values in descending order, B's columns (column-major, b + k·m, matching the values)
// and V's columns (column-major, v + k·n).
struct Svd {
  std::vector<double> s, b, v;
};

inline Svd svd_one_sided_jacobi(const std::vector<double>& w, std::int64_t m, std::int64_t n) {
  PGOLF_CHECK(m >= n, "svd_one_sided_jacobi needs at least as many rows as columns");
  std::vector<double> b(static_cast<std::size_t>(m * n)), v(static_cast<std::size_t>(n * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) b[j * m + i] = w[i * n + j];
  for (std::int64_t j = 0; j < n; ++j) v[j * n + j] = 1.0;
  // Round-robin tournament: each round pairs every column with another exactly once, so a round's
  // rotations touch disjoint columns and run in parallel.
  const std::int64_t players = n + (n % 2);
  std::vector<std::int64_t> ring(static_cast<std::size_t>(players));
  constexpr int kMaxSweeps = 40;
  constexpr double kTolerance = 1e-15;
  for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
    std::iota(ring.begin(), ring.end(), 0);
    std::vector<int> rotated(static_cast<std::size_t>(players / 2), 0);
    int any = 0;
    for (std::int64_t round = 0; round < players - 1; ++round) {
      parallel_for(0, players / 2, 1, [&](std::int64_t p0, std::int64_t p1) {
        for (std::int64_t p = p0; p < p1; ++p) {
          std::int64_t x = ring[p], y = ring[players - 1 - p];
          if (x >= n || y >= n) continue;
          if (x > y) std::swap(x, y);
          double* bx = b.data() + x * m;
          double* by = b.data() + y * m;
          const double alpha = linalg_detail::dot(bx, bx, m), beta = linalg_detail::dot(by, by, m), gamma = linalg_detail::dot(bx, by, m);
          if (std::fabs(gamma) <= kTolerance * std::sqrt(alpha * beta) || gamma == 0.0) continue;
          rotated[p] = 1;
          const double zeta = (beta - alpha) / (2 * gamma);
          const double t = (zeta >= 0 ? 1.0 : -1.0) / (std::fabs(zeta) + std::sqrt(1 + zeta * zeta));
          const double c = 1 / std::sqrt(1 + t * t), s = c * t;
          for (std::int64_t i = 0; i < m; ++i) {
            const double u = bx[i], z = by[i];
            bx[i] = c * u - s * z;
            by[i] = s * u + c * z;
          }
          double* vx = v.data() + x * n;
          double* vy = v.data() + y * n;
          for (std::int64_t i = 0; i < n; ++i) {
            const double u = vx[i], z = vy[i];
            vx[i] = c * u - s * z;
            vy[i] = s * u + c * z;
          }
        }
      });
      // Rotate the ring, keeping position 0 fixed.
      std::rotate(ring.begin() + 1, ring.end() - 1, ring.end());
    }
    for (int r : rotated) any |= r;
    if (!any) break;
  }
  Svd out;
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::vector<double> norms(static_cast<std::size_t>(n));
  for (std::int64_t j = 0; j < n; ++j) norms[j] = std::sqrt(linalg_detail::dot(b.data() + j * m, b.data() + j * m, m));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t x, std::int64_t y) { return norms[x] > norms[y]; });
  out.s.resize(static_cast<std::size_t>(n));
  out.b.resize(b.size());
  out.v.resize(v.size());
  for (std::int64_t k = 0; k < n; ++k) {
    out.s[k] = norms[order[k]];
    std::copy_n(b.data() + order[k] * m, m, out.b.data() + k * m);
    std::copy_n(v.data() + order[k] * n, n, out.v.data() + k * n);
  }
  return out;
}

}  // namespace pgolf::cpu
