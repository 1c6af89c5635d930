// swiglu_forward / swiglu_backward: silu(gate) · up.
#include "elementwise.hpp"

namespace llmtk::reference {

using namespace elementwise;

void swiglu_forward(TensorRef y, TensorRef gate, TensorRef up) {
  gated(y, gate, up, silu);
}
void swiglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward(dgate, dup, dy, gate, up, silu, silu_grad);
}

}  // namespace llmtk::reference
