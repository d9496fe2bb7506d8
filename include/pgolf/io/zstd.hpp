// One-shot zstd compression of byte buffers.
#pragma once

#include <zstd.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "pgolf/core/error.hpp"

namespace pgolf::io {

// The level the Parameter Golf records compress their weights with (zstd -22, the maximum).
inline constexpr int kDefaultZstdLevel = 22;

inline std::vector<std::uint8_t> zstd_compress(std::span<const std::uint8_t> data, int level = kDefaultZstdLevel) {
  PGOLF_CHECK(level >= 1 && level <= ZSTD_maxCLevel(), "zstd level " << level << " outside [1, " << ZSTD_maxCLevel() << "]");
  std::vector<std::uint8_t> out(ZSTD_compressBound(data.size()));
  const std::size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n)) PGOLF_FAIL("zstd compression failed: " << ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

// Decompresses one frame that declares its content size, which must equal `expected_size`.
inline std::vector<std::uint8_t> zstd_decompress(std::span<const std::uint8_t> frame, std::uint64_t expected_size,
                                                 const std::string& context) {
  const unsigned long long declared = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (declared == ZSTD_CONTENTSIZE_ERROR) PGOLF_FAIL(context << ": the payload is not a zstd frame");
  if (declared == ZSTD_CONTENTSIZE_UNKNOWN) PGOLF_FAIL(context << ": the zstd frame does not declare its content size");
  PGOLF_CHECK_EQ(static_cast<std::uint64_t>(declared), expected_size, context << ": decompressed payload size");
  std::vector<std::uint8_t> out(static_cast<std::size_t>(expected_size));
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  PGOLF_CHECK(dctx != nullptr, context << ": cannot create a zstd context");
  // Single-pass decompression into a buffer of the declared size allocates no window, so level-22
  // frames need no ZSTD_d_windowLogMax (that limit only guards the streaming API).
  const std::size_t n = ZSTD_decompressDCtx(dctx, out.data(), out.size(), frame.data(), frame.size());
  ZSTD_freeDCtx(dctx);
  if (ZSTD_isError(n)) PGOLF_FAIL(context << ": zstd decompression failed: " << ZSTD_getErrorName(n));
  PGOLF_CHECK_EQ(static_cast<std::uint64_t>(n), expected_size, context << ": decompressed bytes");
  return out;
}

}  // namespace pgolf::io
