// The embedding gather and its deterministic backward against cpu::embedding_forward/backward.
//
// The backward is compared BIT FOR BIT: both backends add the rows of dout into dtable[v, :] one at
// a time in increasing position n, starting from dtable's value, in fp32 (the CPU's `row[i] += g[i]`
// and the GPU's `acc += g[u]` are the same chain of IEEE additions; no multiplications, so no FMA
// contraction can differ), hence the same bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/core/numeric_types.hpp"
#include "pgolf/core/philox.hpp"
#include "pgolf/ops/cuda/embedding.cuh"
#include "pgolf/ops/embedding.hpp"

namespace pgolf {
namespace {

// Skewed ids: id = floor(span · u⁴) maps most positions to a few small ids (id 0 gets ~22% of
// them: thousands of repeats at n = 65,536), and only even ids are used, so odd ids (and every id
// ≥ span) never occur.
std::vector<std::int32_t> skewed_ids(std::int64_t n, int rows, std::uint64_t stream) {
  const RandomStream rng(20240520, stream);
  const int span = rows * 7 / 8;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const double u = rng.uniform(static_cast<std::uint64_t>(i));
    ids[i] = 2 * (static_cast<std::int32_t>(span * u * u * u * u) / 2);
  }
  return ids;
}

cuda::DeviceBuffer<std::int32_t> to_device_ids(const std::vector<std::int32_t>& ids) {
  cuda::DeviceBuffer<std::int32_t> d(ids.size(), "ids");
  if (!ids.empty()) PGOLF_CUDA_CHECK(cudaMemcpy(d.data(), ids.data(), ids.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice));
  return d;
}

// Bitwise comparison that names the first differing element.
::testing::AssertionResult same_bits(const std::vector<float>& got, const std::vector<float>& want, int width) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  std::size_t diff = 0, first = got.size();
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (float_to_bits(got[i]) != float_to_bits(want[i])) {
      if (diff++ == 0) first = i;
    }
  }
  if (diff == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << diff << " of " << got.size() << " values differ in their bits; first at row " << first / width
                                       << ", column " << first % width << ": got " << got[first] << ", expected " << want[first]
                                       << " (difference " << got[first] - want[first] << ")";
}

template <int D>
void check_forward(std::int64_t n, int rows) {
  SCOPED_TRACE("D=" + std::to_string(D) + " n=" + std::to_string(n) + " rows=" + std::to_string(rows));
  const std::vector<float> table = testing::normal_floats(static_cast<std::size_t>(rows) * D, 21);
  const std::vector<std::int32_t> ids = skewed_ids(n, rows, 22);
  std::vector<float> want(static_cast<std::size_t>(n * D));
  cpu::embedding_forward<D>(want.data(), table.data(), ids.data(), n, rows);
  auto d_table = testing::to_device_f32(table, "table");
  auto d_ids = to_device_ids(ids);
  cuda::DeviceBuffer<float> d_out(static_cast<std::size_t>(n * D), "out");
  cuda::embedding_forward<D>(d_out.data(), d_table.data(), d_ids.data(), n, nullptr);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  EXPECT_TRUE(same_bits(testing::to_host_floats(d_out), want, D));  // a copy: exact
}

template <int D>
void check_backward(std::int64_t n, int rows, cuda::EmbeddingGradPlan& plan) {
  SCOPED_TRACE("D=" + std::to_string(D) + " n=" + std::to_string(n) + " rows=" + std::to_string(rows));
  const std::vector<std::int32_t> ids = skewed_ids(n, rows, 23 + static_cast<std::uint64_t>(n));
  const std::vector<float> dout = testing::normal_floats(static_cast<std::size_t>(n * D), 24);
  const std::vector<float> dtable0 = testing::normal_floats(static_cast<std::size_t>(rows) * D, 25, 0.01f);  // the backward adds to it
  std::vector<float> want = dtable0;
  cpu::embedding_backward<D>(want.data(), dout.data(), ids.data(), n, rows);

  auto d_ids = to_device_ids(ids);
  auto d_dout = testing::to_device_f32(dout, "dout");
  auto d_dtable = testing::to_device_f32(dtable0, "dtable");
  plan.prepare(d_ids.data(), n, nullptr);
  ASSERT_EQ(plan.n(), n);
  cuda::embedding_backward<D>(d_dtable.data(), d_dout.data(), plan, nullptr);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  const std::vector<float> got = testing::to_host_floats(d_dtable);
  EXPECT_TRUE(same_bits(got, want, D)) << "GPU and CPU add the same rows in the same order";

  // The plan's grouping: positions increasing within each id, segments as the CPU's counting sort.
  std::vector<std::int32_t> pos(static_cast<std::size_t>(n)), starts(static_cast<std::size_t>(rows) + 1);
  if (n > 0) PGOLF_CUDA_CHECK(cudaMemcpy(pos.data(), plan.sorted_positions(), pos.size() * sizeof(std::int32_t), cudaMemcpyDeviceToHost));
  PGOLF_CUDA_CHECK(cudaMemcpy(starts.data(), plan.segment_starts(), starts.size() * sizeof(std::int32_t), cudaMemcpyDeviceToHost));
  std::vector<std::int32_t> want_starts(static_cast<std::size_t>(rows) + 1, 0);
  for (const std::int32_t id : ids) ++want_starts[static_cast<std::size_t>(id) + 1];
  for (int v = 0; v < rows; ++v) want_starts[v + 1] += want_starts[v];
  EXPECT_EQ(starts, want_starts) << "segment starts";
  std::vector<std::int32_t> want_pos(static_cast<std::size_t>(n));
  std::vector<std::int32_t> fill(want_starts.begin(), want_starts.end() - 1);
  for (std::int64_t r = 0; r < n; ++r) want_pos[static_cast<std::size_t>(fill[ids[r]]++)] = static_cast<std::int32_t>(r);
  EXPECT_EQ(pos, want_pos) << "sorted positions (stable: increasing within an id)";

  // Determinism: the same backward from the same dtable gives the same bits.
  auto d_dtable2 = testing::to_device_f32(dtable0, "dtable (second run)");
  cuda::embedding_backward<D>(d_dtable2.data(), d_dout.data(), plan, nullptr);
  EXPECT_TRUE(same_bits(testing::to_host_floats(d_dtable2), got, D)) << "two runs differ";
}

class EmbeddingGpu : public testing::GpuTest {};

TEST_F(EmbeddingGpu, ForwardIsAnExactGather) {
  check_forward<16>(1000, 1024);
  check_forward<512>(65536, 1024);  // the baseline: N = 64 × 1024 tokens, D = 512
  check_forward<6>(777, 50);        // D % 4 != 0: the scalar path
}

TEST_F(EmbeddingGpu, ForwardScalarPathOnMisalignedRows) {
  // out offset by one float: not 16-byte aligned, so the 4-float copies are not allowed.
  constexpr int D = 16;
  const std::int64_t n = 333;
  const std::vector<float> table = testing::normal_floats(1024 * D, 26);
  const std::vector<std::int32_t> ids = skewed_ids(n, 1024, 27);
  std::vector<float> want(static_cast<std::size_t>(n * D));
  cpu::embedding_forward<D>(want.data(), table.data(), ids.data(), n, 1024);
  auto d_table = testing::to_device_f32(table, "table");
  auto d_ids = to_device_ids(ids);
  cuda::DeviceBuffer<float> d_out(static_cast<std::size_t>(n * D) + 1, "out");
  cuda::embedding_forward<D>(d_out.data() + 1, d_table.data(), d_ids.data(), n, nullptr);
  PGOLF_CUDA_CHECK(cudaGetLastError());
  std::vector<float> got = testing::to_host_floats(d_out);
  got.erase(got.begin());
  EXPECT_TRUE(same_bits(got, want, D));
}

TEST_F(EmbeddingGpu, BackwardIsBitwiseTheCpuOrder) {
  cuda::EmbeddingGradPlan plan(65536, 1024);  // one plan, reused for batches of different sizes
  check_backward<16>(1, 1024, plan);
  check_backward<16>(1000, 1024, plan);
  check_backward<16>(65536, 1024, plan);
  check_backward<512>(65536, 1024, plan);  // the baseline shapes; id 0 repeats ~14,000 times
  check_backward<512>(4097, 1024, plan);
  check_backward<16>(0, 1024, plan);  // nothing to add
}

TEST_F(EmbeddingGpu, BackwardIntoAHashedTable) {
  // Any index array into any number of rows (the model's hashed n-gram tables): rows not a power of two.
  cuda::EmbeddingGradPlan plan(3 * 4096, 4099);
  check_backward<16>(3 * 4096, 4099, plan);
}

TEST_F(EmbeddingGpu, PlanRejectsTooManyPositions) {
  cuda::EmbeddingGradPlan plan(100, 8);
  cuda::DeviceBuffer<std::int32_t> ids(101, "ids");
  EXPECT_THROW(plan.prepare(ids.data(), 101, nullptr), Error);
}

}  // namespace
}  // namespace pgolf
