// Embedding<Pos>: token ids to vectors, plus additive positions when Pos is LearnedPositions or
// Sinusoidal. TokenEmbedding has no position vectors (the mixer handles positions, e.g. RoPE).
#pragma once
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

  void declare(Planner& p) {
    tokens = p.param("tokens", {p.dims.vocab, p.dims.d_model}, ParamKind::embedding);
    if constexpr (adds_positions) positions.declare(p);
  }
  // y: [B, T, C]; ids: [B, T] i32
  void forward(Ctx& c, TensorRef y, TensorRef ids) {
    ops::embedding_forward(y, ids, c.p(tokens));
    if constexpr (adds_positions) positions.forward(c, y);
  }
  // dy: [B, T, C]; ids have no gradient (dx is ignored); dtokens, dpositions +=
  void backward(Ctx& c, TensorRef /*dx*/, TensorRef dy, TensorRef ids) {
    if (const TensorRef g = c.g(tokens)) ops::embedding_backward(g, dy, ids);  // null: frozen
    if constexpr (adds_positions) positions.backward(c, dy);
  }
  static double flops_per_token(const Dims&, std::int64_t) { return 0.0; }
};

struct TokenEmbedding final : Embedding<NoPE> {};

}  // namespace llmtk
