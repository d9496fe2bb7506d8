// Finite-difference gradient checking in double precision for the CPU ops and the model.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "pgolf/core/philox.hpp"

namespace pgolf::testing {

// Fills v with N(0, std) draws from stream `stream` of seed 20240520.
inline void fill_normal(std::vector<double>& v, std::uint64_t stream, double std = 1.0) {
  const RandomStream rng(20240520, stream);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = std * rng.normal(i);
}

inline std::vector<double> normal_vector(std::size_t n, std::uint64_t stream, double std = 1.0) {
  std::vector<double> v(n);
  fill_normal(v, stream, std);
  return v;
}

// Central differences of f at x for up to max_checks coordinates (spread over the vector),
// compared with grad: |numeric − analytic| <= atol + rtol·max(|numeric|, |analytic|).
inline void expect_gradient_matches(const std::function<double()>& f, std::vector<double>& x, const std::vector<double>& grad,
                                    const char* what, int max_checks = 64, double h = 1e-5, double rtol = 1e-6,
                                    double atol = 1e-8) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  const std::size_t n = x.size();
  const std::size_t stride = std::max<std::size_t>(1, n / static_cast<std::size_t>(max_checks));
  int failures = 0;
  for (std::size_t i = (stride > 1 ? stride / 2 : 0); i < n; i += stride) {
    const double saved = x[i];
    x[i] = saved + h;
    const double fp = f();
    x[i] = saved - h;
    const double fm = f();
    x[i] = saved;
    const double numeric = (fp - fm) / (2 * h);
    const double tol = atol + rtol * std::max(std::fabs(numeric), std::fabs(grad[i]));
    if (std::fabs(numeric - grad[i]) > tol && ++failures <= 5) {
      ADD_FAILURE() << what << "[" << i << "]: numeric " << numeric << " analytic " << grad[i] << " (tol " << tol << ")";
    }
  }
  EXPECT_EQ(failures, 0) << what;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace pgolf::testing
