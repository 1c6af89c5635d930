// embedding_forward / embedding_backward: look up token rows; scatter-add their gradients.
#include "reference.hpp"

namespace llmtk::reference {

void embedding_forward(TensorRef y, TensorRef ids, TensorRef table) {
  const char* op = "embedding_forward";
  expect_f32(op, "y", y), expect_f32(op, "table", table);
  LLMTK_CHECK(ids.dtype == DType::i32 && ids.data, op, "ids must be i32");
  const std::int64_t N = ids.numel(), V = table.size(0), C = table.size(-1);
  LLMTK_CHECK(y.rows() == N && y.size(-1) == C, op, "y ", y.shape_str(), " must be [", N, ", ",
              C, "]");
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t id = ids.i32()[n];
    LLMTK_CHECK(id >= 0 && id < V, op, "token id ", id, " at position ", n,
                " is outside the vocabulary [0, ", V, ")");
    for (std::int64_t c = 0; c < C; ++c) y.f32()[n * C + c] = table.f32()[id * C + c];
  }
}

void embedding_backward(TensorRef dtable, TensorRef dy, TensorRef ids) {
  const char* op = "embedding_backward";
  expect_f32(op, "dtable", dtable), expect_f32(op, "dy", dy);
  LLMTK_CHECK(ids.dtype == DType::i32 && ids.data, op, "ids must be i32");
  const std::int64_t N = ids.numel(), V = dtable.size(0), C = dtable.size(-1);
  LLMTK_CHECK(dy.rows() == N && dy.size(-1) == C, op, "dy ", dy.shape_str(), " must be [", N, ", ", C, "]");
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t id = ids.i32()[n];
    LLMTK_CHECK(id >= 0 && id < V, op, "token id ", id, " at position ", n,
                " is outside the vocabulary [0, ", V, ")");
    for (std::int64_t c = 0; c < C; ++c) dtable.f32()[id * C + c] += dy.f32()[n * C + c];
  }
}

}  // namespace llmtk::reference
