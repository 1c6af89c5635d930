// ScoreHead: one number per position, score = x · wᵀ with w [1, C] ("head.weight", no bias, as
// Transformers' *ForSequenceClassification with one label). In the head's slot of DecoderLM it
// makes a reward model (the score at a reply's last token, trained with the Bradley–Terry loss)
// or a value model (PPO's critic: the score at every position). docs/alignment.md.
#pragma once
#include "common.hpp"
#include "linear.hpp"

namespace llmtk {

struct ScoreHead {
  static constexpr Role role = Role::head;
  static constexpr bool tied = false;
  static std::string note(const Dims&) { return "one score per position"; }
  using In = Hidden;
  using Out = Scores;

  Linear proj;  // weight [1, C]

  void declare(Planner& p) { proj.declare(p, "weight", "", 1, p.dims.d_model, ParamKind::matrix, false); }
  // scores: [B, T, 1]; x: [B, T, C]
  void forward(Ctx& c, TensorRef scores, TensorRef x) {
    proj.forward(c, scores.view({c.B * c.T, 1}), x.view({c.B * c.T, c.dims.d_model}));
  }
  // dx: [B, T, C]; dscores: [B, T, 1]; dweight += (unless frozen)
  void backward(Ctx& c, TensorRef dx, TensorRef dscores, TensorRef x) {
    const std::int64_t N = c.B * c.T;
    proj.backward(c, dx.view({N, c.dims.d_model}), dscores.view({N, 1}), x.view({N, c.dims.d_model}));
  }
  static std::int64_t outputs(const Dims&) { return 1; }
  static double flops_per_token(const Dims& d, std::int64_t) { return 2.0 * d.d_model; }
};

}  // namespace llmtk
