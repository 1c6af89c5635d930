// embedding_* (token table lookup), positions_* (learned position table), sinusoidal_forward.
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
  const std::int64_t N = ids.numel(), C = dtable.size(-1);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c) dtable.f32()[ids.i32()[n] * C + c] += dy.f32()[n * C + c];
}

void positions_forward(TensorRef y, TensorRef x, TensorRef table) {
  const char* op = "positions_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_f32(op, "table", table);
  expect_rank(op, "x", x, 3, "[B, T, C]"), expect_same(op, "y", y, "x", x);
  const std::int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  LLMTK_CHECK(table.size(0) >= T && table.size(-1) == C, op, "table ", table.shape_str(),
              " must be [P >= ", T, ", ", C, "]");
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t c = 0; c < C; ++c) {
        const std::int64_t i = (b * T + t) * C + c;
        y.f32()[i] = x.f32()[i] + table.f32()[t * C + c];
      }
}

void positions_backward(TensorRef dtable, TensorRef dy) {
  const char* op = "positions_backward";
  expect_f32(op, "dtable", dtable), expect_f32(op, "dy", dy);
  expect_rank(op, "dy", dy, 3, "[B, T, C]");
  const std::int64_t B = dy.size(0), T = dy.size(1), C = dy.size(2);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (std::int64_t b = 0; b < B; ++b) acc += dy.f32()[(b * T + t) * C + c];
      dtable.f32()[t * C + c] += static_cast<float>(acc);
    }
}

void sinusoidal_forward(TensorRef y, TensorRef x) {
  const char* op = "sinusoidal_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x);
  expect_rank(op, "x", x, 3, "[B, T, C]"), expect_same(op, "y", y, "x", x);
  const std::int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  LLMTK_CHECK(C % 2 == 0, op, "C = ", C, " must be even");
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t i = 0; i < C / 2; ++i) {
        const double a = double(t) / std::pow(10000.0, 2.0 * double(i) / double(C));
        const std::int64_t o = (b * T + t) * C + 2 * i;
        y.f32()[o] = static_cast<float>(x.f32()[o] + std::sin(a));
        y.f32()[o + 1] = static_cast<float>(x.f32()[o + 1] + std::cos(a));
      }
}

}  // namespace llmtk::reference
