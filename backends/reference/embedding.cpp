// embedding_forward / embedding_backward: look up token rows; scatter-add their gradients.
#include "reference.hpp"

namespace llmtk::reference {

void embedding_forward(TensorRef y, TensorRef ids, TensorRef table) {
  const std::int64_t N = ids.numel(), C = table.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t id = ids.i32()[n];
    for (std::int64_t c = 0; c < C; ++c) y.f32()[n * C + c] = table.f32()[id * C + c];
  }
}

void embedding_backward(TensorRef dtable, TensorRef dy, TensorRef ids) {
  const std::int64_t N = ids.numel(), C = dtable.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t id = ids.i32()[n];
    for (std::int64_t c = 0; c < C; ++c) dtable.f32()[id * C + c] += dy.f32()[n * C + c];
  }
}

}  // namespace llmtk::reference
