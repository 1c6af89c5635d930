// Position schemes. Additive ones (LearnedPositions, Sinusoidal) are an argument of Embedding<>
// and add a vector per position to the token embeddings; attention ones (NoPE, RoPE, ALiBi,
// RelativeBias) are an argument of GQA<> and act on q, k or the scores.
#pragma once
#include <algorithm>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

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

// T5's relative position bias (Raffel et al. 2020, §2.1): a learned scalar per head added to each
// score, chosen by the bucket of the key's offset from the query. Offsets below Buckets / 4 (each
// side when bidirectional) have a bucket each; larger ones share logarithmically wider buckets up
// to MaxDistance, beyond which all offsets share the last. An encoder's (bidirectional) mixer
// gives the two sides half the buckets each; a decoder's (causal) sees only keys before the query.
// The table [Buckets, H] belongs to the stack, not the layer: every layer of a stack reads the one
// named after the stack's scope ("encoder.relative_bias", "decoder.relative_bias"), as T5 keeps
// it in its first layer and passes the bias on. Each layer gathers the bias [Tq, Tk, H] from the
// table by bucket ids (an embedding lookup, computed once per plan on the host) and, in backward,
// scatters the scores' gradient back into the table (embedding_backward over the batch rows).
template <int Buckets = 32, int MaxDistance = 128>
struct RelativeBias {
  static_assert(Buckets >= 4 && MaxDistance > Buckets / 4, "relative_bias: Buckets ≥ 4 and MaxDistance > Buckets / 4");
  static constexpr PositionKind kind = PositionKind::attention;
  static constexpr bool alibi = false;
  static constexpr std::string_view tags[] = {"relative_bias", "attention_positions"};
  static void rotate(Ctx&, TensorRef, TensorRef) {}
  static void rotate_backward(Ctx&, TensorRef, TensorRef) {}

  ParamSlot table;             // [Buckets, H], shared by the stack's layers
  ActSlot buckets;             // [B, Tq · Tk] i32: the bucket of each (query, key), the same in every row
  ActSlot bias, dbias;         // [Tq · Tk, H] f32 gathered; [B · Tq · Tk, H] f32 its gradient (training)
  std::int64_t keys_max = 0;   // Tk planned for: the sequence, or the KV cache's length
  std::int64_t made_T = -1, made_Tk = -1, made_q0 = -1;  // what `buckets` holds now
  std::vector<std::int32_t> host;

  void declare(Planner& p) {
    LLMTK_CHECK(p.prefix_tokens == 0, "relative_bias", "prefix tuning puts keys before the tokens that have no "
                "position; tune a model with a relative position bias with LoRA or in full");
    const std::string& at = p.prefix();
    const auto cut = at.rfind("blocks.");
    table = p.shared_param((cut == std::string::npos ? std::string() : at.substr(0, cut)) + "relative_bias",
                           {Buckets, p.dims.n_heads}, ParamKind::embedding);
    keys_max = p.kv_cache > 0 ? p.kv_cache : p.T;
    buckets = p.act("buckets", {p.B, p.T * keys_max}, DType::i32);
    bias = p.stat("bias", {p.T * keys_max, p.dims.n_heads});
    if (p.kv_cache == 0) dbias = p.stat("dbias", {p.B * p.T * keys_max, p.dims.n_heads});
    made_T = made_Tk = made_q0 = -1;
  }

  // T5's bucket of a key at offset rel = key − query (Transformers' _relative_position_bucket,
  // in its float32 arithmetic, so the buckets agree with it at every boundary).
  static std::int32_t bucket(std::int64_t rel, bool bidirectional) {
    int n_buckets = Buckets;
    std::int32_t ret = 0;
    std::int64_t n = 0;
    if (bidirectional) {
      n_buckets /= 2;
      if (rel > 0) ret += n_buckets;
      n = rel < 0 ? -rel : rel;
    } else {
      n = rel < 0 ? -rel : 0;  // only keys before the query
    }
    const int max_exact = n_buckets / 2;
    if (n < max_exact) return ret + std::int32_t(n);
    const float large = std::log(float(n) / float(max_exact)) / float(std::log(double(MaxDistance) / double(max_exact))) *
                        float(n_buckets - max_exact);
    return ret + std::min<std::int32_t>(std::int32_t(max_exact + std::int64_t(large)), n_buckets - 1);
  }

  // The bias of c.T queries at positions c.pos0 .. against Tk keys into m (forward).
  void add_bias(Ctx& c, AttentionMask& m, bool causal, std::int64_t Tk) {
    const std::int64_t T = c.T, H = c.dims.n_heads;
    LLMTK_CHECK(Tk <= keys_max, "relative_bias", Tk, " keys are more than the ", keys_max, " planned");
    if (made_T != T || made_Tk != Tk || made_q0 != c.pos0) {
      host.assign(std::size_t(c.acts.entries()[std::size_t(buckets.id)].numel), 0);
      for (std::int64_t i = 0; i < T; ++i)
        for (std::int64_t j = 0; j < Tk; ++j) host[std::size_t(i * Tk + j)] = bucket(j - (c.pos0 + i), !causal);
      for (std::int64_t b = 1; b < c.B; ++b) std::copy_n(host.begin(), T * Tk, host.begin() + b * T * Tk);
      c.acts.write(buckets.id, host.data());
      made_T = T, made_Tk = Tk, made_q0 = c.pos0;
    }
    ops::embedding_forward(c.a(bias).span(0, T * Tk * H).view({1, T * Tk, H}), c.a(buckets).span(0, T * Tk).view({1, T * Tk}),
                           c.p(table));
    m.bias = c.a(bias).span(0, T * Tk * H).view({T, Tk, H});
  }
  // Backward: the bias forward gathered, and where attention_backward writes its gradient.
  void backward_bias(Ctx& c, AttentionMask& m, std::int64_t Tk) {
    const std::int64_t T = c.T, H = c.dims.n_heads;
    m.bias = c.a(bias).span(0, T * Tk * H).view({T, Tk, H});
    m.dbias = c.a(dbias).span(0, c.B * T * Tk * H).view({c.B, T, Tk, H});
  }
  // After attention_backward: the table's gradient += the scores' gradient, summed by bucket.
  void bias_backward(Ctx& c, std::int64_t Tk) {
    const std::int64_t T = c.T, H = c.dims.n_heads;
    if (const TensorRef g = c.g(table))
      ops::embedding_backward(g, c.a(dbias).span(0, c.B * T * Tk * H).view({c.B, T * Tk, H}),
                              c.a(buckets).span(0, c.B * T * Tk).view({c.B, T * Tk}));
  }
  static double flops_per_token(const Dims&, std::int64_t) { return 0.0; }
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
