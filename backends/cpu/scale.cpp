// scale_forward: y = s · x (y may alias x), in parallel, f32 or bf16.
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void scale_forward(TensorRef y, TensorRef x, float s) {
  by_dtype(y.dtype, [&]<class T>() {
    const T* X = as<T>(x);
    T* Y = as<T>(y);
    const std::int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) st(Y, i, s * ld(X, i));
  });
}

}  // namespace llmtk::cpu
