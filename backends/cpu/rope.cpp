// rope_forward / rope_backward: rotary embedding, half-split pairs. The frequencies are computed
// once per call; rows run in parallel.
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

namespace {
void rotate(TensorRef y, TensorRef x, float base, int pos0, float sign) {
  const std::int64_t B = x.size(0), T_ = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  // cos and sin of every (position, pair) once per call, shared by all batches and heads. The
  // angle is computed in double: t·freq reaches thousands of radians at long contexts.
  float* cs = scratch(std::size_t(2 * T_ * half));
#pragma omp parallel for schedule(static)
  for (std::int64_t t = 0; t < T_; ++t)
    for (std::int64_t i = 0; i < half; ++i) {
      const double a = double(pos0 + t) * std::pow(double(base), -2.0 * double(i) / double(D));
      cs[2 * (t * half + i)] = float(std::cos(a));
      cs[2 * (t * half + i) + 1] = sign * float(std::sin(a));
    }
  by_dtype(x.dtype, [&]<class T>() {
#pragma omp parallel for collapse(2) schedule(static)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T_; ++t)
        for (std::int64_t h = 0; h < H; ++h) {
          const std::int64_t off = ((b * T_ + t) * H + h) * D;
          const T* X = as<T>(x) + off;
          const float* CS = cs + 2 * t * half;
          T* Y = as<T>(y) + off;
          for (std::int64_t i = 0; i < half; ++i) {
            const float c = CS[2 * i], s = CS[2 * i + 1], x0 = ld(X, i), x1 = ld(X, i + half);
            st(Y, i, x0 * c - x1 * s);
            st(Y, i + half, x1 * c + x0 * s);
          }
        }
  });
}

}  // namespace

void rope_forward(TensorRef y, TensorRef x, float base, int pos0) { rotate(y, x, base, pos0, 1.0f); }
void rope_backward(TensorRef dx, TensorRef dy, float base, int pos0) { rotate(dx, dy, base, pos0, -1.0f); }

}  // namespace llmtk::cpu
