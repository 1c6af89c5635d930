// gelu_forward / gelu_backward: the tanh approximation of GELU (GPT-2's).
#include "elementwise.hpp"

namespace llmtk::reference {

using namespace elementwise;

void gelu_forward(TensorRef y, TensorRef x) { unary(y, x, gelu); }
void gelu_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward(dx, dy, x, gelu_grad);
}

}  // namespace llmtk::reference
