// lion_step: the sign of an interpolated momentum, then the momentum update.
#include "reference.hpp"

namespace llmtk::reference {

void lion_step(TensorRef param, TensorRef grad, TensorRef m, LionArgs a) {
  for (std::int64_t i = 0, n = param.numel(); i < n; ++i) {
    const double g = grad.f32()[i], mi = m.f32()[i], p = param.f32()[i];
    const double c = a.beta1 * mi + (1.0 - a.beta1) * g;
    const double sign = c > 0 ? 1.0 : c < 0 ? -1.0 : 0.0;
    param.f32()[i] = static_cast<float>(p - a.lr * (sign + a.weight_decay * p));
    m.f32()[i] = static_cast<float>(a.beta2 * mi + (1.0 - a.beta2) * g);
  }
}

}  // namespace llmtk::reference
