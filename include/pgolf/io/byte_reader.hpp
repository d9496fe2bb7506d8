// Bounds-checked little-endian reading of untrusted bytes: every read names the file and what
// was being read when the data runs out, so a truncated or corrupted file is an error, never UB.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "pgolf/core/error.hpp"

namespace pgolf::io {

class ByteReader {
 public:
  ByteReader(std::span<const std::uint8_t> bytes, std::string context) : b_(bytes), context_(std::move(context)) {}

  std::size_t position() const { return pos_; }
  std::size_t remaining() const { return b_.size() - pos_; }
  const std::string& context() const { return context_; }

  void need(std::size_t n, const char* what) const {
    if (n > remaining()) {
      PGOLF_FAIL(context_ << ": truncated or corrupted: " << what << " needs " << n << " bytes at offset " << pos_ << ", only "
                          << remaining() << " remain");
    }
  }

  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }

  // A u32-length-prefixed string of at most max_len bytes.
  std::string read_string(const char* what, std::uint32_t max_len) {
    const auto n = read<std::uint32_t>(what);
    if (n > max_len) PGOLF_FAIL(context_ << ": corrupted: " << what << " claims " << n << " bytes (limit " << max_len << ")");
    need(n, what);
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }

  std::span<const std::uint8_t> read_bytes(std::size_t n, const char* what) {
    need(n, what);
    const auto s = b_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::uint8_t> b_;
  std::string context_;
  std::size_t pos_ = 0;
};

inline void append_string(std::vector<std::uint8_t>& out, const std::string& s) {
  const auto n = static_cast<std::uint32_t>(s.size());
  out.insert(out.end(), reinterpret_cast<const std::uint8_t*>(&n), reinterpret_cast<const std::uint8_t*>(&n) + 4);
  out.insert(out.end(), s.begin(), s.end());
}

}  // namespace pgolf::io
