// positions_forward / positions_backward: add a learned vector per position.
#include "reference.hpp"

namespace llmtk::reference {

void positions_forward(TensorRef y, TensorRef x, TensorRef table, int pos0) {
  const char* op = "positions_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_f32(op, "table", table);
  expect_rank(op, "x", x, 3, "[B, T, C]"), expect_same(op, "y", y, "x", x);
  const std::int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  LLMTK_CHECK(pos0 >= 0 && table.size(0) >= pos0 + T && table.size(-1) == C, op, "table ", table.shape_str(),
              " must be [P >= ", pos0 + T, ", ", C, "]");
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t c = 0; c < C; ++c) {
        const std::int64_t i = (b * T + t) * C + c;
        y.f32()[i] = x.f32()[i] + table.f32()[(pos0 + t) * C + c];
      }
}

void positions_backward(TensorRef dtable, TensorRef dy) {
  const char* op = "positions_backward";
  expect_f32(op, "dtable", dtable), expect_f32(op, "dy", dy);
  expect_rank(op, "dy", dy, 3, "[B, T, C]");
  const std::int64_t B = dy.size(0), T = dy.size(1), C = dy.size(2);
  LLMTK_CHECK(dtable.size(0) >= T && dtable.size(-1) == C, op, "dtable ", dtable.shape_str(),
              " must be [P >= ", T, ", ", C, "]");
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (std::int64_t b = 0; b < B; ++b) acc += dy.f32()[(b * T + t) * C + c];
      dtable.f32()[t * C + c] += static_cast<float>(acc);
    }
}

}  // namespace llmtk::reference
