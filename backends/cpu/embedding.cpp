// embedding_forward (rows in parallel) / embedding_backward (serial: repeated ids would race).
#include <cstring>

#include "cpu.hpp"

namespace llmtk::cpu {

void embedding_forward(TensorRef y, TensorRef ids, TensorRef table) {
  const std::int64_t N = ids.numel(), C = table.size(-1);
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < N; ++n)
    std::memcpy(y.f32() + n * C, table.f32() + std::int64_t(ids.i32()[n]) * C, std::size_t(C) * sizeof(float));
}

void embedding_backward(TensorRef dtable, TensorRef dy, TensorRef ids) {
  const std::int64_t N = ids.numel(), C = dtable.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const float* DY = dy.f32() + n * C;
    float* DT = dtable.f32() + std::int64_t(ids.i32()[n]) * C;
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) DT[c] += DY[c];
  }
}

}  // namespace llmtk::cpu
