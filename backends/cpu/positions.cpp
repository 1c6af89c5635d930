// positions_forward / positions_backward: add a learned vector per position, in parallel over rows.
#include "cpu.hpp"

namespace llmtk::cpu {

void positions_forward(TensorRef y, TensorRef x, TensorRef table, int pos0) {
  const std::int64_t B = x.size(0), T = x.size(1), C = x.size(2);
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t) {
      const float *X = x.f32() + (b * T + t) * C, *P = table.f32() + (pos0 + t) * C;
      float* Y = y.f32() + (b * T + t) * C;
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) Y[c] = X[c] + P[c];
    }
}

void positions_backward(TensorRef dtable, TensorRef dy) {
  const std::int64_t B = dy.size(0), T = dy.size(1), C = dy.size(2);
#pragma omp parallel for schedule(static)
  for (std::int64_t t = 0; t < T; ++t)  // each t owns its row of dtable: no races
    for (std::int64_t b = 0; b < B; ++b) {
      const float* DY = dy.f32() + (b * T + t) * C;
      float* DP = dtable.f32() + t * C;
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) DP[c] += DY[c];
    }
}

}  // namespace llmtk::cpu
