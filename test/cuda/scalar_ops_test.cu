// The CUDA scalar-parameter ops (ops/cuda/scalar_ops.cuh) against the CPU oracle: cpu::axpby and
// cpu::dot_all (ops/features.hpp) as gpt_cpu.hpp uses them for the value residual (λ mix, σ(α)),
// the value embedding scale and the hash-embedding scale; copy_rows against a host loop.
//
// Tolerances (u = 2^-24, the fp32 unit roundoff):
//   - element-wise out = a·x + b·y: at most three roundings on the CPU (two products, one sum) and
//     two or three on the GPU (which may fuse one product into the sum), each of at most
//     u·(|a·x| + |b·y|): 3u·(|a·x| + |b·y|) per side. With the sigmoid map, σ(s) itself may differ
//     by 4u·σ per side (expf within 2 ulp on the device): + 8u·σ·|y|. bf16 outputs are one more
//     correctly rounded step (at most 2^-8/(1 + 2^-8) of the value for 8 significant bits):
//     kBf16Eps·|want| + 2·(fp32 bound), kBf16Eps = 2^-8 (rigorous; the rounding alone may use
//     nearly all of the first term).
//   - dot_add: both sides sum exact fp64 products in fp64 (relative 2^-53 per addition, so at most
//     count·2^-53·Σ|x·y| apart: far below fp32), then round once to fp32 and add once in fp32:
//     2u·(|dst0| + |term|) + u·|want|. With the sigmoid map the factor σ(1 − σ) has relative
//     error <= 16u·(1 + e^|s|) (1 − σ cancels for large s).
//   - copy_rows: a copy or a single conversion (round to nearest even) is exact; an accumulation
//     is one fp32 addition (the host does the same addition) then one rounding: exact as well.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/ops/cuda/scalar_ops.cuh"
#include "pgolf/ops/features.hpp"

namespace pgolf {
namespace {

using cuda::nv_bf16;
using cuda::ScalarMap;
using testing::all_close;
using testing::bf16_rounded;
using testing::kBf16Eps;
using testing::normal_floats;
using testing::same_bits;
using testing::to_device_bf16;
using testing::to_device_f32;
using testing::to_host_floats;
using testing::within;

using testing::kU;  // fp32 unit roundoff

class ScalarOpsGpu : public testing::GpuTest {};

template <class T>
constexpr bool kBf16 = std::is_same_v<T, nv_bf16>;

template <class T>
const char* type_name() {
  return kBf16<T> ? "bf16" : "fp32";
}

// Host values a tensor of type T holds (bf16: rounded).
template <class T>
std::vector<float> as_stored(std::vector<float> v) {
  if constexpr (kBf16<T>) v = bf16_rounded(v);
  return v;
}

// A device tensor of `count` values of type T at element `offset` of its allocation (offset 1
// misaligns it: the one-element path). The first `offset` elements hold `pad`.
template <class T>
struct DevTensor {
  cuda::DeviceBuffer<T> buf;
  int offset = 0;
  T* data() { return buf.data() + offset; }
};

template <class T>
DevTensor<T> upload(const std::vector<float>& v, int offset, const char* what) {
  std::vector<float> padded(v.size() + static_cast<std::size_t>(offset), 0.0f);
  std::copy(v.begin(), v.end(), padded.begin() + offset);
  if constexpr (kBf16<T>) {
    return DevTensor<T>{to_device_bf16(padded, what), offset};
  } else {
    return DevTensor<T>{to_device_f32(padded, what), offset};
  }
}

template <class T>
std::vector<float> download(const DevTensor<T>& t) {
  auto all = to_host_floats(t.buf);
  return std::vector<float>(all.begin() + t.offset, all.end());
}

enum class Alias { none, out_is_x, out_is_y };

const char* alias_name(Alias a) { return a == Alias::none ? "" : (a == Alias::out_is_x ? ", out == x" : ", out == y"); }

// ------------------------------------------------------------------------------ element-wise ops
enum class Op { add_scaled, axpby, scale_by };

// One element-wise check: op on `count` elements at element offset `offset`, against cpu::axpby.
// Scalars: s = a (add_scaled's s, axpby's a, scale_by's s), b (axpby only).
template <class Out, class X, class Y>
void check_elementwise(Op op, ScalarMap map, std::int64_t count, int offset, Alias alias, float a, float b) {
  SCOPED_TRACE(::testing::Message() << (op == Op::add_scaled ? "add_scaled" : op == Op::axpby ? "axpby" : "scale_by") << "<"
                                    << type_name<Out>() << ", " << type_name<X>() << ", " << type_name<Y>() << ">"
                                    << (map == ScalarMap::sigmoid ? " sigmoid" : "") << ", count = " << count
                                    << ", offset = " << offset << alias_name(alias) << ", a = " << a << ", b = " << b);
  if constexpr (!std::is_same_v<Out, X>) ASSERT_NE(alias, Alias::out_is_x) << "aliasing needs equal types";
  if constexpr (!std::is_same_v<Out, Y>) ASSERT_NE(alias, Alias::out_is_y) << "aliasing needs equal types";
  const auto n = static_cast<std::size_t>(count);
  const auto x = as_stored<X>(normal_floats(n, 401, 2.0f));
  const auto y = as_stored<Y>(normal_floats(n, 402));
  // The oracle: out = ca·x + cb·y with the coefficients as the model's CPU code forms them.
  float ca = 1.0f, cb = 0.0f;
  switch (op) {
    case Op::add_scaled: ca = 1.0f, cb = map == ScalarMap::sigmoid ? cpu::sigmoid(a) : a; break;
    case Op::axpby: ca = a, cb = b; break;
    case Op::scale_by: ca = a, cb = 0.0f; break;
  }
  std::vector<float> want(n);
  cpu::axpby(want.data(), ca, x.data(), cb, y.data(), count);
  const double sig_err = map == ScalarMap::sigmoid ? 8 * kU * std::fabs(cb) : 0.0;
  std::vector<double> bound(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double mag = std::fabs(static_cast<double>(ca) * x[i]) + std::fabs(static_cast<double>(cb) * y[i]);
    const double e = 3 * kU * mag + sig_err * std::fabs(y[i]);
    bound[i] = kBf16<Out> ? kBf16Eps * std::fabs(want[i]) + 2 * e : 2 * e;
  }

  auto d_x = upload<X>(x, offset, "x");
  auto d_y = upload<Y>(y, offset, "y");
  auto d_a = to_device_f32(std::vector<float>{a}, "a");
  auto d_b = to_device_f32(std::vector<float>{b}, "b");
  DevTensor<Out> d_out;
  Out* out = nullptr;
  if constexpr (std::is_same_v<Out, X>) {
    if (alias == Alias::out_is_x) out = d_x.data();
  }
  if constexpr (std::is_same_v<Out, Y>) {
    if (alias == Alias::out_is_y) out = d_y.data();
  }
  if (alias == Alias::none) {
    d_out = upload<Out>(std::vector<float>(n, 0.0f), offset, "out");
    out = d_out.data();
  }
  switch (op) {
    case Op::add_scaled: cuda::add_scaled(out, d_x.data(), d_a.data(), map, d_y.data(), count, nullptr); break;
    case Op::axpby: cuda::axpby(out, d_a.data(), d_x.data(), d_b.data(), d_y.data(), count, nullptr); break;
    case Op::scale_by: cuda::scale_by(out, d_a.data(), d_x.data(), count, nullptr); break;
  }
  std::vector<float> got;
  if constexpr (std::is_same_v<Out, X>) {
    if (alias == Alias::out_is_x) got = download(d_x);
  }
  if constexpr (std::is_same_v<Out, Y>) {
    if (alias == Alias::out_is_y) got = download(d_y);
  }
  if (alias == Alias::none) got = download(d_out);
  EXPECT_TRUE(within(got, want, bound, 1)) << "element-wise result";
}

TEST_F(ScalarOpsGpu, AddScaledMatchesCpu) {
  // v += σ(α)·v0_raw (value residual α), bf16 values, in place.
  check_elementwise<nv_bf16, nv_bf16, nv_bf16>(Op::add_scaled, ScalarMap::sigmoid, 65536 * 256 / 16, 0, Alias::out_is_x, -0.7f, 0);
  check_elementwise<nv_bf16, nv_bf16, nv_bf16>(Op::add_scaled, ScalarMap::sigmoid, 1001, 1, Alias::out_is_y, 5.0f, 0);  // misaligned + tail
  // gv0 += λ0·gv (fp32 gradients), in place.
  check_elementwise<float, float, float>(Op::add_scaled, ScalarMap::identity, 4099, 0, Alias::out_is_x, 0.5f, 0);
  check_elementwise<float, float, float>(Op::add_scaled, ScalarMap::identity, 3, 3, Alias::none, -1.25f, 0);
  // v_pre = v + s_l·ve_base: bf16 values plus an fp32 embedding term.
  check_elementwise<nv_bf16, nv_bf16, float>(Op::add_scaled, ScalarMap::identity, 5000, 0, Alias::out_is_x, 0.1f, 0);
  check_elementwise<float, nv_bf16, float>(Op::add_scaled, ScalarMap::sigmoid, 777, 1, Alias::out_is_y, 0.3f, 0);
}

TEST_F(ScalarOpsGpu, AxpbyMatchesCpu) {
  // v = λ0·v0 + λ1·v (value residual λ), in place over v.
  check_elementwise<nv_bf16, nv_bf16, nv_bf16>(Op::axpby, ScalarMap::identity, 4096 * 3 + 7, 0, Alias::out_is_y, 0.5f, 0.5f);
  check_elementwise<nv_bf16, nv_bf16, nv_bf16>(Op::axpby, ScalarMap::identity, 999, 1, Alias::out_is_x, -0.3f, 1.7f);
  check_elementwise<float, float, float>(Op::axpby, ScalarMap::identity, 4096, 0, Alias::none, 0.25f, -2.0f);
  check_elementwise<float, nv_bf16, float>(Op::axpby, ScalarMap::identity, 1000, 0, Alias::out_is_y, 1.5f, 0.75f);
}

TEST_F(ScalarOpsGpu, ScaleByMatchesCpu) {
  check_elementwise<float, float, float>(Op::scale_by, ScalarMap::identity, 65536, 0, Alias::out_is_x, 0.37f, 0);  // gv = λ1·gv
  check_elementwise<float, float, float>(Op::scale_by, ScalarMap::identity, 13, 1, Alias::none, -3.0f, 0);
  check_elementwise<nv_bf16, float, float>(Op::scale_by, ScalarMap::identity, 2051, 0, Alias::none, 0.05f, 0);
  check_elementwise<nv_bf16, nv_bf16, nv_bf16>(Op::scale_by, ScalarMap::identity, 2051, 1, Alias::out_is_x, 0.05f, 0);
}

// ------------------------------------------------------------------------------ dot_add
// dst[0] += map'(s)·Σ x·y against the oracle's G += T(dot_all(x, y)·…). s_ptr: whether s is passed.
template <class X, class Y>
void check_dot(std::int64_t count, int offset, bool pass_s, ScalarMap map, float s) {
  SCOPED_TRACE(::testing::Message() << "dot_add<" << type_name<X>() << ", " << type_name<Y>() << ">, count = " << count
                                    << ", offset = " << offset << (pass_s ? "" : ", s = null")
                                    << (map == ScalarMap::sigmoid ? ", sigmoid" : ", identity") << ", s = " << s);
  const auto n = static_cast<std::size_t>(count);
  const auto x = as_stored<X>(normal_floats(n, 411));
  const auto y = as_stored<Y>(normal_floats(n, 412, 0.5f));
  const float dst0 = 3.25f;
  const double dot = cpu::dot_all(x.data(), y.data(), count);
  double term = dot, rel = 0.0;
  if (pass_s && map == ScalarMap::sigmoid) {
    const float sg = cpu::sigmoid(s);
    term = dot * sg * (1 - sg);
    rel = 16 * kU * (1 + std::exp(std::fabs(s)));
  }
  const float want = dst0 + static_cast<float>(term);
  double abs_sum = 0;
  for (std::size_t i = 0; i < n; ++i) abs_sum += std::fabs(static_cast<double>(x[i]) * y[i]);
  const double bound = 2 * kU * (std::fabs(dst0) + std::fabs(term)) + kU * std::fabs(want) + rel * std::fabs(term) +
                       static_cast<double>(count) * 0x1p-52 * abs_sum;

  auto d_x = upload<X>(x, offset, "x");
  auto d_y = upload<Y>(y, offset, "y");
  auto d_s = to_device_f32(std::vector<float>{s}, "s");
  auto d_dst = to_device_f32(std::vector<float>{dst0}, "dst");
  cuda::DeviceBuffer<std::uint8_t> scratch(static_cast<std::size_t>(cuda::dot_add_scratch_bytes(count)), "scratch");
  cuda::dot_add(d_dst.data(), d_x.data(), d_y.data(), count, pass_s ? d_s.data() : nullptr, map, scratch.data(), nullptr);
  const auto got = to_host_floats(d_dst);
  EXPECT_TRUE(within(got, std::vector<float>{want}, std::vector<double>{bound}, 1)) << "dot_add";
}

TEST_F(ScalarOpsGpu, DotAddMatchesCpuDotAll) {
  check_dot<float, float>(1, 0, false, ScalarMap::identity, 0.0f);
  check_dot<float, float>(4095, 0, false, ScalarMap::identity, 0.0f);
  check_dot<float, float>(4096 * 37 + 5, 1, true, ScalarMap::identity, -9.0f);  // identity: map' = 1 whatever s is
  check_dot<float, nv_bf16>(65536 * 256, 0, true, ScalarMap::sigmoid, -0.4f);   // the model's size: d α from gv (fp32) and v0 (bf16)
  check_dot<nv_bf16, nv_bf16>(100003, 1, true, ScalarMap::sigmoid, 2.0f);
  check_dot<nv_bf16, float>(8192, 0, false, ScalarMap::sigmoid, 1.0f);  // s null: factor 1
}

TEST_F(ScalarOpsGpu, DotAddIsBitwiseReproducibleAndPathIndependent) {
  // Two runs give the same bits; so do the 16-byte and the one-element path (same order).
  constexpr std::int64_t count = 65536 * 256;
  const auto x = normal_floats(static_cast<std::size_t>(count), 421);
  const auto y = bf16_rounded(normal_floats(static_cast<std::size_t>(count), 422));
  auto ax = upload<float>(x, 0, "x"), mx = upload<float>(x, 1, "x (misaligned)");
  auto ay = upload<nv_bf16>(y, 0, "y"), my = upload<nv_bf16>(y, 1, "y (misaligned)");
  cuda::DeviceBuffer<std::uint8_t> scratch(static_cast<std::size_t>(cuda::dot_add_scratch_bytes(count)), "scratch");
  std::vector<std::vector<float>> results;
  for (int run = 0; run < 3; ++run) {
    auto dst = to_device_f32(std::vector<float>{0.0f}, "dst");
    if (run < 2) {
      cuda::dot_add(dst.data(), ax.data(), ay.data(), count, nullptr, ScalarMap::identity, scratch.data(), nullptr);
    } else {
      cuda::dot_add(dst.data(), mx.data(), my.data(), count, nullptr, ScalarMap::identity, scratch.data(), nullptr);
    }
    results.push_back(to_host_floats(dst));
  }
  EXPECT_TRUE(same_bits(results[0], results[1])) << "two runs";
  EXPECT_TRUE(same_bits(results[0], results[2])) << "vector vs one-element path";
}

// ------------------------------------------------------------------------------ copy_rows
template <class Dst, class Src>
void check_copy_rows(std::int64_t rows, int width, std::int64_t lds, std::int64_t src_col, std::int64_t ldd, bool accumulate) {
  SCOPED_TRACE(::testing::Message() << "copy_rows<" << type_name<Dst>() << ", " << type_name<Src>() << ">, rows = " << rows
                                    << ", width = " << width << ", lds = " << lds << ", src column " << src_col << ", ldd = " << ldd
                                    << (accumulate ? ", accumulate" : ""));
  const auto src = as_stored<Src>(normal_floats(static_cast<std::size_t>(rows * lds), 431));
  const auto dst0 = as_stored<Dst>(normal_floats(static_cast<std::size_t>(rows * ldd), 432));
  std::vector<float> want = dst0;  // columns >= width stay as they were
  for (std::int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < width; ++c) {
      const float s = src[r * lds + src_col + c];
      float v = accumulate ? dst0[r * ldd + c] + s : s;  // one fp32 addition, as the kernel
      if constexpr (kBf16<Dst>) v = bf16::from_float(v).to_float();
      want[r * ldd + c] = v;
    }
  }
  auto d_src = upload<Src>(src, 0, "src");
  auto d_dst = upload<Dst>(dst0, 0, "dst");
  cuda::copy_rows(d_dst.data(), ldd, d_src.data() + src_col, lds, rows, width, accumulate, nullptr);
  EXPECT_TRUE(all_close(download(d_dst), want, 0, 0)) << "copy_rows must be exact";
}

TEST_F(ScalarOpsGpu, CopyRowsIsExact) {
  // v (bf16) out of the q|k|v rows (H = 8, Hkv = 4, Hd = 64: lds = 1024, v at column 768) and back.
  check_copy_rows<nv_bf16, nv_bf16>(1000, 256, 1024, 768, 256, false);
  check_copy_rows<float, nv_bf16>(1000, 256, 1024, 768, 256, true);   // fp32 accumulation of a bf16 slice
  check_copy_rows<nv_bf16, float>(1000, 256, 256, 0, 1024, false);    // fp32 → bf16 into a wider row
  check_copy_rows<nv_bf16, nv_bf16>(77, 8, 24, 16, 8, true);          // tiny sizes, bf16 accumulation
  check_copy_rows<float, float>(33, 13, 29, 3, 15, true);             // odd width/strides: one-element path
  check_copy_rows<nv_bf16, nv_bf16>(5, 256, 1032, 769, 256, false);   // misaligned source
}

// ------------------------------------------------------------------------------ host-only checks (no GPU needed)
TEST(ScalarOpsCuda, HostDeviceHelpersMatchTheOracle) {
  for (const float s : {-30.0f, -2.0f, 0.0f, 0.5f, 4.0f}) {
    EXPECT_EQ(cuda::feat::map_scalar(s, ScalarMap::identity), s);
    EXPECT_EQ(cuda::feat::map_scalar(s, ScalarMap::sigmoid), cpu::sigmoid(s)) << "s = " << s;
    EXPECT_EQ(cuda::feat::map_derivative(s, ScalarMap::identity), 1.0f);
    const float sg = cpu::sigmoid(s);
    EXPECT_EQ(cuda::feat::map_derivative(s, ScalarMap::sigmoid), sg * (1.0f - sg)) << "s = " << s;
  }
  static_assert(cuda::feat::vec16<float>() == 4 && cuda::feat::vec16<nv_bf16>() == 8 && cuda::feat::vec16<nv_bf16, float>() == 4,
                "16-byte vectors: 4 floats or 8 bf16");
  static_assert(cuda::feat::widest_divisor(12, 8) == 4 && cuda::feat::widest_divisor(7, 8) == 1 && cuda::feat::gcd(12, 512) == 4);
}

TEST(ScalarOpsCuda, ScratchSizes) {
  EXPECT_EQ(cuda::dot_add_scratch_bytes(0), 0);
  EXPECT_EQ(cuda::dot_add_scratch_bytes(1), 8);
  EXPECT_EQ(cuda::dot_add_scratch_bytes(4096), 8);
  EXPECT_EQ(cuda::dot_add_scratch_bytes(4097), 16);
  EXPECT_EQ(cuda::dot_add_scratch_bytes(65536LL * 256), 4096 * 8);
}

TEST(ScalarOpsCuda, BadArgumentsAreRejectedBeforeAnyLaunch) {
  auto* fake = reinterpret_cast<float*>(std::uintptr_t{256});
  EXPECT_THROW(cuda::add_scaled(fake, fake, static_cast<const float*>(nullptr), ScalarMap::identity, fake, 10, nullptr), Error);
  EXPECT_THROW(cuda::axpby(fake, fake, fake, static_cast<const float*>(nullptr), fake, 10, nullptr), Error);
  EXPECT_THROW(cuda::copy_rows(fake, 8, fake, 4, 10, 8, false, nullptr), Error);  // lds narrower than width
  try {
    cuda::dot_add(fake, fake, fake, 10000, nullptr, ScalarMap::identity, nullptr, nullptr);
    FAIL() << "expected pgolf::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("dot_add_scratch_bytes"), std::string::npos) << e.what();
  }
}

TEST(ScalarOpsCuda, EmptyInputsLaunchNothing) {
  EXPECT_NO_THROW(cuda::add_scaled(static_cast<float*>(nullptr), static_cast<const float*>(nullptr), nullptr, ScalarMap::sigmoid,
                                   static_cast<const nv_bf16*>(nullptr), 0, nullptr));
  EXPECT_NO_THROW(cuda::scale_by(static_cast<nv_bf16*>(nullptr), nullptr, static_cast<const float*>(nullptr), 0, nullptr));
  EXPECT_NO_THROW(cuda::dot_add(static_cast<float*>(nullptr), static_cast<const float*>(nullptr), static_cast<const float*>(nullptr), 0,
                                nullptr, ScalarMap::identity, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::copy_rows(static_cast<float*>(nullptr), 4, static_cast<const float*>(nullptr), 4, 0, 4, true, nullptr));
}

}  // namespace
}  // namespace pgolf
