// QKNorm<Inner>: RMSNorm of every query and key head over its head dimension before the scores
// (OLMo 2, Qwen 3, Gemma 3), then Inner (RoPE, NoPE, ALiBi). Written as a composition in GQA's
// q/k slot, GQA<QKNorm<RoPE>>, with no change to GQA: the slot takes anything that transforms q
// and k in place and can undo it in backward. Parameters: q_norm.weight [D], k_norm.weight [D].
#pragma once
#include "common.hpp"  // ops::rmsnorm_*, ops::scale_forward
#include "positions.hpp"
#include "../protocol/visit.hpp"

namespace llmtk {

template <class Inner>
struct QKNorm {
  static_assert(AttentionPositions<Inner>, "attention_positions: QKNorm<...> wraps an attention position scheme "
                                           "(NoPE, RoPE, ALiBi)");
  static constexpr PositionKind kind = PositionKind::attention;
  static constexpr bool alibi = Inner::alibi;
  static constexpr std::string_view tags[] = {"qk_norm"};
  using Parts = PartList<Child<"", Inner>>;  // Inner's rules and tags (RoPE's) hold here too

  Inner inner;
  ParamSlot wq, wk;             // [D] each
  ActSlot q_in, k_in;           // saved: q and k before the norm, [B·T·H, D] and [B·T·KV, D]
  ActSlot rstd_q, rstd_k;       // saved: [B·T·H], [B·T·KV]
  ActSlot dq_in, dk_in;         // backward scratch

  void declare(Planner& p) {
    const std::int64_t D = p.dims.head_dim(), N = p.B * p.T;
    wq = p.param("q_norm.weight", {D}, ParamKind::norm);
    wk = p.param("k_norm.weight", {D}, ParamKind::norm);
    q_in = p.act("q_in", {N * p.dims.n_heads, D}), k_in = p.act("k_in", {N * p.dims.n_kv_heads, D});
    rstd_q = p.stat("rstd_q", {N * p.dims.n_heads}), rstd_k = p.stat("rstd_k", {N * p.dims.n_kv_heads});
    dq_in = p.act("dq_in", {N * p.dims.n_heads, D}), dk_in = p.act("dk_in", {N * p.dims.n_kv_heads, D});
    if constexpr (requires { inner.declare(p); }) inner.declare(p);
  }
  // q: [B, T, H, D], k: [B, T, KV, D], transformed in place
  void rotate(Ctx& c, TensorRef q, TensorRef k) {
    norm(c, q, q_in, rstd_q, wq);
    norm(c, k, k_in, rstd_k, wk);
    inner.rotate(c, q, k);
  }
  // dq, dk: [B, T, H|KV, D], in place
  void rotate_backward(Ctx& c, TensorRef dq, TensorRef dk) {
    inner.rotate_backward(c, dq, dk);
    norm_backward(c, dq, q_in, rstd_q, wq, dq_in);
    norm_backward(c, dk, k_in, rstd_k, wk, dk_in);
  }

 private:
  static void norm(Ctx& c, TensorRef t, ActSlot saved, ActSlot rstd, ParamSlot w) {
    const TensorRef rows = t.view({c.a(saved).size(0), c.a(saved).size(1)});
    ops::scale_forward(c.a(saved), rows, 1.0f);  // keep the input for backward
    ops::rmsnorm_forward(rows, c.a(rstd), c.a(saved), c.p(w), float(c.dims.norm_eps));
  }
  static void norm_backward(Ctx& c, TensorRef dt, ActSlot saved, ActSlot rstd, ParamSlot w, ActSlot scratch) {
    const TensorRef rows = dt.view({c.a(saved).size(0), c.a(saved).size(1)});
    ops::rmsnorm_backward(c.a(scratch), c.g(w), rows, c.a(saved), c.p(w), c.a(rstd), TensorRef{});
    ops::scale_forward(rows, c.a(scratch), 1.0f);
  }
};

}  // namespace llmtk
