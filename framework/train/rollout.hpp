// Rollouts for RL fine-tuning (docs/alignment.md): the policy answers each prompt G times by
// sampling, with the KV cache on the active backend; a verifiable reward scores each answer
// against the task's reference, or a reward model scores it; the frozen reference model scores
// every sampled token (for the KL penalty). GRPO turns the rewards into advantages within each
// prompt's group; PPO puts the KL penalty into per-token rewards, and a critic (a value model,
// trained here on every rollout) turns them into per-token advantages by GAE. The result is a
// batch of G·P rows for GrpoLoss: EOT + prompt + answer, with targets on the answer (and the
// end-of-turn marker when the policy stopped by itself).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../data/chat.hpp"
#include "../models/model.hpp"
#include "step.hpp"

namespace llmtk::train {

class Optimizer;

// Rewards a reply earns against the reference answer (both trimmed of surrounding spaces):
//   exact_match  1 when they are equal, else 0
//   contains     1 when the reply contains the reference, else 0
double verifiable_reward(const std::string& kind, const std::string& reply, const std::string& reference);

// GRPO's advantages: each reward minus its group's mean, over the group's standard deviation
// (the sample standard deviation, n − 1, + 1e-4): rewards [P·G] in groups of G consecutive replies.
// A group whose replies all earned the same has advantages 0: nothing to learn from it.
std::vector<float> group_advantages(const std::vector<double>& rewards, std::int64_t group);

// Generalised advantage estimation (Schulman et al. 2016) over one reply's n actions: their
// rewards r_t and the critic's values V_t, with V_n = 0 after the last:
//   δ_t = r_t + γ·V_{t+1} − V_t      A_t = δ_t + γλ·A_{t+1}      G_t = A_t + V_t (the return)
void gae(const std::vector<double>& rewards, const std::vector<double>& values, double gamma, double lambda,
         std::vector<double>& advantages, std::vector<double>& returns);

struct RolloutOptions {
  std::string algorithm = "grpo";  // grpo | ppo
  std::int64_t prompts = 8;    // P per batch
  std::int64_t group = 8;      // G replies per prompt
  std::int64_t seq = 128;      // row length: prompt + max_tokens + 1 must fit
  int max_tokens = 16;
  double temperature = 1.0, top_p = 1.0;
  std::string reward = "exact_match";  // exact_match | contains | model (set_reward_model)
  double kl_coef = 0.05;               // PPO: r_t = −kl_coef·(log π_old(t) − log π_ref(t)), plus the reward at the last token
  double gamma = 1.0, lambda = 0.95;   // PPO: GAE's discount and its λ
  double critic_lr = 1e-5;             // PPO: the critic's learning rate (AdamW, constant)
  std::uint64_t seed = 1;
  bool shuffle = true;            // the prompts' order: shuffled every epoch, or the file's
  std::int64_t sample_every = 0;  // > 0: every this many batches (steps without gradient
                                  // accumulation), write the rollouts to samples_file
  std::string samples_file;
};

class RolloutBatches final : public BatchSource {
 public:
  // `sampler` makes a model with the policy's parameter layout (adapters, frozen parameters),
  // into which the policy's weights are copied before each rollout.
  RolloutBatches(std::vector<data::TaskRecord> records, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                 AnyModel& policy, AnyModel* reference, std::function<std::unique_ptr<AnyModel>()> sampler, RolloutOptions o);
  ~RolloutBatches() override;
  // reward = "model": a frozen reward model (a score head) planned for the batch's rows.
  void set_reward_model(std::unique_ptr<AnyModel> model);
  // PPO: the critic (a score head) planned for the batch's rows, and its optimizer.
  void set_critic(std::unique_ptr<AnyModel> critic, std::unique_ptr<Optimizer> optimizer);
  Batch next() override;
  void save(const std::string& checkpoint_dir) const override;  // the critic, in critic/
  void load(const std::string& checkpoint_dir) override;
  data::LoaderPosition position() const override { return pos_; }
  void seek(data::LoaderPosition p) override { pos_ = p; }
  // Data parallel: this rank answers prompts [rank·P/world, (rank+1)·P/world) of every batch of P
  // (o.prompts stays the global count, which train() has checked the ranks divide). Each reply's
  // randomness is its row's in the whole batch, so the ranks sample what one process samples.
  void split(int rank, int world) { rank_ = rank, world_ = world; }
  // Data parallel, PPO: the advantages are whitened over the whole batch's tokens (their sums
  // over `data`'s ranks), and the critic's gradients are averaged over the ranks before its step,
  // each rank's value loss weighted by the positions it counts, so that the ranks' critics take
  // one process's step and stay identical. A collective at every batch.
  void set_data_parallel(Communicator& data, double bucket_mb);
  std::uint64_t batches_per_epoch() const override { return prompts_.size() / std::uint64_t(o_.prompts); }
  std::uint64_t tokens() const override { return batches_per_epoch() * std::uint64_t(o_.prompts * o_.group * o_.seq); }
  // reward (mean), reward_std (within groups), response_length (tokens), solved (share of
  // prompts with at least one rewarded reply; verifiable rewards), and for PPO value_loss,
  // explained_variance and kl_penalty (mean Σ_t log π_old − log π_ref per reply), since the last call.
  Metrics take_metrics() override;
  std::int64_t too_long() const { return too_long_; }
  std::size_t size() const { return prompts_.size(); }
  void set_samples_file(std::string path) { o_.samples_file = std::move(path); }

 private:
  struct Prompt {
    std::vector<std::int32_t> ids;  // EOT + the rendered prompt + the assistant's header
    std::string text, reference;
  };
  std::vector<Prompt> prompts_;
  const data::Tokenizer& tok_;
  std::int32_t stop_;
  AnyModel& policy_;
  AnyModel* reference_;
  std::unique_ptr<AnyModel> sampler_;
  RolloutOptions o_;
  int rank_ = 0, world_ = 1;
  std::int64_t too_long_ = 0;
  data::LoaderPosition pos_{};
  std::uint64_t ordered_epoch_ = ~std::uint64_t(0);
  std::vector<std::size_t> order_;
  std::vector<std::int32_t> ids_, targets_;
  std::vector<float> advantages_, reference_logp_, behaviour_logp_, returns_;
  TokenLosses reference_losses_, policy_losses_;
  std::unique_ptr<AnyModel> reward_model_, critic_;
  std::unique_ptr<Optimizer> critic_optimizer_;
  Communicator* data_ = nullptr;              // data parallel (PPO's whitening and critic)
  std::unique_ptr<DataParallel> critic_dp_;
  std::int64_t critic_steps_ = 0;
  Metrics sums_;
  std::int64_t batches_since_ = 0;
};

}  // namespace llmtk::train
