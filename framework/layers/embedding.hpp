// Embedding<Pos>: token ids to vectors, plus additive positions when Pos is LearnedPositions or
// Sinusoidal. TokenEmbedding has no position vectors (the mixer handles positions, e.g. RoPE).
#pragma once
#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <variant>  // std::monostate

#include "common.hpp"  // ops::embedding_forward, ops::embedding_backward
#include "positions.hpp"

namespace llmtk {

template <class Pos>
struct Embedding {
  static_assert(std::same_as<Pos, NoPE> || AdditivePositions<Pos>,
                "embedding_positions: Embedding<...> takes an additive position scheme "
                "(LearnedPositions, Sinusoidal) or NoPE; RoPE and ALiBi go in the mixer, GQA<...>");
  static constexpr Role role = Role::embedding;
  using In = Tokens;
  using Out = Hidden;
  static constexpr bool adds_positions = !std::same_as<Pos, NoPE>;

  using Parts = PartList<Child<"", Pos>>;  // the position scheme's rules and tags

  ParamSlot tokens;  // [V, C]
  [[no_unique_address]] std::conditional_t<adds_positions, Pos, std::monostate> positions;
  // Prompt tuning (Lester et al. 2021): n vectors [n, C] that stand in for the token embeddings
  // at positions 0 .. n − 1 of every row (whose ids are placeholders); positions are added to
  // them as to tokens. Absent unless the planner asks (Planner::soft_prompt).
  ParamSlot prompt;
  ActSlot dprompt;  // [n, C] f32: one row's share of the prompt's gradient
  std::int64_t n_prompt = 0;

  void declare(Planner& p) {
    tokens = p.param("tokens", {p.dims.vocab, p.dims.d_model}, ParamKind::embedding);
    if (p.soft_prompt > 0) {
      n_prompt = p.soft_prompt;
      prompt = p.param("prompt", {n_prompt, p.dims.d_model}, ParamKind::embedding);
      if (p.kv_cache == 0) dprompt = p.stat("dprompt", {n_prompt, p.dims.d_model});
    }
    if constexpr (adds_positions) positions.declare(p);
  }
  // y: [B, T, C]; ids: [B, T] i32
  void forward(Ctx& c, TensorRef y, TensorRef ids) {
    ops::embedding_forward(y, ids, c.p(tokens));
    // Rows at positions below n take the prompt's vectors: rows 0 .. n − 1 in training, the row
    // at pos0 when decoding one position at a time.
    if (prompt && c.pos0 < n_prompt) {
      const std::int64_t rows = std::min(c.T, n_prompt - c.pos0), C = c.dims.d_model;
      for (std::int64_t b = 0; b < c.B; ++b)
        ops::convert(y.span(b * c.T * C, rows * C), c.p(prompt).span(c.pos0 * C, rows * C));
    }
    if constexpr (adds_positions) positions.forward(c, y);
  }
  // dy: [B, T, C]; ids have no gradient (dx is ignored); dtokens, dpositions, dprompt +=
  void backward(Ctx& c, TensorRef /*dx*/, TensorRef dy, TensorRef ids) {
    if constexpr (adds_positions) positions.backward(c, dy);
    if (prompt) {
      // dprompt += Σ_b dy[b, 0 .. n − 1]; then those rows are zeroed, since the placeholder ids
      // there never reached the output (dy is this backward's scratch).
      const std::int64_t C = c.dims.d_model;
      const TensorRef g = c.g(prompt);
      for (std::int64_t b = 0; b < c.B; ++b) {
        const TensorRef rows = dy.span(b * c.T * C, n_prompt * C);
        if (g) ops::convert(c.a(dprompt), rows.view({n_prompt, C})), ops::add_forward(g, g, c.a(dprompt));
        ops::scale_forward(rows, rows, 0.0f);
      }
    }
    if (const TensorRef g = c.g(tokens)) ops::embedding_backward(g, dy, ids);  // null: frozen
  }
  static double flops_per_token(const Dims&, std::int64_t) { return 0.0; }
};

struct TokenEmbedding final : Embedding<NoPE> {};

}  // namespace llmtk
