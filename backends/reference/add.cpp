// add_forward: y = a + b element-wise (y may alias a or b).
#include "reference.hpp"

namespace llmtk::reference {

void add_forward(TensorRef y, TensorRef a, TensorRef b) {
  const float *A = a.f32(), *B = b.f32();
  float* Y = y.f32();
  for (std::int64_t i = 0, n = y.numel(); i < n; ++i) Y[i] = static_cast<float>(double(A[i]) + B[i]);
}

}  // namespace llmtk::reference
