// adamw_step: one AdamW update with bias correction and decoupled weight decay.
#include "reference.hpp"

namespace llmtk::reference {

void adamw_step(TensorRef param, TensorRef grad, TensorRef m, TensorRef v, AdamWArgs a) {
  const double c1 = 1.0 - std::pow(double(a.beta1), a.step);
  const double c2 = 1.0 - std::pow(double(a.beta2), a.step);
  for (std::int64_t i = 0, n = param.numel(); i < n; ++i) {
    const double g = grad.f32()[i];
    const double mi = a.beta1 * double(m.f32()[i]) + (1.0 - a.beta1) * g;
    const double vi = a.beta2 * double(v.f32()[i]) + (1.0 - a.beta2) * g * g;
    const double p = param.f32()[i];
    const double update = (mi / c1) / (std::sqrt(vi / c2) + a.eps) + a.weight_decay * p;
    m.f32()[i] = static_cast<float>(mi);
    v.f32()[i] = static_cast<float>(vi);
    param.f32()[i] = static_cast<float>(p - a.lr * update);
  }
}

}  // namespace llmtk::reference
