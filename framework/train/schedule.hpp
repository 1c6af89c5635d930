// Learning-rate schedules, each with linear warmup from 0 and a floor at min_lr:
//   constant: lr;  cosine: min + (lr − min)·(1 + cos(π·progress))/2;  linear: lr → min;
//   wsd (warmup-stable-decay): lr until the last `decay_fraction` of steps, then linear to min.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>

#include "../core/error.hpp"

namespace llmtk::train {

struct Schedule {
  std::string name = "cosine";
  double lr = 3e-4, min_lr = 0;
  std::int64_t warmup = 0, total = 1;
  double decay_fraction = 0.2;

  // The learning rate of optimizer step `step` (0-based).
  double at(std::int64_t step) const {
    if (step < warmup) return lr * double(step + 1) / double(warmup + 1);
    const double span = double(std::max<std::int64_t>(total - warmup - 1, 1));
    const double progress = std::min(1.0, double(step - warmup) / span);  // 0 → 1 after warmup
    if (name == "constant") return lr;
    if (name == "cosine") return min_lr + (lr - min_lr) * 0.5 * (1.0 + std::cos(3.141592653589793 * progress));
    if (name == "linear") return lr + (min_lr - lr) * progress;
    if (name == "wsd") {
      const double start = 1.0 - decay_fraction;
      if (progress <= start) return lr;
      return lr + (min_lr - lr) * (progress - start) / std::max(decay_fraction, 1e-12);
    }
    fail("schedule", "unknown schedule '", name, "'; choose constant, cosine, linear or wsd");
  }
};

}  // namespace llmtk::train
