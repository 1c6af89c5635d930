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

void Optimizer::step(Arena& params, Arena& grads, double lr, std::int64_t step) {
  for (std::size_t i = 0; i < params.entries().size(); ++i) {
    const int id = static_cast<int>(i);
    const float wd = decays(params.entries()[i]) ? float(c_.weight_decay) : 0.0f;
    if (c_.name == "adamw") {
      ops::adamw_step(params[id], grads[id], m_[id], v_[id],
                      AdamWArgs{float(lr), float(c_.beta1), float(c_.beta2), float(c_.eps), wd, int(step)});
    } else if (c_.name == "sgd") {
      ops::sgd_step(params[id], grads[id], m_[id], SgdArgs{float(lr), float(c_.momentum), wd, c_.nesterov, int(step)});
    } else {
      ops::lion_step(params[id], grads[id], m_[id], LionArgs{float(lr), float(c_.beta1), float(c_.beta2), wd});
    }
  }
}

std::vector<Arena*> Optimizer::state() {
  if (c_.name == "adamw") return {&m_, &v_};
  return {&m_};
}

std::size_t Optimizer::state_bytes() const { return m_.bytes() + (c_.name == "adamw" ? v_.bytes() : 0); }

}  // namespace llmtk::train
