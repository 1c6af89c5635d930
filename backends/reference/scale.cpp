// scale_forward: y = s · x (y may alias x).
#include "reference.hpp"

namespace llmtk::reference {

void scale_forward(TensorRef y, TensorRef x, float s) {
  const char* op = "scale_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_same(op, "y", y, "x", x);
  for (std::int64_t i = 0, n = x.numel(); i < n; ++i) y.f32()[i] = static_cast<float>(double(s) * x.f32()[i]);
}

}  // namespace llmtk::reference
