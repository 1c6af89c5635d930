// sgd_step: SGD with momentum, optionally Nesterov, and decoupled weight decay.
#include "reference.hpp"

namespace llmtk::reference {

void sgd_step(TensorRef param, TensorRef grad, TensorRef buf, SgdArgs a) {
  for (std::int64_t i = 0, n = param.numel(); i < n; ++i) {
    const double g = grad.f32()[i];
    const double b = a.step == 1 ? g : double(a.momentum) * buf.f32()[i] + g;
    const double dir = a.nesterov ? g + double(a.momentum) * b : b;
    const double p = param.f32()[i];
    buf.f32()[i] = static_cast<float>(b);
    param.f32()[i] = static_cast<float>(p - a.lr * (dir + a.weight_decay * p));
  }
}

}  // namespace llmtk::reference
