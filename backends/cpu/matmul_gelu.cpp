// matmul_gelu_forward / gelu_matmul_backward: a matmul and GELU as one op. On the CPU they run as
// their composition: a oneDNN GELU post-op would not also write h, which the backward needs.
#include "cpu.hpp"

namespace llmtk::cpu {

void matmul_gelu_forward(TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b) {
  expect_same("matmul_gelu_forward", "y", y, "h", h);
  LLMTK_CHECK(y.data != h.data, "matmul_gelu_forward",
              "y and h must be different tensors (h is kept for the backward)");
  matmul_forward(h, x, w, b);
  gelu_forward(y, h);
}

void gelu_matmul_backward(TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a, TensorRef w,
                          TensorRef h) {
  LLMTK_CHECK(dh, "gelu_matmul_backward", "dh is required (it is the op's activation gradient)");
  LLMTK_CHECK(dh.data != h.data, "gelu_matmul_backward",
              "dh and h must be different tensors (h is read after dh is written)");
  matmul_backward(dh, dw, db, dy, a, w);
  gelu_backward(dh, dh, h);
}

}  // namespace llmtk::cpu
