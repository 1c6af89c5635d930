// TrainStep: one optimizer step — forward, objective, backward over grad_accum micro-batches,
// the gradient's global norm, clipping, the update — shared by `llmtk train`, `llmtk bench step`
// and the tests, so that fine-tuning, data parallel and RL loops plug into one step instead of
// copying it.
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>

#include <vector>

#include "../core/arena.hpp"
#include "../core/communicator.hpp"
#include "../data/loader.hpp"
#include "../models/model.hpp"
#include "objective.hpp"
#include "optimizer.hpp"

namespace llmtk::train {

class DataParallel;

// One micro-batch: what the model reads and what the objective compares its outputs with.
struct Batch {
  ModelInputs inputs;
  Labels labels;
};

// A language-modelling batch: ids, next-token targets, optional per-token weights ([B, T] each).
inline Batch lm_batch(TensorRef ids, TensorRef targets, TensorRef weights = {}) {
  return {{ids, {}, {}}, {targets, weights, {}}};
}

// forward → objective: the loss of one batch (no gradients).
float forward_loss(AnyModel& model, Objective& objective, const Batch& batch);
// objective → backward after forward_loss: every trainable gradient accumulated (+=). The
// outputs' gradient overwrites the outputs.
void backward_from_loss(AnyModel& model, Objective& objective);
// forward → objective → backward: the loss, with every trainable gradient accumulated (+=).
float forward_backward(AnyModel& model, Objective& objective, const Batch& batch);

// Where a run's batches come from: a loader of token shards (LoaderBatches) or of preference
// pairs (PreferenceBatches, preference.hpp). The position is what a checkpoint saves.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual Batch next() = 0;  // valid until the next call
  virtual data::LoaderPosition position() const = 0;
  virtual void seek(data::LoaderPosition p) = 0;
  virtual std::uint64_t batches_per_epoch() const = 0;
  virtual std::uint64_t tokens() const = 0;  // what an epoch holds
  // What making the batches measured since the last call (RL: the rewards), as means.
  virtual Metrics take_metrics() { return {}; }
  // State of its own a checkpoint keeps besides the position (PPO: the critic and its optimizer),
  // written into and read from the checkpoint's directory.
  virtual void save(const std::string& /*checkpoint_dir*/) const {}
  virtual void load(const std::string& /*checkpoint_dir*/) {}
};

// Host buffers for the [B, T] batches a loader produces (ids and next-token targets, and the
// documents of packed instruction rows).
class LoaderBatches final : public BatchSource {
 public:
  explicit LoaderBatches(data::DataLoader& loader);
  Batch next() override;  // the loader's next batch, valid until the next call
  data::LoaderPosition position() const override { return loader_.position(); }
  void seek(data::LoaderPosition p) override { loader_.seek(p); }
  std::uint64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }
  std::uint64_t tokens() const override { return loader_.tokens(); }
  data::DataLoader& loader() { return loader_; }

 private:
  data::DataLoader& loader_;
  std::vector<std::int32_t> ids_, targets_, segments_;
};

// The mean loss (and objective metrics) over the first `batches` batches of `source` (fewer if an
// epoch has fewer), read from its start: the validation of `llmtk train` and `llmtk eval`.
struct EvalStats {
  double loss = NAN;
  Metrics metrics;
};
// `ranks` (data parallel): every rank evaluates its rows of each batch, and the loss returned is
// the whole batches' on every rank (a collective per batch); the metrics stay this rank's.
EvalStats evaluate(AnyModel& model, Objective& objective, BatchSource& source, std::int64_t batches, Communicator* ranks = nullptr);
double evaluate(AnyModel& model, Objective& objective, data::DataLoader& loader, std::int64_t batches);

struct StepStats {
  double loss = 0;       // mean over the micro-batches
  double grad_norm = 0;  // global L2 norm before clipping (NaN when not measured)
  bool finite = true;    // false: the loss or a gradient was not finite, and nothing was updated
  Metrics metrics;       // the objective's, averaged over the micro-batches
};

struct StepOptions {
  double grad_clip = 0;       // > 0: rescale the gradient to this global norm when it is larger
  bool measure_norm = true;   // the global norm (one pass over the gradients): the non-finite
                              // guard, clipping and the logged norm need it; a bare timing does not
  std::uint64_t seed = 1;     // dropout's masks: a function of this, the step and the micro-batch
};

class TrainStep {
 public:
  TrainStep(AnyModel& model, Objective& objective, Optimizer& optimizer, StepOptions options);
  // Zeroes the gradients, runs `grad_accum` micro-batches from `next`, and updates the trainable
  // parameters at learning rate `lr` (`step` counts from 1) unless something was not finite.
  StepStats run(const std::function<Batch()>& next, std::int64_t grad_accum, double lr, std::int64_t step);

  AnyModel& model() { return model_; }
  // Called in run() after the micro-batches' backward (the gradient averaged over them), before
  // clipping and the update: where the internals read the gradients (train/internals.hpp).
  void set_gradient_observer(std::function<void()> f) { observe_ = std::move(f); }
  // Data parallel: the gradients, the loss and the metrics averaged over the ranks after the
  // micro-batches, before the observer, clipping and the update (train/distributed.hpp).
  void set_data_parallel(DataParallel* dp) { dp_ = dp; }
  DataParallel* data_parallel() const { return dp_; }

 private:
  double grad_norm();
  void scale_grads(float s);
  AnyModel& model_;
  Objective& objective_;
  Optimizer& optimizer_;
  StepOptions options_;
  std::function<void()> observe_;
  DataParallel* dp_ = nullptr;
  Arena scalars_{"scalars"};  // the gradient norm² accumulates where the gradients are
};

}  // namespace llmtk::train
