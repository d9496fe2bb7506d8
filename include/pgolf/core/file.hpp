// File helpers: whole-file reads, atomic writes (temp file + fsync + rename), read-only mappings.
//
// Every error names the file and the system's reason (strerror), so "loses nothing" holds: a
// failed write leaves the previous file untouched, and the temp file is removed.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "pgolf/core/error.hpp"

namespace pgolf {

namespace detail {
inline std::string errno_text() { return std::strerror(errno); }
}  // namespace detail

inline std::uint64_t size_of_file(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) PGOLF_FAIL("cannot stat " << path.string() << ": " << detail::errno_text());
  return static_cast<std::uint64_t>(st.st_size);
}

inline std::vector<std::uint8_t> read_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) PGOLF_FAIL("cannot open " << path.string() << " for reading: " << detail::errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    PGOLF_FAIL("cannot stat " << path.string() << ": " << detail::errno_text());
  }
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t r = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const std::string why = r < 0 ? detail::errno_text() : "unexpected end of file";
      ::close(fd);
      PGOLF_FAIL("short read of " << path.string() << " at byte " << got << " of " << bytes.size() << ": " << why);
    }
    got += static_cast<std::size_t>(r);
  }
  ::close(fd);
  return bytes;
}

inline std::string read_text_file(const std::filesystem::path& path) {
  const auto bytes = read_file(path);
  return std::string(bytes.begin(), bytes.end());
}

// Writes a file atomically: the bytes go to "<path>.tmp.<pid>", are flushed to disk, and the temp
// file is renamed over `path`. Readers see either the old file or the complete new one.
// `produce` receives a function that appends bytes; it may call it many times.
using ByteSink = std::function<void(const void* data, std::size_t n)>;

inline void write_file_atomic(const std::filesystem::path& path, const std::function<void(const ByteSink&)>& produce) {
  if (path.has_parent_path() && !std::filesystem::exists(path.parent_path())) {
    std::error_code ec;
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) PGOLF_FAIL("cannot create directory " << path.parent_path().string() << ": " << ec.message());
  }
  const std::filesystem::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) PGOLF_FAIL("cannot create " << tmp.string() << " (temp file for " << path.string() << "): " << detail::errno_text());
  const ByteSink sink = [&](const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) PGOLF_FAIL("writing " << path.string() << ": " << detail::errno_text() << "; the previous file, if any, is unchanged");
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  };
  try {
    produce(sink);
    if (::fsync(fd) != 0) PGOLF_FAIL("writing " << path.string() << ": fsync: " << detail::errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    PGOLF_FAIL("writing " << path.string() << ": close: " << detail::errno_text());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = detail::errno_text();
    ::unlink(tmp.c_str());
    PGOLF_FAIL("cannot rename " << tmp.string() << " to " << path.string() << ": " << why);
  }
}

inline void write_file_atomic(const std::filesystem::path& path, std::span<const std::uint8_t> bytes) {
  write_file_atomic(path, [&](const ByteSink& sink) { sink(bytes.data(), bytes.size()); });
}

inline void write_text_file_atomic(const std::filesystem::path& path, const std::string& text) {
  write_file_atomic(path, [&](const ByteSink& sink) { sink(text.data(), text.size()); });
}

// A read-only memory mapping of a whole file. An empty file maps to an empty span.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(const std::filesystem::path& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) PGOLF_FAIL("cannot open " << path.string() << " for reading: " << detail::errno_text());
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      PGOLF_FAIL("cannot stat " << path.string() << ": " << detail::errno_text());
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        ::close(fd);
        PGOLF_FAIL("cannot map " << path.string() << " (" << size_ << " bytes): " << detail::errno_text());
      }
      data_ = static_cast<const std::uint8_t*>(p);
    }
    ::close(fd);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& o) noexcept { *this = std::move(o); }
  MappedFile& operator=(MappedFile&& o) noexcept {
    if (this != &o) {
      unmap();
      path_ = std::move(o.path_);
      data_ = o.data_;
      size_ = o.size_;
      o.data_ = nullptr;
      o.size_ = 0;
    }
    return *this;
  }
  ~MappedFile() { unmap(); }

  std::span<const std::uint8_t> bytes() const { return {data_, size_}; }
  const std::filesystem::path& path() const { return path_; }

 private:
  void unmap() {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    data_ = nullptr;
  }
  std::filesystem::path path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// Little-endian scalar reads and writes on byte buffers (the formats are little-endian on disk;
// pgolf targets little-endian hosts, checked at compile time).
static_assert(std::endian::native == std::endian::little, "pgolf's file formats assume a little-endian host");

template <class T>
T load_le(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T>
void append_le(std::vector<std::uint8_t>& out, T v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  out.insert(out.end(), p, p + sizeof v);
}

}  // namespace pgolf
