// Position schemes. Additive ones (LearnedPositions, Sinusoidal) are an argument of Embedding<>
// and add a vector per position to the token embeddings; attention ones (NoPE, RoPE, ALiBi) are
// an argument of GQA<> and act on q, k or the scores.
#pragma once
#include <string_view>

#include "common.hpp"  // ops::positions_*, ops::sinusoidal_forward, ops::rope_*

namespace llmtk {

// No position information at all (for attention: the causal mask alone orders tokens).
struct NoPE {
  static constexpr PositionKind kind = PositionKind::attention;
  static constexpr bool alibi = false;
  static void rotate(Ctx&, TensorRef, TensorRef) {}
  static void rotate_backward(Ctx&, TensorRef, TensorRef) {}
};

// Rotary embedding of q and k (half-split pairs), base = dims.rope_base.
struct RoPE {
  static constexpr PositionKind kind = PositionKind::attention;
  static constexpr bool alibi = false;
  static constexpr std::string_view tags[] = {"rope", "attention_positions"};
  LLMTK_DIMS_RULE(rope_even_head_dim, "model.d_model, model.n_heads",
                  "RoPE rotates pairs, so head_dim = d_model / n_heads must be even", d.head_dim() % 2 == 0);
  LLMTK_DIMS_RULE(rope_base_above_one, "model.rope_base", "RoPE's base must be above 1 (10000 is usual)",
                  d.rope_base > 1.0 && d.rope_base < 1e12);  // also false for NaN
  using Rules = RuleList<rope_even_head_dim, rope_base_above_one>;
  // q: [B, T, H, D], k: [B, T, KV, D], rotated in place
  static void rotate(Ctx& c, TensorRef q, TensorRef k) {
    ops::rope_forward(q, q, float(c.dims.rope_base), int(c.pos0));
    ops::rope_forward(k, k, float(c.dims.rope_base), int(c.pos0));
  }
  static void rotate_backward(Ctx& c, TensorRef dq, TensorRef dk) {
    ops::rope_backward(dq, dq, float(c.dims.rope_base), int(c.pos0));
    ops::rope_backward(dk, dk, float(c.dims.rope_base), int(c.pos0));
  }
};

// ALiBi: a per-head linear penalty on distance, added to the attention scores.
struct ALiBi {
  static constexpr PositionKind kind = PositionKind::attention;
  static constexpr bool alibi = true;
  static constexpr std::string_view tags[] = {"alibi", "attention_positions"};
  static void rotate(Ctx&, TensorRef, TensorRef) {}
  static void rotate_backward(Ctx&, TensorRef, TensorRef) {}
};

// A trained vector per position: table [max_seq, C]. In packed rows (c.flow.positions) each
// token reads the row of its position within its document, as an embedding lookup.
struct LearnedPositions {
  static constexpr PositionKind kind = PositionKind::additive;
  static constexpr std::string_view tags[] = {"learned_positions", "additive_positions"};
  ParamSlot table;  // [max_seq, C]
  ActSlot looked_up;  // [B, T, C]: table[positions] in packed rows
  void declare(Planner& p) {
    table = p.param("positions", {p.dims.max_seq, p.dims.d_model}, ParamKind::embedding);
    looked_up = p.act("packed_positions", {p.B, p.T, p.dims.d_model});
  }
  void forward(Ctx& c, TensorRef y) {  // y: [B, T, C]
    if (!c.flow.positions) return ops::positions_forward(y, y, c.p(table), int(c.pos0));
    ops::embedding_forward(c.a(looked_up), c.flow.positions, c.p(table));
    ops::add_forward(y, y, c.a(looked_up));
  }
  void backward(Ctx& c, TensorRef dy) {
    const TensorRef g = c.g(table);
    if (!g) return;  // frozen
    if (c.flow.positions) return ops::embedding_backward(g, dy, c.flow.positions);
    // Tokens at positions pos0 .. pos0 + T − 1 (after a prefix): the table's rows from pos0 on.
    const std::int64_t C = c.dims.d_model, rows = g.size(0) - c.pos0;
    ops::positions_backward(c.pos0 ? g.span(c.pos0 * C, rows * C).view({rows, C}) : g, dy);
  }
};

// Fixed sin/cos vectors (Vaswani et al.), no parameters; the gradient passes through unchanged.
struct Sinusoidal {
  static constexpr PositionKind kind = PositionKind::additive;
  static constexpr std::string_view tags[] = {"sinusoidal", "additive_positions"};
  LLMTK_DIMS_RULE(sinusoidal_even_model, "model.d_model", "position vectors pair sin and cos, so d_model must be even",
                  d.d_model % 2 == 0);
  using Rules = RuleList<sinusoidal_even_model>;
  void declare(Planner&) {}
  void forward(Ctx& c, TensorRef y) {
    LLMTK_CHECK(!c.flow.positions, "sinusoidal positions", "packed rows (documents that restart their positions) ",
                "are not supported with sinusoidal positions yet; set data.packing = false");
    ops::sinusoidal_forward(y, y, int(c.pos0));
  }
  void backward(Ctx&, TensorRef) {}
};

}  // namespace llmtk
