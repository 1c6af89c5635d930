// sum_squares: out[0] += Σ x², accumulated in fp64.
#include "reference.hpp"

namespace llmtk::reference {

void sum_squares(TensorRef out, TensorRef x) {
  const char* op = "sum_squares";
  expect_f32(op, "out", out), expect_f32(op, "x", x);
  LLMTK_CHECK(out.numel() >= 1, op, "out needs one element");
  double s = 0;
  for (std::int64_t i = 0, n = x.numel(); i < n; ++i) s += double(x.f32()[i]) * x.f32()[i];
  out.f32()[0] = static_cast<float>(out.f32()[0] + s);
}

}  // namespace llmtk::reference
