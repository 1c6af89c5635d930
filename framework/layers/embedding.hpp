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
  // (vocabulary-parallel, Megatron-LM's). From the last forward, on the host: each position's row
  // of this rank's share, or −1 where another rank holds the id (`slot`); the positions this rank
  // holds (`token`) and their rows (`local_ids`). The same in the activations' memory: tp_slot
  // [N] for the forward, tp_token and tp_ids [N] (the first M used) and tp_dy [N, C] for the
  // backward's gathered rows.
  std::vector<std::int32_t> slot, token, local_ids;
  ActSlot tp_slot, tp_token, tp_ids, tp_dy;

  void declare(Planner& p) {
    // Tensor parallel: this rank's dims.vocab / dims.tp rows (the rule tp_divides_vocab holds).
    tokens = p.param("tokens", {p.dims.vocab / p.dims.tp, p.dims.d_model}, ParamKind::embedding);
    p.split(tokens, 0);
    if (p.dims.tp > 1) {
      const std::int64_t N = p.B * p.T;
      tp_slot = p.act("tp_slot", {N, 1}, DType::i32), tp_token = p.act("tp_token", {N}, DType::i32);
      tp_ids = p.act("tp_ids", {N}, DType::i32), tp_dy = p.act("tp_dy", {N, p.dims.d_model});
    }
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
      // Tensor parallel: only the rows of this rank's ids reach its share of the table: those M
      // rows of dy gathered (moe_gather), then added to their rows of the share.
      const TensorRef g = c.g(tokens);
      const auto M = std::int64_t(token.size());
      if (!g || M == 0) return;
      const std::int64_t C = c.dims.d_model;
      const TensorRef rows = c.a(tp_token).span(0, M), at = c.a(tp_ids).span(0, M), dys = c.a(tp_dy).span(0, M * C).view({1, M, C});
      copy_bytes(rows.data, rows.device, token.data(), Device::host, std::size_t(M) * sizeof(std::int32_t));
      copy_bytes(at.data, at.device, local_ids.data(), Device::host, std::size_t(M) * sizeof(std::int32_t));
      ops::moe_gather(dys.view({M, C}), dy.view({c.B * c.T, C}), rows);
      ops::embedding_backward(g, dys, at.view({1, M}));
      return;
    }
    if (const TensorRef g = c.g(tokens)) ops::embedding_backward(g, dy, ids);  // null: frozen
  }
  // Tensor parallel: rows v0 .. v0 + V/tp of the vocabulary are this rank's. Each id in them is
  // looked up, every other row written zero — moe_combine_forward with one slot per position and
  // weight 1 is exactly that lookup, −1 adding nothing — and the ranks' sum gives every row its
  // vector (one all-reduce). The slots are worked out on the host (N ids come back from a GPU).
  void lookup_share(Ctx& c, TensorRef y, TensorRef ids) {
    const std::int64_t V = c.dims.vocab / c.dims.tp, v0 = c.tp_rank * V, N = ids.numel(), C = c.dims.d_model;
    std::vector<std::int32_t> host(static_cast<std::size_t>(N));
    copy_bytes(host.data(), Device::host, ids.data, ids.device, host.size() * sizeof(std::int32_t));
    slot.resize(std::size_t(N)), token.clear(), local_ids.clear();
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int32_t id = host[std::size_t(n)];
      const bool mine = id >= v0 && id < v0 + V;
      slot[std::size_t(n)] = mine ? std::int32_t(id - v0) : -1;
      if (mine) token.push_back(std::int32_t(n)), local_ids.push_back(std::int32_t(id - v0));
    }
    const TensorRef s = c.a(tp_slot).span(0, N).view({N, 1});
    copy_bytes(s.data, s.device, slot.data(), Device::host, slot.size() * sizeof(std::int32_t));
    ops::moe_combine_forward(y.view({N, C}), c.p(tokens), TensorRef{}, s);
    tp_sum(c, y, "the token embedding (vocabulary-parallel)");
  }
  static double flops_per_token(const Dims&, std::int64_t) { return 0.0; }
};

struct TokenEmbedding final : Embedding<NoPE> {};

}  // namespace llmtk
