// MLMHead<Tied|Untied>: the masked-language-model head of BERT (Devlin et al. 2019), as
// Transformers' BertOnlyMLMHead computes it:
//   t = gelu(x · W_tᵀ + b_t)          the transform, [C, C]
//   n = LayerNorm(t)
//   logits = n · Eᵀ + b               the decoder: E the token embedding (Tied) or its own [V, C],
//                                     b [V] its own bias either way
// Parameters: head.transform.weight, head.transform.bias, head.norm.weight, head.norm.bias,
// head.bias (and head.weight when Untied). The head reads every position; the objective counts
// only the masked ones (train/masked.hpp).
#pragma once
#include "common.hpp"  // ops::gelu_*
#include "layernorm.hpp"
#include "linear.hpp"
#include "lm_head.hpp"  // Tied, Untied

namespace llmtk {

template <class Tying>
struct MLMHead {
  static_assert(std::same_as<Tying, Tied> || std::same_as<Tying, Untied>, "mlm_head_tying: MLMHead takes Tied or Untied");
  static constexpr Role role = Role::head;
  static constexpr bool tied = std::same_as<Tying, Tied>;
  static constexpr std::string_view tags[] = {"mlm_head"};
  static std::string note(const Dims&) { return tied ? "decoder shares embed.tokens" : ""; }
  using In = Hidden;
  using Out = Logits;
  using Parts = PartList<Child<"norm", LayerNorm>>;

  Linear transform;  // [C, C] with bias
  LayerNorm norm;
  Linear decoder;    // [V, C]: its own (Untied) or the embedding's tokens (Tied, set by tie()); bias [V]
  ActSlot t, a, n;   // saved [B·T, C]: transform's output, after GELU, after the norm
  ActSlot dn, da;    // scratch [B·T, C]

  void declare(Planner& p) {
    const std::int64_t C = p.dims.d_model, V = p.dims.vocab, N = p.B * p.T;
    transform.declare(p, "transform.weight", "transform.bias", C, C, ParamKind::matrix, true);
    { auto s = p.scope("norm"); norm.declare(p); }
    if constexpr (tied) decoder.b = p.param("bias", {V}, ParamKind::bias);
    else decoder.declare(p, "weight", "bias", V, C, ParamKind::matrix, true);
    t = p.act("t", {N, C}), a = p.act("a", {N, C}), n = p.act("n", {N, C});
    dn = p.act("dn", {N, C}), da = p.act("da", {N, C});
  }
  void tie(Planner& p, ParamSlot embedding_tokens) {
    if constexpr (tied) decoder.w = embedding_tokens, p.read_by_matmul(embedding_tokens);
  }
  // logits: [B, T, V]; x: [B, T, C]
  void forward(Ctx& c, TensorRef logits, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    transform.forward(c, c.a(t), x.view({N, C}));
    ops::gelu_forward(c.a(a), c.a(t));
    norm.forward(c, c.a(n), c.a(a));
    decoder.forward(c, logits.view({N, c.dims.vocab}), c.a(n));
  }
  // dx: [B, T, C] written; dlogits: [B, T, V]; parameter gradients +=
  void backward(Ctx& c, TensorRef dx, TensorRef dlogits, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    decoder.backward(c, c.a(dn), dlogits.view({N, c.dims.vocab}), c.a(n));
    norm.backward(c, c.a(da), c.a(dn), c.a(a));
    ops::gelu_backward(c.a(da), c.a(da), c.a(t));  // in place: da becomes dt
    transform.backward(c, dx.view({N, C}), c.a(da), x.view({N, C}));
  }
  static std::int64_t outputs(const Dims& d) { return d.vocab; }  // per position
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return Linear::flops_per_row(d.d_model, d.d_model) + LayerNorm::flops_per_token(d, T) +
           Linear::flops_per_row(d.vocab, d.d_model);
  }
};

}  // namespace llmtk
