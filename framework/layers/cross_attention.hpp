// CrossAttention: the mixer of an encoder-decoder's decoder that reads the encoder. Queries come
// from the decoder's stream x [B, T, C]; keys and values from the encoder's output, the memory
// [B, S, C] that flows with the batch (Flow::memory, set by EncoderDecoderLM):
//
//   q = x·Wqᵀ    k = m·Wkᵀ    v = m·Wvᵀ    y = attention(q, k, v)·Woᵀ
//
// Every decoder position sees every source position but the source's padding (Flow::source_lengths):
// the same attention op as self-attention, with a bidirectional mask and S keys (Tk ≠ Tq). No
// position scheme: where a query and a key stand in their own sequences says nothing about each
// other, so T5 and the original Transformer give cross-attention none.
//
// Backward adds the memory's gradient, dm += dk·Wk + dv·Wv, into Flow::dmemory, which every
// cross-attention layer of the decoder shares and the encoder's backward then reads.
//
// Decoding (a KV cache is planned): the memory's keys and values are computed at the first decoded
// position (pos0 = 0) and kept for the rest of the sequence, so each new token costs one query.
#pragma once
#include "common.hpp"  // ops::attention_*, ops::add_forward
#include "linear.hpp"

namespace llmtk {

struct CrossAttention {
  static constexpr Role role = Role::mixer;
  static constexpr std::string_view tags[] = {"cross_attention"};
  using In = Hidden;
  using Out = Hidden;

  Linear wq, wk, wv, wo;            // wq: [H·D, C], wk, wv: [KV·D, C], wo: [C, H·D]; biases with model.bias
  ActSlot q, o, lse;                // saved: q, o [B, T, H·D]; lse [B, H, T]
  ActSlot k, v;                     // saved: the memory's keys and values [B, S, KV·D]
  ActSlot dq, dk, dv, dout, dx_part, dm_part;  // backward scratch (dm_part: [B, S, C])
  bool decoding = false;

  void declare(Planner& p) {
    const auto& d = p.dims;
    LLMTK_CHECK(p.S > 0, "cross_attention", "reads an encoder's output: it goes in the decoder of an "
                "EncoderDecoderLM, which plans the source's length");
    const std::int64_t C = d.d_model, QD = std::int64_t(d.n_heads) * d.head_dim(), KD = d.kv_dim();
    const std::int64_t N = p.B * p.T, M = p.B * p.S;
    wq.declare(p, "wq", "bq", QD, C, ParamKind::matrix, d.bias);
    wk.declare(p, "wk", "bk", KD, C, ParamKind::matrix, d.bias);
    wv.declare(p, "wv", "bv", KD, C, ParamKind::matrix, d.bias);
    wo.declare(p, "wo", "bo", C, QD, ParamKind::residual_matrix, d.bias);
    q = p.act("q", {N, QD}), o = p.act("o", {N, QD}), lse = p.stat("lse", {p.B * d.n_heads * p.T});
    k = p.act("k", {M, KD}), v = p.act("v", {M, KD});
    decoding = p.kv_cache > 0;
    if (decoding) return;
    dq = p.act("dq", {N, QD}), dout = p.act("dout", {N, QD}), dx_part = p.act("dx_part", {N, C});
    dk = p.act("dk", {M, KD}), dv = p.act("dv", {M, KD}), dm_part = p.act("dm_part", {M, C});
  }

  // y, x: [B, T, C]; reads c.flow.memory [B, S, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    LLMTK_CHECK(c.flow.memory, "cross_attention", "has no encoder output to read (Flow::memory)");
    wq.forward(c, c.a(q), rows(x, c.B * c.T));
    if (!decoding || c.pos0 == 0) {  // decoding: once per source, at the first position
      const TensorRef m = memory_rows(c, c.flow.memory);
      wk.forward(c, c.a(k), m);
      wv.forward(c, c.a(v), m);
    }
    ops::attention_forward(heads(c, o, c.dims.n_heads, c.T), c.a(lse), heads(c, q, c.dims.n_heads, c.T),
                           heads(c, k, c.dims.n_kv_heads, S(c)), heads(c, v, c.dims.n_kv_heads, S(c)), mask(c));
    wo.forward(c, rows(y, c.B * c.T), c.a(o));
  }

  // dx, dy, x: [B, T, C]; c.flow.dmemory += the memory's gradient; every parameter gradient +=
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    const int H = c.dims.n_heads, KV = c.dims.n_kv_heads;
    const std::int64_t T = c.T, Sk = S(c);
    wo.backward(c, c.a(dout), rows(dy, c.B * T), c.a(o));
    ops::attention_backward(heads(c, dq, H, T), heads(c, dk, KV, Sk), heads(c, dv, KV, Sk), heads(c, dout, H, T),
                            heads(c, q, H, T), heads(c, k, KV, Sk), heads(c, v, KV, Sk), heads(c, o, H, T), c.a(lse),
                            mask(c));
    wq.backward(c, rows(dx, c.B * T), c.a(dq), rows(x, c.B * T));
    const TensorRef m = memory_rows(c, c.flow.memory), dm = memory_rows(c, c.flow.dmemory);
    wk.backward(c, c.a(dm_part), c.a(dk), m);
    ops::add_forward(dm, dm, c.a(dm_part));
    wv.backward(c, c.a(dm_part), c.a(dv), m);
    ops::add_forward(dm, dm, c.a(dm_part));
  }

  // Per decoder token: the projections of its query and output, and its scores and values against
  // the source (taken to be as long as the target); the memory's keys and values once per source
  // token, counted here per target token as the source is as long.
  static double flops_per_token(const Dims& d, std::int64_t T) {
    const double C = d.d_model, QD = double(d.n_heads) * d.head_dim(), KD = d.kv_dim();
    return 2 * C * QD + 2 * QD * C + 2 * C * 2 * KD + 2 * 2 * QD * double(T);
  }

 private:
  static AttentionMask mask(const Ctx& c) { return {false, 0, false, 0, c.flow.source_lengths}; }
  static std::int64_t S(const Ctx& c) { return c.flow.memory.size(1); }
  static TensorRef rows(TensorRef t, std::int64_t n) { return t.view({n, t.numel() / n}); }
  static TensorRef memory_rows(const Ctx& c, TensorRef m) { return m.view({c.B * S(c), c.dims.d_model}); }
  TensorRef heads(const Ctx& c, ActSlot s, int n, std::int64_t len) const {
    return c.a(s).view({c.B, len, n, c.dims.head_dim()});
  }
};

}  // namespace llmtk
