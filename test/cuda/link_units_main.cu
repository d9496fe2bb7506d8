// Two nvcc translation units that both include every CUDA header of pgolf, linked into one binary.
// The check is the link itself, so it runs in CI without a GPU: a header that defines a
// non-template __global__ function or a non-inline function (nvcc ignores `inline` on kernels)
// gives a "multiple definition" error here, as it would in a user's program that includes pgolf's
// headers from two .cu files (or links two models' backends). The test case then confirms that
// both units' code is in the binary.
#include <gtest/gtest.h>

#include <string>

#include "link_units.cuh"

namespace pgolf::link_test {
const char* main_unit_name() { return "link_units_main.cu"; }
}  // namespace pgolf::link_test

TEST(CudaHeaders, LinkFromTwoTranslationUnits) {
  EXPECT_EQ(std::string(pgolf::link_test::main_unit_name()), "link_units_main.cu");
  EXPECT_EQ(std::string(pgolf::link_test::other_unit_name()), "link_units_other.cu");
}
