// swiglu_forward / swiglu_backward: silu(gate) · up.
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void swiglu_forward(TensorRef y, TensorRef gate, TensorRef up) {
  gated("swiglu_forward", y, gate, up, silu);
}
void swiglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward("swiglu_backward", dgate, dup, dy, gate, up, silu, silu_grad);
}

}  // namespace llmtk::cpu
