// Element-wise ops whose scalar parameters live in device memory, for the value residual (λ mix
// and σ(α)), the value embedding's per-layer scale and the hash-embedding scale. The CPU oracle is
// cpu::axpby and cpu::dot_all (ops/features.hpp) as gpt_cpu.hpp's block_forward/block_backward
// chain them:
//
//   add_scaled   out = x + map(s[0])·y          v += σ(α)·v0_raw, v_pre = v + s_l·ve_base, gv0 += λ0·gv
//   axpby        out = a[0]·x + b[0]·y          v = λ0·v0 + λ1·v (a = λ, b = λ + 1)
//   scale_by     out = s[0]·x                   gv = λ1·gv, gz = scale·g
//   dot_add      dst[0] += map'(s[0])·Σ x·y     every scalar parameter's gradient
//   copy_rows    dst[r, :w] (+)= src[r, :w]     v out of the q|k|v GEMM rows and back
//
// ScalarMap says how the stored parameter s is used: identity (s) or sigmoid (σ(s)); map' is its
// derivative (1, or σ(s)(1 − σ(s))). The parameters are read by the kernels through their device
// pointers, so a launcher never synchronises with the host.
//
// Element-wise kernels: every element is read and written by one thread, in that order, so `out`
// may be the same pointer as `x` or `y` (not a partial overlap). 16-byte accesses (V = 16 bytes /
// the widest element type) when every pointer is aligned to V elements, one element per access
// otherwise; both paths compute the same values. The arithmetic is fp32 (bf16 operands widened,
// a bf16 result rounded once, to nearest even).
//
// dot_add is deterministic: thread t of block b sums elements [4096·b + 16·t, 4096·b + 16·t + 16)
// in order in fp64 (the fp32 products are exact in fp64), the block's 256 sums go through
// block_sum's fixed tree, and one block adds the per-block partials with the same fixed tree. The
// order depends on `count` alone, not on alignment or timing, so the vector and the scalar path
// give the same bits, run after run. Scratch: dot_add_scratch_bytes(count).
#pragma once

#include <cstdint>
#include <type_traits>

#include "pgolf/core/error.hpp"
#include "pgolf/core/platform.hpp"
#include "pgolf/ops/cuda/common.cuh"
#include "pgolf/ops/cuda/rowwise.cuh"

namespace pgolf::cuda {

enum class ScalarMap : std::uint8_t {
  identity,  // the parameter s as stored
  sigmoid,   // σ(s)
};

namespace feat {

// σ(z) = 1 / (1 + e^−z), the CPU oracle's formula (cpu::sigmoid), in fp32 (IEEE division; expf
// within 2 ulp on the device).
PGOLF_HD inline float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// The parameter as used, map(s).
PGOLF_HD inline float map_scalar(float s, ScalarMap map) { return map == ScalarMap::sigmoid ? sigmoid(s) : s; }

// d map(s) / ds: 1 (identity), σ(s)(1 − σ(s)) (sigmoid; in fp32, as the oracle's s·(1 − s)).
PGOLF_HD inline float map_derivative(float s, ScalarMap map) {
  if (map != ScalarMap::sigmoid) return 1.0f;
  const float sg = sigmoid(s);
  return sg * (1.0f - sg);
}

// The widest power of two <= max_w that divides e.
constexpr int widest_divisor(int e, int max_w) {
  int w = max_w;
  while (w > 1 && e % w != 0) w /= 2;
  return w;
}

constexpr int gcd(int a, int b) {
  while (b != 0) {
    const int t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Values per 16-byte access for a set of element types (16 bytes of the widest).
template <class... T>
constexpr int vec16() {
  std::size_t widest = 1;
  ((widest = sizeof(T) > widest ? sizeof(T) : widest), ...);
  return static_cast<int>(16 / widest);
}

inline bool aligned_to(const void* p, std::size_t bytes) { return reinterpret_cast<std::uintptr_t>(p) % bytes == 0; }

// Host check: p is aligned to `vec` elements of T (the kernel accesses it in vec-element vectors).
template <class T>
void check_aligned(const T* p, int vec, const char* op, const char* name) {
  const std::size_t bytes = sizeof(T) * static_cast<std::size_t>(vec);
  PGOLF_CHECK(aligned_to(p, bytes), op << ": " << name << " = " << static_cast<const void*>(p) << " must be " << bytes
                                       << "-byte aligned (the kernel accesses it as " << vec
                                       << "-element vectors); pass a pointer that is a multiple of " << vec
                                       << " elements past a cudaMalloc'd (or arena) base");
}

// E consecutive values at p as floats, W values per access (p aligned to W elements; W·sizeof(T)
// <= 16). Param = true reads through the read-only cache (data shared by many threads or blocks).
template <int E, int W, bool Param = false, class T>
__device__ __forceinline__ void load_run(float (&x)[E], const T* p) {
  static_assert(E % W == 0, "a run must be a whole number of accesses");
#pragma unroll
  for (int i = 0; i < E / W; ++i) {
    float t[W];
    rowwise::load_pack<W, Param>(t, p + i * W);
#pragma unroll
    for (int j = 0; j < W; ++j) x[i * W + j] = t[j];
  }
}

// p[0..E) = T(x) (bf16: round to nearest even), W values per access.
template <int E, int W, class T>
__device__ __forceinline__ void store_run(T* p, const float (&x)[E]) {
  static_assert(E % W == 0, "a run must be a whole number of accesses");
#pragma unroll
  for (int i = 0; i < E / W; ++i) {
    float t[W];
#pragma unroll
    for (int j = 0; j < W; ++j) t[j] = x[i * W + j];
    rowwise::store_pack<W>(p + i * W, t);
  }
}

// A scalar coefficient: map(p[0]), or 1 when p is null.
struct Coef {
  const float* p;
  ScalarMap map;
};
__device__ __forceinline__ float coef_value(const Coef& c) { return c.p ? map_scalar(__ldg(c.p), c.map) : 1.0f; }

inline constexpr int kThreads = 256;
inline constexpr int kDotPerThread = 16;                     // consecutive elements per thread
inline constexpr int kDotChunk = kThreads * kDotPerThread;  // elements per block partial

template <class T>
inline constexpr bool kIsElement = std::is_same_v<T, float> || std::is_same_v<T, nv_bf16>;

}  // namespace feat

namespace kernels {

// out = ca·x + cb·y (HasY) or ca·x, V elements per access, the count % V tail one per thread.
template <int V, bool HasY, class Out, class X, class Y>
__global__ void __launch_bounds__(feat::kThreads)
    scalar_lincomb(Out* out, const X* x, feat::Coef a, const Y* y, feat::Coef b, std::int64_t count) {
  const float ca = feat::coef_value(a);
  const float cb = HasY ? feat::coef_value(b) : 0.0f;
  const std::int64_t packs = count / V;
  const std::int64_t tid = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t p = tid; p < packs; p += stride) {
    float xv[V], yv[V] = {};
    rowwise::load_pack<V>(xv, x + p * V);
    if constexpr (HasY) rowwise::load_pack<V>(yv, y + p * V);
#pragma unroll
    for (int i = 0; i < V; ++i) xv[i] = HasY ? ca * xv[i] + cb * yv[i] : ca * xv[i];
    rowwise::store_pack<V>(out + p * V, xv);
  }
  if (const std::int64_t i = packs * V + tid; i < count) {
    const float xv = to_float(x[i]);
    float o = ca * xv;
    if constexpr (HasY) o = ca * xv + cb * to_float(y[i]);
    out[i] = from_float<Out>(o);
  }
}

// dst[r·ldd + c] (+)= src[r·lds + c] for c < packs_per_row·V, V elements per access.
template <int V, class Dst, class Src>
__global__ void __launch_bounds__(feat::kThreads)
    copy_rows(Dst* dst, std::int64_t ldd, const Src* src, std::int64_t lds, std::int64_t rows, std::int64_t packs_per_row,
              bool accumulate) {
  const std::int64_t total = rows * packs_per_row;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t p = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; p < total; p += stride) {
    const std::int64_t r = p / packs_per_row;
    const std::int64_t c = (p - r * packs_per_row) * V;
    float v[V];
    rowwise::load_pack<V>(v, src + r * lds + c);
    if (accumulate) {
      float old[V];
      rowwise::load_pack<V>(old, dst + r * ldd + c);
#pragma unroll
      for (int i = 0; i < V; ++i) v[i] = old[i] + v[i];
    }
    rowwise::store_pack<V>(dst + r * ldd + c, v);
  }
}

// partials[b] = Σ over block b's kDotChunk elements of x·y in fp64; thread t sums its kDotPerThread
// consecutive elements in order (V per access), then block_sum's fixed tree.
template <int V, class X, class Y>
__global__ void __launch_bounds__(feat::kThreads) dot_partials(double* partials, const X* x, const Y* y, std::int64_t count) {
  __shared__ double red[feat::kThreads / kWarpSize];
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * feat::kDotChunk + static_cast<std::int64_t>(threadIdx.x) * feat::kDotPerThread;
  double acc = 0.0;
  if (first + feat::kDotPerThread <= count) {
#pragma unroll
    for (int k = 0; k < feat::kDotPerThread / V; ++k) {
      float xv[V], yv[V];
      rowwise::load_pack<V, true>(xv, x + first + k * V);
      rowwise::load_pack<V, true>(yv, y + first + k * V);
#pragma unroll
      for (int i = 0; i < V; ++i) acc += static_cast<double>(xv[i]) * static_cast<double>(yv[i]);
    }
  } else {
    for (std::int64_t i = first; i < count; ++i) acc += static_cast<double>(to_float(x[i])) * static_cast<double>(to_float(y[i]));
  }
  acc = block_sum<feat::kThreads>(acc, red);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// dst[0] = dst[0] + float(Σ partials · map'(s)), the oracle's G += T(dot_all(...) · s · (1 − s)).
template <int = 0>  // a template, so that every translation unit may instantiate it (no ODR clash)
__global__ void __launch_bounds__(feat::kThreads)
    dot_final(float* dst, const double* partials, std::int64_t parts, const float* s, ScalarMap map) {
  __shared__ double red[feat::kThreads / kWarpSize];
  double acc = 0.0;
  for (std::int64_t k = threadIdx.x; k < parts; k += feat::kThreads) acc += partials[k];
  acc = block_sum<feat::kThreads>(acc, red);
  if (threadIdx.x == 0) {
    double term = acc;
    if (s != nullptr && map == ScalarMap::sigmoid) {
      const float sg = feat::sigmoid(__ldg(s));
      term = term * static_cast<double>(sg) * static_cast<double>(1.0f - sg);
    }
    dst[0] = dst[0] + static_cast<float>(term);
  }
}

}  // namespace kernels

namespace feat {

template <class Out, class X, class Y, bool HasY>
void launch_lincomb(Out* out, const X* x, Coef a, const Y* y, Coef b, std::int64_t count, const char* op, cudaStream_t stream) {
  static_assert(kIsElement<Out> && kIsElement<X> && kIsElement<Y>, "scalar ops read and write float or nv_bf16");
  PGOLF_CHECK(count >= 0, op << ": negative count " << count);
  if (count == 0) return;
  PGOLF_CHECK(out != nullptr && x != nullptr && (!HasY || y != nullptr), op << ": null tensor pointer with count " << count);
  constexpr int V = vec16<Out, X, Y>();
  constexpr std::size_t kOut = sizeof(Out) * V, kX = sizeof(X) * V, kY = sizeof(Y) * V;
  const bool vec = aligned_to(out, kOut) && aligned_to(x, kX) && (!HasY || aligned_to(y, kY));
  if (vec) {
    kernels::scalar_lincomb<V, HasY><<<grid_for(ceil_div(count, V), kThreads), kThreads, 0, stream>>>(out, x, a, y, b, count);
  } else {
    kernels::scalar_lincomb<1, HasY><<<grid_for(count, kThreads), kThreads, 0, stream>>>(out, x, a, y, b, count);
  }
  PGOLF_CUDA_LAUNCH_CHECK();
}

}  // namespace feat

// out (count) = x + map(s[0])·y. s: one fp32 device scalar. out may be x or y.
template <class Out, class X, class Y>
void add_scaled(Out* out, const X* x, const float* s, ScalarMap map, const Y* y, std::int64_t count, cudaStream_t stream) {
  PGOLF_CHECK(count == 0 || s != nullptr, "add_scaled: s (the device scalar) is null");
  feat::launch_lincomb<Out, X, Y, true>(out, x, feat::Coef{nullptr, ScalarMap::identity}, y, feat::Coef{s, map}, count, "add_scaled",
                                        stream);
}

// out (count) = a[0]·x + b[0]·y. a, b: fp32 device scalars (lambda_mix: a = λ, b = λ + 1). out may
// be x or y.
template <class Out, class X, class Y>
void axpby(Out* out, const float* a, const X* x, const float* b, const Y* y, std::int64_t count, cudaStream_t stream) {
  PGOLF_CHECK(count == 0 || (a != nullptr && b != nullptr), "axpby: a or b (device scalars) is null");
  feat::launch_lincomb<Out, X, Y, true>(out, x, feat::Coef{a, ScalarMap::identity}, y, feat::Coef{b, ScalarMap::identity}, count, "axpby",
                                        stream);
}

// out (count) = s[0]·x. out may be x.
template <class Out, class X>
void scale_by(Out* out, const float* s, const X* x, std::int64_t count, cudaStream_t stream) {
  PGOLF_CHECK(count == 0 || s != nullptr, "scale_by: s (the device scalar) is null");
  feat::launch_lincomb<Out, X, X, false>(out, x, feat::Coef{s, ScalarMap::identity}, static_cast<const X*>(nullptr),
                                         feat::Coef{nullptr, ScalarMap::identity}, count, "scale_by", stream);
}

// Scratch bytes dot_add needs for `count` elements (one fp64 partial per 4096 elements; 8-byte
// aligned). 0 for count = 0.
inline std::int64_t dot_add_scratch_bytes(std::int64_t count) {
  return count <= 0 ? 0 : ceil_div(count, static_cast<std::int64_t>(feat::kDotChunk)) * static_cast<std::int64_t>(sizeof(double));
}

// dst[0] += map'(s[0]) · Σ_i x[i]·y[i]   (map' = 1 for identity or a null s; σ(s)(1 − σ(s)) for
// sigmoid). Deterministic, fp64 accumulation in a fixed order (see the file comment); the result
// is rounded to fp32 once and added to dst in fp32, as the oracle's G += T(dot_all(x, y)·…).
// scratch: dot_add_scratch_bytes(count) bytes, 8-byte aligned. count = 0 leaves dst unchanged.
template <class X, class Y>
void dot_add(float* dst, const X* x, const Y* y, std::int64_t count, const float* s, ScalarMap map, void* scratch, cudaStream_t stream) {
  static_assert(feat::kIsElement<X> && feat::kIsElement<Y>, "dot_add reads float or nv_bf16");
  constexpr const char* op = "dot_add";
  PGOLF_CHECK(count >= 0, op << ": negative count " << count);
  if (count == 0) return;
  PGOLF_CHECK(dst != nullptr && x != nullptr && y != nullptr, op << ": null pointer (dst, x or y)");
  PGOLF_CHECK(scratch != nullptr && feat::aligned_to(scratch, sizeof(double)),
              op << ": needs an 8-byte aligned scratch of dot_add_scratch_bytes(" << count << ") = " << dot_add_scratch_bytes(count)
                 << " bytes, got " << scratch);
  const std::int64_t parts = ceil_div(count, static_cast<std::int64_t>(feat::kDotChunk));
  PGOLF_CHECK(parts <= 0x7fffffffLL, op << ": " << count << " elements exceed one grid");
  auto* partials = static_cast<double*>(scratch);
  constexpr int V = feat::vec16<X, Y>();
  static_assert(feat::kDotPerThread % V == 0, "a thread's run must be whole vectors");
  if (feat::aligned_to(x, sizeof(X) * V) && feat::aligned_to(y, sizeof(Y) * V)) {
    kernels::dot_partials<V><<<static_cast<unsigned>(parts), feat::kThreads, 0, stream>>>(partials, x, y, count);
  } else {
    kernels::dot_partials<1><<<static_cast<unsigned>(parts), feat::kThreads, 0, stream>>>(partials, x, y, count);
  }
  PGOLF_CUDA_LAUNCH_CHECK();
  kernels::dot_final<><<<1, feat::kThreads, 0, stream>>>(dst, partials, parts, s, map);
  PGOLF_CUDA_LAUNCH_CHECK();
}

// dst[r·ldd + c] = Dst(src[r·lds + c]) (accumulate: dst += src, in fp32, rounded once) for r < rows,
// c < width: a slice of a wider row to or from a packed buffer (e.g. v out of the q|k|v rows: src =
// qkv + (H + Hkv)·Hd, lds = (H + 2·Hkv)·Hd, ldd = width = Hkv·Hd). 16-byte accesses when width,
// both strides and both pointers allow, else one element per access. dst and src must not overlap.
template <class Dst, class Src>
void copy_rows(Dst* dst, std::int64_t ldd, const Src* src, std::int64_t lds, std::int64_t rows, int width, bool accumulate,
               cudaStream_t stream) {
  static_assert(feat::kIsElement<Dst> && feat::kIsElement<Src>, "copy_rows moves float or nv_bf16");
  constexpr const char* op = "copy_rows";
  PGOLF_CHECK(rows >= 0 && width >= 0, op << ": negative extent (rows " << rows << ", width " << width << ")");
  if (rows == 0 || width == 0) return;
  PGOLF_CHECK(ldd >= width && lds >= width, op << ": row strides ldd " << ldd << " / lds " << lds << " narrower than width " << width);
  PGOLF_CHECK(dst != nullptr && src != nullptr, op << ": null pointer");
  constexpr int V = feat::vec16<Dst, Src>();
  const bool vec = width % V == 0 && ldd % V == 0 && lds % V == 0 && feat::aligned_to(dst, sizeof(Dst) * V) &&
                   feat::aligned_to(src, sizeof(Src) * V);
  if (vec) {
    const std::int64_t ppr = width / V;
    kernels::copy_rows<V><<<grid_for(rows * ppr, feat::kThreads), feat::kThreads, 0, stream>>>(dst, ldd, src, lds, rows, ppr, accumulate);
  } else {
    kernels::copy_rows<1><<<grid_for(rows * width, feat::kThreads), feat::kThreads, 0, stream>>>(dst, ldd, src, lds, rows, width,
                                                                                                 accumulate);
  }
  PGOLF_CUDA_LAUNCH_CHECK();
}

}  // namespace pgolf::cuda
