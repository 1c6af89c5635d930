// MLP<Act>: y = w_proj · act(w_fc · x + b_fc) + b_proj, the GPT-2 feed-forward. Act is GELU
// (tanh approximation), ReLU or SiLU. GELU also names fused ops (a matmul and GELU in one op,
// which cuBLASLt runs as one kernel); the MLP uses them when the activation has them, and the
// unfused path below shows the same computation step by step.
#pragma once
#include "common.hpp"  // ops::gelu_*, ops::relu_*, ops::silu_*
#include "linear.hpp"

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

template <class Act>
struct MLP;

template <Activation Act>
struct MLP<Act> {
  static constexpr Role role = Role::feedforward;
  static constexpr std::string_view tags[] = {std::same_as<Act, GELU>   ? "gelu_mlp"
                                              : std::same_as<Act, ReLU> ? "relu_mlp"
                                                                        : "mlp"};
  using In = Hidden;
  using Out = Hidden;

  Linear fc, proj;                       // w_fc: [F, C], w_proj: [C, F]; biases b_fc, b_proj
  ActSlot h, a;                          // saved: pre- and post-activation [B·T, F]
  ActSlot da;                            // backward scratch [B·T, F]

  void declare(Planner& p) {
    const std::int64_t C = p.dims.d_model, F = p.dims.d_ff, N = p.B * p.T;
    // Tensor parallel: F is this rank's share of the hidden width (fc column-, proj row-parallel).
    fc.declare(p, "w_fc", "b_fc", F, C, ParamKind::matrix, p.dims.bias, LinearSplit::rows);
    proj.declare(p, "w_proj", "b_proj", C, F, ParamKind::residual_matrix, p.dims.bias, LinearSplit::columns);
    h = p.act("h", {N, F}), a = p.act("a", {N, F}), da = p.act("da", {N, F});
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    if constexpr (FusedActivation<Act>) {
      if (!fc.adapter) {  // an adapter adds to the pre-activation, between the two fused steps
        Act::matmul_forward(c.a(a), c.a(h), x.view({N, C}), fc.weight(c), fc.bias(c));
        if (c.probe && c.rows < 0) c.probe->units(c.a(a));  // (an MoE expert's rows: not a layer's units)
        proj.forward(c, y.view({N, C}), c.a(a));
        return tp_sum(c, y, "the feed-forward output (tensor parallel)");
      }
    }
    fc.forward(c, c.a(h), x.view({N, C}));
    Act::forward(c.a(a), c.a(h));
    if (c.probe && c.rows < 0) c.probe->units(c.a(a));
    proj.forward(c, y.view({N, C}), c.a(a));
    tp_sum(c, y, "the feed-forward output (tensor parallel)");
  }
  // dx, dy, x: [B, T, C]
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    bool done = false;
    if constexpr (FusedActivation<Act>) {
      if (!proj.adapter) {  // da holds dh
        Act::matmul_backward(c.a(da), proj.dweight(c), proj.dbias(c), dy.view({N, C}), c.a(a), proj.weight(c), c.a(h));
        done = true;
      }
    }
    if (!done) {
      proj.backward(c, c.a(da), dy.view({N, C}), c.a(a));
      Act::backward(c.a(da), c.a(da), c.a(h));  // in place: da becomes dh
    }
    fc.backward(c, dx.view({N, C}), c.a(da), x.view({N, C}));
    tp_sum(c, dx, "the feed-forward input's gradient (tensor parallel)");
  }
  static double flops_per_token(const Dims& d, std::int64_t) {
    return 2.0 * 2.0 * d.d_model * d.d_ff;
  }
};

// Any other Act: the static_assert names the rule, and the MLP stands in as a Rejected part
// (protocol/concepts.hpp) so that the error is not followed by a cascade from the block and model.
template <class Act>
struct MLP : Rejected<Role::feedforward> {
  static_assert(Activation<Act>, "mlp_activation: MLP<Act> takes an activation (GELU, ReLU, SiLU); the notes "
                                 "below name the type it got");
};

}  // namespace llmtk
