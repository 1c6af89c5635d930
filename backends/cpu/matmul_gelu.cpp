// matmul_gelu_forward / gelu_matmul_backward: a matmul and GELU as one op. On the CPU they run as
// their composition: a oneDNN GELU post-op would not also write h, which the backward needs.
#include "cpu.hpp"

namespace llmtk::cpu {

void matmul_gelu_forward(TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b) {
  backend::matmul_gelu_forward_composed<&matmul_forward, &gelu_forward>(y, h, x, w, b);
}

void gelu_matmul_backward(TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a, TensorRef w,
                          TensorRef h) {
  backend::gelu_matmul_backward_composed<&matmul_backward, &gelu_backward>(dh, dw, db, dy, a, w, h);
}

}  // namespace llmtk::cpu
