// Optimizers over a model's parameter arena: AdamW, SGD with momentum (Nesterov optional), Lion.
// State (moments) lives in arenas that mirror the trainable parameters (frozen ones have none),
// allocated once. Weight decay is
// applied to matrices, never to norms and biases, and to embeddings only when asked.
#pragma once
#include <string>
#include <vector>

#include "../core/arena.hpp"
#include "recipe.hpp"

namespace llmtk::train {

class Optimizer {
 public:
  Optimizer(const Recipe::Optim& config, const Arena& params);

  // One update of every parameter from its gradient at learning rate `lr`; `step` counts from 1.
  void step(Arena& params, Arena& grads, double lr, std::int64_t step);
  // Moment arenas, for checkpoints: "m" and "v" (AdamW), "buf" (SGD), "m" (Lion).
  std::vector<Arena*> state();
  bool decays(const Arena::Entry& e) const;
  // The contiguous byte ranges of an allocated parameter arena that one update op each covers:
  // consecutive tensors (in memory) with the same weight decay and lr multiplier. Two for any
  // model without optim.lr_scale.
  struct Range {
    std::size_t begin = 0, end = 0;
    float weight_decay = 0;
    float lr_scale = 1;  // optim.lr_scale's multiplier for these tensors
  };
  // The learning-rate multiplier of parameter entry i (optim.lr_scale; 1 when no pattern matches).
  float lr_scale(std::size_t i) const { return scale_[i]; }
  std::vector<Range> ranges(const Arena& params) const;
  std::size_t state_bytes() const;

 private:
  Recipe::Optim c_;
  Arena m_, v_;
  std::vector<float> scale_;  // per parameter entry: its lr multiplier
};

}  // namespace llmtk::train
