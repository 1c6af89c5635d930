// gelu_forward / gelu_backward: the tanh approximation of GELU (GPT-2's).
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void gelu_forward(TensorRef y, TensorRef x) { unary(y, x, [](float v) { return gelu(v); }); }
void gelu_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward(dx, dy, x, [](float v) { return gelu_grad(v); });
}

}  // namespace llmtk::cpu
