// Philox4x32-10, a counter-based random number generator (Salmon, Moraes, Dror, Shaw,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
//
// A value is a pure function of (key, counter): element i of a tensor can be drawn by any thread on
// any device, in any order, and is the same everywhere. pgolf uses key = (seed, stream) and
// counter = element index, one stream per tensor, so initialisation does not depend on the backend,
// the thread count or the order tensors are visited in.
#pragma once

#include <cmath>
#include <cstdint>

#include "pgolf/core/platform.hpp"

namespace pgolf {

struct Philox4x32 {
  // Round multipliers and Weyl key increments from the paper (Table 2 / Random123).
  static constexpr std::uint32_t kM0 = 0xD2511F53u;
  static constexpr std::uint32_t kM1 = 0xCD9E8D57u;
  static constexpr std::uint32_t kW0 = 0x9E3779B9u;
  static constexpr std::uint32_t kW1 = 0xBB67AE85u;
  static constexpr int kRounds = 10;

  struct Block {
    std::uint32_t v[4];
  };

  PGOLF_HD static Block generate(Block ctr, std::uint32_t k0, std::uint32_t k1) {
    for (int r = 0; r < kRounds; ++r) {
      const std::uint64_t p0 = static_cast<std::uint64_t>(kM0) * ctr.v[0];
      const std::uint64_t p1 = static_cast<std::uint64_t>(kM1) * ctr.v[2];
      const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
      const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
      ctr = Block{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
      k0 += kW0;
      k1 += kW1;
    }
    return ctr;
  }
};

// A stream of random numbers identified by (seed, stream id), indexed by a 64-bit counter.
class RandomStream {
 public:
  PGOLF_HD RandomStream(std::uint64_t seed, std::uint64_t stream) : seed_(seed), stream_(stream) {}

  // Four independent 32-bit words for counter `index`.
  PGOLF_HD Philox4x32::Block bits(std::uint64_t index) const {
    const Philox4x32::Block ctr{{static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32),
                                 static_cast<std::uint32_t>(stream_), static_cast<std::uint32_t>(stream_ >> 32)}};
    return Philox4x32::generate(ctr, static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32));
  }

  // Uniform in the open interval (0, 1): the top 24 bits of a word, centred in their cell.
  PGOLF_HD static float to_unit_float(std::uint32_t w) { return (static_cast<float>(w >> 8) + 0.5f) * (1.0f / 16777216.0f); }
  // Uniform in (0, 1) with 53 bits: two words.
  PGOLF_HD static double to_unit_double(std::uint32_t hi, std::uint32_t lo) {
    const std::uint64_t m = (static_cast<std::uint64_t>(hi) << 21) ^ (lo >> 11);  // 53 bits
    return (static_cast<double>(m & ((1ull << 53) - 1)) + 0.5) * (1.0 / 9007199254740992.0);
  }

  // Element i of a uniform(0,1) sequence.
  PGOLF_HD float uniform(std::uint64_t i) const { return to_unit_float(bits(i / 4).v[i % 4]); }

  // Element i of a standard normal sequence (Box-Muller on 53-bit uniforms, in double so that
  // the float result does not depend on the libm of the host or the device).
  PGOLF_HD float normal(std::uint64_t i) const {
    const auto b = bits(i / 2);
    const double u1 = to_unit_double(b.v[0], b.v[1]);
    const double u2 = to_unit_double(b.v[2], b.v[3]);
    const double r = sqrt(-2.0 * log(u1));
    constexpr double kTwoPi = 6.283185307179586476925286766559;
    const double z = (i % 2 == 0) ? r * cos(kTwoPi * u2) : r * sin(kTwoPi * u2);
    return static_cast<float>(z);
  }

  // A uniform integer in [0, n) for n > 0 (Lemire's multiply-shift; bias below 2^-32 · n).
  PGOLF_HD std::uint32_t below(std::uint64_t i, std::uint32_t n) const {
    // floor(w · n / 2^64) for the 64-bit word w = hi·2^32 + lo, without 128-bit arithmetic.
    const auto b = bits(i);
    const std::uint64_t hi_part = static_cast<std::uint64_t>(b.v[0]) * n;
    const std::uint64_t lo_part = (static_cast<std::uint64_t>(b.v[1]) * n) >> 32;
    return static_cast<std::uint32_t>((hi_part + lo_part) >> 32);
  }

 private:
  std::uint64_t seed_;
  std::uint64_t stream_;
};

}  // namespace pgolf
