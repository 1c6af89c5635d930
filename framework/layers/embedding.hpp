// Embedding<Pos>: token ids to vectors, plus additive positions when Pos is LearnedPositions or
// Sinusoidal. TokenEmbedding has no position vectors (the mixer handles positions, e.g. RoPE).
#pragma once
#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <variant>  // std::monostate
#include <vector>

#include "common.hpp"  // ops::embedding_forward, ops::embedding_backward
#include "positions.hpp"

namespace llmtk {

// No token types: one kind of token (decoders).
struct NoTokenTypes {};

// A trained vector per token type, added to the token's embedding: BERT's segment embedding
// (sentence A = 0, sentence B = 1), table "embed.types" [model.type_vocab, C]. The types come
// with the batch (Flow::token_types; 0 everywhere when it names none).
struct TokenTypes {
  static constexpr std::string_view tags[] = {"token_types"};
  static constexpr KeySpec keys[] = {
      {"type_vocab", KeyKind::integer, 2, 1, 1 << 16, "token types (segments) the embedding tells apart (BERT: 2)"}};
  ParamSlot table;    // [type_vocab, C]
  ActSlot looked_up;  // [B, T, C]: table[types]
  void declare(Planner& p) {
    table = p.param("types", {p.dims.get_int("type_vocab"), p.dims.d_model}, ParamKind::embedding);
    looked_up = p.act("types_looked_up", {p.B, p.T, p.dims.d_model});
  }
  void forward(Ctx& c, TensorRef y) {  // y: [B, T, C] += table[types]
    ops::embedding_forward(c.a(looked_up), c.flow.token_types, c.p(table));
    ops::add_forward(y, y, c.a(looked_up));
  }
  void backward(Ctx& c, TensorRef dy) {  // dtable[types[b, t]] += dy[b, t]
    if (const TensorRef g = c.g(table)) ops::embedding_backward(g, dy, c.flow.token_types);
  }
};

template <class Pos, class Types = NoTokenTypes>
struct Embedding {
  static_assert(std::same_as<Pos, NoPE> || AdditivePositions<Pos>,
                "embedding_positions: Embedding<...> takes an additive position scheme "
                "(LearnedPositions, Sinusoidal) or NoPE; RoPE and ALiBi go in the mixer, GQA<...>");
  static_assert(std::same_as<Types, NoTokenTypes> || std::same_as<Types, TokenTypes>,
                "embedding_token_types: Embedding<Pos, Types> takes NoTokenTypes or TokenTypes");
  static constexpr Role role = Role::embedding;
  using In = Tokens;
  using Out = Hidden;
  static constexpr bool adds_positions = !std::same_as<Pos, NoPE>;
  static constexpr bool adds_types = std::same_as<Types, TokenTypes>;

  // The position scheme's and the token types' rules, keys and tags.
  using Parts = PartList<Child<"", Pos>, Child<"", Types>>;

  ParamSlot tokens;  // [V, C]
  [[no_unique_address]] std::conditional_t<adds_positions, Pos, std::monostate> positions;
  [[no_unique_address]] std::conditional_t<adds_types, Types, NoTokenTypes> types;
  // Prompt tuning (Lester et al. 2021): n vectors [n, C] that stand in for the token embeddings
  // at positions 0 .. n − 1 of every row (whose ids are placeholders); positions are added to
  // them as to tokens. Absent unless the planner asks (Planner::soft_prompt).
  ParamSlot prompt;
  ActSlot dprompt;  // [n, C] f32: one row's share of the prompt's gradient
  std::int64_t n_prompt = 0;
  // Tensor parallel (docs/distributed.md): the table's rows are divided among the ranks
  // (vocabulary-parallel, Megatron-LM's); each rank's ids in its rows, or 0 where another rank
  // holds the id (`mine` false), from the last forward.
  std::vector<std::int32_t> local_ids;
  std::vector<char> mine;

  void declare(Planner& p) {
    // Tensor parallel: this rank's dims.vocab / dims.tp rows (the rule tp_divides_vocab holds).
    tokens = p.param("tokens", {p.dims.vocab / p.dims.tp, p.dims.d_model}, ParamKind::embedding);
    p.split(tokens, 0);
    if (p.soft_prompt > 0) {
      n_prompt = p.soft_prompt;
      prompt = p.param("prompt", {n_prompt, p.dims.d_model}, ParamKind::embedding);
      if (p.kv_cache == 0) dprompt = p.stat("dprompt", {n_prompt, p.dims.d_model});
    }
    if constexpr (adds_types) types.declare(p);
    if constexpr (adds_positions) positions.declare(p);
  }
  // y: [B, T, C]; ids: [B, T] i32
  void forward(Ctx& c, TensorRef y, TensorRef ids) {
    if (c.tp) lookup_share(c, y, ids);
    else ops::embedding_forward(y, ids, c.p(tokens));
    // Rows at positions below n take the prompt's vectors: rows 0 .. n − 1 in training, the row
    // at pos0 when decoding one position at a time.
    if (prompt && c.pos0 < n_prompt) {
      const std::int64_t rows = std::min(c.T, n_prompt - c.pos0), C = c.dims.d_model;
      for (std::int64_t b = 0; b < c.B; ++b)
        ops::convert(y.span(b * c.T * C, rows * C), c.p(prompt).span(c.pos0 * C, rows * C));
    }
    if constexpr (adds_types) types.forward(c, y);
    if constexpr (adds_positions) positions.forward(c, y);
  }
  // dy: [B, T, C]; ids have no gradient (dx is ignored); dtokens, dpositions, dprompt +=
  void backward(Ctx& c, TensorRef /*dx*/, TensorRef dy, TensorRef ids) {
    if constexpr (adds_positions) positions.backward(c, dy);
    if constexpr (adds_types) types.backward(c, dy);
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
    if (c.tp) {
      // Tensor parallel: only the rows of this rank's ids reach its share of the table (dy is this
      // backward's scratch, read by the positions and types above already).
      const std::int64_t C = c.dims.d_model;
      for (std::size_t n = 0; n < mine.size(); ++n)
        if (!mine[n]) ops::scale_forward(dy.span(std::int64_t(n) * C, C), dy.span(std::int64_t(n) * C, C), 0.0f);
      ids = TensorRef(local_ids.data(), DType::i32, {c.B, c.T});
    }
    if (const TensorRef g = c.g(tokens)) ops::embedding_backward(g, dy, ids);  // null: frozen
  }
  // Tensor parallel: rows v0 .. v0 + V/tp of the vocabulary are this rank's. Each id in them is
  // looked up, every other row left zero, and the ranks' sum gives every row its vector (one
  // all-reduce). The ids are rewritten on the host: tensor parallel runs on the MPI communicator,
  // whose tensors are in host memory.
  void lookup_share(Ctx& c, TensorRef y, TensorRef ids) {
    LLMTK_CHECK(ids.device == Device::host, "embedding", "tensor parallel reads the ids in host memory");
    const std::int64_t V = c.dims.vocab / c.dims.tp, v0 = c.tp_rank * V, N = ids.numel(), C = c.dims.d_model;
    local_ids.resize(std::size_t(N)), mine.resize(std::size_t(N));
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int32_t id = ids.i32()[n];
      mine[std::size_t(n)] = id >= v0 && id < v0 + V;
      local_ids[std::size_t(n)] = mine[std::size_t(n)] ? std::int32_t(id - v0) : 0;
    }
    ops::embedding_forward(y, TensorRef(local_ids.data(), DType::i32, {c.B, c.T}), c.p(tokens));
    for (std::int64_t n = 0; n < N; ++n)
      if (!mine[std::size_t(n)]) ops::scale_forward(y.span(n * C, C), y.span(n * C, C), 0.0f);
    tp_sum(c, y, "the token embedding (vocabulary-parallel)");
  }
  static double flops_per_token(const Dims&, std::int64_t) { return 0.0; }
};

struct TokenEmbedding final : Embedding<NoPE> {};

}  // namespace llmtk
