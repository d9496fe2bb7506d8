// Wall-clock timing and progress reporting for long steps.
//
// On a terminal the progress line redraws itself in place (stderr); otherwise a plain line is
// printed every `log_interval` seconds so that logs stay short and parseable:
//   progress tokenize: 41.0% 123456/301234 docs 5210.3 docs/s eta 34s
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace pgolf {

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  void restart() { start_ = std::chrono::steady_clock::now(); }
  double seconds() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(); }
  double millis() const { return 1000.0 * seconds(); }

 private:
  std::chrono::steady_clock::time_point start_;
};

inline std::string format_duration(double seconds) {
  if (seconds < 0 || seconds != seconds) return "?";
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, (s / 60) % 60);
  } else if (s >= 60) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%llds", s);
  }
  return buf;
}

class Progress {
 public:
  Progress(std::string task, std::int64_t total, std::string unit, double log_interval = 10.0)
      : task_(std::move(task)), unit_(std::move(unit)), total_(total), log_interval_(log_interval),
        tty_(::isatty(STDERR_FILENO) != 0) {}
  ~Progress() { finish(); }

  void update(std::int64_t done) {
    done_ = done;
    const double now = clock_.seconds();
    if (now - last_print_ < (tty_ ? 0.2 : log_interval_)) return;
    last_print_ = now;
    print(false);
  }
  void finish() {
    if (finished_) return;
    finished_ = true;
    if (tty_ && last_print_ > 0) {
      print(true);
      std::fputc('\n', stderr);
    }
  }

 private:
  void print(bool final_line) {
    const double t = clock_.seconds();
    const double rate = t > 0 ? static_cast<double>(done_) / t : 0.0;
    const double pct = total_ > 0 ? 100.0 * static_cast<double>(done_) / static_cast<double>(total_) : 0.0;
    const double eta = rate > 0 && total_ > 0 ? static_cast<double>(total_ - done_) / rate : -1.0;
    std::fprintf(stderr, "%sprogress %s: %.1f%% %lld/%lld %s %.1f %s/s %s %s%s", tty_ ? "\r" : "", task_.c_str(), pct,
                 static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(), rate, unit_.c_str(),
                 final_line ? "took" : "eta", format_duration(final_line ? t : eta).c_str(), tty_ ? "\033[K" : "\n");
    std::fflush(stderr);
  }

  Stopwatch clock_;
  std::string task_, unit_;
  std::int64_t total_ = 0, done_ = 0;
  double log_interval_;
  double last_print_ = 0;
  bool tty_;
  bool finished_ = false;
};

}  // namespace pgolf
