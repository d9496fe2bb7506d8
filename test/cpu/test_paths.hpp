// Scratch directories and the real-text corpus for tests.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

namespace pgolf::testing {

// A fresh directory under the system temp dir, removed when the object goes out of scope.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = std::filesystem::temp_directory_path() / ("pgolf_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  static int& counter() {
    static int c = 0;
    return c;
  }
  std::filesystem::path path_;
};

// Debian's dict-gcide, installed by scripts/setup.sh. Tests that need real text fail (not skip)
// when it is missing.
inline std::filesystem::path gcide_dict() { return PGOLF_GCIDE_DICT; }
inline std::filesystem::path gcide_index() { return PGOLF_GCIDE_INDEX; }

}  // namespace pgolf::testing
