// LMHead<Tied|Untied>: logits = x · Wᵀ. Tied reads the embedding's token table (and adds its
// gradient there); Untied owns head.weight [V, C].
#pragma once
#include "common.hpp"  // ops::matmul_forward, ops::matmul_backward

namespace llmtk {

struct Tied {};
struct Untied {};

template <class Tying>
struct LMHead {
  static_assert(std::same_as<Tying, Tied> || std::same_as<Tying, Untied>,
                "lm_head_tying: LMHead takes Tied or Untied");
  static constexpr Role role = Role::head;
  static constexpr bool tied = std::same_as<Tying, Tied>;
  using In = Hidden;
  using Out = Logits;

  ParamSlot weight;  // [V, C]: its own (Untied) or the embedding's tokens (Tied, set by tie())

  void declare(Planner& p) {
    if constexpr (!tied) weight = p.param("weight", {p.dims.vocab, p.dims.d_model}, ParamKind::matrix);
  }
  void tie(ParamSlot embedding_tokens) {
    if constexpr (tied) weight = embedding_tokens;
  }
  // logits: [B, T, V]; x: [B, T, C]
  void forward(Ctx& c, TensorRef logits, TensorRef x) {
    ops::matmul_forward(logits.view({c.B * c.T, c.dims.vocab}), x.view({c.B * c.T, c.dims.d_model}),
                        c.p(weight), TensorRef{});
  }
  // dx: [B, T, C]; dlogits: [B, T, V]; dweight +=
  void backward(Ctx& c, TensorRef dx, TensorRef dlogits, TensorRef x) {
    const std::int64_t N = c.B * c.T;
    ops::matmul_backward(dx.view({N, c.dims.d_model}), c.g(weight), TensorRef{},
                         dlogits.view({N, c.dims.vocab}), x.view({N, c.dims.d_model}), c.p(weight));
  }
  static double flops_per_token(const Dims& d, std::int64_t) { return 2.0 * d.d_model * d.vocab; }
};

}  // namespace llmtk
