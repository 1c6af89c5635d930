// Objectives: a model returns its outputs (logits, or hidden states); an objective turns them and
// the batch's labels into a loss and seeds the outputs' gradient for the model's backward.
//
//   TensorRef logits = model.forward(inputs);       // [B, T, V]
//   float loss = objective.forward(logits, labels);  // keeps what backward needs
//   objective.backward(logits);                      // d loss / d logits, here in place
//   model.backward(logits);                          // parameter gradients +=
//
// NextTokenLoss is the language-modelling objective, PreferenceLoss the preference objectives
// (DPO, IPO, SimPO), BradleyTerryLoss a reward model's, GrpoLoss the RL policy's; MLM and span
// corruption are further implementations of the same interface.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "../core/arena.hpp"
#include "../core/communicator.hpp"

namespace llmtk {

inline constexpr int kIgnoreIndex = -100;  // targets equal to this are left out of the loss

// Named measurements besides the loss (reward accuracy, margins...), in a fixed order.
using Metrics = std::vector<std::pair<std::string, double>>;
// Adds `m` into `sum` by name (the first call sets the names); divide by the count for the mean.
void accumulate(Metrics& sum, const Metrics& m);

// What an objective compares the outputs with. Objectives document which fields they read.
struct Labels {
  Labels(TensorRef t = {}, TensorRef w = {}, TensorRef ref = {}) : targets(t), weights(w), reference(ref) {}
  TensorRef targets;     // [B, T] i32: the token each position should predict, or kIgnoreIndex
  TensorRef weights;     // [B, T] f32 or null: how much each position counts (a loss mask: 0 or 1)
  TensorRef reference;   // f32 host or null: a frozen reference model's log-probabilities of the
                         // counted targets, [B] summed per row (preference) or [B, T] (RL)
  TensorRef advantages;  // f32 host (RL): how much better each reply was than expected: [B] per row
                         // (GRPO: than its group's), or [B, T] per token (PPO: GAE)
  TensorRef behaviour;   // [B, T] f32 host or null (RL): log-probabilities under the policy that
                         // sampled the replies; null: the current policy's (a ratio of 1)
  TensorRef returns;     // [B, T] f32 host (PPO's critic): the return each counted position's value
                         // should predict
};

// How the masked-language-model objective picks and replaces tokens (train/masked.hpp).
struct MaskingOptions {
  double rate = 0.15;   // objective.mask_rate: share of ordinary tokens selected
  double mask = 0.8;    // objective.mask_token: of those, the share replaced by [MASK]
  double random = 0.1;  // objective.random_token: the share replaced by a random ordinary token
  bool operator==(const MaskingOptions&) const = default;
};

// How span corruption drops tokens (train/span.hpp): T5's defaults.
struct SpanOptions {
  double noise_density = 0.15;    // objective.noise_density: share of tokens dropped
  double mean_span_length = 3.0;  // objective.mean_span_length: mean tokens per dropped span
  bool operator==(const SpanOptions&) const = default;
};

class Objective {
 public:
  virtual ~Objective() = default;
  virtual std::string name() const = 0;
  // The loss of `outputs` against `labels` (host or device memory); keeps what backward needs.
  virtual float forward(TensorRef outputs, const Labels& labels) = 0;
  // Writes d(loss)/d(outputs) into `doutputs`, which may be the outputs' own buffer.
  virtual void backward(TensorRef doutputs) = 0;
  // What the last forward measured besides the loss (name, value), for metrics.jsonl.
  virtual Metrics metrics() const { return {}; }
  // What the last forward's loss is a mean over (the weight of the targets it counted), or 0 for
  // a loss that is not such a mean. Data parallel weights each rank's loss and gradient by its
  // share of the total, so that ranks whose rows count different numbers of targets (loss masks,
  // masked tokens) give the mean one process would take over the whole batch.
  virtual double weight() const { return 0; }
  // What the last forward's metrics are means over (GRPO's kl and entropy: the sampled tokens), or
  // 1 when every batch counts the same (pairs: each rank and micro-batch holds as many). The step's
  // metrics are the means weighted by it, over micro-batches and data-parallel ranks, as one
  // process would measure them over the whole batch.
  virtual double metrics_weight() const { return 1; }
};

// Per-position cross-entropy on the logits' device, brought back to the host: the piece shared by
// objectives built on each reply's log-probability.
class TokenLosses {
 public:
  // losses[n] = −log p(targets[n] | logits[n] / temperature), 0 where targets[n] is kIgnoreIndex.
  // `targets` ([N] i32) in host memory; the result stays valid until the next call. A temperature
  // other than 1 divides the logits in place (the policy that sampled at that temperature).
  const std::vector<float>& forward(TensorRef logits, TensorRef targets, const char* where, double temperature = 1.0);
  // dlogits[n] = weights[n] · d losses[n] / d logits[n] (weights: N host values), in place allowed.
  void backward(TensorRef dlogits, const std::vector<float>& weights);

 private:
  Arena io_{"token losses"};  // losses, targets and weights on the logits' device
  int losses_ = -1, targets_ = -1, weights_ = -1;
  std::int64_t rows_ = 0;
  TensorRef logits_;
  double temperature_ = 1.0;
  std::vector<float> host_;
};

// The preference losses of one batch of pairs: rows [0, P) are the chosen replies and rows
// [P, 2P) the rejected ones to the same prompts; log π(y) is the sum of a row's counted targets'
// log-probabilities. With h the pair's score and σ the logistic function (docs/alignment.md):
//   dpo    h = β·((log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r)))
//          loss = −(1−ε)·log σ(h) − ε·log σ(−h)           (ε: label smoothing, cDPO)
//   ipo    h = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))
//          loss = (h − 1/(2β))²
//   simpo  h = β·(log π(y_c)/|y_c| − log π(y_r)/|y_r|) − γ   (no reference model)
//          loss = −(1−ε)·log σ(h) − ε·log σ(−h)
// The batch's loss is the mean over its pairs. Rewards, as the metrics report them: β·(log π −
// log π_ref) per reply (simpo: β·log π/|y|).
struct PreferenceLossOptions {
  std::string loss = "dpo";     // dpo | ipo | simpo
  double beta = 0.1;
  double label_smoothing = 0;   // ε in [0, 0.5)
  double simpo_gamma = 0.5;     // γ, SimPO's target reward margin
  bool needs_reference() const { return loss != "simpo"; }
  bool operator==(const PreferenceLossOptions&) const = default;
};

class PreferenceLoss final : public Objective {
 public:
  explicit PreferenceLoss(PreferenceLossOptions o);
  std::string name() const override { return options_.loss; }
  // labels.targets [2P, T] in host memory; labels.reference [2P] when the loss needs a reference.
  float forward(TensorRef logits, const Labels& labels) override;
  void backward(TensorRef dlogits) override;
  // reward_accuracy (share of pairs whose chosen reward is higher), reward_margin, reward_chosen,
  // reward_rejected, logp_chosen, logp_rejected (means over the pairs).
  Metrics metrics() const override { return metrics_; }
  // The last forward's log π of every row (summed over its counted targets) and its counted targets.
  const std::vector<double>& logps() const { return logp_; }
  const std::vector<std::int64_t>& lengths() const { return length_; }

 private:
  PreferenceLossOptions options_;
  TokenLosses losses_;
  std::vector<double> logp_;
  std::vector<std::int64_t> length_;
  std::vector<float> weights_;  // −d loss / d log π of each position's row, 0 where not counted
  Metrics metrics_;
  bool ready_ = false;
};

// The clipped policy loss of GRPO (Shao et al. 2024, "DeepSeekMath") and PPO (Schulman et al.
// 2017), per sampled reply i of R and its tokens t:
//   ρ = π(t) / π_behaviour(t)                          the ratio to the policy that sampled it
//   l_t = −min(ρ·A_i, clip(ρ, 1−ε, 1+ε)·A_i) + β·k3_t   k3_t = π_ref/π − log(π_ref/π) − 1 ≥ 0
//   loss = (1/R) Σ_i (1/|o_i|) Σ_t l_t
// A_i is the reply's advantage (GRPO: its reward standardised within its prompt's group,
// rollout.hpp), or A_it each token's (PPO: GAE over the critic's values, with β = 0 here because
// PPO puts its KL penalty into the rewards);
// k3 is Schulman's unbiased, always positive estimator of KL(π ‖ π_ref). With one update per
// rollout (the default) ρ = 1 and the clip never binds; it matters when a rollout is reused.
struct GrpoLossOptions {
  double beta = 0.04;  // the KL penalty's weight
  double clip = 0.2;   // ε
  // The sampling temperature: π is the policy at it (logits / temperature), as the replies were
  // drawn from it; the reference's and behaviour log-probabilities must be taken at it too.
  double temperature = 1.0;
};

class GrpoLoss final : public Objective {
 public:
  explicit GrpoLoss(GrpoLossOptions o);
  std::string name() const override { return "grpo"; }
  // labels.targets [R, T] host, labels.advantages [R] or [R, T], labels.reference [R, T] (per-token log-probs
  // of the reference; needed when beta > 0), labels.behaviour [R, T] or null.
  float forward(TensorRef logits, const Labels& labels) override;
  void backward(TensorRef dlogits) override;
  // kl (mean k3 per token), clip_fraction (share of tokens whose ratio was clipped against their
  // advantage), entropy (mean −log π of the sampled tokens: an estimate of the policy's entropy
  // at temperature 1).
  Metrics metrics() const override { return metrics_; }
  double metrics_weight() const override { return tokens_; }  // the sampled tokens counted

 private:
  GrpoLossOptions options_;
  TokenLosses losses_;
  std::vector<float> weights_;
  Metrics metrics_;
  double tokens_ = 0;
  bool ready_ = false;
};

// A reward model's loss on pairs (Bradley and Terry 1952; Ouyang et al. 2022): the model's
// outputs are scores [2P, T, 1] (a score head), rows [0, P) the chosen replies and [P, 2P) the
// rejected ones, and r(y) is the score at the reply's last token, its end-of-turn marker (the
// position after the row's last counted target: score_positions):
//   loss = (1/P) Σ_j −log σ(r(y_c) − r(y_r))
// so that σ(r_c − r_r) is the modelled probability that people prefer y_c.
class BradleyTerryLoss final : public Objective {
 public:
  std::string name() const override { return "bradley_terry"; }
  // scores [2P, T, 1] (host or device, f32 or bf16); labels.targets [2P, T] in host memory.
  float forward(TensorRef scores, const Labels& labels) override;
  void backward(TensorRef dscores) override;
  // reward_accuracy (share of pairs with r_c > r_r), reward_margin, reward_chosen, reward_rejected.
  Metrics metrics() const override { return metrics_; }
  const std::vector<double>& rewards() const { return reward_; }  // the last forward's r of every row

 private:
  std::vector<std::int64_t> at_;  // each row's score position
  std::vector<double> reward_;
  std::vector<float> dscores_;
  Metrics metrics_;
  bool ready_ = false;
};

// Where a reward model reads each row's score: one past the row's last counted target (the last
// token the targets name), or −1 for a row with nothing counted.
std::vector<std::int64_t> score_positions(const std::int32_t* targets, std::int64_t rows, std::int64_t T);
// A model's outputs in host f32 (bf16 widened exactly), and the way back into `dst`'s memory and dtype.
std::vector<float> outputs_on_host(TensorRef outputs);
void write_outputs(TensorRef dst, const std::vector<float>& values);

// PPO's critic (a value model: a score head, whose output at position t is V(s_t), the value of the
// text up to t before the token t + 1 is chosen) regressed on the returns:
//   loss = (1/N) Σ_{counted t} ½ (V_t − G_t)²      over the N positions whose target is counted
class ValueLoss final : public Objective {
 public:
  std::string name() const override { return "value"; }
  // values [R, T, 1] (host or device); labels.targets [R, T] host (which positions count),
  // labels.returns [R, T] host.
  float forward(TensorRef values, const Labels& labels) override;
  void backward(TensorRef dvalues) override;
  // value_loss and explained_variance: 1 − Var(G − V) / Var(G) over the counted positions (1:
  // perfect, ≤ 0: no better than the mean), from sums().
  Metrics metrics() const override { return metrics_of(sums_); }
  // What the metrics are made of, so that data-parallel ranks can add theirs and measure the
  // whole batch: n, Σ G, Σ G², Σ (G − V), Σ (G − V)² over the counted positions.
  using Sums = std::array<double, 5>;
  const Sums& sums() const { return sums_; }
  static Metrics metrics_of(const Sums& s);
  // The positions the last forward counted (N): data parallel weights each rank's mean by them.
  double weight() const override { return weight_; }
  const std::vector<float>& values() const { return values_; }  // the last forward's, [R·T] on the host

 private:
  std::vector<float> values_, dvalues_;
  Sums sums_{};
  double weight_ = 0;
  bool ready_ = false;
};

// Σ over each row of −losses[n] where targets[n] is counted: the log-probability of each row's
// counted targets (rows of T positions; summed in double, rounded to f32), and how many there are.
void row_logps(const std::vector<float>& losses, const std::int32_t* targets, std::int64_t rows, std::int64_t T,
               std::vector<double>& logp, std::vector<std::int64_t>& length);

// Next-token cross-entropy: loss = Σ_n w_n · ce_n / Σ_n w_n over the positions whose target is not
// kIgnoreIndex, with w_n = 1 when there are no weights (the mean over counted positions). A
// position with weight 0 contributes nothing to the loss or to any gradient.
class NextTokenLoss final : public Objective {
 public:
  std::string name() const override { return "next_token"; }
  float forward(TensorRef logits, const Labels& labels) override;
  void backward(TensorRef dlogits) override;
  // Positions that counted in the last forward, and the sum of their weights.
  std::int64_t counted() const { return counted_; }
  double weight_sum() const { return weight_sum_; }
  double weight() const override { return weight_sum_; }

 private:
  TensorRef on_device(TensorRef t, int slot);
  Arena io_{"objective"};  // losses, and device copies of targets and weights
  int losses_ = -1, targets_io_ = -1, weights_io_ = -1;
  std::int64_t rows_ = 0;
  TensorRef logits_, targets_, weights_;
  std::vector<float> host_losses_, host_weights_;
  std::vector<std::int32_t> host_targets_;
  std::int64_t counted_ = 0;
  double weight_sum_ = 0;
};

// Next-token cross-entropy when the logits' columns are divided among tensor-parallel ranks
// (Megatron-LM's parallel cross-entropy; docs/distributed.md): rank r holds columns
// [r·V/tp, (r+1)·V/tp) of every row, and no rank ever holds a whole row. Per row, each rank
// measures its columns' log-sum-exp and, where it holds the target, the target's logit (the op
// vocab_parallel_ce_forward, on the logits' device); the ranks exchange those N + N numbers in
// host memory (an all-gather and an all-reduce), and every rank then has the row's log-sum-exp
// and loss, and writes its own columns' gradient, softmax − one-hot (vocab_parallel_ce_backward).
// The same loss, weights (a loss mask), mean and gradient as NextTokenLoss, on any backend.
class VocabParallelLoss final : public Objective {
 public:
  explicit VocabParallelLoss(Communicator& ranks) : ranks_(ranks) {}
  std::string name() const override { return "next_token"; }
  float forward(TensorRef logits, const Labels& labels) override;
  void backward(TensorRef dlogits) override;
  double weight() const override { return weight_sum_; }

 private:
  Communicator& ranks_;
  Arena io_{"parallel cross-entropy"};  // on the logits' device: targets, statistics, lse, scale
  int targets_io_ = -1, stats_io_ = -1, lse_io_ = -1, scale_io_ = -1;
  std::int64_t rows_ = 0;
  TensorRef logits_;
  std::vector<std::int32_t> targets_;
  std::vector<float> weights_, stats_, local_lse_, gathered_, lse_, scale_;
  std::vector<double> target_logit_;
  std::int64_t counted_ = 0;
  double weight_sum_ = 0;
};

}  // namespace llmtk
