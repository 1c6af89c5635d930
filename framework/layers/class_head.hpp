// ClassHead: a sequence classifier on an encoder, as Transformers' BertForSequenceClassification
// computes it — BERT's pooler, then a linear map to one logit per class (Devlin et al. 2019, §4.1):
//   pooled = tanh(x · W_pᵀ + b_p)     "head.pool.weight" [C, C], "head.pool.bias" [C]
//   logits = pooled · W_cᵀ + b_c      "head.weight" [K, C], "head.bias" [K];  K = model.n_labels
// It runs at every position, like the other heads, and the objective reads position 0 — the
// [CLS] token, whose vector sees the whole row (train/classify.hpp). Running it everywhere costs
// 2·C·(C + K) FLOPs per token, small next to a block's 24·C².
#pragma once
#include "common.hpp"  // ops::tanh_*
#include "linear.hpp"

namespace llmtk {

struct ClassHead {
  static constexpr Role role = Role::head;
  static constexpr bool tied = false;
  static constexpr std::string_view tags[] = {"class_head"};
  static constexpr KeySpec keys[] = {
      {"n_labels", KeyKind::integer, 2, 2, 1 << 16, "classes a sequence classifier tells apart ([classify] labels)"}};
  static std::string note(const Dims& d) { return std::to_string(d.get_int("n_labels", 2)) + " classes, read at [CLS]"; }
  using In = Hidden;
  using Out = Classes;

  Linear pool;      // [C, C] with bias: BertPooler's dense
  Linear classify;  // [K, C] with bias
  ActSlot pre, pooled, dpooled;  // [B·T, C]: before tanh, after it, and its gradient (scratch)

  void declare(Planner& p) {
    const std::int64_t C = p.dims.d_model, K = p.dims.get_int("n_labels", 2), N = p.B * p.T;
    pool.declare(p, "pool.weight", "pool.bias", C, C, ParamKind::matrix, true);
    classify.declare(p, "weight", "bias", K, C, ParamKind::matrix, true);
    pre = p.act("pre", {N, C}), pooled = p.act("pooled", {N, C}), dpooled = p.act("dpooled", {N, C});
  }
  // logits: [B, T, K]; x: [B, T, C]
  void forward(Ctx& c, TensorRef logits, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    pool.forward(c, c.a(pre), x.view({N, C}));
    ops::tanh_forward(c.a(pooled), c.a(pre));
    classify.forward(c, logits.view({N, c.dims.get_int("n_labels", 2)}), c.a(pooled));
  }
  // dx: [B, T, C] written; dlogits: [B, T, K]; parameter gradients +=
  void backward(Ctx& c, TensorRef dx, TensorRef dlogits, TensorRef x) {
    const std::int64_t N = c.B * c.T, C = c.dims.d_model;
    classify.backward(c, c.a(dpooled), dlogits.view({N, c.dims.get_int("n_labels", 2)}), c.a(pooled));
    ops::tanh_backward(c.a(dpooled), c.a(dpooled), c.a(pre));  // in place: d(pooled) becomes d(pre)
    pool.backward(c, dx.view({N, C}), c.a(dpooled), x.view({N, C}));
  }
  static std::int64_t outputs(const Dims& d) { return d.get_int("n_labels", 2); }
  static double flops_per_token(const Dims& d, std::int64_t) {
    return Linear::flops_per_row(d.d_model, d.d_model) + Linear::flops_per_row(d.get_int("n_labels", 2), d.d_model);
  }
};

}  // namespace llmtk
