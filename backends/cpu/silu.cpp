// silu_forward / silu_backward: x · sigmoid(x).
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void silu_forward(TensorRef y, TensorRef x) { unary(y, x, [](float v) { return silu(v); }); }
void silu_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward(dx, dy, x, [](float v) { return silu_grad(v); });
}

}  // namespace llmtk::cpu
