#include "optimizer.hpp"

#include <algorithm>
#include <numeric>

#include "../ops/ops.hpp"
#include "../protocol/plan.hpp"  // Planner::glob

namespace llmtk::train {

Optimizer::Optimizer(const Recipe::Optim& config, const Arena& params)
    : c_(config), m_(params.trainable_like(config.name == "sgd" ? "buf" : "m")),
      v_(params.trainable_like("v")) {
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

void Optimizer::step(Arena& params, Arena& grads, double base_lr, std::int64_t step) {
  for (const Range& r : ranges(params)) {
    const auto n = std::int64_t((r.end - r.begin) / sizeof(float));
    auto span = [&](const Arena& a) {
      return TensorRef(static_cast<std::byte*>(a.data()) + r.begin, DType::f32, {n}, a.device());
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
}

std::vector<Arena*> Optimizer::state() {
  if (c_.name == "adamw") return {&m_, &v_};
  return {&m_};
}

std::size_t Optimizer::state_bytes() const { return m_.bytes() + (c_.name == "adamw" ? v_.bytes() : 0); }

}  // namespace llmtk::train
