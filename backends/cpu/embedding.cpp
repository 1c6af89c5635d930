// embedding_forward (rows in parallel) / embedding_backward (serial: repeated ids would race).
#include <cstring>

#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void embedding_forward(TensorRef y, TensorRef ids, TensorRef table) {
  const std::int64_t N = ids.numel(), C = table.size(-1);
  if (y.dtype == DType::f32) {
#pragma omp parallel for schedule(static)
    for (std::int64_t n = 0; n < N; ++n)
      std::memcpy(y.f32() + n * C, table.f32() + std::int64_t(ids.i32()[n]) * C, std::size_t(C) * sizeof(float));
    return;
  }
  // bf16 activations: the f32 row rounded on store.
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < N; ++n)
    to_bf16_serial(as<std::uint16_t>(y) + n * C, table.f32() + std::int64_t(ids.i32()[n]) * C, C);
}

void embedding_backward(TensorRef dtable, TensorRef dy, TensorRef ids) {
  const std::int64_t N = ids.numel(), C = dtable.size(-1);
  by_dtype(dy.dtype, [&]<class T>() {
    for (std::int64_t n = 0; n < N; ++n) {
      const T* DY = as<T>(dy) + n * C;
      float* DT = dtable.f32() + std::int64_t(ids.i32()[n]) * C;
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) DT[c] += ld(DY, c);
    }
  });
}

}  // namespace llmtk::cpu
