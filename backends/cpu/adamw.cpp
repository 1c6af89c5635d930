// adamw_step: one AdamW update, element-wise in parallel.
#include "cpu.hpp"

namespace llmtk::cpu {

void adamw_step(TensorRef param, TensorRef grad, TensorRef m, TensorRef v, AdamWArgs a) {
  const float c1 = float(1.0 - std::pow(double(a.beta1), a.step)), c2 = float(1.0 - std::pow(double(a.beta2), a.step));
  float *P = param.f32(), *M = m.f32(), *Vv = v.f32();
  const float* G = grad.f32();
  const std::int64_t n = param.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = G[i];
    const float mi = a.beta1 * M[i] + (1.0f - a.beta1) * g;
    const float vi = a.beta2 * Vv[i] + (1.0f - a.beta2) * g * g;
    M[i] = mi, Vv[i] = vi;
    P[i] -= a.lr * ((mi / c1) / (std::sqrt(vi / c2) + a.eps) + a.weight_decay * P[i]);
  }
}

}  // namespace llmtk::cpu
