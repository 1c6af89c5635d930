// Gated feed-forwards: y = w_down · (act(w_gate · x) ⊙ (w_up · x)). SwiGLU (act = SiLU, Llama's)
// and GeGLU (act = GELU). Biases b_gate, b_up, b_down exist when dims.bias is set.
#pragma once
#include "common.hpp"  // ops::swiglu_*, ops::geglu_*, ops::add_forward
#include "linear.hpp"

namespace llmtk {

struct SiluGate {
  static void forward(TensorRef y, TensorRef g, TensorRef u) { ops::swiglu_forward(y, g, u); }
  static void backward(TensorRef dg, TensorRef du, TensorRef dy, TensorRef g, TensorRef u) {
    ops::swiglu_backward(dg, du, dy, g, u);
  }
};
struct GeluGate {
  static void forward(TensorRef y, TensorRef g, TensorRef u) { ops::geglu_forward(y, g, u); }
  static void backward(TensorRef dg, TensorRef du, TensorRef dy, TensorRef g, TensorRef u) {
    ops::geglu_backward(dg, du, dy, g, u);
  }
};

template <class Gate>
struct GatedFeedForward {
  static constexpr Role role = Role::feedforward;
  static constexpr std::string_view tags[] = {std::same_as<Gate, SiluGate> ? "swiglu" : "geglu"};
  using In = Hidden;
  using Out = Hidden;

  Linear gate, up, down;       // w_gate, w_up: [F, C]; w_down: [C, F]; biases b_gate, b_up, b_down
  ActSlot g, u, a;             // saved: [B·T, F]
  ActSlot da, du, dx_part;     // backward scratch: da (becomes dgate) and du [B·T, F], [B·T, C]

  void declare(Planner& p) {
    const std::int64_t C = p.dims.d_model, F = p.dims.d_ff, N = p.B * p.T;
    // Tensor parallel: F is this rank's share (gate and up column-, down row-parallel).
    gate.declare(p, "w_gate", "b_gate", F, C, ParamKind::matrix, p.dims.bias, LinearSplit::rows);
    up.declare(p, "w_up", "b_up", F, C, ParamKind::matrix, p.dims.bias, LinearSplit::rows);
    down.declare(p, "w_down", "b_down", C, F, ParamKind::residual_matrix, p.dims.bias, LinearSplit::columns);
    g = p.act("g", {N, F}), u = p.act("u", {N, F}), a = p.act("a", {N, F});
    da = p.act("da", {N, F}), du = p.act("du", {N, F}), dx_part = p.act("dx_part", {N, C});
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    const auto x2 = x.view({c.B * c.T, c.dims.d_model});
    gate.forward(c, c.a(g), x2);
    up.forward(c, c.a(u), x2);
    Gate::forward(c.a(a), c.a(g), c.a(u));
    if (c.probe && c.rows < 0) c.probe->units(c.a(a));  // (an MoE expert's rows: not a layer's units)
    down.forward(c, y.view({c.B * c.T, c.dims.d_model}), c.a(a));
    tp_sum(c, y, "the feed-forward output (tensor parallel)");
  }
  // dx, dy, x: [B, T, C]
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    const auto x2 = x.view({N, C}), dx2 = dx.view({N, C});
    down.backward(c, c.a(da), dy.view({N, C}), c.a(a));
    Gate::backward(c.a(da), c.a(du), c.a(da), c.a(g), c.a(u));  // da becomes dgate in place
    gate.backward(c, dx2, c.a(da), x2);
    up.backward(c, c.a(dx_part), c.a(du), x2);
    ops::add_forward(dx2, dx2, c.a(dx_part));
    tp_sum(c, dx, "the feed-forward input's gradient (tensor parallel)");
  }
  static double flops_per_token(const Dims& d, std::int64_t) {
    return 3.0 * 2.0 * d.d_model * d.d_ff;
  }
};

struct SwiGLU final : GatedFeedForward<SiluGate> {};
struct GeGLU final : GatedFeedForward<GeluGate> {};

}  // namespace llmtk
