// Non-cryptographic hashes: FNV-1a 64 (configuration fingerprints) and CRC-32C (file checksums).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace pgolf {

// FNV-1a, 64-bit (offset basis and prime from the FNV reference, http://www.isthe.com/chongo/tech/comp/fnv/).
inline constexpr std::uint64_t kFnv64Offset = 0xcbf29ce484222325ull;
inline constexpr std::uint64_t kFnv64Prime = 0x100000001b3ull;

constexpr std::uint64_t fnv1a64(std::string_view bytes, std::uint64_t h = kFnv64Offset) {
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= kFnv64Prime;
  }
  return h;
}

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4 and Snappy.
// Test vector: crc32c("123456789") == 0xE3069283.
namespace detail {
inline constexpr std::uint32_t kCrc32cPolynomial = 0x82F63B78u;
constexpr std::array<std::uint32_t, 256> make_crc32c_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ kCrc32cPolynomial : c >> 1;
    table[i] = c;
  }
  return table;
}
inline constexpr auto kCrc32cTable = make_crc32c_table();
}  // namespace detail

// Continues a CRC: crc32c(b, crc32c(a)) == crc32c(a ++ b).
inline std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc = 0) {
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  for (std::size_t i = 0; i < n; ++i) crc = detail::kCrc32cTable[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

}  // namespace pgolf
