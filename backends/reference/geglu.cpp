// geglu_forward / geglu_backward: gelu(gate) · up.
#include "elementwise.hpp"

namespace llmtk::reference {

using namespace elementwise;

void geglu_forward(TensorRef y, TensorRef gate, TensorRef up) {
  gated(y, gate, up, gelu);
}
void geglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward(dgate, dup, dy, gate, up, gelu, gelu_grad);
}

}  // namespace llmtk::reference
