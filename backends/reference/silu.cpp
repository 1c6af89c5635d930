// silu_forward / silu_backward: x · sigmoid(x).
#include "elementwise.hpp"

namespace llmtk::reference {

using namespace elementwise;

void silu_forward(TensorRef y, TensorRef x) { unary(y, x, silu); }
void silu_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward(dx, dy, x, silu_grad);
}

}  // namespace llmtk::reference
