// Self-attention with grouped kv heads: GQA<Pos, Mask>, and its two special cases MHA<Pos, Mask>
// (n_kv_heads = n_heads) and MQA<Pos, Mask> (n_kv_heads = 1). Pos is an attention position scheme
// (NoPE, RoPE, ALiBi, RelativeBias); Mask is Causal (a decoder's), Bidirectional (an encoder's) or Local (causal
// within model.local_window). dims.window > 0 limits each query of the others to keys within
// `window` positions. What flows with the batch (Flow: padding
// lengths, document segments) narrows the mask further at run time.
#pragma once
#include <tuple>
#include <utility>
#include "common.hpp"  // ops::attention_*, ops::add_forward
#include "linear.hpp"
#include "positions.hpp"

namespace llmtk {

enum class KvGrouping { grouped, all, one };

// The mask kind is part of the mixer's type.
struct Causal {
  static constexpr bool causal = true;  // query i sees keys j <= i
  static constexpr std::string_view tags[] = {"causal"};
};
struct Bidirectional {
  static constexpr bool causal = false;  // every query sees every key (but padding)
  static constexpr std::string_view tags[] = {"bidirectional"};
};
// Causal within a sliding window of model.local_window keys, whatever model.window says: the
// local layers of a stack that alternates local and global attention (Gemma 2's, Pattern<...>).
// A window longer than the context is plain causal attention.
struct Local {
  static constexpr bool causal = true;
  static constexpr std::string_view tags[] = {"local_attention", "causal"};
  static constexpr KeySpec keys[] = {
      {"local_window", KeyKind::integer, 4096, 1, 1 << 24, "keys a local attention layer sees (its sliding window)"}};
  static constexpr int window(const Dims& d) { return d.get_int("local_window"); }
};
template <class M>
concept MaskKind = requires { { M::causal } -> std::convertible_to<bool>; };

template <class Pos, class Mask = Causal, KvGrouping Grouping = KvGrouping::grouped>
struct GQA {
  static_assert(MaskKind<Mask>, "attention_mask_kind: the mixer's second argument is a mask kind, Causal or "
                                "Bidirectional");
  static_assert(AttentionPositions<Pos>,
                "attention_positions: the mixer takes an attention position scheme (NoPE, RoPE, "
                "ALiBi, RelativeBias); additive ones (LearnedPositions, Sinusoidal) go in Embedding<...>");
  static constexpr Role role = Role::mixer;
  using In = Hidden;
  using Out = Hidden;
  using Positions = Pos;
  using MaskT = Mask;

  using Parts = PartList<Child<"", Pos>, Child<"", Mask>>;  // q/k transform and mask: parameters, rules, keys, tags
  // The sliding window: the mask's own (Local), else model.window (0: none).
  static constexpr int window_of(const Dims& d) {
    if constexpr (requires { Mask::window(d); }) return Mask::window(d);
    else return d.window;
  }
  static constexpr std::string_view tags[] = {Grouping == KvGrouping::all   ? "mha"
                                              : Grouping == KvGrouping::one ? "mqa"
                                                                            : "gqa"};
  LLMTK_DIMS_RULE(mha_kv_heads_equal_heads, "model.n_kv_heads, model.n_heads",
                  "MHA has one kv head per query head: n_kv_heads must equal n_heads",
                  d.n_kv_heads == d.n_heads);
  LLMTK_DIMS_RULE(mqa_one_kv_head, "model.n_kv_heads", "MQA shares one kv head: n_kv_heads must be 1",
                  d.n_kv_heads == 1);
  using Rules = std::conditional_t<Grouping == KvGrouping::all, RuleList<mha_kv_heads_equal_heads>,
                                   std::conditional_t<Grouping == KvGrouping::one, RuleList<mqa_one_kv_head>, RuleList<>>>;
  // MHA and MQA fix n_kv_heads: when the user did not set it, it follows from n_heads.
  static constexpr void resolve(Dims& d, const SetKeys& set) {
    if (key_set(set, "n_kv_heads")) return;
    if (Grouping == KvGrouping::all) d.n_kv_heads = d.n_heads;
    if (Grouping == KvGrouping::one) d.n_kv_heads = 1;
  }

  Linear wq, wk, wv, wo;                     // wq: [H·D, C], wk, wv: [KV·D, C], wo: [C, H·D]; biases bq, bk, bv, bo
  ActSlot q, k, v, o, lse;                   // saved: q, o [B, T, H, D]; k, v [B, T, KV, D]; lse [B, H, T]
  ActSlot dq, dk, dv, dout, dx_part;         // backward scratch
  ActSlot kcache, vcache;                    // decoding only: [cache length, KV·D] keys and values so far
  Pos pos;                                   // transforms q and k before the scores (RoPE...)
  // Prefix tuning (Li and Liang 2021): P keys and values [P, KV·D] every query sees before the
  // tokens' own, as a cache of P earlier positions would hold them (used as they are: no position
  // transform). In training the tokens' keys and values go after them in k_prefixed, v_prefixed.
  ParamSlot prefix_k, prefix_v;
  ActSlot kp, vp, dkp, dvp, dprefix;         // [B·(P + T), KV·D]; dprefix [P, KV·D] f32
  std::int64_t n_prefix = 0;
  // The reparameterisation (prefix_tuning.projection = H): the prefixes are made, not stored,
  //   u = E·W1ᵀ + b1,  h = tanh(u),  prefix_k = h·Wkᵀ + bk,  prefix_v = h·Wvᵀ + bv
  // with E [P, C], W1 [H, C], b1 shared by every layer ("prefix.*") and Wk, Wv [KV·D, H] this
  // layer's rows of the second map (PEFT's prefix_projection: Embedding, Linear, Tanh, Linear).
  ParamSlot pre_e, pre_w1, pre_b1, pre_wk, pre_bk, pre_wv, pre_bv;
  ActSlot pre_u, pre_h, pre_k, pre_v, dpre_k, dpre_v, dpre_h, dpre_tmp, dpre_e;  // f32

  void declare(Planner& p) {
    const auto& d = p.dims;
    const std::int64_t C = d.d_model, QD = std::int64_t(d.n_heads) * d.head_dim(), KD = d.kv_dim();
    const std::int64_t N = p.B * p.T;
    // Tensor parallel: QD and KD are this rank's heads (dims.tp), q, k, v column-parallel and the
    // output map row-parallel, so each rank attends with its own heads alone.
    wq.declare(p, "wq", "bq", QD, C, ParamKind::matrix, d.bias, LinearSplit::rows);
    wk.declare(p, "wk", "bk", KD, C, ParamKind::matrix, d.bias, LinearSplit::rows);
    wv.declare(p, "wv", "bv", KD, C, ParamKind::matrix, d.bias, LinearSplit::rows);
    wo.declare(p, "wo", "bo", C, QD, ParamKind::residual_matrix, d.bias, LinearSplit::columns);
    q = p.act("q", {N, QD}), k = p.act("k", {N, KD}), v = p.act("v", {N, KD});
    o = p.act("o", {N, QD}), lse = p.stat("lse", {p.B * d.n_heads * p.T});
    dq = p.act("dq", {N, QD}), dk = p.act("dk", {N, KD}), dv = p.act("dv", {N, KD});
    dout = p.act("dout", {N, QD}), dx_part = p.act("dx_part", {N, C});
    if constexpr (requires { pos.declare(p); }) pos.declare(p);
    if (p.kv_cache > 0) {
      LLMTK_CHECK(p.B == 1, "kv cache", "decoding with a KV cache takes batch 1");
      kcache = p.act("kcache", {p.kv_cache, KD}), vcache = p.act("vcache", {p.kv_cache, KD});
    }
    if (p.prefix_tokens > 0) {
      n_prefix = p.prefix_tokens;
      if (const std::int64_t H = p.prefix_projection; H > 0) {
        pre_e = p.shared_param("prefix.embedding", {n_prefix, C}, ParamKind::embedding);
        pre_w1 = p.shared_param("prefix.w1", {H, C}, ParamKind::matrix);
        pre_b1 = p.shared_param("prefix.b1", {H}, ParamKind::bias);
        pre_wk = p.param("prefix_wk", {KD, H}, ParamKind::matrix), pre_bk = p.param("prefix_bk", {KD}, ParamKind::bias);
        pre_wv = p.param("prefix_wv", {KD, H}, ParamKind::matrix), pre_bv = p.param("prefix_bv", {KD}, ParamKind::bias);
        pre_u = p.stat("prefix_u", {n_prefix, H}), pre_h = p.stat("prefix_h", {n_prefix, H});
        pre_k = p.stat("prefix_k_made", {n_prefix, KD}), pre_v = p.stat("prefix_v_made", {n_prefix, KD});
        if (p.kv_cache == 0) {
          dpre_k = p.stat("dprefix_k", {n_prefix, KD}), dpre_v = p.stat("dprefix_v", {n_prefix, KD});
          dpre_h = p.stat("dprefix_h", {n_prefix, H}), dpre_tmp = p.stat("dprefix_h_v", {n_prefix, H});
          dpre_e = p.stat("dprefix_e", {n_prefix, C});
        }
      } else {
        prefix_k = p.param("prefix_k", {n_prefix, KD}, ParamKind::embedding);
        prefix_v = p.param("prefix_v", {n_prefix, KD}, ParamKind::embedding);
      }
      if (p.kv_cache == 0) {
        const std::int64_t rows = p.B * (n_prefix + p.T);
        kp = p.act("k_prefixed", {rows, KD}), vp = p.act("v_prefixed", {rows, KD});
        dkp = p.act("dk_prefixed", {rows, KD}), dvp = p.act("dv_prefixed", {rows, KD});
        dprefix = p.stat("dprefix", {n_prefix, KD});
      }
    }
  }

  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    const auto x2 = rows(c, x, c.dims.d_model);
    wq.forward(c, c.a(q), x2);
    wk.forward(c, c.a(k), x2);
    wv.forward(c, c.a(v), x2);
    pos.rotate(c, heads(c, q, c.dims.n_heads), heads(c, k, c.dims.n_kv_heads));
    if (kcache.id >= 0) {
      // Decoding: append this step's keys and values at rows [pos0, pos0 + T) of the cache and
      // attend over every cached row so far.
      const std::int64_t KD = c.dims.kv_dim(), rows_so_far = c.pos0 + c.T;
      LLMTK_CHECK(rows_so_far <= c.a(kcache).size(0), "kv cache", "position ", rows_so_far, " is past the cache of ",
                  c.a(kcache).size(0));
      auto at = [&](ActSlot s, std::int64_t row, std::int64_t n) {
        const TensorRef cache = c.a(s);
        return TensorRef(static_cast<char*>(cache.data) + row * KD * std::int64_t(size_of(cache.dtype)), cache.dtype,
                         {1, n, c.dims.n_kv_heads, c.dims.head_dim()}, cache.device);
      };
      ops::scale_forward(at(kcache, c.pos0, c.T), heads(c, k, c.dims.n_kv_heads), 1.0f);
      ops::scale_forward(at(vcache, c.pos0, c.T), heads(c, v, c.dims.n_kv_heads), 1.0f);
      if (n_prefix > 0) {  // the prefix holds the cache's first rows (the tokens start at pos0 ≥ P)
        const auto [pk, pv] = prefix(c);
        ops::convert(c.a(kcache).span(0, n_prefix * KD), pk.span(0, n_prefix * KD));
        ops::convert(c.a(vcache).span(0, n_prefix * KD), pv.span(0, n_prefix * KD));
      }
      ops::attention_forward(heads(c, o, c.dims.n_heads), c.a(lse), heads(c, q, c.dims.n_heads),
                             at(kcache, 0, rows_so_far), at(vcache, 0, rows_so_far), biased(c, rows_so_far));
    } else if (n_prefix > 0) {
      // Each row's keys: the prefix's, then its tokens' (which stand at positions P .. P + T − 1:
      // c.pos0 = P, so the mask's query offset is P).
      const std::int64_t KD = c.dims.kv_dim(), P = n_prefix, T = c.T;
      const auto [pk, pv] = prefix(c);
      for (std::int64_t b = 0; b < c.B; ++b) {
        ops::convert(c.a(kp).span(b * (P + T) * KD, P * KD), pk.span(0, P * KD));
        ops::convert(c.a(vp).span(b * (P + T) * KD, P * KD), pv.span(0, P * KD));
        ops::convert(c.a(kp).span((b * (P + T) + P) * KD, T * KD), c.a(k).span(b * T * KD, T * KD));
        ops::convert(c.a(vp).span((b * (P + T) + P) * KD, T * KD), c.a(v).span(b * T * KD, T * KD));
      }
      ops::attention_forward(heads(c, o, c.dims.n_heads), c.a(lse), heads(c, q, c.dims.n_heads), prefixed(c, kp),
                             prefixed(c, vp), mask(c));
    } else {
      const AttentionMask m = biased(c, c.T);
      ops::attention_forward(heads(c, o, c.dims.n_heads), c.a(lse), heads(c, q, c.dims.n_heads),
                             heads(c, k, c.dims.n_kv_heads), heads(c, v, c.dims.n_kv_heads), m);
      // Attention entropy (train/internals.cpp) reads the scores through q and k: not measured
      // where a bias is added to them (ALiBi, a learned relative bias).
      if (c.probe && !Pos::alibi && !learned_bias)
        c.probe->attention(heads(c, q, c.dims.n_heads), heads(c, k, c.dims.n_kv_heads), c.a(lse), m);
    }
    wo.forward(c, rows(c, y, c.dims.d_model), c.a(o));
    tp_sum(c, y, "the attention output (tensor parallel)");
  }

  // dx, dy, x: [B, T, C]; every parameter gradient +=
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    const int H = c.dims.n_heads, KV = c.dims.n_kv_heads;
    const auto x2 = rows(c, x, c.dims.d_model), dx2 = rows(c, dx, c.dims.d_model);
    wo.backward(c, c.a(dout), rows(c, dy, c.dims.d_model), c.a(o));
    if (n_prefix > 0) {
      ops::attention_backward(heads(c, dq, H), prefixed(c, dkp), prefixed(c, dvp), heads(c, dout, H), heads(c, q, H),
                              prefixed(c, kp), prefixed(c, vp), heads(c, o, H), c.a(lse), mask(c));
      // The prefix's gradient sums over the rows; the tokens' keys and values take the rest.
      const std::int64_t KD = c.dims.kv_dim(), P = n_prefix, T = c.T;
      if (pre_e) ops::scale_forward(c.a(dpre_k), c.a(dpre_k), 0.0f), ops::scale_forward(c.a(dpre_v), c.a(dpre_v), 0.0f);
      for (std::int64_t b = 0; b < c.B; ++b) {
        for (auto [param, made, grad] : {std::tuple{prefix_k, dpre_k, dkp}, std::tuple{prefix_v, dpre_v, dvp}})
          if (const TensorRef g = pre_e ? c.a(made) : c.g(param)) {
            ops::convert(c.a(dprefix), c.a(grad).span(b * (P + T) * KD, P * KD).view({P, KD}));
            ops::add_forward(g, g, c.a(dprefix));
          }
        ops::convert(c.a(dk).span(b * T * KD, T * KD), c.a(dkp).span((b * (P + T) + P) * KD, T * KD));
        ops::convert(c.a(dv).span(b * T * KD, T * KD), c.a(dvp).span((b * (P + T) + P) * KD, T * KD));
      }
      if (pre_e) {
        // Back through the MLP: dWk, dWv, then dh, tanh, dW1 and dE (E and W1 gather every layer's).
        ops::matmul_backward(c.a(dpre_h), c.g(pre_wk), c.g(pre_bk), c.a(dpre_k), c.a(pre_h), c.p(pre_wk));
        ops::matmul_backward(c.a(dpre_tmp), c.g(pre_wv), c.g(pre_bv), c.a(dpre_v), c.a(pre_h), c.p(pre_wv));
        ops::add_forward(c.a(dpre_h), c.a(dpre_h), c.a(dpre_tmp));
        ops::tanh_backward(c.a(dpre_h), c.a(dpre_h), c.a(pre_u));
        const TensorRef ge = c.g(pre_e);
        ops::matmul_backward(ge ? c.a(dpre_e) : TensorRef{}, c.g(pre_w1), c.g(pre_b1), c.a(dpre_h), c.p(pre_e), c.p(pre_w1));
        if (ge) ops::add_forward(ge, ge, c.a(dpre_e));
      }
    } else {
      AttentionMask m = mask(c);
      if constexpr (learned_bias) pos.backward_bias(c, m, c.T);
      ops::attention_backward(heads(c, dq, H), heads(c, dk, KV), heads(c, dv, KV), heads(c, dout, H),
                              heads(c, q, H), heads(c, k, KV), heads(c, v, KV), heads(c, o, H),
                              c.a(lse), m);
      if constexpr (learned_bias) pos.bias_backward(c, c.T);
    }
    pos.rotate_backward(c, heads(c, dq, H), heads(c, dk, KV));
    // x feeds three projections: dx = dq·wq + dk·wk + dv·wv
    wq.backward(c, dx2, c.a(dq), x2);
    wk.backward(c, c.a(dx_part), c.a(dk), x2);
    ops::add_forward(dx2, dx2, c.a(dx_part));
    wv.backward(c, c.a(dx_part), c.a(dv), x2);
    ops::add_forward(dx2, dx2, c.a(dx_part));
    tp_sum(c, dx, "the attention input's gradient (tensor parallel)");
  }

  static double flops_per_token(const Dims& d, std::int64_t T) {
    const double C = d.d_model, QD = double(d.n_heads) * d.head_dim(), KD = d.kv_dim();
    const double projections = 2 * C * (QD + 2 * KD) + 2 * QD * C;
    const double scores_and_values = 2 * 2 * QD * visible_keys(T, window_of(d));
    return projections + scores_and_values;
  }

 private:
  static AttentionMask mask(const Ctx& c) {
    return {Mask::causal, window_of(c.dims), Pos::alibi, int(c.pos0), c.flow.lengths, c.flow.segments};
  }
  // A position scheme that adds a learned bias to the scores (RelativeBias) fills it in for Tk keys.
  static constexpr bool learned_bias = requires(Pos ps, Ctx& c, AttentionMask& m) { ps.add_bias(c, m, true, 1); };
  AttentionMask biased(Ctx& c, std::int64_t Tk) {
    AttentionMask m = mask(c);
    if constexpr (learned_bias) pos.add_bias(c, m, Mask::causal, Tk);
    return m;
  }
  static TensorRef rows(const Ctx& c, TensorRef t, std::int64_t width) {
    return t.view({c.B * c.T, width});
  }
  TensorRef heads(const Ctx& c, ActSlot s, int n) const {
    return c.a(s).view({c.B, c.T, n, c.dims.head_dim()});
  }
  // This layer's prefix keys and values [P, KV·D]: the parameters, or made by the MLP now.
  std::pair<TensorRef, TensorRef> prefix(Ctx& c) const {
    if (!pre_e) return {c.p(prefix_k), c.p(prefix_v)};
    ops::matmul_forward(c.a(pre_u), c.p(pre_e), c.p(pre_w1), c.p(pre_b1));
    ops::tanh_forward(c.a(pre_h), c.a(pre_u));
    ops::matmul_forward(c.a(pre_k), c.a(pre_h), c.p(pre_wk), c.p(pre_bk));
    ops::matmul_forward(c.a(pre_v), c.a(pre_h), c.p(pre_wv), c.p(pre_bv));
    return {c.a(pre_k), c.a(pre_v)};
  }
  TensorRef prefixed(const Ctx& c, ActSlot s) const {
    return c.a(s).view({c.B, n_prefix + c.T, c.dims.n_kv_heads, c.dims.head_dim()});
  }
};

// Multi-head attention: one kv head per query head (n_kv_heads must equal n_heads).
template <class Pos, class Mask = Causal>
struct MHA final : GQA<Pos, Mask, KvGrouping::all> {};
// Multi-query attention: one kv head shared by all query heads (n_kv_heads must be 1).
template <class Pos, class Mask = Causal>
struct MQA final : GQA<Pos, Mask, KvGrouping::one> {};

}  // namespace llmtk
