// scale_forward: y = s · x (y may alias x).
#include "reference.hpp"

namespace llmtk::reference {

void scale_forward(TensorRef y, TensorRef x, float s) {
  for (std::int64_t i = 0, n = x.numel(); i < n; ++i) y.f32()[i] = static_cast<float>(double(s) * x.f32()[i]);
}

}  // namespace llmtk::reference
