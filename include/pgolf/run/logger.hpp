// The run log: every line goes to stdout and, when a log file is set, is appended to it — the
// reference's log0(). Lines keep the reference's formats (step:N/M train_loss:… train_time:…ms
// step_avg:…ms; step:N/M val_loss:… val_bpb:…) so that existing log parsers work.
#pragma once

#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <string>

#include "pgolf/core/error.hpp"

namespace pgolf::run {

class Logger {
 public:
  Logger() = default;
  explicit Logger(const std::filesystem::path& file) { open(file); }
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;
  ~Logger() {
    if (file_) std::fclose(file_);
  }

  void open(const std::filesystem::path& file) {
    if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
    file_ = std::fopen(file.c_str(), "a");
    if (!file_) PGOLF_FAIL("cannot open log file " << file.string());
    path_ = file;
  }
  const std::filesystem::path& path() const { return path_; }

  void line(const std::string& text, bool console = true) {
    if (console) {
      std::fputs(text.c_str(), stdout);
      std::fputc('\n', stdout);
      std::fflush(stdout);
    }
    if (file_) {
      std::fputs(text.c_str(), file_);
      std::fputc('\n', file_);
      std::fflush(file_);
    }
  }

  __attribute__((format(printf, 2, 3))) void printf(const char* fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    line(buf);
  }

 private:
  std::FILE* file_ = nullptr;
  std::filesystem::path path_;
};

}  // namespace pgolf::run
