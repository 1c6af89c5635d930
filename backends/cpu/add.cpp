// add_forward: y = a + b element-wise (y may alias a or b).
#include "cpu.hpp"

namespace llmtk::cpu {

void add_forward(TensorRef y, TensorRef a, TensorRef b) {
  const float *A = a.f32(), *B = b.f32();
  float* Y = y.f32();
  const std::int64_t n = y.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) Y[i] = A[i] + B[i];
}

}  // namespace llmtk::cpu
