// scale_forward: y = s · x (y may alias x), in parallel.
#include "cpu.hpp"

namespace llmtk::cpu {

void scale_forward(TensorRef y, TensorRef x, float s) {
  const float* X = x.f32();
  float* Y = y.f32();
  const std::int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) Y[i] = s * X[i];
}

}  // namespace llmtk::cpu
