#include "optimizer.hpp"

#include <algorithm>
#include <cstdint>
#include <numeric>

#include "../ops/ops.hpp"
#include "../protocol/plan.hpp"  // Planner::glob

namespace llmtk::train {

namespace {
const char* first_state(const std::string& name) { return name == "sgd" ? "buf" : "m"; }
}  // namespace

Optimizer::Optimizer(const Recipe::Optim& config, const Arena& params, Communicator* shard_over)
    : c_(config), m_(params.trainable_like(first_state(config.name))), v_(params.trainable_like("v")),
      comm_(shard_over), table_(params.trainable_like("table")) {
  if (comm_) {
    // The trainable tensors lie first in memory (Arena::trainable_like): a prefix of floats,
    // padding included, split among the ranks as collectives split tensors.
    for (const auto& e : params.entries())
      if (!e.frozen)
        prefix_floats_ = std::max(prefix_floats_, std::int64_t((e.offset + std::size_t(e.numel) * sizeof(float)) / sizeof(float)));
    shard_ = shard_range(prefix_floats_, comm_->rank(), comm_->size());
    m_ = Arena(first_state(config.name)), v_ = Arena("v");
    m_.add("shard", {std::max<std::int64_t>(1, shard_.size())});
    v_.add("shard", {std::max<std::int64_t>(1, shard_.size())});
  }
  m_.allocate();
  if (c_.name == "adamw") v_.allocate();
  // optim.lr_scale: each pattern names at least one trainable parameter, and no parameter is
  // named by two patterns (so the multiplier never depends on their order).
  const auto& entries = params.entries();
  scale_.assign(entries.size(), 1.0f);
  std::vector<std::string> matched_by(entries.size());
  for (const auto& [pattern, scale] : c_.lr_scale) {
    int hits = 0;
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (entries[i].frozen || !Planner::glob(pattern, entries[i].name)) continue;
      LLMTK_CHECK(matched_by[i].empty(), "optim.lr_scale", "parameter ", entries[i].name, " matches both \"",
                  matched_by[i], "\" and \"", pattern, "\"; give each parameter one multiplier");
      matched_by[i] = pattern, scale_[i] = float(scale), ++hits;
    }
    LLMTK_CHECK(hits > 0, "optim.lr_scale", "\"", pattern, "\" matches no trainable parameter; names look like ",
                entries.front().name, " or ", entries.back().name, " (llmtk arch show lists the parts)");
  }
}


bool Optimizer::decays(const Arena::Entry& e) const {
  switch (e.kind) {
    case ParamKind::matrix:
    case ParamKind::residual_matrix:
    case ParamKind::lora_a:
    case ParamKind::lora_b: return true;
    case ParamKind::embedding: return c_.decay_embeddings;
    default: return false;  // norms and biases
  }
}

// The parameter arena keeps each weight-decay group contiguous (Arena::allocate), and the gradient
// and moment arenas mirror its layout (Arena::like), so the update is one op per group: two ops
// for every model, whatever its size (one when nothing or everything decays). The alignment padding
// between tensors is zero in every arena and stays zero under each update rule (zero parameter,
// gradient and state give a zero update), and each element's update depends only on that
// element, so the result is bit for bit the per-tensor one.
std::vector<Optimizer::Range> Optimizer::ranges(const Arena& params) const {
  const auto& entries = params.entries();
  std::vector<std::size_t> order(entries.size());
  std::iota(order.begin(), order.end(), std::size_t(0));
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return entries[a].offset < entries[b].offset; });
  std::vector<Range> out;
  for (std::size_t i : order) {
    const auto& e = entries[i];
    if (e.frozen) continue;  // laid out last: the ranges cover the trainable prefix
    const float wd = decays(e) ? float(c_.weight_decay) : 0.0f, scale = scale_[i];
    const std::size_t end = e.offset + std::size_t(e.numel) * sizeof(float);
    if (!out.empty() && out.back().weight_decay == wd && out.back().lr_scale == scale) out.back().end = end;
    else out.push_back({e.offset, end, wd, scale});
  }
  return out;
}

void Optimizer::step(Arena& params, Arena& grads, double base_lr, std::int64_t step, TensorRef grad_shard) {
  LLMTK_CHECK(!grad_shard.data || comm_, "optimizer", "sharded gradients (ZeRO-2) need the sharded optimizer state");
  // Sharded: the byte range of this rank's floats; the moments' arenas start at its beginning.
  const std::size_t lo = comm_ ? std::size_t(shard_.begin) * sizeof(float) : 0;
  const std::size_t hi = comm_ ? std::size_t(shard_.end) * sizeof(float) : SIZE_MAX;
  for (Range r : ranges(params)) {
    r.begin = std::max(r.begin, lo), r.end = std::min(r.end, hi);
    if (r.end <= r.begin) continue;
    const auto n = std::int64_t((r.end - r.begin) / sizeof(float));
    auto span = [&](const Arena& a) {
      if (&a == &grads && grad_shard.data)
        return TensorRef(static_cast<std::byte*>(grad_shard.data) + (r.begin - lo), DType::f32, {n}, grad_shard.device);
      const std::size_t at = &a == &m_ || &a == &v_ ? r.begin - lo : r.begin;
      return TensorRef(static_cast<std::byte*>(a.data()) + at, DType::f32, {n}, a.device());
    };
    const float wd = r.weight_decay;
    const double lr = base_lr * r.lr_scale;
    if (c_.name == "adamw") {
      ops::adamw_step(span(params), span(grads), span(m_), span(v_),
                      AdamWArgs{float(lr), float(c_.beta1), float(c_.beta2), float(c_.eps), wd, int(step)});
    } else if (c_.name == "sgd") {
      ops::sgd_step(span(params), span(grads), span(m_), SgdArgs{float(lr), float(c_.momentum), wd, c_.nesterov, int(step)});
    } else {
      ops::lion_step(span(params), span(grads), span(m_), LionArgs{float(lr), float(c_.beta1), float(c_.beta2), wd});
    }
  }
  if (comm_) {
    // Every rank's updated shard to every rank: the whole weights again.
    const TensorRef all(params.data(), DType::f32, {prefix_floats_}, params.device());
    comm_->all_gather(all.span(shard_.begin, shard_.size()), all, "the updated weights (ZeRO-1)");
  }
}

std::vector<Arena*> Optimizer::state() {
  if (comm_) {
    LLMTK_CHECK(!whole_.empty(), "optimizer", "the sharded moments are read through gather_state() or begin_load()");
    std::vector<Arena*> out;
    for (auto& a : whole_) out.push_back(&a);
    return out;
  }
  if (c_.name == "adamw") return {&m_, &v_};
  return {&m_};
}

void Optimizer::gather_state() {
  if (!comm_) return;
  begin_load();  // whole arenas, allocated
  Arena* shards[] = {&m_, &v_};
  for (std::size_t k = 0; k < whole_.size(); ++k) {
    const TensorRef all(whole_[k].data(), DType::f32, {prefix_floats_}, whole_[k].device());
    comm_->all_gather((*shards[k])[0].span(0, shard_.size()), all, "the optimizer's " + whole_[k].name() + " (ZeRO-1)");
  }
}

void Optimizer::release_state() { whole_.clear(); }

void Optimizer::begin_load() {
  if (!comm_) return;
  whole_.clear();
  whole_.push_back(table_.like(first_state(c_.name)));
  if (c_.name == "adamw") whole_.push_back(table_.like("v"));
  // In the shards' memory (GPU memory on cuda, where NCCL gathers the shards into them).
  for (auto& a : whole_) a.allocate(memory_of(m_.device()));
}

void Optimizer::end_load() {
  if (!comm_) return;
  Arena* shards[] = {&m_, &v_};
  for (std::size_t k = 0; k < whole_.size(); ++k)
    copy_bytes(shards[k]->data(), shards[k]->device(), static_cast<const std::byte*>(whole_[k].data()) + shard_.begin * std::int64_t(sizeof(float)),
               whole_[k].device(), std::size_t(shard_.size()) * sizeof(float));
  release_state();
}

std::size_t Optimizer::state_bytes() const { return m_.bytes() + (c_.name == "adamw" ? v_.bytes() : 0); }

}  // namespace llmtk::train
