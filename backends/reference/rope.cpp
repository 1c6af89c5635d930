// rope_forward / rope_backward: rotary position embedding, half-split pairs (Hugging Face Llama).
#include "reference.hpp"

namespace llmtk::reference {

namespace {
// Rotates every (i, i + D/2) pair of x by angle t·base^(-2i/D), times `sign` (−1 inverts).
void rotate(TensorRef y, TensorRef x, float base, int pos0, double sign) {
  const std::int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t h = 0; h < H; ++h) {
        const std::int64_t off = ((b * T + t) * H + h) * D;
        for (std::int64_t i = 0; i < half; ++i) {
          const double inv_freq = std::pow(double(base), -2.0 * double(i) / double(D));
          const double a = double(pos0 + t) * inv_freq, c = std::cos(a), s = sign * std::sin(a);
          const double x0 = x.f32()[off + i], x1 = x.f32()[off + i + half];
          y.f32()[off + i] = static_cast<float>(x0 * c - x1 * s);
          y.f32()[off + i + half] = static_cast<float>(x1 * c + x0 * s);
        }
      }
}
}  // namespace

void rope_forward(TensorRef y, TensorRef x, float base, int pos0) { rotate(y, x, base, pos0, 1.0); }

// The rotation is orthogonal, so the gradient is the inverse rotation.
void rope_backward(TensorRef dx, TensorRef dy, float base, int pos0) {
  rotate(dx, dy, base, pos0, -1.0);
}

}  // namespace llmtk::reference
