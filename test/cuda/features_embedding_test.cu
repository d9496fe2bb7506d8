// The CUDA kernels of the embedding-stage features (ops/cuda/features_embedding.cuh) against the
// CPU oracle (ops/features.hpp, and model/gpt_cpu.hpp for the two hash-embedding adds, which the
// CPU model writes inline).
//
// Index kernels and the smear mask are integer arithmetic: exactly equal. Everything else is
// compared per element against a bound derived from the kernels' arithmetic (helper `within`):
//   - u = 2^-24, the fp32 unit roundoff. An fp32 expression of k roundings differs between the
//     two sides by at most ~2k·u times the magnitudes of its terms (either side may fuse a
//     multiply-add); the bounds below take 4u·Σ|terms| for one or two operations.
//   - σ: the GPU evaluates 1/(1 + expf(−z)) with CUDA's expf (2 ulp ≤ 4u relative), the CPU with
//     glibc's expf (< 1 ulp); one rounding each for the add and the division. That is ≤ 6u
//     relative on the GPU and ≤ 4u on the CPU, so |σ_gpu − σ_cpu| ≤ 10u·σ; kSig = 16u·σ is used.
//     1 − σ then differs by the same absolute amount (+ a rounding on each side), σ(1 − σ) by
//     ≤ kSig·σ + 4u·σ(1 − σ) (the roundings of 1 − σ and of the product; the CPU's product is in double).
//   - Parameter gradients d0 + f·Σ_r t_r (f a per-channel factor such as σ'(w)): the test computes
//     the exact value in double (with the CPU's float factor) and measures the CPU's own error
//     against it (the CPU sums each chunk of kChannelGrain rows in double but adds the chunks to the
//     float gradient one rounding at a time). The GPU sums fp32 products within a chunk (each term
//     goes through at most `depth` additions: a thread's rows in order, then the thread groups in
//     order, +1 for the product), adds the chunks in double, multiplies by its f once and rounds to
//     float. The bound is
//       |CPU − exact| + |f|·depth·u·Σ|t| + |Δf|·|Σ t| + 2u·(|result| + |initial|)
//     (measured CPU error, the standard summation bound for any order, the factor's σ difference
//     times the finished sum, the final roundings). At n = 65,536, D = 512 that is ~1e-5 of Σ|t|:
//     a wrong row, chunk, channel or sign is off by far more.
//   - Row dot products (input-gated smear, dg = dout_i · x_{i−1} over D channels): the CPU adds
//     the D products in order in fp32 (within D·u·Σ|t| of the exact value), the GPU per lane and
//     by a shuffle tree (within kDotDepth·u·Σ|t|, kDotDepth = 21 for D = 512). Per element (dx)
//     both bounds add up. Summed over the rows into dλ and dW, the GPU's per-row rounding errors
//     are independent and of either sign (the standard probabilistic model of rounding), so their
//     sum stays below 6·sqrt(Σ_r δ_r²) (δ_r: the row's bound) except with probability 2·e^-18
//     (Hoeffding); the σ-dependent part is bounded rigorously, the CPU's error is measured.
//   - bf16 outputs (dz, a GEMM input) are the GPU's fp32 value rounded once to nearest: 2^-8
//     relative (kBf16Eps), plus twice the fp32 difference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.cuh"
#include "pgolf/core/philox.hpp"
#include "pgolf/ops/cuda/features_embedding.cuh"
#include "pgolf/ops/features.hpp"

namespace pgolf {
namespace {

using testing::bf16_rounded;
using testing::kBf16Eps;
using testing::normal_floats;
using testing::same_bits;
using testing::to_device_bf16;
using testing::to_device_f32;
using testing::to_host_floats;
using testing::within;

using testing::kU;  // fp32 unit roundoff
constexpr double kSig = 16 * kU;   // |σ_gpu − σ_cpu| / σ (file comment)
constexpr int kVocab = 1024;
constexpr int kBos = 1;
constexpr int kWin = 12;           // gate_window of the records

// Additions a ColumnTiling chunk sum puts each term through (file comment).
template <int D>
constexpr double column_depth() {
  using C = cuda::rowwise::ColumnTiling<D>;
  return C::kGroupRows + C::kRowGroups + 1;
}

// Σ_r t_r and Σ_r |t_r| of one parameter's unfactored terms, in double.
struct TermSums {
  double sum = 0, abs = 0;
  void add(double t) {
    sum += t;
    abs += std::fabs(t);
  }
};

// The parameter-gradient bound of the file comment for d0 + f·Σ t. f: the CPU's factor (as the CPU
// rounds it); df: |f_gpu − f_cpu|; want: the CPU's result; `extra`: further GPU error terms.
double param_bound(double f, double df, const TermSums& t, double depth, float want, float d0, double extra = 0) {
  const double exact = static_cast<double>(d0) + f * t.sum;
  const double cpu_err = std::fabs(static_cast<double>(want) - exact);
  return cpu_err + std::fabs(f) * depth * kU * t.abs + df * std::fabs(t.sum) + 2 * kU * (std::fabs(want) + std::fabs(d0)) + extra;
}

double sig(float z) { return cpu::sigmoid(z); }  // σ as the CPU computes it (float)

// ------------------------------------------------------------------------------ data
// Token ids: mostly in the vocabulary (including its ends 0 and V − 1), one in eight near
// INT32_MAX and one in sixteen any non-negative int32, so that 36313·id overflows int32 (BigramHash
// wraps) and the EngramLite products need int64; with `negatives`, one in sixteen negative (the
// host tests: the shared functions must reproduce the CPU's integer semantics for any int32).
std::vector<std::int32_t> make_ids(std::int64_t n, std::uint64_t stream, bool negatives) {
  const RandomStream rng(20240520, stream);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto b = rng.bits(static_cast<std::uint64_t>(i));
    const std::uint32_t sel = b.v[0] % 16, v = b.v[1];
    std::int32_t id;
    if (sel < 2) {
      id = std::numeric_limits<std::int32_t>::max() - static_cast<std::int32_t>(v % 1000);
    } else if (sel == 2) {
      id = static_cast<std::int32_t>(v >> 1);
    } else if (sel == 3) {
      id = (v & 1) ? kVocab - 1 : 0;
    } else if (sel == 4 && negatives) {
      id = -static_cast<std::int32_t>(v >> 1) - 1;  // [−2^31, −1]
    } else {
      id = static_cast<std::int32_t>(v % kVocab);
    }
    ids[static_cast<std::size_t>(i)] = id;
  }
  return ids;
}

// Every ordered pair of vocabulary ids as neighbours: sequence p is p, 0, p, 1, …, p, V − 1, p,
// so (p, c) and (c, p) both occur, and trigrams (p, c, p), (c, p, c + 1).
std::vector<std::int32_t> all_pairs_ids(std::int64_t& batch, std::int64_t& seq) {
  batch = kVocab;
  seq = 2 * kVocab + 1;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(batch * seq));
  for (std::int64_t p = 0; p < batch; ++p) {
    for (std::int64_t t = 0; t < seq; ++t) ids[static_cast<std::size_t>(p * seq + t)] = static_cast<std::int32_t>(t % 2 == 0 ? p : t / 2);
  }
  return ids;
}

// A smear mask for n = batch·seq tokens: ids with about 3% BOS tokens, and BOS forced at t = 0 of
// the first sequence and at t = 1 and t = seq − 1 of the last, then gpt_cpu.hpp's rule
// (t == 0 || bos_fix && id == BOS), written out independently of the kernel's helper.
std::vector<std::uint8_t> make_blocked(std::int64_t batch, std::int64_t seq, std::uint64_t stream, bool bos_fix,
                                       std::vector<std::int32_t>* ids_out = nullptr) {
  const RandomStream rng(20240520, stream);
  const std::int64_t n = batch * seq;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto b = rng.bits(static_cast<std::uint64_t>(i));
    ids[static_cast<std::size_t>(i)] = b.v[0] % 100 < 3 ? kBos : static_cast<std::int32_t>(b.v[1] % kVocab);
  }
  ids[0] = kBos;
  if (seq > 1) ids[static_cast<std::size_t>((batch - 1) * seq + 1)] = kBos;
  ids[static_cast<std::size_t>(n - 1)] = kBos;
  std::vector<std::uint8_t> blocked(static_cast<std::size_t>(n));
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t t = 0; t < seq; ++t) {
      const std::size_t i = static_cast<std::size_t>(b * seq + t);
      blocked[i] = (t == 0 || (bos_fix && ids[i] == kBos)) ? 1 : 0;
    }
  }
  if (ids_out) *ids_out = std::move(ids);
  return blocked;
}

template <class T>
cuda::DeviceBuffer<T> to_device(const std::vector<T>& v, const char* what) {
  cuda::DeviceBuffer<T> d(v.size(), what);
  if (!v.empty()) d.upload(v);
  return d;
}

template <class T>
std::vector<T> to_host(const cuda::DeviceBuffer<T>& d) {
  PGOLF_CUDA_CHECK(cudaDeviceSynchronize());
  return d.to_host();
}

// Exact equality of integer outputs with `per_token` values per token; on failure the count and
// the first mismatch (token, slot, both values).
template <class T>
::testing::AssertionResult same_ints(const std::vector<T>& got, const std::vector<T>& want, int per_token) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes " << got.size() << " vs " << want.size();
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i] && bad++ == 0) first = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " values differ; first at token " << first / per_token << ", slot "
                                       << first % per_token << ": got " << static_cast<std::int64_t>(got[first]) << ", expected "
                                       << static_cast<std::int64_t>(want[first]);
}

// ==============================================================================================
// Host-only tests: run in CI without a GPU.
// ==============================================================================================

// The per-token functions the kernels call, on the host, against cpu::bigram_hash_indices.
void check_bigram_on_host(const std::vector<std::int32_t>& ids, std::int64_t batch, std::int64_t seq, int buckets) {
  SCOPED_TRACE(::testing::Message() << "batch " << batch << ", seq " << seq << ", buckets " << buckets);
  const std::int64_t n = batch * seq;
  for (const BigramStart start : {BigramStart::reserved_bucket, BigramStart::zero_prev}) {
    std::vector<std::int32_t> want(static_cast<std::size_t>(n)), got(static_cast<std::size_t>(n));
    cpu::bigram_hash_indices(want.data(), ids.data(), batch, seq, buckets, start);
    for (std::int64_t i = 0; i < n; ++i) {
      got[static_cast<std::size_t>(i)] = cuda::emb_detail::bigram_index(ids.data(), seq, i, buckets - 1, start == BigramStart::zero_prev);
    }
    EXPECT_TRUE(same_ints(got, want, 1)) << "start " << static_cast<int>(start);
  }
}

void check_engram_on_host(const std::vector<std::int32_t>& ids, std::int64_t batch, std::int64_t seq, int buckets, int orders) {
  SCOPED_TRACE(::testing::Message() << "batch " << batch << ", seq " << seq << ", buckets " << buckets << ", orders " << orders);
  const std::int64_t n = batch * seq;
  const int per = 2 * orders;
  std::vector<std::int32_t> want(static_cast<std::size_t>(n * per)), got(static_cast<std::size_t>(n * per));
  cpu::engram_indices(want.data(), ids.data(), batch, seq, buckets, orders);
  for (std::int64_t i = 0; i < n; ++i) {
    std::int32_t o[4] = {};
    cuda::emb_detail::engram_index(o, ids.data(), seq, i, buckets, orders);
    std::copy_n(o, per, got.begin() + i * per);
  }
  EXPECT_TRUE(same_ints(got, want, per));
}

TEST(FeaturesEmbeddingHost, BigramIndexArithmeticMatchesCpu) {
  for (const std::int64_t seq : {1, 17, 1024}) {
    const auto ids = make_ids(3 * seq, 100 + static_cast<std::uint64_t>(seq), true);
    for (const int buckets : {2, 3, 7, 2048, 4096, 12288}) check_bigram_on_host(ids, 3, seq, buckets);
  }
  std::int64_t batch = 0, seq = 0;
  const auto pairs = all_pairs_ids(batch, seq);
  for (const int buckets : {2048, 12288}) check_bigram_on_host(pairs, batch, seq, buckets);
  // The int32 extremes next to each other.
  const std::vector<std::int32_t> ext = {0, std::numeric_limits<std::int32_t>::max(), std::numeric_limits<std::int32_t>::min(), -1, 1,
                                         std::numeric_limits<std::int32_t>::max(), kVocab - 1, std::numeric_limits<std::int32_t>::min()};
  for (const int buckets : {2, 3, 12288, std::numeric_limits<std::int32_t>::max()}) check_bigram_on_host(ext, 1, 8, buckets);
}

TEST(FeaturesEmbeddingHost, EngramIndexArithmeticMatchesCpu) {
  for (const std::int64_t seq : {1, 2, 17, 1024}) {
    const auto ids = make_ids(3 * seq, 200 + static_cast<std::uint64_t>(seq), true);
    for (const int orders : {1, 2}) {
      for (const int buckets : {1, 3, 8192}) check_engram_on_host(ids, 3, seq, buckets, orders);
    }
  }
  std::int64_t batch = 0, seq = 0;
  const auto pairs = all_pairs_ids(batch, seq);
  check_engram_on_host(pairs, batch, seq, 8192, 2);
}

TEST(FeaturesEmbeddingHost, BlockedMaskArithmetic) {
  const std::vector<std::int32_t> ids = {kBos, 5, kBos, kBos, 7,  // sequence 0: BOS at t = 0, 2, 3
                                         9, kBos, 3, 4, kBos};    // sequence 1: BOS at t = 1, 4
  const std::vector<std::uint8_t> with_fix = {1, 0, 1, 1, 0, 1, 1, 0, 0, 1};
  const std::vector<std::uint8_t> without = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0};
  std::vector<std::uint8_t> got_fix(ids.size()), got_plain(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    got_fix[i] = cuda::emb_detail::smear_blocked_at(ids.data(), 5, static_cast<std::int64_t>(i), true, kBos);
    got_plain[i] = cuda::emb_detail::smear_blocked_at(ids.data(), 5, static_cast<std::int64_t>(i), false, kBos);
  }
  EXPECT_TRUE(same_ints(got_fix, with_fix, 1)) << "bos_fix on";
  EXPECT_TRUE(same_ints(got_plain, without, 1)) << "bos_fix off";
  // seq = 1: every token starts a sequence.
  for (std::int64_t i = 0; i < 10; ++i) EXPECT_EQ(cuda::emb_detail::smear_blocked_at(ids.data(), 1, i, false, kBos), 1);
}

TEST(FeaturesEmbeddingHost, ScratchSizes) {
  constexpr std::int64_t n = 65536;
  static_assert(cuda::sigmoid_gated_add_backward_scratch_bytes<512>(n) == 256u * 512 * 4);  // constexpr: usable for static sizing
  EXPECT_EQ(cuda::sigmoid_gated_add_backward_scratch_bytes<512>(n),
            sizeof(float) * static_cast<std::size_t>(cuda::column_partials_size(n, 512)));
  EXPECT_EQ(cuda::smear_backward_scratch_bytes<512>(n), sizeof(float) * static_cast<std::size_t>(cuda::column_partials_size(n, 512)));
  EXPECT_EQ(cuda::gated_skip_backward_scratch_bytes<512>(n), sizeof(float) * static_cast<std::size_t>(cuda::column_partials_size(n, 1024)));
  EXPECT_EQ(cuda::scalar_scaled_add_backward_scratch_bytes<512>(n), 8u * (n * 512 / (256 * 8 * 4)));  // 4,096 doubles
  EXPECT_EQ((cuda::smear_input_backward_scratch_bytes<512, kWin>(n)), 4u * (n / 64) * (kWin + 1));
  EXPECT_EQ((cuda::smear_input_backward_scratch_bytes<16, kWin>(1000)), 4u * 16 * (kWin + 1));  // 64-row chunks: 16 of them
  EXPECT_EQ((cuda::embedding_features_scratch_bytes<512, kWin>(n)), cuda::gated_skip_backward_scratch_bytes<512>(n));
  EXPECT_EQ(cuda::scalar_scaled_add_backward_scratch_bytes<16>(1), 8u);
  EXPECT_EQ((cuda::embedding_features_scratch_bytes<16, kWin>(0)), 0u);
}

TEST(FeaturesEmbeddingHost, BadArgumentsAreRejected) {
  // Every check runs before any CUDA call; the pointers are never dereferenced.
  auto* f = reinterpret_cast<float*>(std::uintptr_t{256});
  auto* bad = reinterpret_cast<float*>(std::uintptr_t{256 + 4});
  auto* h = reinterpret_cast<cuda::nv_bf16*>(std::uintptr_t{512});
  auto* ids = reinterpret_cast<std::int32_t*>(std::uintptr_t{1024});
  auto* mask = reinterpret_cast<std::uint8_t*>(std::uintptr_t{2048});
  // Buffers far from f and from each other (no overlap with 10 rows of 512 floats).
  auto* far = reinterpret_cast<float*>(std::uintptr_t{1} << 30);
  auto* far2 = reinterpret_cast<float*>(std::uintptr_t{1} << 31);
  EXPECT_THROW(cuda::bigram_hash_indices(ids, ids, 3, 17, 1, nullptr), Error);  // modulus 0
  EXPECT_THROW(cuda::engram_indices(ids, ids, 3, 17, 8192, 3, nullptr), Error);  // the CPU writes 4 slots at most
  EXPECT_THROW(cuda::engram_indices(ids, ids, 3, 17, 0, 2, nullptr), Error);
  EXPECT_THROW(cuda::engram_indices(ids, ids, 3, 17, 1 << 29, 2, nullptr), Error);  // 4·2^29 rows overflow int32
  EXPECT_THROW(cuda::smear_blocked_mask(mask, ids, -1, 17, true, kBos, nullptr), Error);
  // Misaligned rows (D = 512 uses 16-byte vectors).
  EXPECT_THROW(cuda::sigmoid_gated_add_forward<512>(bad, h, f, 10, nullptr), Error);
  EXPECT_THROW(cuda::gated_skip_forward<512>(f, f, bad, f, f, 10, nullptr), Error);
  EXPECT_THROW(cuda::smear_backward<512>(f, f, far, far2 + 1, f, mask, 10, false, f, nullptr), Error);
  // Missing scratch.
  EXPECT_THROW(cuda::sigmoid_gated_add_backward<512>(h, f, f, h, f, 10, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::scalar_scaled_add_backward<512>(h, f, f, h, f, 10, nullptr, nullptr), Error);
  EXPECT_THROW((cuda::smear_input_backward<512, kWin>(f, f, f, far, far2, f, f, f, mask, 10, nullptr, nullptr)), Error);
  EXPECT_THROW(cuda::gated_skip_backward<512>(f, f, f, f, f, f, f, f, f, 10, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::scalar_scaled_add_backward<512>(h, f, f, h, f, 10, reinterpret_cast<void*>(std::uintptr_t{260}), nullptr), Error);
  // Aliasing the smears do not allow.
  EXPECT_THROW(cuda::smear_forward<512>(f, f, f, mask, 10, false, nullptr), Error);
  EXPECT_THROW(cuda::smear_backward<512>(f, f, f, f, f, mask, 10, true, f, nullptr), Error);
  EXPECT_THROW((cuda::smear_input_forward<512, kWin>(f, f, f, f, f, mask, 10, nullptr)), Error);
  EXPECT_THROW((cuda::smear_input_backward<512, kWin>(f, f, f, f, f, f, f, f, mask, 10, f, nullptr)), Error);
  // Partial overlaps (one row apart): another thread's row would be read while it is written. The
  // message is checked: without a GPU a launch would throw an Error too.
  auto rejects_overlap = [](auto&& call) {
    try {
      call();
    } catch (const Error& e) {
      return std::string(e.what()).find("must not overlap") != std::string::npos;
    }
    return false;
  };
  EXPECT_TRUE(rejects_overlap([&] { cuda::smear_forward<512>(f, f + 512, f, mask, 10, false, nullptr); }));
  EXPECT_TRUE(rejects_overlap([&] { cuda::smear_backward<512>(f, far2, far, f + 512, f, mask, 10, true, far2, nullptr); }));  // dx over x
  EXPECT_TRUE(rejects_overlap([&] { cuda::smear_backward<512>(f + 512, far2, f, far, f, mask, 10, true, far2, nullptr); }));  // dx over dout
  EXPECT_TRUE(rejects_overlap([&] { cuda::smear_input_forward<512, kWin>(f + 512, f, f, f, f, mask, 10, nullptr); }));
  EXPECT_TRUE(rejects_overlap([&] { cuda::smear_input_backward<512, kWin>(f, far2, far2, far, f + 512, f, f, f, mask, 10, far2, nullptr); }));
}

TEST(FeaturesEmbeddingHost, EmptyInputsLaunchNothing) {
  EXPECT_NO_THROW(cuda::bigram_hash_indices(nullptr, nullptr, 0, 17, 2048, nullptr));
  EXPECT_NO_THROW(cuda::engram_indices(nullptr, nullptr, 3, 0, 8192, 2, nullptr));
  EXPECT_NO_THROW(cuda::smear_blocked_mask(nullptr, nullptr, 0, 0, true, kBos, nullptr));
  EXPECT_NO_THROW(cuda::sigmoid_gated_add_forward<512>(nullptr, nullptr, nullptr, 0, nullptr));
  EXPECT_NO_THROW(cuda::sigmoid_gated_add_backward<512>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::scalar_scaled_add_forward<16>(nullptr, nullptr, nullptr, 0, nullptr));
  EXPECT_NO_THROW(cuda::scalar_scaled_add_backward<16>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr, nullptr));
  EXPECT_NO_THROW(cuda::smear_forward<16>(nullptr, nullptr, nullptr, nullptr, 0, true, nullptr));
  EXPECT_NO_THROW(cuda::smear_backward<16>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, true, nullptr, nullptr));
  EXPECT_NO_THROW((cuda::smear_input_forward<16, kWin>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr)));
  EXPECT_NO_THROW((cuda::smear_input_backward<16, kWin>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0,
                                                        nullptr, nullptr)));
  EXPECT_NO_THROW(cuda::gated_skip_forward<16>(nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr));
  EXPECT_NO_THROW(
      cuda::gated_skip_backward<16>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, nullptr, nullptr));
}

// ==============================================================================================
// GPU tests.
// ==============================================================================================

class FeaturesEmbeddingGpu : public testing::GpuTest {};

// ------------------------------------------------------------------------------ indices and mask
TEST_F(FeaturesEmbeddingGpu, IndicesMatchCpuExactly) {
  constexpr std::int64_t batch = 3;
  for (const std::int64_t seq : {1, 17, 1024}) {
    const std::int64_t n = batch * seq;
    const auto ids = make_ids(n, 300 + static_cast<std::uint64_t>(seq), false);
    auto d_ids = to_device(ids, "ids");
    for (const int buckets : {2, 7, 2048, 12288}) {
      SCOPED_TRACE(::testing::Message() << "bigram: seq " << seq << ", buckets " << buckets);
      for (const BigramStart start : {BigramStart::reserved_bucket, BigramStart::zero_prev}) {
        std::vector<std::int32_t> want(static_cast<std::size_t>(n));
        cpu::bigram_hash_indices(want.data(), ids.data(), batch, seq, buckets, start);
        cuda::DeviceBuffer<std::int32_t> d_out(static_cast<std::size_t>(n), "bigram indices");
        cuda::bigram_hash_indices(d_out.data(), d_ids.data(), batch, seq, buckets, nullptr, start);
        EXPECT_TRUE(same_ints(to_host(d_out), want, 1)) << "start " << static_cast<int>(start);
      }
    }
    for (const auto& [buckets, orders] : {std::pair{3, 1}, std::pair{8192, 2}, std::pair{5, 2}}) {
      SCOPED_TRACE(::testing::Message() << "engram: seq " << seq << ", buckets " << buckets << ", orders " << orders);
      std::vector<std::int32_t> want(static_cast<std::size_t>(n * 2 * orders));
      cpu::engram_indices(want.data(), ids.data(), batch, seq, buckets, orders);
      cuda::DeviceBuffer<std::int32_t> d_out(want.size(), "engram indices");
      cuda::engram_indices(d_out.data(), d_ids.data(), batch, seq, buckets, orders, nullptr);
      EXPECT_TRUE(same_ints(to_host(d_out), want, 2 * orders));
    }
  }
  // All vocabulary pairs (2.1 M tokens, 8,196 blocks).
  std::int64_t pb = 0, ps = 0;
  const auto pairs = all_pairs_ids(pb, ps);
  auto d_pairs = to_device(pairs, "all-pairs ids");
  std::vector<std::int32_t> want(pairs.size() * 4);
  cpu::engram_indices(want.data(), pairs.data(), pb, ps, 8192, 2);
  cuda::DeviceBuffer<std::int32_t> d_out(want.size(), "engram indices");
  cuda::engram_indices(d_out.data(), d_pairs.data(), pb, ps, 8192, 2, nullptr);
  EXPECT_TRUE(same_ints(to_host(d_out), want, 4)) << "engram, all vocabulary pairs";
  want.resize(pairs.size());
  cpu::bigram_hash_indices(want.data(), pairs.data(), pb, ps, 12288);
  cuda::DeviceBuffer<std::int32_t> d_big(pairs.size(), "bigram indices");
  cuda::bigram_hash_indices(d_big.data(), d_pairs.data(), pb, ps, 12288, nullptr);
  EXPECT_TRUE(same_ints(to_host(d_big), want, 1)) << "bigram, all vocabulary pairs";
}

TEST_F(FeaturesEmbeddingGpu, BlockedMaskMatchesDefinition) {
  for (const std::int64_t seq : {1, 17, 1024}) {
    for (const bool bos_fix : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "seq " << seq << ", bos_fix " << bos_fix);
      std::vector<std::int32_t> ids;
      const auto want = make_blocked(3, seq, 400 + static_cast<std::uint64_t>(seq), bos_fix, &ids);
      auto d_ids = to_device(ids, "ids");
      cuda::DeviceBuffer<std::uint8_t> d_mask(want.size(), "mask");
      cuda::smear_blocked_mask(d_mask.data(), d_ids.data(), 3, seq, bos_fix, kBos, nullptr);
      EXPECT_TRUE(same_ints(to_host(d_mask), want, 1));
    }
  }
}

// ------------------------------------------------------------------------------ EngramLite gate
template <int D>
void check_sigmoid_gated_add(std::int64_t n) {
  SCOPED_TRACE(::testing::Message() << "sigmoid_gated_add, D = " << D << ", n = " << n);
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto e0 = normal_floats(nd, 11, 2.0f);
  const auto z = bf16_rounded(normal_floats(nd, 12));  // the GPU reads z as bf16
  const auto gate = normal_floats(D, 13);
  const auto de = normal_floats(nd, 14);
  const auto dgate0 = normal_floats(D, 15, 3.0f);

  // The CPU model's inline code (gpt_cpu.hpp embed_forward / embed_backward).
  std::vector<float> want_e = e0, want_dz(nd), want_dgate = dgate0;
  std::vector<double> e_bound(nd), dz_bound(nd);
  std::vector<TermSums> t(D);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int i = 0; i < D; ++i) {
      const std::size_t k = static_cast<std::size_t>(r) * D + i;
      const float s = cpu::sigmoid(gate[i]);
      want_e[k] += s * z[k];
      want_dz[k] = s * de[k];
      e_bound[k] = kSig * s * std::fabs(z[k]) + 4 * kU * (std::fabs(e0[k]) + std::fabs(s * z[k]));
      const double fp32_diff = kSig * s * std::fabs(de[k]) + kU * std::fabs(want_dz[k]);
      dz_bound[k] = kBf16Eps * std::fabs(want_dz[k]) + 2 * fp32_diff;
      t[i].add(static_cast<double>(de[k]) * z[k]);
    }
  }
  cpu::reduce_rows_into(want_dgate.data(), D, n, [&](std::int64_t r, double* acc) {
    for (int i = 0; i < D; ++i) {
      const float s = cpu::sigmoid(gate[i]);
      acc[i] += static_cast<double>(de[r * D + i]) * z[r * D + i] * s * (1.0f - s);
    }
  });
  std::vector<double> dgate_bound(D);
  for (int i = 0; i < D; ++i) {
    const float s = cpu::sigmoid(gate[i]);
    const double f = static_cast<double>(s) * (1.0f - s);  // the CPU's factor: float σ and 1 − σ, product in double
    dgate_bound[i] = param_bound(f, kSig * s + 4 * kU * f, t[i], column_depth<D>(), want_dgate[i], dgate0[i]);
  }

  auto d_e = to_device_f32(e0, "e");
  auto d_z = to_device_bf16(z, "z");
  auto d_gate = to_device_f32(gate, "gate");
  auto d_de = to_device_f32(de, "de");
  auto d_dgate = to_device_f32(dgate0, "dgate");
  cuda::DeviceBuffer<cuda::nv_bf16> d_dz(nd, "dz");
  cuda::DeviceBuffer<std::uint8_t> scratch(cuda::sigmoid_gated_add_backward_scratch_bytes<D>(n), "scratch");
  cuda::sigmoid_gated_add_forward<D>(d_e.data(), d_z.data(), d_gate.data(), n, nullptr);  // in place, as the model uses it
  cuda::sigmoid_gated_add_backward<D>(d_dz.data(), d_dgate.data(), d_de.data(), d_z.data(), d_gate.data(), n,
                                      reinterpret_cast<float*>(scratch.data()), nullptr);
  EXPECT_TRUE(within(to_host_floats(d_e), want_e, e_bound, D)) << "e += σ(gate) ⊙ z";
  EXPECT_TRUE(within(to_host_floats(d_dz), want_dz, dz_bound, D)) << "dz (bf16)";
  EXPECT_TRUE(within(to_host_floats(d_dgate), want_dgate, dgate_bound, D)) << "dgate";
}

TEST_F(FeaturesEmbeddingGpu, SigmoidGatedAddMatchesCpu) {
  check_sigmoid_gated_add<16>(1);
  check_sigmoid_gated_add<16>(1000);
  check_sigmoid_gated_add<512>(1000);
  check_sigmoid_gated_add<512>(65536);
}

// ------------------------------------------------------------------------------ BigramHash scale
template <int D>
void check_scalar_scaled_add(std::int64_t n) {
  SCOPED_TRACE(::testing::Message() << "scalar_scaled_add, D = " << D << ", n = " << n);
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto e0 = normal_floats(nd, 21, 2.0f);
  const auto z = bf16_rounded(normal_floats(nd, 22));
  const auto de = normal_floats(nd, 23);
  const std::vector<float> scale = {0.7f}, dscale0 = {0.25f};

  // gpt_cpu.hpp: axpby(e, 1, e, scale, z); dscale += dot_all(de, z); dz = axpby(scale, de, 0, de).
  std::vector<float> want_e(nd), want_dz(nd);
  cpu::axpby(want_e.data(), 1.0f, e0.data(), scale[0], z.data(), static_cast<std::int64_t>(nd));
  cpu::axpby(want_dz.data(), scale[0], de.data(), 0.0f, de.data(), static_cast<std::int64_t>(nd));
  const std::vector<float> want_ds = {dscale0[0] + static_cast<float>(cpu::dot_all(de.data(), z.data(), static_cast<std::int64_t>(nd)))};
  std::vector<double> e_bound(nd), dz_bound(nd);
  TermSums t;
  for (std::size_t k = 0; k < nd; ++k) {
    e_bound[k] = 4 * kU * (std::fabs(e0[k]) + std::fabs(scale[0] * z[k]));
    dz_bound[k] = kBf16Eps * std::fabs(want_dz[k]) + 4 * kU * std::fabs(want_dz[k]);
    t.add(static_cast<double>(de[k]) * z[k]);
  }
  // fp32 within a thread (kScalarPacks packs of kVec values), then double.
  const double depth = cuda::emb_detail::kScalarPacks * cuda::rowwise::kVecWidth<D> + 1;
  const std::vector<double> ds_bound = {param_bound(1.0, 0.0, t, depth, want_ds[0], dscale0[0])};

  auto d_e = to_device_f32(e0, "e");
  auto d_z = to_device_bf16(z, "z");
  auto d_de = to_device_f32(de, "de");
  auto d_scale = to_device_f32(scale, "scale");
  auto d_ds = to_device_f32(dscale0, "dscale");
  cuda::DeviceBuffer<cuda::nv_bf16> d_dz(nd, "dz");
  cuda::DeviceBuffer<std::uint8_t> scratch(cuda::scalar_scaled_add_backward_scratch_bytes<D>(n), "scratch");
  cuda::scalar_scaled_add_forward<D>(d_e.data(), d_z.data(), d_scale.data(), n, nullptr);
  cuda::scalar_scaled_add_backward<D>(d_dz.data(), d_ds.data(), d_de.data(), d_z.data(), d_scale.data(), n, scratch.data(), nullptr);
  EXPECT_TRUE(within(to_host_floats(d_e), want_e, e_bound, D)) << "e += scale · z";
  EXPECT_TRUE(within(to_host_floats(d_dz), want_dz, dz_bound, D)) << "dz (bf16)";
  EXPECT_TRUE(within(to_host_floats(d_ds), want_ds, ds_bound, 1)) << "dscale";
}

TEST_F(FeaturesEmbeddingGpu, ScalarScaledAddMatchesCpu) {
  check_scalar_scaled_add<16>(1000);
  check_scalar_scaled_add<512>(1);
  check_scalar_scaled_add<512>(65536);
}

// ------------------------------------------------------------------------------ SmearGate (constant gate)
// n = batch · seq tokens; the mask has sequence starts and BOS tokens (bos_fix) mid-sequence.
template <int D>
void check_smear(std::int64_t batch, std::int64_t seq, bool post_norm, bool bos_fix) {
  const std::int64_t n = batch * seq;
  SCOPED_TRACE(::testing::Message() << "smear, D = " << D << ", n = " << n << " (" << batch << " x " << seq << "), "
                                    << (post_norm ? "post_norm" : "pre_norm") << ", bos_fix " << bos_fix);
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto blocked = make_blocked(batch, seq, 500 + static_cast<std::uint64_t>(seq), bos_fix);
  const auto x = normal_floats(nd, 31, 2.0f);
  auto w = normal_floats(D, 32, 1.5f);
  if (!post_norm) {
    for (auto& v : w) v += 3.0f;  // SmearGate v1's init is 3: σ near 1, 1 − σ small
  }
  const auto dout = normal_floats(nd, 33);
  const auto dw0 = normal_floats(D, 34, 3.0f);

  std::vector<float> want_out(nd), want_dx(nd), want_dw = dw0;
  cpu::smear_forward<D>(want_out.data(), x.data(), w.data(), blocked.data(), n, post_norm);
  cpu::smear_backward<D>(want_dx.data(), want_dw.data(), dout.data(), x.data(), w.data(), blocked.data(), n, post_norm);
  std::vector<double> out_bound(nd), dx_bound(nd);
  std::vector<TermSums> t(D);
  for (std::int64_t r = 0; r < n; ++r) {
    const bool has_next = r + 1 < n && !blocked[static_cast<std::size_t>(r + 1)];
    for (int i = 0; i < D; ++i) {
      const std::size_t k = static_cast<std::size_t>(r) * D + i;
      const double g = sig(w[i]), a = post_norm ? 1 - g : g, c = post_norm ? g : 1 - g;
      const double dcoef = kSig * g + 2 * kU;  // |Δa|, |Δc|: σ, and the rounding of 1 − σ on each side
      const double prev = blocked[static_cast<std::size_t>(r)] ? 0.0 : x[k - D];
      const double next = has_next ? dout[k + D] : 0.0;
      out_bound[k] = dcoef * (std::fabs(x[k]) + std::fabs(prev)) + 4 * kU * (std::fabs(a * x[k]) + std::fabs(c * prev));
      dx_bound[k] = dcoef * (std::fabs(dout[k]) + std::fabs(next)) + 4 * kU * (std::fabs(a * dout[k]) + std::fabs(c * next));
      t[i].add(dout[k] * (static_cast<double>(x[k]) - prev));
    }
  }
  std::vector<double> dw_bound(D);
  for (int i = 0; i < D; ++i) {
    const float g = cpu::sigmoid(w[i]);
    const double f = (post_norm ? -1.0f : 1.0f) * g * (1.0f - g);  // the CPU's da_dw (float)
    // depth + 1: x_i − x_{i−1} is rounded in fp32 on both sides (the same operation).
    dw_bound[i] = param_bound(f, kSig * g + 4 * kU * std::fabs(f), t[i], column_depth<D>() + 1, want_dw[i], dw0[i]);
  }

  auto d_x = to_device_f32(x, "x");
  auto d_w = to_device_f32(w, "w");
  auto d_dout = to_device_f32(dout, "dout");
  auto d_dw = to_device_f32(dw0, "dw");
  auto d_blocked = to_device(blocked, "blocked");
  cuda::DeviceBuffer<float> d_out(nd, "out"), d_dx(nd, "dx");
  cuda::DeviceBuffer<std::uint8_t> scratch(cuda::smear_backward_scratch_bytes<D>(n), "scratch");
  cuda::smear_forward<D>(d_out.data(), d_x.data(), d_w.data(), d_blocked.data(), n, post_norm, nullptr);
  cuda::smear_backward<D>(d_dx.data(), d_dw.data(), d_dout.data(), d_x.data(), d_w.data(), d_blocked.data(), n, post_norm,
                          reinterpret_cast<float*>(scratch.data()), nullptr);
  EXPECT_TRUE(within(to_host_floats(d_out), want_out, out_bound, D)) << "smear out";
  EXPECT_TRUE(within(to_host_floats(d_dx), want_dx, dx_bound, D)) << "dx";
  EXPECT_TRUE(within(to_host_floats(d_dw), want_dw, dw_bound, D)) << "dw";
}

TEST_F(FeaturesEmbeddingGpu, SmearMatchesCpu) {
  for (const bool post_norm : {false, true}) {
    check_smear<16>(4, 250, post_norm, true);  // n = 1000
    check_smear<512>(1, 1, post_norm, false);  // n = 1: one blocked row
  }
  check_smear<16>(8, 125, true, false);
  check_smear<512>(64, 1024, true, true);   // SmearGate v2 with the BOS fix, n = 65,536
  check_smear<512>(64, 1024, false, false);  // SmearGate v1
  check_smear<48>(4, 250, false, true);      // 12 packs on 16 lanes: lanes without a pack
  check_smear<18>(3, 77, true, true);        // 2-wide packs
  check_smear<33>(2, 50, false, false);      // 1-wide packs
}

// ------------------------------------------------------------------------------ SmearGate (input-gated)
template <int D, int Win>
void check_smear_input(std::int64_t batch, std::int64_t seq, bool bos_fix) {
  const std::int64_t n = batch * seq;
  SCOPED_TRACE(::testing::Message() << "smear_input, D = " << D << ", Win = " << Win << ", n = " << n << " (" << batch << " x " << seq
                                    << "), bos_fix " << bos_fix);
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto blocked = make_blocked(batch, seq, 600 + static_cast<std::uint64_t>(seq), bos_fix);
  const auto x = normal_floats(nd, 41, 1.5f);
  const auto W = normal_floats(Win, 42, 0.4f);
  const std::vector<float> lambda = {0.8f}, dlambda0 = {-0.5f};
  const auto dout = normal_floats(nd, 43);
  const auto dW0 = normal_floats(Win, 44, 2.0f);

  // Forward.
  std::vector<float> want_out(nd), want_z(static_cast<std::size_t>(n));
  cpu::smear_input_forward<D, Win>(want_out.data(), want_z.data(), x.data(), W.data(), lambda.data(), blocked.data(), n);
  std::vector<double> z_bound(static_cast<std::size_t>(n)), out_bound(nd);
  const double lam = lambda[0];
  for (std::int64_t r = 0; r < n; ++r) {
    const std::size_t rr = static_cast<std::size_t>(r);
    double abs_wx = 0;
    for (int i = 0; i < Win; ++i) abs_wx += std::fabs(static_cast<double>(W[i]) * x[rr * D + i]);
    z_bound[rr] = 2.0 * (Win + 1) * kU * abs_wx;  // two orders of Win products, each within (Win + 1)u
    const bool blk = blocked[rr] != 0;
    const double s = sig(want_z[rr]), g = blk ? 0.0 : lam * s;
    const double dg = blk ? 0.0 : std::fabs(lam) * (0.25 * z_bound[rr] + kSig * s + 2 * kU * s);  // σ' <= 1/4
    for (int i = 0; i < D; ++i) {
      const std::size_t k = rr * D + i;
      const double prev = blk ? 0.0 : x[k - D];
      out_bound[k] = dg * std::fabs(prev) + 4 * kU * (std::fabs(x[k]) + std::fabs(g * prev));
    }
  }

  // Backward, fed the CPU's gate_z on both sides (the forward's z is checked above).
  std::vector<float> want_dx(nd), want_dW = dW0, want_dl = dlambda0;
  cpu::smear_input_backward<D, Win>(want_dx.data(), want_dW.data(), want_dl.data(), dout.data(), x.data(), want_z.data(), W.data(),
                                    lambda.data(), blocked.data(), n);
  // Per row, in double: dg = dout_i · x_{i−1} (exact), dz = dg·λ·σ'(z) with the CPU's float σ
  // and 1 − σ, and the dot product's rounding bounds: the GPU's (kDotDepth·u·Σ|t|) and the CPU's
  // (D·u·Σ|t|).
  using S = cuda::emb_detail::SmearInputTiling<D, Win>;
  const std::size_t nn = static_cast<std::size_t>(n);
  std::vector<double> dg(nn, 0.0), gpu_dot(nn, 0.0), cpu_dot(nn, 0.0), dz(nn, 0.0), e_dz(nn, 0.0);
  for (std::size_t rr = 0; rr < nn; ++rr) {
    if (blocked[rr]) continue;
    double sum = 0, abs_sum = 0;
    for (int i = 0; i < D; ++i) {
      const double t = static_cast<double>(dout[rr * D + i]) * x[(rr - 1) * D + i];
      sum += t;
      abs_sum += std::fabs(t);
    }
    const float s = cpu::sigmoid(want_z[rr]);
    const double dsig = static_cast<double>(s) * (1.0f - s);
    dg[rr] = sum;
    gpu_dot[rr] = S::kDotDepth * kU * abs_sum;
    cpu_dot[rr] = D * kU * abs_sum;
    dz[rr] = sum * lam * dsig;
    // GPU dz against the CPU's: both dot products' errors, σ'(z) (kSig·s + the roundings of 1 − s
    // and the product), and the three products' roundings on each side.
    e_dz[rr] = std::fabs(lam) * (dsig * (gpu_dot[rr] + cpu_dot[rr]) + std::fabs(sum) * (kSig * s + 4 * kU * dsig)) + 6 * kU * std::fabs(dz[rr]);
  }
  std::vector<double> dx_bound(nd);
  TermSums tl;                                                  // dλ terms dg·σ(z)
  std::vector<TermSums> tw(Win);                                // dW terms dz·x_i
  double hoef_l = 0, sig_l = 0;                                 // dλ: Σ δ_r² of the GPU's dot errors, σ part
  std::vector<double> hoef_w(Win, 0.0), sig_w(Win, 0.0);
  for (std::size_t rr = 0; rr < nn; ++rr) {
    const bool has_next = rr + 1 < nn && !blocked[rr + 1];
    const double sn = has_next ? sig(want_z[rr + 1]) : 0.0, gn = lam * sn, e_gn = std::fabs(lam) * (kSig + 2 * kU) * sn;
    for (int i = 0; i < D; ++i) {
      const std::size_t k = rr * D + i;
      const double next = has_next ? dout[k + D] : 0.0, wi = i < Win ? W[i] : 0.0;
      dx_bound[k] = e_gn * std::fabs(next) + e_dz[rr] * std::fabs(wi) +
                    4 * kU * (std::fabs(dout[k]) + std::fabs(gn * next) + std::fabs(dz[rr] * wi));
    }
    if (blocked[rr]) continue;
    const float s = cpu::sigmoid(want_z[rr]);
    const double dsig = static_cast<double>(s) * (1.0f - s);
    tl.add(dg[rr] * s);
    hoef_l += (gpu_dot[rr] * s) * (gpu_dot[rr] * s);
    sig_l += std::fabs(dg[rr]) * kSig * s;
    for (int i = 0; i < Win; ++i) {
      const double xi = std::fabs(x[rr * D + i]), d = std::fabs(lam) * dsig * gpu_dot[rr] * xi;
      tw[i].add(dz[rr] * x[rr * D + i]);
      hoef_w[i] += d * d;
      sig_w[i] += std::fabs(dg[rr] * lam) * (kSig * s + 4 * kU * dsig) * xi;
    }
  }
  // The GPU's chunk sums (kSumDepth) plus the roundings of the per-row products (dg·s: 1; dz·x: 4).
  constexpr double depth = S::kSumDepth + 4;
  const std::vector<double> dl_bound = {param_bound(1.0, 0.0, tl, depth, want_dl[0], dlambda0[0], 6 * std::sqrt(hoef_l) + sig_l)};
  std::vector<double> dW_bound(Win);
  for (int i = 0; i < Win; ++i) dW_bound[i] = param_bound(1.0, 0.0, tw[i], depth, want_dW[i], dW0[i], 6 * std::sqrt(hoef_w[i]) + sig_w[i]);

  auto d_x = to_device_f32(x, "x");
  auto d_W = to_device_f32(W, "W");
  auto d_lambda = to_device_f32(lambda, "lambda");
  auto d_dout = to_device_f32(dout, "dout");
  auto d_dW = to_device_f32(dW0, "dW");
  auto d_dl = to_device_f32(dlambda0, "dlambda");
  auto d_zc = to_device_f32(want_z, "gate_z (CPU)");
  auto d_blocked = to_device(blocked, "blocked");
  cuda::DeviceBuffer<float> d_out(nd, "out"), d_z(static_cast<std::size_t>(n), "gate_z"), d_dx(nd, "dx");
  cuda::DeviceBuffer<std::uint8_t> scratch(cuda::smear_input_backward_scratch_bytes<D, Win>(n), "scratch");
  cuda::smear_input_forward<D, Win>(d_out.data(), d_z.data(), d_x.data(), d_W.data(), d_lambda.data(), d_blocked.data(), n, nullptr);
  cuda::smear_input_backward<D, Win>(d_dx.data(), d_dW.data(), d_dl.data(), d_dout.data(), d_x.data(), d_zc.data(), d_W.data(),
                                     d_lambda.data(), d_blocked.data(), n, scratch.data(), nullptr);
  EXPECT_TRUE(within(to_host_floats(d_z), want_z, z_bound, 1)) << "gate_z = W · x[:Win]";
  EXPECT_TRUE(within(to_host_floats(d_out), want_out, out_bound, D)) << "smear out";
  EXPECT_TRUE(within(to_host_floats(d_dx), want_dx, dx_bound, D)) << "dx";
  EXPECT_TRUE(within(to_host_floats(d_dW), want_dW, dW_bound, Win)) << "dW";
  EXPECT_TRUE(within(to_host_floats(d_dl), want_dl, dl_bound, 1)) << "dlambda";
}

TEST_F(FeaturesEmbeddingGpu, SmearInputGatedMatchesCpu) {
  check_smear_input<16, kWin>(4, 250, true);
  check_smear_input<16, kWin>(1, 1, false);
  check_smear_input<512, kWin>(4, 250, false);
  check_smear_input<512, kWin>(64, 1024, true);  // SmearGate v3 with the BOS fix (rec/2026-04-29)
  check_smear_input<48, 13>(4, 250, true);        // a window that is not a multiple of the pack width, ragged lanes
  check_smear_input<512, 200>(4, 250, false);     // a window wider than one pack per lane
  check_smear_input<18, 6>(3, 77, true);          // 2-wide packs
}

// ------------------------------------------------------------------------------ U-Net gated skip
template <int D>
void check_gated_skip(std::int64_t n, bool alias) {
  SCOPED_TRACE(::testing::Message() << "gated_skip, D = " << D << ", n = " << n << (alias ? ", out == x, dx == dout" : ""));
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  const auto x = normal_floats(nd, 51, 2.0f);
  const auto s = normal_floats(nd, 52, 1.5f);
  auto w = normal_floats(D, 53, 0.3f);
  for (auto& v : w) v += 1.0f;  // skip weights start at 1
  const auto g = normal_floats(D, 54, 1.5f);
  const auto dout = normal_floats(nd, 55);
  const auto ds0 = normal_floats(nd, 56, 0.5f);  // ds accumulates (the encoder output's other uses)
  const auto dw0 = normal_floats(D, 57, 3.0f), dg0 = normal_floats(D, 58, 3.0f);

  std::vector<float> want_out(nd), want_dx(nd), want_ds = ds0, want_dw = dw0, want_dg = dg0;
  cpu::gated_skip_forward<D>(want_out.data(), x.data(), s.data(), w.data(), g.data(), n);
  cpu::gated_skip_backward<D>(want_dx.data(), want_ds.data(), want_dw.data(), want_dg.data(), dout.data(), x.data(), s.data(), w.data(),
                              g.data(), n);
  std::vector<double> out_bound(nd), dx_bound(nd), ds_bound(nd), err_g(D, 0.0);
  std::vector<TermSums> tw(D), tg(D);
  for (std::int64_t r = 0; r < n; ++r) {
    for (int i = 0; i < D; ++i) {
      const std::size_t k = static_cast<std::size_t>(r) * D + i;
      const double sg = sig(g[i]), ws = static_cast<double>(w[i]) * s[k], go = dout[k];
      // ws, x − ws, the product and the sum rounded on each side (|out| <= |x| + 2|ws|): <= u·(3|x| + 5|ws|) per side.
      out_bound[k] = kSig * sg * std::fabs(x[k] - ws) + 12 * kU * (std::fabs(x[k]) + std::fabs(ws));
      dx_bound[k] = (kSig + 2 * kU) * sg * std::fabs(go);
      // ds0 + ((1 − σ)·w)·dout: 1 − σ differs by kSig·σ + 2u (its roundings); the products and the sum
      // are rounded on each side.
      ds_bound[k] = (kSig * sg + 2 * kU) * std::fabs(w[i] * go) + 8 * kU * std::fabs((1 - sg) * w[i] * go) + 4 * kU * std::fabs(ds0[k]);
      tw[i].add(go * s[k]);
      tg[i].add(go * (x[k] - ws));
      err_g[i] += 2 * kU * std::fabs(go) * (std::fabs(x[k]) + std::fabs(ws));  // the GPU's fp32 x − w·s (rounded or fused)
    }
  }
  std::vector<double> dw_bound(D), dg_bound(D);
  for (int i = 0; i < D; ++i) {
    const float sg = cpu::sigmoid(g[i]);
    const double f = static_cast<double>(sg) * (1.0f - sg), omg = 1.0f - sg;  // the CPU's factors (float σ, 1 − σ)
    dw_bound[i] = param_bound(omg, kSig * sg + 2 * kU, tw[i], column_depth<D>(), want_dw[i], dw0[i]);
    dg_bound[i] = param_bound(f, kSig * sg + 4 * kU * f, tg[i], column_depth<D>(), want_dg[i], dg0[i], f * err_g[i]);
  }

  auto d_x = to_device_f32(x, "x");
  auto d_s = to_device_f32(s, "s");
  auto d_w = to_device_f32(w, "w");
  auto d_g = to_device_f32(g, "g");
  auto d_dout = to_device_f32(dout, "dout");
  auto d_ds = to_device_f32(ds0, "ds");
  auto d_dw = to_device_f32(dw0, "dw");
  auto d_dg = to_device_f32(dg0, "dg");
  cuda::DeviceBuffer<float> d_out(alias ? 0 : nd, "out"), d_dx(alias ? 0 : nd, "dx");
  cuda::DeviceBuffer<std::uint8_t> scratch(cuda::gated_skip_backward_scratch_bytes<D>(n), "scratch");
  // The backward reads the forward's x: with out == x, run it on a copy.
  auto d_x_fwd = to_device_f32(x, "x (forward, in place)");
  float* out = alias ? d_x_fwd.data() : d_out.data();
  float* dx = alias ? d_dout.data() : d_dx.data();
  cuda::gated_skip_forward<D>(out, d_x_fwd.data(), d_s.data(), d_w.data(), d_g.data(), n, nullptr);
  cuda::gated_skip_backward<D>(dx, d_ds.data(), d_dw.data(), d_dg.data(), d_dout.data(), d_x.data(), d_s.data(), d_w.data(), d_g.data(), n,
                               reinterpret_cast<float*>(scratch.data()), nullptr);
  EXPECT_TRUE(within(alias ? to_host_floats(d_x_fwd) : to_host_floats(d_out), want_out, out_bound, D)) << "skip out";
  EXPECT_TRUE(within(alias ? to_host_floats(d_dout) : to_host_floats(d_dx), want_dx, dx_bound, D)) << "dx";
  EXPECT_TRUE(within(to_host_floats(d_ds), want_ds, ds_bound, D)) << "ds";
  EXPECT_TRUE(within(to_host_floats(d_dw), want_dw, dw_bound, D)) << "dw";
  EXPECT_TRUE(within(to_host_floats(d_dg), want_dg, dg_bound, D)) << "dg";
}

TEST_F(FeaturesEmbeddingGpu, GatedSkipMatchesCpu) {
  check_gated_skip<16>(1000, false);
  check_gated_skip<16>(1000, true);
  check_gated_skip<512>(1, false);
  check_gated_skip<512>(65536, true);  // the model's use: x_in written over x, gx turned into d x in place
  check_gated_skip<48>(1000, false);   // ragged lanes
  check_gated_skip<6>(1000, true);     // 2-wide packs, 3 lanes' worth in a 4-lane group
  check_gated_skip<33>(77, false);     // 1-wide packs
}

// ------------------------------------------------------------------------------ determinism
// Every backward twice on the same inputs at the real size: the same bits (parameter gradients
// and input gradients).
TEST_F(FeaturesEmbeddingGpu, BackwardsAreBitwiseReproducible) {
  constexpr int D = 512;
  constexpr std::int64_t batch = 64, seq = 1024, n = batch * seq;
  const std::size_t nd = static_cast<std::size_t>(n) * D;
  auto d_dout = to_device_f32(normal_floats(nd, 61), "dout");
  auto d_x = to_device_f32(normal_floats(nd, 62), "x");
  auto d_s = to_device_f32(normal_floats(nd, 63), "s");
  auto d_z = to_device_bf16(normal_floats(nd, 64), "z");
  auto d_p = to_device_f32(normal_floats(D, 65), "per-channel parameter");
  auto d_p2 = to_device_f32(normal_floats(D, 66), "second per-channel parameter");
  auto d_gz = to_device_f32(normal_floats(static_cast<std::size_t>(n), 67), "gate_z");
  auto d_lambda = to_device_f32(std::vector<float>{0.8f}, "scalar parameter");
  auto d_blocked = to_device(make_blocked(batch, seq, 68, true), "blocked");
  cuda::DeviceBuffer<float> d_dx(nd, "dx"), d_ds(nd, "ds"), d_g1(D, "grad 1"), d_g2(D, "grad 2");
  cuda::DeviceBuffer<cuda::nv_bf16> d_dz(nd, "dz");
  cuda::DeviceBuffer<std::uint8_t> scratch(cuda::embedding_features_scratch_bytes<D, kWin>(n), "scratch");
  auto* sf = reinterpret_cast<float*>(scratch.data());

  // Runs backward `which` from zeroed gradients; returns (param grads, dx or dz bits) as floats.
  auto run = [&](int which) {
    d_g1.zero();
    d_g2.zero();
    d_ds.zero();
    std::vector<float> out;
    auto append = [&](const std::vector<float>& v) { out.insert(out.end(), v.begin(), v.end()); };
    switch (which) {
      case 0:
        cuda::sigmoid_gated_add_backward<D>(d_dz.data(), d_g1.data(), d_dout.data(), d_z.data(), d_p.data(), n, sf, nullptr);
        append(to_host_floats(d_dz));
        break;
      case 1:
        cuda::scalar_scaled_add_backward<D>(d_dz.data(), d_g1.data(), d_dout.data(), d_z.data(), d_lambda.data(), n, scratch.data(), nullptr);
        append(to_host_floats(d_dz));
        break;
      case 2:
        cuda::smear_backward<D>(d_dx.data(), d_g1.data(), d_dout.data(), d_x.data(), d_p.data(), d_blocked.data(), n, true, sf, nullptr);
        append(to_host_floats(d_dx));
        break;
      case 3:
        cuda::smear_input_backward<D, kWin>(d_dx.data(), d_g1.data(), d_g2.data(), d_dout.data(), d_x.data(), d_gz.data(), d_p.data(),
                                            d_lambda.data(), d_blocked.data(), n, scratch.data(), nullptr);
        append(to_host_floats(d_dx));
        break;
      default:
        cuda::gated_skip_backward<D>(d_dx.data(), d_ds.data(), d_g1.data(), d_g2.data(), d_dout.data(), d_x.data(), d_s.data(), d_p.data(),
                                     d_p2.data(), n, sf, nullptr);
        append(to_host_floats(d_dx));
        append(to_host_floats(d_ds));
        break;
    }
    append(to_host_floats(d_g1));
    append(to_host_floats(d_g2));
    return out;
  };
  const char* names[] = {"sigmoid_gated_add_backward", "scalar_scaled_add_backward", "smear_backward", "smear_input_backward",
                         "gated_skip_backward"};
  for (int which = 0; which < 5; ++which) {
    const auto first = run(which), second = run(which);
    EXPECT_TRUE(same_bits(first, second)) << names[which];
  }
}

}  // namespace
}  // namespace pgolf
