// sgd_step: SGD with momentum (optionally Nesterov) and decoupled weight decay, in parallel.
#include "cpu.hpp"

namespace llmtk::cpu {

void sgd_step(TensorRef param, TensorRef grad, TensorRef buf, SgdArgs a) {
  float *P = param.f32(), *Bf = buf.f32();
  const float* G = grad.f32();
  const std::int64_t n = param.numel();
  const bool first = a.step == 1;
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = G[i];
    const float b = first ? g : a.momentum * Bf[i] + g;
    const float dir = a.nesterov ? g + a.momentum * b : b;
    Bf[i] = b;
    P[i] -= a.lr * (dir + a.weight_decay * P[i]);
  }
}

}  // namespace llmtk::cpu
