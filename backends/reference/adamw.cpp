// adamw_step: one AdamW update with bias correction and decoupled weight decay.
#include "reference.hpp"

namespace llmtk::reference {

void adamw_step(TensorRef param, TensorRef grad, TensorRef m, TensorRef v, AdamWArgs a) {
  const char* op = "adamw_step";
  expect_f32(op, "param", param), expect_f32(op, "grad", grad);
  expect_f32(op, "m", m), expect_f32(op, "v", v);
  expect_same(op, "param", param, "grad", grad);
  expect_same(op, "m", m, "param", param), expect_same(op, "v", v, "param", param);
  LLMTK_CHECK(a.step >= 1, op, "step counts from 1, got ", a.step);
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
