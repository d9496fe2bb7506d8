// The second translation unit of test_cuda_link_units (see link_units_main.cu).
#include "link_units.cuh"

namespace pgolf::link_test {
const char* other_unit_name() { return "link_units_other.cu"; }
}  // namespace pgolf::link_test
