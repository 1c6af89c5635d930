// LMHead<Tied|Untied>: logits = x · Wᵀ. Tied reads the embedding's token table (and adds its
// gradient there); Untied owns head.weight [V, C].
#pragma once
#include "common.hpp"
#include "linear.hpp"

namespace llmtk {

struct Tied {};
struct Untied {};

template <class Tying>
struct LMHead {
  static_assert(std::same_as<Tying, Tied> || std::same_as<Tying, Untied>,
                "lm_head_tying: LMHead takes Tied or Untied");
  static constexpr Role role = Role::head;
  static constexpr bool tied = std::same_as<Tying, Tied>;
  static std::string note(const Dims&) { return tied ? "shares embed.tokens" : ""; }
  using In = Hidden;
  using Out = Logits;

  Linear proj;  // weight [V, C]: its own (Untied) or the embedding's tokens (Tied, set by tie())

  void declare(Planner& p) {
    if constexpr (!tied) proj.declare(p, "weight", "", p.dims.vocab, p.dims.d_model, ParamKind::matrix, false);
  }
  void tie(Planner& p, ParamSlot embedding_tokens) {
    if constexpr (tied) proj.w = embedding_tokens, p.read_by_matmul(embedding_tokens);
  }
  // logits: [B, T, V]; x: [B, T, C]
  void forward(Ctx& c, TensorRef logits, TensorRef x) {
    proj.forward(c, logits.view({c.B * c.T, c.dims.vocab}), x.view({c.B * c.T, c.dims.d_model}));
  }
  // dx: [B, T, C]; dlogits: [B, T, V]; dweight += (unless frozen)
  void backward(Ctx& c, TensorRef dx, TensorRef dlogits, TensorRef x) {
    const std::int64_t N = c.B * c.T;
    proj.backward(c, dx.view({N, c.dims.d_model}), dlogits.view({N, c.dims.vocab}), x.view({N, c.dims.d_model}));
  }
  static std::int64_t outputs(const Dims& d) { return d.vocab; }  // per position
  static double flops_per_token(const Dims& d, std::int64_t) { return 2.0 * d.d_model * d.vocab; }
};

}  // namespace llmtk
