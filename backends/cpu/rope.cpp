// rope_forward / rope_backward: rotary embedding, half-split pairs. The frequencies are computed
// once per call; rows run in parallel.
#include "cpu.hpp"

namespace llmtk::cpu {

namespace {
void rotate(TensorRef y, TensorRef x, float base, int pos0, float sign) {
  const std::int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  // cos and sin of every (position, pair) once per call, shared by all batches and heads. The
  // angle is computed in double: t·freq reaches thousands of radians at long contexts.
  float* cs = scratch(std::size_t(2 * T * half));
#pragma omp parallel for schedule(static)
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t i = 0; i < half; ++i) {
      const double a = double(pos0 + t) * std::pow(double(base), -2.0 * double(i) / double(D));
      cs[2 * (t * half + i)] = float(std::cos(a));
      cs[2 * (t * half + i) + 1] = sign * float(std::sin(a));
    }
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t h = 0; h < H; ++h) {
        const std::int64_t off = ((b * T + t) * H + h) * D;
        const float* X = x.f32() + off;
        const float* CS = cs + 2 * t * half;
        float* Y = y.f32() + off;
        for (std::int64_t i = 0; i < half; ++i) {
          const float c = CS[2 * i], s = CS[2 * i + 1], x0 = X[i], x1 = X[i + half];
          Y[i] = x0 * c - x1 * s;
          Y[i + half] = x1 * c + x0 * s;
        }
      }
}
}  // namespace

void rope_forward(TensorRef y, TensorRef x, float base, int pos0) { rotate(y, x, base, pos0, 1.0f); }
void rope_backward(TensorRef dx, TensorRef dy, float base, int pos0) { rotate(dx, dy, base, pos0, -1.0f); }

}  // namespace llmtk::cpu
