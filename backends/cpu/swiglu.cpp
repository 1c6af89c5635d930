// swiglu_forward / swiglu_backward: silu(gate) · up.
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void swiglu_forward(TensorRef y, TensorRef gate, TensorRef up) {
  gated(y, gate, up, [](float v) { return silu(v); });
}
void swiglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward(dgate, dup, dy, gate, up, [](float v) { return silu(v); },
                 [](float v) { return silu_grad(v); });
}

}  // namespace llmtk::cpu
