// Every CUDA header of pgolf, for the two translation units of test_cuda_link_units
// (link_units_main.cu, link_units_other.cu).
#pragma once

#include "pgolf/core/cuda_runtime.cuh"
#include "pgolf/model/gpt_cuda.cuh"
#include "pgolf/ops/cuda/attention.cuh"
#include "pgolf/ops/cuda/channel_ops.cuh"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/embedding.cuh"
#include "pgolf/ops/cuda/features_attention.cuh"
#include "pgolf/ops/cuda/features_embedding.cuh"
#include "pgolf/ops/cuda/gemm.cuh"
#include "pgolf/ops/cuda/mma.cuh"
#include "pgolf/ops/cuda/qk_norm_rope.cuh"
#include "pgolf/ops/cuda/reduce.cuh"
#include "pgolf/ops/cuda/rmsnorm.cuh"
#include "pgolf/ops/cuda/rowwise.cuh"
#include "pgolf/ops/cuda/scalar_ops.cuh"
#include "pgolf/ops/cuda/softcap_cross_entropy.cuh"
#include "pgolf/optim/cuda/newton_schulz.cuh"
#include "pgolf/optim/cuda/optimizer.cuh"
#include "pgolf/run/cuda_backend.cuh"

namespace pgolf::link_test {
// Defined once in each unit: the unit's name, so the test can show that both are in the binary.
const char* main_unit_name();
const char* other_unit_name();
}  // namespace pgolf::link_test
