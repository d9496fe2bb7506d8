// The core types on the device: the Philox stream and the 16-bit conversions give the same bits
// as on the host, so that a model initialised on either backend is identical.
#include <gtest/gtest.h>

#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/core/philox.hpp"

namespace pgolf {
namespace {

__global__ void draw(RandomStream rng, std::uint32_t* bits, float* uni, float* nrm, std::uint32_t* below, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  bits[i] = rng.bits(static_cast<std::uint64_t>(i)).v[i % 4];
  uni[i] = rng.uniform(static_cast<std::uint64_t>(i));
  nrm[i] = rng.normal(static_cast<std::uint64_t>(i));
  below[i] = rng.below(static_cast<std::uint64_t>(i), 1000u + static_cast<std::uint32_t>(i));
}

__global__ void convert(const float* in, std::uint16_t* b, std::uint16_t* h, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  b[i] = bf16::from_float(in[i]).bits;
  h[i] = f16::from_float(in[i]).bits;
}

class CoreGpu : public testing::GpuTest {};

TEST_F(CoreGpu, PhiloxIsBitIdenticalOnHostAndDevice) {
  constexpr int n = 1 << 16;
  cuda::DeviceBuffer<std::uint32_t> bits(n, "bits"), below(n, "below");
  cuda::DeviceBuffer<float> uni(n, "uniform"), nrm(n, "normal");
  const RandomStream rng(1337, 42);
  draw<<<(n + 255) / 256, 256>>>(rng, bits.data(), uni.data(), nrm.data(), below.data(), n);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  const auto b = bits.to_host(), be = below.to_host();
  const auto u = uni.to_host(), z = nrm.to_host();
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(b[i], rng.bits(i).v[i % 4]) << i;
    ASSERT_EQ(float_to_bits(u[i]), float_to_bits(rng.uniform(i))) << i;
    ASSERT_EQ(float_to_bits(z[i]), float_to_bits(rng.normal(i))) << i;
    ASSERT_EQ(be[i], rng.below(i, 1000u + static_cast<std::uint32_t>(i))) << i;
  }
}

TEST_F(CoreGpu, SixteenBitConversionsAreBitIdenticalOnHostAndDevice) {
  std::vector<float> in;
  for (std::uint64_t u = 0; u <= 0xffffffffull; u += 65537) in.push_back(bits_to_float(static_cast<std::uint32_t>(u)));
  const auto n = static_cast<int>(in.size());
  auto d_in = cuda::to_device<float>(in, "input");
  cuda::DeviceBuffer<std::uint16_t> b(n, "bf16"), h(n, "f16");
  convert<<<(n + 255) / 256, 256>>>(d_in.data(), b.data(), h.data(), n);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  const auto hb = b.to_host(), hh = h.to_host();
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(hb[i], bf16::from_float(in[i]).bits) << i;
    ASSERT_EQ(hh[i], f16::from_float(in[i]).bits) << i;
  }
}

TEST(CoreCuda, DeviceCountIsZeroOrMoreWithoutThrowing) {
  // Runs everywhere (CPU machines included): a missing driver must read as "no GPU".
  EXPECT_GE(cuda::device_count(), 0);
}

}  // namespace
}  // namespace pgolf
