// tanh_forward / tanh_backward: y = tanh(x); dx = dy · (1 − tanh²(x)), in double.
#include <cmath>

#include "elementwise.hpp"

namespace llmtk::reference {

using namespace elementwise;

void tanh_forward(TensorRef y, TensorRef x) { unary(y, x, [](double v) { return std::tanh(v); }); }
void tanh_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward(dx, dy, x, [](double v) {
    const double t = std::tanh(v);
    return 1 - t * t;
  });
}

}  // namespace llmtk::reference
