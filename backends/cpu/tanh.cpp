// tanh_forward / tanh_backward: y = tanh(x); dx = dy · (1 − tanh²(x)) (prefix tuning's
// reparameterisation, Li and Liang 2021). f32 or bf16, in parallel.
#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void tanh_forward(TensorRef y, TensorRef x) { unary(y, x, [](float v) { return fast_tanh(v); }); }
void tanh_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward(dx, dy, x, [](float v) {
    const float t = fast_tanh(v);
    return 1.0f - t * t;
  });
}

}  // namespace llmtk::cpu
