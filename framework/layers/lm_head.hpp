// LMHead<Tied|Untied|TiedScaled>: logits = x · Wᵀ. Tied reads the embedding's token table (and
// adds its gradient there); Untied owns head.weight [V, C]; TiedScaled is Tied with its input
// scaled by d_model^-1/2 first, as T5 (v1.0) ties its head (Mesh TensorFlow's rescaling, so the
// logits of a table shared with the embedding do not grow with the width).
#pragma once
#include "common.hpp"
#include "linear.hpp"

namespace llmtk {

struct Tied {};
struct Untied {};
struct TiedScaled {};

template <class Tying>
struct LMHead {
  static_assert(std::same_as<Tying, Tied> || std::same_as<Tying, Untied> || std::same_as<Tying, TiedScaled>,
                "lm_head_tying: LMHead takes Tied, Untied or TiedScaled");
  static constexpr Role role = Role::head;
  static constexpr bool scaled = std::same_as<Tying, TiedScaled>;
  static constexpr bool tied = std::same_as<Tying, Tied> || scaled;
  static constexpr std::string_view tags[] = {scaled ? "scaled_head" : "lm_head"};
  static std::string note(const Dims&) { return tied ? "shares embed.tokens" : ""; }
  using In = Hidden;
  using Out = Logits;

  Linear proj;  // weight [V, C]: its own (Untied) or the embedding's tokens (Tied, set by tie())
  ActSlot xs;   // TiedScaled: the scaled input [B, T, C] (saved)

  void declare(Planner& p) {
    // Tensor parallel: this rank's dims.vocab / dims.tp rows (a tied head reads the embedding's share).
    if constexpr (!tied)
      proj.declare(p, "weight", "", p.dims.vocab / p.dims.tp, p.dims.d_model, ParamKind::matrix, false, LinearSplit::rows);
    if constexpr (scaled) xs = p.act("scaled", {p.B, p.T, p.dims.d_model});
  }
  static float scale(const Dims& d) { return float(1.0 / std::sqrt(double(d.d_model))); }
  void tie(Planner& p, ParamSlot embedding_tokens) {
    if constexpr (tied) proj.w = embedding_tokens, p.read_by_matmul(embedding_tokens);
  }
  // logits: [B, T, V] (tensor parallel: this rank's V / tp columns, for a parallel cross-entropy,
  // train/objective.hpp's VocabParallelLoss); x: [B, T, C]
  void forward(Ctx& c, TensorRef logits, TensorRef x) {
    if constexpr (scaled) ops::scale_forward(c.a(xs), x, scale(c.dims)), x = c.a(xs);
    proj.forward(c, logits.view({c.B * c.T, c.dims.vocab / c.dims.tp}), x.view({c.B * c.T, c.dims.d_model}));
  }
  // dx: [B, T, C]; dlogits: [B, T, V]; dweight += (unless frozen)
  void backward(Ctx& c, TensorRef dx, TensorRef dlogits, TensorRef x) {
    const std::int64_t N = c.B * c.T;
    if constexpr (scaled) x = c.a(xs);
    proj.backward(c, dx.view({N, c.dims.d_model}), dlogits.view({N, c.dims.vocab / c.dims.tp}), x.view({N, c.dims.d_model}));
    tp_sum(c, dx, "the LM head input's gradient (vocabulary-parallel)");
    if constexpr (scaled) ops::scale_forward(dx, dx, scale(c.dims));
  }
  static std::int64_t outputs(const Dims& d) { return d.vocab; }  // per position
  static double flops_per_token(const Dims& d, std::int64_t) { return 2.0 * d.d_model * d.vocab; }
};

}  // namespace llmtk
