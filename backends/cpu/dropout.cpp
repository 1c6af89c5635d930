// dropout: y = x · keep(seed, i) / (1 − p) (y may alias x), in parallel, f32 or bf16. The mask
// is a function of the element's index (ops/dropout_mask.hpp), so the threads need no shared state.
#include "../../framework/ops/dropout_mask.hpp"
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void dropout(TensorRef y, TensorRef x, float p, std::uint64_t seed) {
  const float k = dropout::kept_scale(p);
  by_dtype(y.dtype, [&]<class T>() {
    const T* X = as<T>(x);
    T* Y = as<T>(y);
    const std::int64_t n = x.numel();
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) st(Y, i, dropout::keep(seed, i, p) ? k * ld(X, i) : 0.0f);
  });
}

}  // namespace llmtk::cpu
