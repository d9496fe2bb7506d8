// bf16 and fp16 storage types usable on host and device, with round-to-nearest-even conversion.
//
// They are plain 16-bit containers: arithmetic happens in float. The conversions are written with
// integer operations so that host and device produce the same bits for the same float.
#pragma once

#include <cstdint>
#include <cstring>

#include "pgolf/core/platform.hpp"

namespace pgolf {

PGOLF_HD inline std::uint32_t float_to_bits(float f) {
#if PGOLF_IN_DEVICE_CODE
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

PGOLF_HD inline float bits_to_float(std::uint32_t u) {
#if PGOLF_IN_DEVICE_CODE
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// bfloat16: the upper half of an IEEE float.
struct bf16 {
  std::uint16_t bits = 0;

  PGOLF_HD static bf16 from_float(float f) {
    std::uint32_t u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<std::uint16_t>((u >> 16) | 0x0040u)};  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
    return bf16{static_cast<std::uint16_t>(u >> 16)};
  }
  PGOLF_HD float to_float() const { return bits_to_float(static_cast<std::uint32_t>(bits) << 16); }
  PGOLF_HD friend bool operator==(bf16 a, bf16 b) { return a.bits == b.bits; }
};

// IEEE 754 binary16, the reference's storage type for per-row scales and small passthrough tensors.
struct f16 {
  std::uint16_t bits = 0;

  PGOLF_HD static f16 from_float(float f) {
    const std::uint32_t x = float_to_bits(f);
    const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
    const std::uint32_t a = x & 0x7fffffffu;
    if (a > 0x7f800000u) return f16{static_cast<std::uint16_t>(sign | 0x7e00u)};  // NaN
    if (a >= 0x477ff000u) return f16{static_cast<std::uint16_t>(sign | 0x7c00u)};  // >= 65520 rounds to inf
    const std::uint32_t e = a >> 23;
    if (e < 113) {                     // below 2^-14: a half subnormal (or zero)
      if (e < 102) return f16{sign};   // below 2^-25: rounds to zero
      const std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
      const std::uint32_t shift = 126 - e;  // value = m · 2^(e-150), subnormal unit 2^-24
      std::uint32_t r = m >> shift;
      const std::uint32_t rem = m & ((1u << shift) - 1u);
      const std::uint32_t half = 1u << (shift - 1u);
      if (rem > half || (rem == half && (r & 1u))) ++r;
      return f16{static_cast<std::uint16_t>(sign | r)};
    }
    std::uint32_t h = ((e - 112u) << 10) | ((a >> 13) & 0x3ffu);
    const std::uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is correct
    return f16{static_cast<std::uint16_t>(sign | h)};
  }

  PGOLF_HD float to_float() const {
    const std::uint32_t sign = static_cast<std::uint32_t>(bits & 0x8000u) << 16;
    const std::uint32_t e = (bits >> 10) & 0x1fu;
    std::uint32_t m = bits & 0x3ffu;
    if (e == 0x1f) return bits_to_float(sign | 0x7f800000u | (m << 13));  // inf / NaN
    if (e == 0) {
      if (m == 0) return bits_to_float(sign);
      int shift = 0;  // normalise the subnormal
      while ((m & 0x400u) == 0) {
        m <<= 1;
        ++shift;
      }
      m &= 0x3ffu;
      return bits_to_float(sign | static_cast<std::uint32_t>(113 - shift) << 23 | (m << 13));
    }
    return bits_to_float(sign | ((e + 112u) << 23) | (m << 13));
  }
  PGOLF_HD friend bool operator==(f16 a, f16 b) { return a.bits == b.bits; }
};

// Rounds a float through a 16-bit type and back: the value that storage would keep.
PGOLF_HD inline float round_to_bf16(float f) { return bf16::from_float(f).to_float(); }
PGOLF_HD inline float round_to_f16(float f) { return f16::from_float(f).to_float(); }

}  // namespace pgolf
