#include "rollout.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../ops/ops.hpp"
#include "checkpoint.hpp"
#include "distributed.hpp"
#include "generate.hpp"
#include "optimizer.hpp"

namespace llmtk::train {

namespace {
std::string trimmed(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return {};
  return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}
}  // namespace

double verifiable_reward(const std::string& kind, const std::string& reply, const std::string& reference) {
  const std::string r = trimmed(reply), ref = trimmed(reference);
  if (kind == "exact_match") return r == ref ? 1.0 : 0.0;
  if (kind == "contains") return !ref.empty() && r.find(ref) != std::string::npos ? 1.0 : 0.0;
  fail("reward", "unknown reward '", kind, "'; known: exact_match, contains");
}

std::vector<float> group_advantages(const std::vector<double>& rewards, std::int64_t group) {
  LLMTK_CHECK(group >= 2 && rewards.size() % std::size_t(group) == 0, "advantages", "rewards come in groups of ", group,
              " (at least 2), got ", rewards.size());
  std::vector<float> a(rewards.size());
  for (std::size_t g = 0; g < rewards.size(); g += std::size_t(group)) {
    double mean = 0, var = 0;
    for (std::size_t i = g; i < g + std::size_t(group); ++i) mean += rewards[i];
    mean /= double(group);
    for (std::size_t i = g; i < g + std::size_t(group); ++i) var += (rewards[i] - mean) * (rewards[i] - mean);
    const double sd = std::sqrt(var / double(group - 1));
    for (std::size_t i = g; i < g + std::size_t(group); ++i) a[i] = static_cast<float>((rewards[i] - mean) / (sd + 1e-4));
  }
  return a;
}

void gae(const std::vector<double>& rewards, const std::vector<double>& values, double gamma, double lambda,
         std::vector<double>& advantages, std::vector<double>& returns) {
  LLMTK_CHECK(rewards.size() == values.size(), "gae", rewards.size(), " rewards and ", values.size(), " values");
  const std::size_t n = rewards.size();
  advantages.assign(n, 0.0);
  returns.assign(n, 0.0);
  double next_value = 0, next_advantage = 0;
  for (std::size_t t = n; t-- > 0;) {
    const double delta = rewards[t] + gamma * next_value - values[t];
    advantages[t] = delta + gamma * lambda * next_advantage;
    returns[t] = advantages[t] + values[t];
    next_value = values[t], next_advantage = advantages[t];
  }
}

RolloutBatches::~RolloutBatches() = default;

void RolloutBatches::set_reward_model(std::unique_ptr<AnyModel> model) {
  LLMTK_CHECK(model && model->scorer(), "rl", "the reward model must have a score head (trained with [reward])");
  reward_model_ = std::move(model);
}

void RolloutBatches::set_data_parallel(Communicator& data, double bucket_mb) {
  if (data.size() < 2) return;
  data_ = &data;
  // The critic's gradients summed after its backward, on this thread (no overlap: the critic is
  // small next to the policy, and its step is inside the rollout).
  if (critic_) critic_dp_ = std::make_unique<DataParallel>(data, critic_->grads(), bucket_mb, false);
}

void RolloutBatches::set_critic(std::unique_ptr<AnyModel> critic, std::unique_ptr<Optimizer> optimizer) {
  LLMTK_CHECK(critic && critic->scorer() && optimizer, "rl", "PPO's critic must be a model with a score head, with its optimizer");
  critic_ = std::move(critic), critic_optimizer_ = std::move(optimizer);
}

void RolloutBatches::save(const std::string& checkpoint_dir) const {
  if (!critic_) return;
  CheckpointState st;
  st.step = critic_steps_, st.arch = critic_->name(), st.dims = critic_->dims();
  save_checkpoint(checkpoint_dir + "/critic", *critic_, critic_optimizer_.get(), st);
}

void RolloutBatches::load(const std::string& checkpoint_dir) {
  if (!critic_) return;
  const std::string dir = checkpoint_dir + "/critic";
  LLMTK_CHECK(std::filesystem::exists(dir + "/state.json"), "resume", checkpoint_dir,
              " holds no critic (critic/): it was not saved by a PPO run; resume a PPO run from its own checkpoints");
  critic_steps_ = read_checkpoint_state(dir).step;
  load_checkpoint(dir, *critic_, critic_optimizer_.get());
}

RolloutBatches::RolloutBatches(std::vector<data::TaskRecord> records, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                               AnyModel& policy, AnyModel* reference, std::function<std::unique_ptr<AnyModel>()> sampler,
                               RolloutOptions o)
    : tok_(tok), stop_(tmpl.end_of_turn(tok)), policy_(policy), reference_(reference), sampler_(sampler()), o_(std::move(o)) {
  LLMTK_CHECK(o_.algorithm == "grpo" || o_.algorithm == "ppo", "rl", "unknown algorithm '", o_.algorithm, "'; known: grpo, ppo");
  LLMTK_CHECK(o_.group >= 2 || o_.algorithm == "ppo", "rl", "a group needs at least 2 replies per prompt to compare, got rl.group = ",
              o_.group);
  if (o_.reward != "model") (void)verifiable_reward(o_.reward, "", "");  // an unknown reward stops here
  for (const auto& r : records) {
    Prompt p;
    p.ids = tmpl.prompt(tok, r.prompt);
    p.ids.insert(p.ids.begin(), tok.eot());  // as instruction examples start
    if (std::int64_t(p.ids.size()) + o_.max_tokens + 1 > o_.seq) {
      ++too_long_;
      continue;
    }
    for (const auto& m : r.prompt)
      if (m.role == "user") p.text = m.content;
    p.reference = r.answer;
    prompts_.push_back(std::move(p));
  }
  LLMTK_CHECK(batches_per_epoch() > 0, "rl", prompts_.size(), " prompts fit in rows of ", o_.seq, " tokens with rl.max_tokens = ",
              o_.max_tokens, ", fewer than one batch of ", o_.prompts, "; lower train.batch or raise train.seq");
}

Batch RolloutBatches::next() {
  if (pos_.step >= batches_per_epoch()) pos_ = {pos_.epoch + 1, 0};
  if (ordered_epoch_ != pos_.epoch) {  // the prompts' order: shuffled per epoch from the seed
    order_.resize(prompts_.size());
    for (std::size_t i = 0; i < order_.size(); ++i) order_[i] = i;
    Rng rng(o_.seed * 0x9e3779b97f4a7c15ull + pos_.epoch);
    if (o_.shuffle)
      for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[std::size_t(rng.next() % i)]);
    ordered_epoch_ = pos_.epoch;
  }
  const std::uint64_t batch_index = pos_.epoch * batches_per_epoch() + pos_.step;
  const std::size_t first = std::size_t(pos_.step * std::uint64_t(o_.prompts));
  ++pos_.step;

  // Sample G replies per prompt with the policy's current weights.
  sampler_->params().copy_from(policy_.params());
  // This rank's prompts of the batch (all of them in one process); i0 is the first one's place.
  const std::int64_t P = o_.prompts / world_, i0 = rank_ * P, G = o_.group, R = P * G, T = o_.seq;
  ids_.assign(std::size_t(R * T), tok_.eot());
  targets_.assign(ids_.size(), kIgnoreIndex);
  std::vector<double> rewards(static_cast<std::size_t>(R));
  std::vector<std::string> replies(static_cast<std::size_t>(R));
  double length = 0;
  for (std::int64_t i = 0; i < P; ++i) {
    const Prompt& p = prompts_[order_[first + std::size_t(i0 + i)]];
    GenerateOptions go;
    go.max_tokens = o_.max_tokens, go.temperature = o_.temperature, go.top_k = 0, go.top_p = o_.top_p;
    go.stop_token = stop_, go.vocab_limit = tok_.vocab_size();  // never an id the tokenizer cannot decode
    // Every reply's randomness is a function of (seed, batch, row): a resumed run samples what it would have.
    std::vector<std::uint64_t> seeds;
    for (std::int64_t g = 0; g < G; ++g)
      seeds.push_back(Rng(o_.seed ^ (batch_index * 0x100000001b3ull + std::uint64_t((i0 + i) * G + g) * 0x9e3779b97f4a7c15ull)).next());
    auto group = generate_group(*sampler_, p.ids, go, seeds);  // the prompt read once for all G
    for (std::int64_t g = 0; g < G; ++g) {
      const std::int64_t row = i * G + g;
      std::vector<std::int32_t>& reply = group[std::size_t(g)];
      replies[std::size_t(row)] = tok_.decode(reply);
      if (o_.reward != "model") rewards[std::size_t(row)] = verifiable_reward(o_.reward, replies[std::size_t(row)], p.reference);
      if (std::int64_t(reply.size()) < o_.max_tokens) reply.push_back(stop_);  // it stopped: the marker is learned too
      length += double(reply.size());
      // The row: prompt then reply; position t predicts token t + 1, so the reply's targets start
      // at the prompt's last position.
      std::int32_t* x = ids_.data() + row * T;
      std::int32_t* y = targets_.data() + row * T;
      std::copy(p.ids.begin(), p.ids.end(), x);
      std::copy(reply.begin(), reply.end(), x + p.ids.size());
      for (std::size_t k = 0; k < reply.size(); ++k) y[p.ids.size() - 1 + k] = reply[k];
    }
  }
  const TensorRef ids(ids_.data(), DType::i32, {R, T}), targets(targets_.data(), DType::i32, {R, T});
  if (o_.reward == "model") {  // the reward model's score at each reply's last token
    LLMTK_CHECK(reward_model_, "rl", "rl.reward = \"model\" needs a reward model (rl.reward_model)");
    const std::vector<float> scores = outputs_on_host(reward_model_->forward({ids, {}, {}}));
    const auto at = score_positions(targets_.data(), R, T);
    for (std::int64_t r = 0; r < R; ++r) rewards[std::size_t(r)] = scores[std::size_t(r * T + at[std::size_t(r)])];
  }
  TensorRef reference;
  if (reference_) {  // the frozen reference's log-probability of every sampled token
    const auto& losses = reference_losses_.forward(reference_->forward({ids, {}, {}}), targets, "reference model", o_.temperature);
    reference_logp_.resize(losses.size());
    for (std::size_t k = 0; k < losses.size(); ++k) reference_logp_[k] = -losses[k];
    reference = TensorRef(reference_logp_.data(), DType::f32, {R, T});
  }
  Labels labels(targets, {}, reference);
  Metrics ppo;
  if (o_.algorithm == "grpo") {
    const std::vector<float> adv = group_advantages(rewards, G);
    advantages_.assign(adv.begin(), adv.end());
    labels.advantages = TensorRef(advantages_.data(), DType::f32, {R});
  } else {
    LLMTK_CHECK(critic_, "rl", "PPO needs a critic (RolloutBatches::set_critic)");
    // The policy's own log-probabilities of its samples (π_old), and the critic's values.
    const auto& lp = policy_losses_.forward(policy_.forward({ids, {}, {}}), targets, "policy", o_.temperature);
    behaviour_logp_.resize(lp.size());
    for (std::size_t k = 0; k < lp.size(); ++k) behaviour_logp_[k] = -lp[k];
    const std::vector<float> values = outputs_on_host(critic_->forward({ids, {}, {}}));
    // Per-token rewards: the KL penalty at every token, the reward at the last; GAE per reply.
    advantages_.assign(std::size_t(R * T), 0.0f);
    returns_.assign(std::size_t(R * T), 0.0f);
    double kl = 0, sum = 0, sq = 0, n = 0;
    std::vector<double> r_t, v_t, a_t, g_t;
    for (std::int64_t r = 0; r < R; ++r) {
      std::vector<std::int64_t> at;
      for (std::int64_t t = 0; t < T; ++t)
        if (targets_[std::size_t(r * T + t)] != kIgnoreIndex) at.push_back(r * T + t);
      r_t.assign(at.size(), 0.0), v_t.assign(at.size(), 0.0);
      for (std::size_t j = 0; j < at.size(); ++j) {
        const std::size_t k = std::size_t(at[j]);
        const double d = reference_ ? double(behaviour_logp_[k]) - reference_logp_[k] : 0.0;
        r_t[j] = -o_.kl_coef * d, kl += d;
        v_t[j] = values[k];
      }
      if (!at.empty()) r_t.back() += rewards[std::size_t(r)];
      gae(r_t, v_t, o_.gamma, o_.lambda, a_t, g_t);
      for (std::size_t j = 0; j < at.size(); ++j) {
        advantages_[std::size_t(at[j])] = float(a_t[j]), returns_[std::size_t(at[j])] = float(g_t[j]);
        sum += a_t[j], sq += a_t[j] * a_t[j], n += 1;
      }
    }
    // Advantages whitened over the batch's tokens (mean 0, variance 1), as PPO implementations do;
    // under data parallel over the whole batch's, from the ranks' sums.
    if (data_) {
      double s[3] = {sum, sq, n};
      data_->all_reduce_sum(s, 3, "PPO's advantage sums");
      sum = s[0], sq = s[1], n = s[2];
    }
    const double mean = n > 0 ? sum / n : 0, sd = n > 1 ? std::sqrt(std::max(0.0, sq / n - mean * mean)) : 1;
    for (std::int64_t k = 0; k < R * T; ++k)
      if (targets_[std::size_t(k)] != kIgnoreIndex) advantages_[std::size_t(k)] = float((advantages_[std::size_t(k)] - mean) / (sd + 1e-8));
    // One critic step on this rollout's returns, from the values computed above.
    Labels vl(targets);
    vl.returns = TensorRef(returns_.data(), DType::f32, {R, T});
    ValueLoss value_loss;
    critic_->zero_grad();
    value_loss.forward(critic_->logits(), vl);
    value_loss.backward(critic_->logits());
    if (critic_dp_) {
      // As the trainer does for the policy: this rank's share of the whole batch's mean, then the
      // ranks' gradients averaged.
      const double share = critic_dp_->loss_share(value_loss.weight());
      if (share != 1.0) ops::scale_forward(critic_->logits(), critic_->logits(), float(share));
      critic_dp_->start_step();
      critic_dp_->arm(*critic_);
      critic_->backward(critic_->logits());
      critic_dp_->finish(*critic_);
    } else {
      critic_->backward(critic_->logits());
    }
    critic_optimizer_->step(critic_->params(), critic_->grads(), o_.critic_lr, ++critic_steps_);
    // The critic's metrics over the whole batch: the ranks' sums added (a mean of the ranks'
    // means would weigh a rank with fewer counted positions as much as one with more).
    ValueLoss::Sums sums = value_loss.sums();
    if (data_) data_->all_reduce_sum(sums.data(), std::int64_t(sums.size()), "the critic's value sums (PPO's metrics)");
    ppo = ValueLoss::metrics_of(sums);
    ppo.push_back({"kl_penalty", kl / double(R)});
    labels.advantages = TensorRef(advantages_.data(), DType::f32, {R, T});
    labels.behaviour = TensorRef(behaviour_logp_.data(), DType::f32, {R, T});
  }

  double mean = 0, spread = 0, solved = 0;
  for (std::int64_t i = 0; i < P; ++i) {
    double m = 0, best = 0;
    for (std::int64_t g = 0; g < G; ++g) m += rewards[std::size_t(i * G + g)], best = std::max(best, rewards[std::size_t(i * G + g)]);
    m /= double(G);
    double v = 0;
    for (std::int64_t g = 0; g < G; ++g) v += (rewards[std::size_t(i * G + g)] - m) * (rewards[std::size_t(i * G + g)] - m);
    mean += m, spread += G > 1 ? std::sqrt(v / double(G - 1)) : 0.0, solved += best > 0;
  }
  Metrics m = {{"reward", mean / double(P)}};
  if (G > 1) m.push_back({"reward_std", spread / double(P)});
  m.push_back({"response_length", length / double(R)});
  if (o_.reward != "model") m.push_back({"solved", solved / double(P)});
  m.insert(m.end(), ppo.begin(), ppo.end());
  accumulate(sums_, m);
  ++batches_since_;

  if (o_.sample_every > 0 && !o_.samples_file.empty() && batch_index % std::uint64_t(o_.sample_every) == 0) {
    std::ofstream f(o_.samples_file, std::ios::app);
    f << "--- batch " << batch_index << " (step " << batch_index + 1 << " without gradient accumulation) ---\n";
    for (std::int64_t i = 0; i < std::min<std::int64_t>(P, 2); ++i) {
      const Prompt& p = prompts_[order_[first + std::size_t(i)]];
      f << "prompt:    " << p.text << "\nreference: " << p.reference << "\n";
      for (std::int64_t g = 0; g < G; ++g)
        f << "  reward " << rewards[std::size_t(i * G + g)]
          << (o_.algorithm == "grpo" ? cat("  advantage ", advantages_[std::size_t(i * G + g)]) : std::string()) << "  | "
          << replies[std::size_t(i * G + g)] << "\n";
    }
  }

  return {{ids, {}, {}}, labels};
}

Metrics RolloutBatches::take_metrics() {
  Metrics m = sums_;
  for (auto& [name, v] : m) v /= double(std::max<std::int64_t>(batches_since_, 1));
  sums_.clear();
  batches_since_ = 0;
  return m;
}

}  // namespace llmtk::train
