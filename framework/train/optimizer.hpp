// Optimizers over a model's parameter arena: AdamW, SGD with momentum (Nesterov optional), Lion.
// State (moments) lives in arenas that mirror the trainable parameters (frozen ones have none),
// allocated once. Weight decay is
// applied to matrices, never to norms and biases, and to embeddings only when asked.
#pragma once
#include <string>
#include <vector>

#include "../core/arena.hpp"
#include "../core/communicator.hpp"
#include "recipe.hpp"

namespace llmtk::train {

class Optimizer {
 public:
  // `shard_over` (ZeRO-1, docs/distributed.md): the ranks of a data-parallel run among which the
  // state is sharded; each rank keeps the moments of its shard_range of the trainable parameters'
  // floats only, updates only those parameters, and an all-gather hands every rank the rest.
  Optimizer(const Recipe::Optim& config, const Arena& params, Communicator* shard_over = nullptr);

  // One update of every parameter from its gradient at learning rate `lr`; `step` counts from 1.
  // `grad_shard` (ZeRO-2): the gradients of this rank's shard only, read instead of `grads`.
  void step(Arena& params, Arena& grads, double lr, std::int64_t step, TensorRef grad_shard = {});
  ShardRange shard() const { return shard_; }
  // Moment arenas, for checkpoints: "m" and "v" (AdamW), "buf" (SGD), "m" (Lion), each mirroring
  // the trainable parameters. Sharded, they are the gathered copies (gather_state(), or
  // begin_load()), whatever the number of ranks: a checkpoint reads the same either way.
  std::vector<Arena*> state();
  bool sharded() const { return comm_ != nullptr; }
  // Sharded: every rank's moments gathered into whole arenas (a collective: every rank calls it),
  // for state() until release_state().
  void gather_state();
  void release_state();
  // Sharded: whole arenas for a checkpoint's moments to load into (state()), then this rank's
  // shard taken from them.
  void begin_load();
  void end_load();
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
  Communicator* comm_ = nullptr;
  ShardRange shard_;                  // sharded: this rank's floats of the trainable prefix
  std::int64_t prefix_floats_ = 0;    // the trainable prefix of the parameter arena, in floats
  Arena table_;                       // the trainable parameters' table (unallocated), for whole copies
  std::vector<Arena> whole_;          // sharded: gathered or loaded whole moments
  std::vector<float> scale_;  // per parameter entry: its lr multiplier
};

}  // namespace llmtk::train
