#include "optimizer.hpp"

#include "../ops/ops.hpp"

namespace llmtk::train {

Optimizer::Optimizer(const Recipe::Optim& config, const Arena& params)
    : c_(config), m_(params.like(config.name == "sgd" ? "buf" : "m")), v_(params.like("v")) {
  m_.allocate();
  if (c_.name == "adamw") v_.allocate();
}

bool Optimizer::decays(const Arena::Entry& e) const {
  switch (e.kind) {
    case ParamKind::matrix:
    case ParamKind::residual_matrix: return true;
    case ParamKind::embedding: return c_.decay_embeddings;
    default: return false;  // norms and biases
  }
}

// Consecutive parameters with the same weight decay are updated by one op over the memory that
// holds them (the gradient and moment arenas mirror the parameters' layout, see Arena::like):
// fewer, larger calls, which on a GPU means fewer kernel launches (a Llama block's attention
// matrices are one call; GPT-2's tensors alternate with biases, so it gains little). The
// alignment padding between tensors is zero in every arena and stays zero under each update
// rule (zero parameter, gradient and state give a zero update), and each element's update
// depends only on that element, so the result is bit for bit the per-tensor one.
void Optimizer::step(Arena& params, Arena& grads, double lr, std::int64_t step) {
  const auto& entries = params.entries();
  auto decay = [&](std::size_t i) { return decays(entries[i]) ? float(c_.weight_decay) : 0.0f; };
  for (std::size_t i = 0; i < entries.size();) {
    const float wd = decay(i);
    std::size_t j = i + 1;
    while (j < entries.size() && decay(j) == wd) ++j;
    const std::size_t begin = entries[i].offset;
    const std::size_t end = entries[j - 1].offset + std::size_t(entries[j - 1].numel) * sizeof(float);
    const std::int64_t n = std::int64_t((end - begin) / sizeof(float));
    const Device device = params[static_cast<int>(i)].device;
    auto span = [&](const Arena& a) { return TensorRef(static_cast<std::byte*>(a.data()) + begin, DType::f32, {n}, device); };
    if (c_.name == "adamw") {
      ops::adamw_step(span(params), span(grads), span(m_), span(v_),
                      AdamWArgs{float(lr), float(c_.beta1), float(c_.beta2), float(c_.eps), wd, int(step)});
    } else if (c_.name == "sgd") {
      ops::sgd_step(span(params), span(grads), span(m_), SgdArgs{float(lr), float(c_.momentum), wd, c_.nesterov, int(step)});
    } else {
      ops::lion_step(span(params), span(grads), span(m_), LionArgs{float(lr), float(c_.beta1), float(c_.beta2), wd});
    }
    i = j;
  }
}

std::vector<Arena*> Optimizer::state() {
  if (c_.name == "adamw") return {&m_, &v_};
  return {&m_};
}

std::size_t Optimizer::state_bytes() const { return m_.bytes() + (c_.name == "adamw" ? v_.bytes() : 0); }

}  // namespace llmtk::train
