// matmul_gelu_forward / gelu_matmul_backward: a matmul and GELU as one op. Here they are exactly
// their composition, which is the contract; the CUDA backend can fuse them into cuBLASLt's
// epilogues.
#include "reference.hpp"

namespace llmtk::reference {

void matmul_gelu_forward(TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b) {
  backend::matmul_gelu_forward_composed<&matmul_forward, &gelu_forward>(y, h, x, w, b);
}

void gelu_matmul_backward(TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a, TensorRef w,
                          TensorRef h) {
  backend::gelu_matmul_backward_composed<&matmul_backward, &gelu_backward>(dh, dw, db, dy, a, w, h);
}

}  // namespace llmtk::reference
