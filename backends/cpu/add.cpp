// add_forward: y = a + b element-wise (y may alias a or b), f32 or bf16.
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void add_forward(TensorRef y, TensorRef a, TensorRef b) {
  by_dtype(y.dtype, [&]<class T>() {
    const T *A = as<T>(a), *B = as<T>(b);
    T* Y = as<T>(y);
    const std::int64_t n = y.numel();
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) st(Y, i, ld(A, i) + ld(B, i));
  });
}

}  // namespace llmtk::cpu
