// MLP<Act>: y = w_proj · act(w_fc · x + b_fc) + b_proj, the GPT-2 feed-forward. Act is GELU
// (tanh approximation), ReLU or SiLU. GELU also names fused ops (a matmul and GELU in one op,
// which cuBLASLt runs as one kernel); the MLP uses them when the activation has them, and the
// unfused path below shows the same computation step by step.
#pragma once
#include "common.hpp"  // ops::matmul_*, ops::gelu_*, ops::relu_*, ops::silu_*

namespace llmtk {

struct GELU {
  static void forward(TensorRef y, TensorRef x) { ops::gelu_forward(y, x); }
  static void backward(TensorRef dx, TensorRef dy, TensorRef x) { ops::gelu_backward(dx, dy, x); }
  // h = x·wᵀ + b, y = gelu(h)
  static void matmul_forward(TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b) {
    ops::matmul_gelu_forward(y, h, x, w, b);
  }
  // backward of y = gelu(h)·wᵀ + b, a = gelu(h): dh = (dy·w) ⊙ gelu'(h); dw, db accumulate
  static void matmul_backward(TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a, TensorRef w,
                              TensorRef h) {
    ops::gelu_matmul_backward(dh, dw, db, dy, a, w, h);
  }
};
struct ReLU {
  static void forward(TensorRef y, TensorRef x) { ops::relu_forward(y, x); }
  static void backward(TensorRef dx, TensorRef dy, TensorRef x) { ops::relu_backward(dx, dy, x); }
};
struct SiLU {
  static void forward(TensorRef y, TensorRef x) { ops::silu_forward(y, x); }
  static void backward(TensorRef dx, TensorRef dy, TensorRef x) { ops::silu_backward(dx, dy, x); }
};

template <Activation Act>
struct MLP {
  static constexpr Role role = Role::feedforward;
  using In = Hidden;
  using Out = Hidden;

  ParamSlot w_fc, b_fc, w_proj, b_proj;  // w_fc: [F, C], w_proj: [C, F]
  ActSlot h, a;                          // saved: pre- and post-activation [B·T, F]
  ActSlot da;                            // backward scratch [B·T, F]

  void declare(Planner& p) {
    const std::int64_t C = p.dims.d_model, F = p.dims.d_ff, N = p.B * p.T;
    w_fc = p.param("w_fc", {F, C}, ParamKind::matrix);
    if (p.dims.bias) b_fc = p.param("b_fc", {F}, ParamKind::bias);
    w_proj = p.param("w_proj", {C, F}, ParamKind::residual_matrix);
    if (p.dims.bias) b_proj = p.param("b_proj", {C}, ParamKind::bias);
    h = p.act("h", {N, F}), a = p.act("a", {N, F}), da = p.act("da", {N, F});
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    if constexpr (FusedActivation<Act>) {
      Act::matmul_forward(c.a(a), c.a(h), x.view({N, C}), c.p(w_fc), c.p(b_fc));
    } else {
      ops::matmul_forward(c.a(h), x.view({N, C}), c.p(w_fc), c.p(b_fc));
      Act::forward(c.a(a), c.a(h));
    }
    ops::matmul_forward(y.view({N, C}), c.a(a), c.p(w_proj), c.p(b_proj));
  }
  // dx, dy, x: [B, T, C]
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    if constexpr (FusedActivation<Act>) {  // da holds dh
      Act::matmul_backward(c.a(da), c.g(w_proj), c.g(b_proj), dy.view({N, C}), c.a(a), c.p(w_proj), c.a(h));
    } else {
      ops::matmul_backward(c.a(da), c.g(w_proj), c.g(b_proj), dy.view({N, C}), c.a(a), c.p(w_proj));
      Act::backward(c.a(da), c.a(da), c.a(h));  // in place: da becomes dh
    }
    ops::matmul_backward(dx.view({N, C}), c.g(w_fc), c.g(b_fc), c.a(da), x.view({N, C}), c.p(w_fc));
  }
  static double flops_per_token(const Dims& d, std::int64_t) {
    return 2.0 * 2.0 * d.d_model * d.d_ff;
  }
};

}  // namespace llmtk
