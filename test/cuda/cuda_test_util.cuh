// Shared pieces of the CUDA tests: skip cleanly when no GPU is present.
#pragma once

#include <gtest/gtest.h>

#include "pgolf/core/cuda_runtime.cuh"

namespace pgolf::testing {

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device (or no driver) on this machine";
  }
};

}  // namespace pgolf::testing
