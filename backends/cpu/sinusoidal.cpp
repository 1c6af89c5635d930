// sinusoidal_forward: add fixed sin/cos position vectors, in parallel over rows.
#include "cpu.hpp"

namespace llmtk::cpu {

void sinusoidal_forward(TensorRef y, TensorRef x, int pos0) {
  const std::int64_t B = x.size(0), T = x.size(1), C = x.size(2);
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t i = 0; i < C / 2; ++i) {
        const double a = double(pos0 + t) / std::pow(10000.0, 2.0 * double(i) / double(C));
        const std::int64_t o = (b * T + t) * C + 2 * i;
        y.f32()[o] = x.f32()[o] + float(std::sin(a));
        y.f32()[o + 1] = x.f32()[o + 1] + float(std::cos(a));
      }
}

}  // namespace llmtk::cpu
