// Learning-rate and momentum schedules of the reference (§1.6–§1.7).
#pragma once

#include <algorithm>

namespace pgolf {

struct ScheduleOptions {
  int iterations = 20000;               // ITERATIONS
  int warmdown_iters = 1200;            // WARMDOWN_ITERS
  double max_wallclock_seconds = 600;   // MAX_WALLCLOCK_SECONDS (0 = no cap)
  double muon_momentum = 0.95;          // MUON_MOMENTUM
  double muon_momentum_warmup_start = 0.85;  // MUON_MOMENTUM_WARMUP_START
  int muon_momentum_warmup_steps = 500;      // MUON_MOMENTUM_WARMUP_STEPS
};

// The LR multiplier applied to every group's base LR at `step`, given the training time so far.
// Without a cap: linear decay to 0 over the last warmdown_iters iterations. With a cap: the
// warmdown length is estimated in milliseconds from the average step time, and the multiplier is
// the remaining time over that length once the remaining time is shorter.
inline double lr_multiplier(const ScheduleOptions& s, int step, double elapsed_ms) {
  if (s.warmdown_iters <= 0) return 1.0;
  if (s.max_wallclock_seconds <= 0) {
    const int warmdown_start = std::max(s.iterations - s.warmdown_iters, 0);
    if (warmdown_start <= step && step < s.iterations) {
      return std::max(static_cast<double>(s.iterations - step) / std::max(s.warmdown_iters, 1), 0.0);
    }
    return 1.0;
  }
  const double max_ms = 1000.0 * s.max_wallclock_seconds;
  const double step_ms = elapsed_ms / std::max(step, 1);
  const double warmdown_ms = s.warmdown_iters * step_ms;
  const double remaining_ms = std::max(max_ms - elapsed_ms, 0.0);
  return remaining_ms <= warmdown_ms ? remaining_ms / std::max(warmdown_ms, 1e-9) : 1.0;
}

// Muon momentum warm-up: μ = (1 − f)·start + f·final, f = min(step / warmup_steps, 1).
inline double muon_momentum_at(const ScheduleOptions& s, int step) {
  const double f = s.muon_momentum_warmup_steps > 0 ? std::min(static_cast<double>(step) / s.muon_momentum_warmup_steps, 1.0) : 1.0;
  return (1.0 - f) * s.muon_momentum_warmup_start + f * s.muon_momentum;
}

}  // namespace pgolf
