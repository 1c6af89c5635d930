// A recurrent sequence mixer: minGRU (Feng, Tung, Ahmed, Bengio and Hajimirsadeghi 2024, "Were
// RNNs All We Needed?", arXiv:2410.01201), a gated linear recurrence over the model's width C:
//
//   z = x · w_zᵀ,  h̃ = x · w_hᵀ                   [B, T, C]      (Linears)
//   a = 1 − σ(z),  u = σ(z) ⊙ h̃                                  (ops::mingru_gates_forward)
//   h_t = a_t ⊙ h_{t−1} + u_t,  h_{−1} = 0                        (ops::linear_scan_forward)
//   y = h · w_oᵀ                                                  (a Linear)
//
// The gates read x_t only, never h_{t−1}, so the recurrence is linear in h: training runs all T
// steps at once as a parallel scan (chunked on the GPU: backends/cuda/recurrence.cu), in time and
// memory linear in T, and decoding keeps one state vector per row instead of a KV cache: each new
// token costs the same whatever came before. Packed documents restart the state where each
// begins (Flow::segments), as attention stays within a document.
//
// MinGRU<Pos> takes a position scheme argument as the attention mixers do, so that one can stand
// in for the other in an Ablate<...>; only NoPE fits (rule recurrent_positions): the recurrence
// orders the tokens itself, and RoPE or ALiBi act on attention scores it does not have.
#pragma once
#include <type_traits>

#include "common.hpp"  // ops::mingru_gates_*, ops::linear_scan_*, ops::add_forward, ops::convert
#include "linear.hpp"
#include "positions.hpp"

namespace llmtk {

template <class Pos = NoPE>
struct MinGRU {
  static_assert(std::is_same_v<Pos, NoPE>,
                "recurrent_positions: a recurrent mixer orders the tokens itself and takes no position scheme: "
                "write MinGRU<> (NoPE); RoPE and ALiBi act on attention scores, which it does not have");
  static constexpr Role role = Role::mixer;
  static constexpr std::string_view tags[] = {"recurrent", "mingru"};
  using In = Hidden;
  using Out = Hidden;

  Linear wz, wh, wo;                  // [C, C] each; biases bz, bh, bo with model.bias
  ActSlot z, hh, a, u, h;             // saved: [B, T, C]
  ActSlot dh, da, du, dz, dhh, part;  // backward scratch
  ActSlot state;                      // decoding: each row's h after its last token, [B, C] f32
  bool decoding = false;

  void declare(Planner& p) {
    const std::int64_t C = p.dims.d_model;
    wz.declare(p, "wz", "bz", C, C, ParamKind::matrix, p.dims.bias);
    wh.declare(p, "wh", "bh", C, C, ParamKind::matrix, p.dims.bias);
    wo.declare(p, "wo", "bo", C, C, ParamKind::residual_matrix, p.dims.bias);
    const std::vector<std::int64_t> s{p.B, p.T, C};
    z = p.act("z", s), hh = p.act("h_tilde", s), a = p.act("a", s), u = p.act("u", s), h = p.act("h", s);
    dh = p.act("dh", s), da = p.act("da", s), du = p.act("du", s), dz = p.act("dz", s), dhh = p.act("dh_tilde", s);
    part = p.act("dx_part", s);
    decoding = p.kv_cache > 0;
    if (decoding) state = p.stat("state", {p.B, C});
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    const auto x2 = x.view({N, C});
    wz.forward(c, c.a(z).view({N, C}), x2);
    wh.forward(c, c.a(hh).view({N, C}), x2);
    ops::mingru_gates_forward(c.a(a), c.a(u), c.a(z), c.a(hh));
    // Decoding continues from the state the previous tokens left (a fresh sequence at position 0).
    const TensorRef h0 = decoding && c.pos0 > 0 ? c.a(state) : TensorRef{};
    ops::linear_scan_forward(hidden(c, h), hidden(c, a), hidden(c, u), h0, c.flow.segments);
    if (decoding)
      for (std::int64_t b = 0; b < c.B; ++b)
        ops::convert(c.a(state).row_range(b, 1), c.a(h).view({N, C}).row_range(b * c.T + c.T - 1, 1));
    wo.forward(c, y.view({N, C}), c.a(h).view({N, C}));
  }
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    const auto x2 = x.view({N, C}), dx2 = dx.view({N, C});
    wo.backward(c, c.a(dh).view({N, C}), dy.view({N, C}), c.a(h).view({N, C}));
    ops::linear_scan_backward(hidden(c, da), hidden(c, du), hidden(c, dh), hidden(c, a), hidden(c, h), TensorRef{},
                              c.flow.segments);
    ops::mingru_gates_backward(c.a(dz), c.a(dhh), c.a(da), c.a(du), c.a(z), c.a(hh));
    wz.backward(c, dx2, c.a(dz).view({N, C}), x2);
    wh.backward(c, c.a(part).view({N, C}), c.a(dhh).view({N, C}), x2);
    ops::add_forward(dx2, dx2, c.a(part).view({N, C}));
  }
  static double flops_per_token(const Dims& d, std::int64_t) {
    const double C = d.d_model;
    return 3 * Linear::flops_per_row(d.d_model, d.d_model) + 8 * C;  // the products, the gates and the scan
  }

 private:
  static TensorRef hidden(const Ctx& c, ActSlot s) { return c.a(s).view({c.B, c.T, c.dims.d_model}); }
};

}  // namespace llmtk
