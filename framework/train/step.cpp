#include "step.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <thread>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "../core/faults.hpp"
#include "../core/rng.hpp"
#include "../ops/ops.hpp"
#include "distributed.hpp"

namespace llmtk::train {

namespace {

// LLMTK_FAULTS (the reliability tests, docs/reliability.md). inf_act@N: the embedding row of the
// batch's first token is +Inf for step N's forward and backward, as an activation that overflowed
// would be, and restored after.
class ActivationOverflow {
 public:
  ActivationOverflow(AnyModel& m, const Batch& b) : m_(m), id_(m.params().find("embed.tokens")) {
    LLMTK_CHECK(id_ >= 0, "LLMTK_FAULTS", "inf_act needs a model with token embeddings (embed.tokens)");
    const auto& e = m.params().entries()[std::size_t(id_)];
    LLMTK_CHECK(e.dtype == DType::f32, "LLMTK_FAULTS", "inf_act needs f32 embeddings");
    std::int32_t token = 0;
    copy_bytes(&token, Device::host, b.inputs.ids.data, b.inputs.ids.device, sizeof token);
    saved_.resize(std::size_t(e.numel));
    m.params().read(id_, saved_.data());
    std::vector<float> bad = saved_;
    const std::int64_t C = e.shape.back();
    std::fill(bad.begin() + token * C, bad.begin() + (token + 1) * C, INFINITY);
    m.params().write(id_, bad.data());
  }
  ~ActivationOverflow() { m_.params().write(id_, saved_.data()); }
  ActivationOverflow(const ActivationOverflow&) = delete;
  ActivationOverflow& operator=(const ActivationOverflow&) = delete;

 private:
  AnyModel& m_;
  int id_;
  std::vector<float> saved_;
};

// nan_grad@N: the first gradient element is NaN after step N's backward.
void poison_gradient(AnyModel& m) {
  Arena& g = m.grads();
  const auto& e = g.entries().front();
  std::vector<std::byte> v(std::size_t(e.numel) * size_of(e.dtype));
  g.read(0, v.data());
  if (e.dtype == DType::f32) {
    const float nan = NAN;
    std::memcpy(v.data(), &nan, sizeof nan);
  } else {
    const std::uint16_t nan = 0x7fc0;  // bf16 quiet NaN
    std::memcpy(v.data(), &nan, sizeof nan);
  }
  g.write(0, v.data());
}

}  // namespace

float forward_loss(AnyModel& model, Objective& objective, const Batch& batch) {
  return objective.forward(model.forward(batch.inputs), batch.labels);
}

void backward_from_loss(AnyModel& model, Objective& objective) {
  // The gradient overwrites the logits in place: nothing needs them after the loss, and a
  // [B, T, vocab] buffer is the largest activation of a small model (412 MB for GPT-2 at 8 × 256).
  const TensorRef outputs = model.logits();
  objective.backward(outputs);
  model.backward(outputs);
}

float forward_backward(AnyModel& model, Objective& objective, const Batch& batch) {
  const float loss = forward_loss(model, objective, batch);
  backward_from_loss(model, objective);
  return loss;
}

static_assert(data::kIgnoreTarget == kIgnoreIndex, "the loader's ignored target is the objective's ignore index");

LoaderBatches::LoaderBatches(data::DataLoader& loader)
    : loader_(loader),
      ids_(std::size_t(loader.options().batch * loader.options().seq)),
      targets_(ids_.size()),
      segments_(loader.packed() ? ids_.size() : 0) {}

Batch LoaderBatches::next() {
  loader_.next(ids_, targets_, segments_);
  const std::int64_t B = loader_.options().batch, T = loader_.options().seq;
  const TensorRef segments = segments_.empty() ? TensorRef{} : TensorRef(segments_.data(), DType::i32, {B, T});
  return {{TensorRef(ids_.data(), DType::i32, {B, T}), {}, segments}, {TensorRef(targets_.data(), DType::i32, {B, T}), {}, {}}};
}

EvalStats evaluate(AnyModel& model, Objective& objective, BatchSource& source, std::int64_t batches, Communicator* ranks) {
  source.seek({0, 0});
  const std::int64_t n = std::min<std::int64_t>(batches, std::int64_t(source.batches_per_epoch()));
  EvalStats e;
  double sum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    double loss = forward_loss(model, objective, source.next());
    if (ranks) {
      // Each rank measured its rows of the batch: their losses weighted by what each counted
      // (Objective::weight), or their mean where the loss is not a mean over targets.
      const double w = objective.weight();
      double v[3] = {loss * w, w, loss};
      ranks->all_reduce_sum(v, 3, "the validation loss");
      loss = v[1] > 0 ? v[0] / v[1] : v[2] / ranks->size();
    }
    sum += loss;
    accumulate(e.metrics, objective.metrics());
  }
  if (n == 0) return e;
  e.loss = sum / double(n);
  for (auto& m : e.metrics) m.second /= double(n);
  return e;
}

double evaluate(AnyModel& model, Objective& objective, data::DataLoader& loader, std::int64_t batches) {
  LoaderBatches source(loader);
  return evaluate(model, objective, source, batches).loss;
}

TrainStep::TrainStep(AnyModel& model, Objective& objective, Optimizer& optimizer, StepOptions options)
    : model_(model), objective_(objective), optimizer_(optimizer), options_(options) {
  scalars_.add("grad_norm2", {1});
  scalars_.allocate();
}

double TrainStep::grad_norm() {
  if (Communicator* tp = model_.tensor_parallel()) {
    // Tensor parallel: the squares of this rank's shares of the split parameters, and those of the
    // whole ones (the same on every rank) from rank 0 alone, summed once over the ranks in double,
    // so that every rank clips by the same norm.
    // In host memory read in place, in double; in GPU memory summed there (sum_squares), one
    // float per rank coming back.
    // In the 2-D layout each parameter's Σg² is summed over the data-parallel ranks' shards of it
    // (gradient_squares), as data parallel measures its norm: every strategy across the groups
    // (with ZeRO-2 no rank holds its share's whole gradient) clips by the same bits.
    const Arena& g = model_.grads();
    const std::vector<double> squares = dp_ ? dp_->gradient_squares() : std::vector<double>{};
    const bool device = squares.empty() && g.device() != Device::host;
    if (device) scalars_.zero();
    double sum = 0;
    for (int i = 0; i < int(g.entries().size()); ++i) {
      const auto& e = g.entries()[std::size_t(i)];
      if (model_.split_dim(std::as_const(model_).params().find(e.name)) < 0 && tp->rank() != 0) continue;
      if (!squares.empty()) {
        sum += squares[std::size_t(i)];
        continue;
      }
      if (device) {
        ops::sum_squares(scalars_[0], g[i]);
        continue;
      }
      const float* v = g[i].f32();
      for (std::int64_t k = 0; k < e.numel; ++k) sum += double(v[k]) * double(v[k]);
    }
    if (device) {
      float norm2 = 0;
      scalars_.read(0, &norm2);
      sum = norm2;
    }
    return std::sqrt(all_reduce_sum(*tp, sum, "the gradient norm (tensor parallel)"));
  }
  if (dp_) return dp_->gradient_norm();  // data parallel: each rank measures its shard
  scalars_.zero();
  Arena& g = model_.grads();
  for (int i = 0; i < int(g.entries().size()); ++i) ops::sum_squares(scalars_[0], g[i]);
  float norm2 = 0;
  scalars_.read(0, &norm2);  // one float comes back to the host
  return std::sqrt(double(norm2));
}

void TrainStep::scale_grads(float s) {
  if (dp_ && dp_->shards_gradients()) {
    const TensorRef shard = dp_->gradient_shard();
    ops::scale_forward(shard, shard, s);
    return;
  }
  Arena& g = model_.grads();
  for (int i = 0; i < int(g.entries().size()); ++i) ops::scale_forward(g[i], g[i], s);
}

StepStats TrainStep::run(const std::function<Batch()>& next, std::int64_t grad_accum, double lr, std::int64_t step) {
  StepStats s;
  if (faults::at("kill", step)) std::raise(SIGKILL);
  if (faults::at("hang", step))
    for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
  model_.zero_grad();
  if (dp_) dp_->start_step();
  // The objective's metrics summed with their weights (Objective::metrics_weight), the model's
  // parts' (an MoE router's load) as plain sums: means over the micro-batches (and ranks) below.
  Metrics objective_sums, part_sums;
  double metrics_weight = 0;
  for (std::int64_t micro = 0; micro < grad_accum; ++micro) {
    // A new dropout mask per micro-batch, reproducible from (seed, step, micro): resuming a run
    // draws the masks it would have drawn. Never 0, which means no dropout.
    model_.set_dropout_seed(Rng(options_.seed ^ (std::uint64_t(step) * 0x100000001b3ull + std::uint64_t(micro))).next() | 1);
    const Batch batch = next();
    // Data parallel sums the last backward's gradients as its layers finish; ZeRO-2 every backward's.
    const bool sums = dp_ && (micro + 1 == grad_accum || dp_->every_micro_batch());
    if (sums) dp_->arm(model_);
    auto forward_and_backward = [&] {
      if (!dp_) return double(forward_backward(model_, objective_, batch));
      // Data parallel: this rank's share of the batch's mean (Objective::weight), found after the
      // forward, weights its loss and gradient.
      const double loss = forward_loss(model_, objective_, batch), share = dp_->loss_share(objective_.weight());
      const TensorRef outputs = model_.logits();
      objective_.backward(outputs);
      if (share != 1.0) ops::scale_forward(outputs, outputs, float(share));
      model_.backward(outputs);
      return loss * share;
    };
    if (micro == 0 && faults::at("inf_act", step)) {
      ActivationOverflow overflow(model_, batch);
      s.loss += forward_and_backward();
    } else {
      s.loss += forward_and_backward();
    }
    if (sums) dp_->finish(model_);  // every gradient (ZeRO-2: of this rank's shard) is the mean over the ranks now
    Metrics m = objective_.metrics();
    const double w = objective_.metrics_weight();
    for (auto& kv : m) kv.second *= w;
    accumulate(objective_sums, m);
    metrics_weight += w;
    accumulate(part_sums, model_.part_stats());  // an MoE router's load and auxiliary losses
  }
  model_.set_dropout_seed(0);
  s.loss /= double(grad_accum);
  if (faults::at("nan_loss", step)) s.loss = NAN;
  if (faults::at("nan_grad", step)) {
    if (dp_ && dp_->shards_gradients()) {
      const float nan = NAN;
      copy_bytes(dp_->gradient_shard().data, dp_->gradient_shard().device, &nan, Device::host, sizeof nan);
    } else {
      poison_gradient(model_);
    }
  }
  for (auto& m : part_sums) m.second /= double(grad_accum);
  if (grad_accum > 1) scale_grads(1.0f / float(grad_accum));
  if (observe_) observe_();
  if (!options_.measure_norm) {
    s.grad_norm = NAN;
    s.finite = std::isfinite(s.loss);
  } else {
    s.grad_norm = grad_norm();
    s.finite = std::isfinite(s.loss) && std::isfinite(s.grad_norm);
  }
  if (dp_) dp_->agree(s.loss, s.finite, objective_sums, metrics_weight, part_sums);
  for (auto& m : objective_sums) m.second = metrics_weight > 0 ? m.second / metrics_weight : 0.0;
  s.metrics = std::move(objective_sums);
  s.metrics.insert(s.metrics.end(), part_sums.begin(), part_sums.end());
  if (!s.finite) return s;
  const double clip = options_.grad_clip;
  if (clip > 0 && options_.measure_norm && s.grad_norm > clip) scale_grads(float(clip / s.grad_norm));
  optimizer_.step(model_.params(), model_.grads(), lr, step, dp_ ? dp_->gradient_shard() : TensorRef{});
  return s;
}

}  // namespace llmtk::train
