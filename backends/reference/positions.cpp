// positions_forward / positions_backward: add a learned vector per position.
#include "reference.hpp"

namespace llmtk::reference {

void positions_forward(TensorRef y, TensorRef x, TensorRef table, int pos0) {
  const std::int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t c = 0; c < C; ++c) {
        const std::int64_t i = (b * T + t) * C + c;
        y.f32()[i] = x.f32()[i] + table.f32()[(pos0 + t) * C + c];
      }
}

void positions_backward(TensorRef dtable, TensorRef dy) {
  const std::int64_t B = dy.size(0), T = dy.size(1), C = dy.size(2);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (std::int64_t b = 0; b < B; ++b) acc += dy.f32()[(b * T + t) * C + c];
      dtable.f32()[t * C + c] += static_cast<float>(acc);
    }
}

}  // namespace llmtk::reference
