// embedding_forward (rows in parallel) / embedding_backward (serial: repeated ids would race).
#include <cstring>

#include "cpu.hpp"

namespace llmtk::cpu {

namespace {
void check_ids(const char* op, TensorRef ids, std::int64_t V) {
  LLMTK_CHECK(ids.dtype == DType::i32 && ids.data, op, "ids must be i32");
  for (std::int64_t n = 0; n < ids.numel(); ++n) {
    const std::int32_t id = ids.i32()[n];
    LLMTK_CHECK(id >= 0 && id < V, op, "token id ", id, " at position ", n, " is outside the vocabulary [0, ", V, ")");
  }
}
}  // namespace

void embedding_forward(TensorRef y, TensorRef ids, TensorRef table) {
  const char* op = "embedding_forward";
  expect_f32(op, "y", y), expect_f32(op, "table", table);
  const std::int64_t N = ids.numel(), V = table.size(0), C = table.size(-1);
  LLMTK_CHECK(y.rows() == N && y.size(-1) == C, op, "y ", y.shape_str(), " must be [", N, ", ", C, "]");
  check_ids(op, ids, V);
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < N; ++n)
    std::memcpy(y.f32() + n * C, table.f32() + std::int64_t(ids.i32()[n]) * C, std::size_t(C) * sizeof(float));
}

void embedding_backward(TensorRef dtable, TensorRef dy, TensorRef ids) {
  const char* op = "embedding_backward";
  expect_f32(op, "dtable", dtable), expect_f32(op, "dy", dy);
  const std::int64_t N = ids.numel(), V = dtable.size(0), C = dtable.size(-1);
  LLMTK_CHECK(dy.rows() == N && dy.size(-1) == C, op, "dy ", dy.shape_str(), " must be [", N, ", ", C, "]");
  check_ids(op, ids, V);
  for (std::int64_t n = 0; n < N; ++n) {
    const float* DY = dy.f32() + n * C;
    float* DT = dtable.f32() + std::int64_t(ids.i32()[n]) * C;
#pragma omp simd
    for (std::int64_t c = 0; c < C; ++c) DT[c] += DY[c];
  }
}

}  // namespace llmtk::cpu
