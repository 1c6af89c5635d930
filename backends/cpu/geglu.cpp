// geglu_forward / geglu_backward: gelu(gate) · up.
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void geglu_forward(TensorRef y, TensorRef gate, TensorRef up) {
  gated(y, gate, up, [](float v) { return gelu(v); });
}
void geglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward(dgate, dup, dy, gate, up, [](float v) { return gelu(v); },
                 [](float v) { return gelu_grad(v); });
}

}  // namespace llmtk::cpu
