// relu_forward / relu_backward: max(x, 0); the gradient at 0 is taken as 0.
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void relu_forward(TensorRef y, TensorRef x) {
  unary(y, x, [](float v) { return v > 0 ? v : 0.0f; });
}
void relu_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward(dx, dy, x, [](float v) { return v > 0 ? 1.0f : 0.0f; });
}

}  // namespace llmtk::cpu
