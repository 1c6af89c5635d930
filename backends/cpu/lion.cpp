// lion_step: sign of the interpolated momentum, then the momentum update, in parallel.
#include "cpu.hpp"

namespace llmtk::cpu {

void lion_step(TensorRef param, TensorRef grad, TensorRef m, LionArgs a) {
  float *P = param.f32(), *M = m.f32();
  const float* G = grad.f32();
  const std::int64_t n = param.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const float c = a.beta1 * M[i] + (1.0f - a.beta1) * G[i];
    const float sign = c > 0 ? 1.0f : c < 0 ? -1.0f : 0.0f;
    P[i] -= a.lr * (sign + a.weight_decay * P[i]);
    M[i] = a.beta2 * M[i] + (1.0f - a.beta2) * G[i];
  }
}

}  // namespace llmtk::cpu
