#include "objective.hpp"

#include <algorithm>
#include <cmath>

#include "../core/error.hpp"
#include "../ops/ops.hpp"

namespace llmtk {

namespace {
constexpr const char* kWhere = "next_token loss";
}

// Targets and weights as the ops need them: on the logits' device (copied into io_ if not).
TensorRef NextTokenLoss::on_device(TensorRef t, int slot) {
  if (t.device == io_.device()) return t.view({rows_});
  LLMTK_CHECK(t.device == Device::host, kWhere, "labels must be in host memory or on the logits' device");
  io_.write(slot, t.data);
  return io_[slot];
}

float NextTokenLoss::forward(TensorRef logits, const Labels& labels) {
  LLMTK_CHECK(logits && (logits.dtype == DType::f32 || logits.dtype == DType::bf16) && logits.rank >= 2, kWhere,
              "logits must be f32 or bf16 [..., V], got ", name_of(logits.dtype), " ", logits.shape_str());
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  LLMTK_CHECK(labels.targets && labels.targets.dtype == DType::i32 && labels.targets.numel() == N, kWhere,
              "targets must be ", N, " i32 values (one per position), got ", labels.targets.shape_str());
  LLMTK_CHECK(!labels.weights || (labels.weights.dtype == DType::f32 && labels.weights.numel() == N), kWhere,
              "weights must be ", N, " f32 values (one per position), got ", labels.weights.shape_str());
  if (N != rows_ || !io_.allocated() || io_.device() != logits.device) {
    io_ = Arena("objective");
    losses_ = io_.add("losses", {N});
    targets_io_ = io_.add("targets", {N}, DType::i32);
    weights_io_ = io_.add("weights", {N});
    io_.allocate(memory_of(logits.device));
    rows_ = N;
  }
  logits_ = logits.view({N, V});
  targets_ = on_device(labels.targets, targets_io_);
  weights_ = labels.weights ? on_device(labels.weights, weights_io_) : TensorRef{};
  ops::cross_entropy_forward(io_[losses_], logits_, targets_, kIgnoreIndex);

  // The sum is taken on the host in a fixed order (deterministic): N floats come back from a device.
  const float* loss = io_[losses_].f32();
  if (io_.device() != Device::host) {
    host_losses_.resize(std::size_t(N));
    io_.read(losses_, host_losses_.data());
    loss = host_losses_.data();
  }
  auto on_host = [&]<class T>(TensorRef t, std::vector<T>& copy) -> const T* {
    if (t.device == Device::host) return static_cast<const T*>(t.data);
    copy.resize(std::size_t(N));
    copy_bytes(copy.data(), Device::host, t.data, t.device, t.bytes());
    return copy.data();
  };
  const std::int32_t* tg = on_host(labels.targets, host_targets_);
  const float* w = labels.weights ? on_host(labels.weights, host_weights_) : nullptr;
  double sum = 0;
  counted_ = 0, weight_sum_ = 0;
  for (std::int64_t n = 0; n < N; ++n) {
    if (tg[n] == kIgnoreIndex) continue;
    ++counted_;
    if (!w) {
      sum += loss[n];
      continue;
    }
    LLMTK_CHECK(std::isfinite(w[n]) && w[n] >= 0, kWhere, "the weight of position ", n, " is ", w[n],
                "; weights must be finite and >= 0 (0 leaves a position out)");
    sum += double(w[n]) * loss[n];
    weight_sum_ += w[n];
  }
  if (!w) weight_sum_ = double(counted_);
  return weight_sum_ > 0 ? static_cast<float>(sum / weight_sum_) : 0.0f;
}

void NextTokenLoss::backward(TensorRef dlogits) {
  LLMTK_CHECK(logits_, kWhere, "backward() needs a forward() first");
  LLMTK_CHECK(dlogits.numel() == logits_.numel(), kWhere, "dlogits must have the logits' shape ", logits_.shape_str());
  // Without weights: 1 / counted as a float, as the mean's gradient always was.
  const float dloss = weight_sum_ <= 0 ? 0.0f
                      : weights_      ? static_cast<float>(1.0 / weight_sum_)
                                      : 1.0f / static_cast<float>(counted_);
  ops::cross_entropy_backward(dlogits.view({logits_.size(0), logits_.size(1)}), logits_, targets_, weights_, dloss,
                              kIgnoreIndex);
}

}  // namespace llmtk

namespace llmtk {

void accumulate(Metrics& sum, const Metrics& m) {
  if (sum.empty()) {
    sum = m;
    return;
  }
  for (std::size_t i = 0; i < m.size() && i < sum.size(); ++i) sum[i].second += m[i].second;
}

// ---- per-position losses ---------------------------------------------------------------------

const std::vector<float>& TokenLosses::forward(TensorRef logits, TensorRef targets, const char* where, double temperature) {
  LLMTK_CHECK(logits && (logits.dtype == DType::f32 || logits.dtype == DType::bf16) && logits.rank >= 2, where,
              "logits must be f32 or bf16 [..., V], got ", name_of(logits.dtype), " ", logits.shape_str());
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  LLMTK_CHECK(targets && targets.dtype == DType::i32 && targets.numel() == N && targets.device == Device::host, where,
              "targets must be ", N, " i32 values in host memory (one per position), got ", targets.shape_str());
  if (N != rows_ || !io_.allocated() || io_.device() != logits.device) {
    io_ = Arena("token losses");
    losses_ = io_.add("losses", {N});
    targets_ = io_.add("targets", {N}, DType::i32);
    weights_ = io_.add("weights", {N});
    io_.allocate(memory_of(logits.device));
    rows_ = N;
  }
  logits_ = logits.view({N, V});
  LLMTK_CHECK(temperature > 0, where, "temperature must be > 0, got ", temperature);
  temperature_ = temperature;
  if (temperature != 1.0) ops::scale_forward(logits_, logits_, static_cast<float>(1.0 / temperature));
  io_.write(targets_, targets.data);
  ops::cross_entropy_forward(io_[losses_], logits_, io_[targets_], kIgnoreIndex);
  host_.resize(std::size_t(N));
  io_.read(losses_, host_.data());
  return host_;
}

void TokenLosses::backward(TensorRef dlogits, const std::vector<float>& weights) {
  LLMTK_CHECK(logits_ && std::int64_t(weights.size()) == rows_ && dlogits.numel() == logits_.numel(), "token losses",
              "backward() needs a forward() first, one weight per position and dlogits of the logits' shape");
  io_.write(weights_, weights.data());
  const TensorRef d = dlogits.view({logits_.size(0), logits_.size(1)});
  ops::cross_entropy_backward(d, logits_, io_[targets_], io_[weights_], 1.0f, kIgnoreIndex);
  // d/dz of f(z / T) is (1/T)·f'(z / T).
  if (temperature_ != 1.0) ops::scale_forward(d, d, static_cast<float>(1.0 / temperature_));
}

void row_logps(const std::vector<float>& losses, const std::int32_t* targets, std::int64_t rows, std::int64_t T,
               std::vector<double>& logp, std::vector<std::int64_t>& length) {
  logp.assign(std::size_t(rows), 0.0);
  length.assign(std::size_t(rows), 0);
  for (std::int64_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      const std::size_t n = std::size_t(r * T + t);
      if (targets[n] == kIgnoreIndex) continue;
      sum -= double(losses[n]);
      ++length[std::size_t(r)];
    }
    // Rounded to f32, the precision a reference's log-probabilities are kept in: a policy equal to
    // its reference then has log-ratios of exactly 0 (and DPO's loss is exactly log 2).
    logp[std::size_t(r)] = double(static_cast<float>(sum));
  }
}

// ---- preference losses -----------------------------------------------------------------------

namespace {
// log σ(x) without overflow for large |x|.
double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
}  // namespace

PreferenceLoss::PreferenceLoss(PreferenceLossOptions o) : options_(std::move(o)) {
  const auto& l = options_.loss;
  LLMTK_CHECK(l == "dpo" || l == "ipo" || l == "simpo", "preference loss", "unknown loss '", l, "'; known: dpo, ipo, simpo");
  LLMTK_CHECK(options_.beta > 0, "preference loss", "beta must be > 0, got ", options_.beta);
  LLMTK_CHECK(options_.label_smoothing >= 0 && options_.label_smoothing < 0.5, "preference loss",
              "label_smoothing must be in [0, 0.5), got ", options_.label_smoothing);
}

float PreferenceLoss::forward(TensorRef logits, const Labels& labels) {
  constexpr const char* where = "preference loss";
  LLMTK_CHECK(labels.targets.rank == 2 && labels.targets.size(0) % 2 == 0, where,
              "targets must be [2P, T]: P chosen rows, then the P rejected rows of the same prompts; got ",
              labels.targets.shape_str());
  const std::int64_t R = labels.targets.size(0), T = labels.targets.size(1), P = R / 2;
  const auto& losses = losses_.forward(logits, labels.targets, where);
  row_logps(losses, labels.targets.i32(), R, T, logp_, length_);
  const bool ref = options_.needs_reference();
  LLMTK_CHECK(!ref || (labels.reference && labels.reference.dtype == DType::f32 && labels.reference.numel() == R &&
                       labels.reference.device == Device::host),
              where, options_.loss, " compares with a reference model: labels.reference must be ", R,
              " f32 host values (its log-probability of each row)");
  const float* lref = ref ? labels.reference.f32() : nullptr;
  const double beta = options_.beta, eps = options_.label_smoothing;
  std::vector<double> dlogp(std::size_t(R), 0.0);  // d(batch loss) / d log π(row)
  double total = 0, correct = 0, margin = 0, rc_sum = 0, rr_sum = 0, lc_sum = 0, lr_sum = 0;
  for (std::int64_t j = 0; j < P; ++j) {
    const std::size_t c = std::size_t(j), r = std::size_t(P + j);
    LLMTK_CHECK(length_[c] > 0 && length_[r] > 0, where, "pair ", j, " has a reply with no counted target");
    const double pc = logp_[c], pr = logp_[r];
    double loss = 0, gc = 0, gr = 0, reward_c = 0, reward_r = 0;
    if (options_.loss == "simpo") {
      const double nc = double(length_[c]), nr = double(length_[r]);
      const double h = beta * (pc / nc - pr / nr) - options_.simpo_gamma;
      loss = -(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h);
      const double dh = -(1 - eps) * sigmoid(-h) + eps * sigmoid(h);
      gc = dh * beta / nc, gr = -dh * beta / nr;
      reward_c = beta * pc / nc, reward_r = beta * pr / nr;
    } else {
      const double ratio_c = pc - double(lref[c]), ratio_r = pr - double(lref[r]);
      reward_c = beta * ratio_c, reward_r = beta * ratio_r;
      if (options_.loss == "dpo") {
        const double h = beta * (ratio_c - ratio_r);
        loss = -(1 - eps) * log_sigmoid(h) - eps * log_sigmoid(-h);
        const double dh = -(1 - eps) * sigmoid(-h) + eps * sigmoid(h);
        gc = dh * beta, gr = -dh * beta;
      } else {  // ipo: the squared distance of the log-ratio margin from 1/(2β)
        const double h = ratio_c - ratio_r, d = h - 1.0 / (2.0 * beta);
        loss = d * d;
        gc = 2 * d, gr = -2 * d;
      }
    }
    total += loss;
    dlogp[c] = gc / double(P), dlogp[r] = gr / double(P);
    correct += reward_c > reward_r, margin += reward_c - reward_r;
    rc_sum += reward_c, rr_sum += reward_r, lc_sum += pc, lr_sum += pr;
  }
  // log π(row) = −Σ losses[n] over its counted positions, so d loss / d losses[n] = −d loss / d log π.
  weights_.assign(std::size_t(R * T), 0.0f);
  const std::int32_t* tg = labels.targets.i32();
  for (std::int64_t n = 0; n < R * T; ++n)
    if (tg[n] != kIgnoreIndex) weights_[std::size_t(n)] = static_cast<float>(-dlogp[std::size_t(n / T)]);
  const double p = double(P);
  metrics_ = {{"reward_accuracy", correct / p}, {"reward_margin", margin / p}, {"reward_chosen", rc_sum / p},
              {"reward_rejected", rr_sum / p},  {"logp_chosen", lc_sum / p},  {"logp_rejected", lr_sum / p}};
  ready_ = true;
  return static_cast<float>(total / p);
}

void PreferenceLoss::backward(TensorRef dlogits) {
  LLMTK_CHECK(ready_, "preference loss", "backward() needs a forward() first");
  losses_.backward(dlogits, weights_);
}

// ---- GRPO ----------------------------------------------------------------------------------------

GrpoLoss::GrpoLoss(GrpoLossOptions o) : options_(o) {
  LLMTK_CHECK(options_.beta >= 0, "grpo loss", "beta must be >= 0, got ", options_.beta);
  LLMTK_CHECK(options_.clip > 0 && options_.clip < 1, "grpo loss", "clip must be in (0, 1), got ", options_.clip);
}

float GrpoLoss::forward(TensorRef logits, const Labels& labels) {
  constexpr const char* where = "grpo loss";
  LLMTK_CHECK(labels.targets.rank == 2, where, "targets must be [R, T], got ", labels.targets.shape_str());
  const std::int64_t R = labels.targets.size(0), T = labels.targets.size(1);
  auto host_f32 = [&](TensorRef t, std::int64_t n, const char* what) {
    LLMTK_CHECK(t && t.dtype == DType::f32 && t.numel() == n && t.device == Device::host, where, what, " must be ", n,
                " f32 host values");
    return t.f32();
  };
  LLMTK_CHECK(labels.advantages && (labels.advantages.numel() == R || labels.advantages.numel() == R * T), where,
              "labels.advantages must be [", R, "] (per reply) or [", R, ", ", T, "] (per token), got ", labels.advantages.shape_str());
  const bool per_token = labels.advantages.numel() == R * T;
  const float* adv = host_f32(labels.advantages, labels.advantages.numel(), "labels.advantages");
  // The reference's log-probabilities: the KL term when beta > 0, the kl metric whenever given (PPO).
  const float* ref = options_.beta > 0 || labels.reference ? host_f32(labels.reference, R * T, "labels.reference (per position)") : nullptr;
  const float* old = labels.behaviour ? host_f32(labels.behaviour, R * T, "labels.behaviour") : nullptr;
  const auto& losses = losses_.forward(logits, labels.targets, where, options_.temperature);
  const std::int32_t* tg = labels.targets.i32();
  weights_.assign(std::size_t(R * T), 0.0f);
  double total = 0, kl = 0, clipped = 0, entropy = 0, tokens = 0;
  for (std::int64_t i = 0; i < R; ++i) {
    std::int64_t n = 0;
    for (std::int64_t t = 0; t < T; ++t) n += tg[i * T + t] != kIgnoreIndex;
    if (n == 0) continue;  // a row with nothing to learn (padding)
    const double scale = 1.0 / (double(n) * double(R));
    for (std::int64_t t = 0; t < T; ++t) {
      const std::size_t k = std::size_t(i * T + t);
      if (tg[k] == kIgnoreIndex) continue;
      const double a = per_token ? adv[k] : adv[i];
      const double lp = -double(losses[k]);
      const double rho = old ? std::exp(lp - double(old[k])) : 1.0;
      const double lo = 1 - options_.clip, hi = 1 + options_.clip;
      // min(ρA, clip(ρ)A) takes the clipped term (whose gradient is 0) when ρ is outside the
      // range on the side where the advantage would push it further.
      const bool clip = (a > 0 && rho > hi) || (a < 0 && rho < lo);
      const double surrogate = std::min(rho * a, std::clamp(rho, lo, hi) * a);
      double l = -surrogate, dl = clip ? 0.0 : -a * rho;  // d l / d log π
      if (ref) {
        const double d = double(ref[k]) - lp;  // log(π_ref / π)
        l += options_.beta * (std::exp(d) - d - 1);
        dl += options_.beta * (1 - std::exp(d));
        kl += std::exp(d) - d - 1;
      }
      total += scale * l;
      // log π = −losses[k], so d loss / d losses[k] = −d loss / d log π.
      weights_[k] = static_cast<float>(-scale * dl);
      clipped += clip, entropy += -lp, tokens += 1;
    }
  }
  metrics_ = {{"kl", tokens ? kl / tokens : 0.0}, {"clip_fraction", tokens ? clipped / tokens : 0.0},
              {"entropy", tokens ? entropy / tokens : 0.0}};
  tokens_ = tokens;
  ready_ = true;
  return static_cast<float>(total);
}

void GrpoLoss::backward(TensorRef dlogits) {
  LLMTK_CHECK(ready_, "grpo loss", "backward() needs a forward() first");
  losses_.backward(dlogits, weights_);
}

}  // namespace llmtk

namespace llmtk {

// ---- reward model: Bradley–Terry ------------------------------------------------------------

std::vector<float> outputs_on_host(TensorRef outputs) {
  const std::size_t n = std::size_t(outputs.numel());
  std::vector<float> out(n);
  if (outputs.dtype == DType::f32) {
    copy_bytes(out.data(), Device::host, outputs.data, outputs.device, n * sizeof(float));
  } else {
    LLMTK_CHECK(outputs.dtype == DType::bf16, "outputs", "f32 or bf16 expected, got ", name_of(outputs.dtype));
    std::vector<bf16> h(n);
    copy_bytes(h.data(), Device::host, outputs.data, outputs.device, n * sizeof(bf16));
    for (std::size_t i = 0; i < n; ++i) out[i] = float(h[i]);
  }
  return out;
}

void write_outputs(TensorRef dst, const std::vector<float>& values) {
  LLMTK_CHECK(std::int64_t(values.size()) == dst.numel(), "outputs", values.size(), " values for ", dst.shape_str());
  if (dst.dtype == DType::f32) return copy_bytes(dst.data, dst.device, values.data(), Device::host, values.size() * sizeof(float));
  std::vector<bf16> h(values.size());
  for (std::size_t i = 0; i < values.size(); ++i) h[i] = bf16(values[i]);
  copy_bytes(dst.data, dst.device, h.data(), Device::host, h.size() * sizeof(bf16));
}

std::vector<std::int64_t> score_positions(const std::int32_t* targets, std::int64_t rows, std::int64_t T) {
  std::vector<std::int64_t> at(std::size_t(rows), -1);
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t t = T - 1; t >= 0; --t)
      if (targets[r * T + t] != kIgnoreIndex) {
        at[std::size_t(r)] = t + 1 < T ? t + 1 : t;  // a row cut at T: its last position
        break;
      }
  return at;
}

float BradleyTerryLoss::forward(TensorRef scores, const Labels& labels) {
  constexpr const char* where = "bradley_terry loss";
  LLMTK_CHECK(labels.targets && labels.targets.rank == 2 && labels.targets.size(0) % 2 == 0 &&
                  labels.targets.device == Device::host,
              where, "targets must be [2P, T] in host memory: P chosen rows, then the P rejected rows of the same prompts; got ",
              labels.targets.shape_str());
  const std::int64_t R = labels.targets.size(0), T = labels.targets.size(1), P = R / 2;
  LLMTK_CHECK(scores.numel() == R * T, where, "the model's outputs must be scores [", R, ", ", T,
              ", 1] (a score head: model.arch NAME", "+score), got ", scores.shape_str());
  const std::vector<float> s = outputs_on_host(scores);
  at_ = score_positions(labels.targets.i32(), R, T);
  reward_.assign(std::size_t(R), 0.0);
  for (std::int64_t r = 0; r < R; ++r)
    if (at_[std::size_t(r)] >= 0) reward_[std::size_t(r)] = s[std::size_t(r * T + at_[std::size_t(r)])];
  dscores_.assign(std::size_t(R * T), 0.0f);
  double total = 0, correct = 0, margin = 0, rc = 0, rr = 0;
  for (std::int64_t j = 0; j < P; ++j) {
    const std::size_t c = std::size_t(j), r = std::size_t(P + j);
    LLMTK_CHECK(at_[c] >= 0 && at_[r] >= 0, where, "pair ", j, " has a reply with no counted target");
    const double m = reward_[c] - reward_[r];
    total += -log_sigmoid(m);
    const double g = -sigmoid(-m) / double(P);  // d loss / d r_c; d loss / d r_r = −g
    dscores_[std::size_t(std::int64_t(c) * T + at_[c])] = static_cast<float>(g);
    dscores_[std::size_t(std::int64_t(r) * T + at_[r])] = static_cast<float>(-g);
    correct += m > 0, margin += m, rc += reward_[c], rr += reward_[r];
  }
  const double p = double(P);
  metrics_ = {{"reward_accuracy", correct / p}, {"reward_margin", margin / p}, {"reward_chosen", rc / p},
              {"reward_rejected", rr / p}};
  ready_ = true;
  return static_cast<float>(total / p);
}

void BradleyTerryLoss::backward(TensorRef dscores) {
  LLMTK_CHECK(ready_, "bradley_terry loss", "backward() needs a forward() first");
  write_outputs(dscores, dscores_);
}

}  // namespace llmtk

namespace llmtk {

// ---- PPO's critic --------------------------------------------------------------------------------

float ValueLoss::forward(TensorRef values, const Labels& labels) {
  constexpr const char* where = "value loss";
  LLMTK_CHECK(labels.targets && labels.targets.rank == 2 && labels.targets.device == Device::host, where,
              "targets must be [R, T] in host memory, got ", labels.targets.shape_str());
  const std::int64_t R = labels.targets.size(0), T = labels.targets.size(1);
  LLMTK_CHECK(values.numel() == R * T, where, "the critic's outputs must be values [", R, ", ", T, ", 1] (a score head), got ",
              values.shape_str());
  LLMTK_CHECK(labels.returns && labels.returns.dtype == DType::f32 && labels.returns.numel() == R * T &&
                  labels.returns.device == Device::host,
              where, "labels.returns must be ", R * T, " f32 host values");
  values_ = outputs_on_host(values);
  const std::int32_t* tg = labels.targets.i32();
  const float* g = labels.returns.f32();
  double n = 0, sum = 0;
  for (std::int64_t k = 0; k < R * T; ++k) n += tg[k] != kIgnoreIndex;
  dvalues_.assign(std::size_t(R * T), 0.0f);
  weight_ = n;
  sums_ = {n, 0, 0, 0, 0};
  for (std::int64_t k = 0; k < R * T; ++k) {
    if (tg[k] == kIgnoreIndex) continue;
    const double e = double(values_[std::size_t(k)]) - g[k];
    sum += 0.5 * e * e;
    dvalues_[std::size_t(k)] = static_cast<float>(e / n);
    sums_[1] += g[k], sums_[2] += double(g[k]) * g[k], sums_[3] -= e, sums_[4] += e * e;
  }
  ready_ = true;
  return n > 0 ? static_cast<float>(sum / n) : 0.0f;
}

// Variances from sums (Σx² − (Σx)²/n): what ranks can add. In double, over returns and errors of
// order one, the cancellation costs nothing measurable.
Metrics ValueLoss::metrics_of(const Sums& s) {
  const double n = s[0];
  if (n == 0) return {{"value_loss", 0.0}, {"explained_variance", 0.0}};
  const double var_g = s[2] - s[1] * s[1] / n, var_err = s[4] - s[3] * s[3] / n;
  return {{"value_loss", 0.5 * s[4] / n}, {"explained_variance", var_g > 0 ? 1 - var_err / var_g : 0.0}};
}

void ValueLoss::backward(TensorRef dvalues) {
  LLMTK_CHECK(ready_, "value loss", "backward() needs a forward() first");
  write_outputs(dvalues, dvalues_);
}

}  // namespace llmtk

namespace llmtk {

float VocabParallelLoss::forward(TensorRef logits, const Labels& labels) {
  constexpr const char* where = "parallel cross-entropy";
  LLMTK_CHECK(logits && (logits.dtype == DType::f32 || logits.dtype == DType::bf16) && logits.rank >= 2, where,
              "takes f32 or bf16 logits [..., V / tp], got ", name_of(logits.dtype), " ", logits.shape_str());
  const std::int64_t N = logits.rows(), V = logits.size(-1), v0 = V * ranks_.rank();
  LLMTK_CHECK(labels.targets && labels.targets.dtype == DType::i32 && labels.targets.numel() == N, where,
              "targets must be ", N, " i32 values (one per position), got ", labels.targets.shape_str());
  LLMTK_CHECK(!labels.weights || (labels.weights.dtype == DType::f32 && labels.weights.numel() == N), where,
              "weights must be ", N, " f32 values (one per position), got ", labels.weights.shape_str());
  if (N != rows_ || !io_.allocated() || io_.device() != logits.device) {
    io_ = Arena("parallel cross-entropy");
    targets_io_ = io_.add("targets", {N}, DType::i32);
    stats_io_ = io_.add("stats", {N, 2});
    lse_io_ = io_.add("lse", {N});
    scale_io_ = io_.add("scale", {N});
    io_.allocate(memory_of(logits.device));
    rows_ = N;
  }
  logits_ = logits.view({N, V});
  targets_.resize(std::size_t(N));
  copy_bytes(targets_.data(), Device::host, labels.targets.data, labels.targets.device, targets_.size() * sizeof(std::int32_t));
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets_[std::size_t(n)];
    LLMTK_CHECK(t == kIgnoreIndex || (t >= 0 && t < V * ranks_.size()), where, "target ", t, " at position ", n,
                " is outside the vocabulary of ", V * ranks_.size());
  }
  io_.write(targets_io_, targets_.data());
  weights_.clear();
  if (labels.weights) {
    weights_.resize(std::size_t(N));
    copy_bytes(weights_.data(), Device::host, labels.weights.data, labels.weights.device, weights_.size() * sizeof(float));
  }
  // This rank's columns of each row: their log-sum-exp, and the target's logit where this rank
  // holds the target (0 elsewhere: the sum over ranks is that one logit). 2N floats to the host.
  ops::vocab_parallel_ce_forward(io_[stats_io_], logits_, io_[targets_io_], int(v0), kIgnoreIndex);
  stats_.resize(std::size_t(2 * N));
  io_.read(stats_io_, stats_.data());
  local_lse_.resize(std::size_t(N));
  target_logit_.resize(std::size_t(N));
  for (std::int64_t n = 0; n < N; ++n) local_lse_[std::size_t(n)] = stats_[std::size_t(2 * n)], target_logit_[std::size_t(n)] = stats_[std::size_t(2 * n + 1)];
  const int P = ranks_.size();
  gathered_.resize(std::size_t(N) * std::size_t(P));
  ranks_.all_gather(TensorRef(local_lse_.data(), DType::f32, {N}), TensorRef(gathered_.data(), DType::f32, {N * P}),
                    "each row's log-sum-exp over this rank's columns (parallel cross-entropy)");
  ranks_.all_reduce_sum(target_logit_.data(), N, "the targets' logits (parallel cross-entropy)");
  // Every rank combines the same numbers in the same order: the same log-sum-exp everywhere.
  lse_.assign(std::size_t(N), 0.0f);
  double sum = 0;
  counted_ = 0, weight_sum_ = 0;
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets_[std::size_t(n)];
    if (t == kIgnoreIndex) continue;
    double m = -INFINITY;
    for (int r = 0; r < P; ++r) m = std::max(m, double(gathered_[std::size_t(r) * std::size_t(N) + std::size_t(n)]));
    double s = 0;
    for (int r = 0; r < P; ++r) s += std::exp(double(gathered_[std::size_t(r) * std::size_t(N) + std::size_t(n)]) - m);
    const double lse = m + std::log(s);
    lse_[std::size_t(n)] = float(lse);
    ++counted_;
    const double loss = lse - target_logit_[std::size_t(n)];
    if (weights_.empty()) {
      sum += float(loss);
      continue;
    }
    const float w = weights_[std::size_t(n)];
    LLMTK_CHECK(std::isfinite(w) && w >= 0, where, "the weight of position ", n, " is ", w,
                "; weights must be finite and >= 0 (0 leaves a position out)");
    sum += double(w) * float(loss);
    weight_sum_ += w;
  }
  if (weights_.empty()) weight_sum_ = double(counted_);
  return weight_sum_ > 0 ? static_cast<float>(sum / weight_sum_) : 0.0f;
}

void VocabParallelLoss::backward(TensorRef dlogits) {
  LLMTK_CHECK(logits_, "parallel cross-entropy", "backward() needs a forward() first");
  LLMTK_CHECK(dlogits.numel() == logits_.numel() && dlogits.dtype == logits_.dtype && dlogits.device == logits_.device,
              "parallel cross-entropy", "dlogits must have the logits' shape ", logits_.shape_str(), ", dtype and device");
  const std::int64_t N = logits_.size(0);
  // Each row's factor, dloss · w[n] (0 where ignored), as NextTokenLoss's: 1 / counted as a float without weights.
  const double dloss = weight_sum_ <= 0 ? 0.0 : weights_.empty() ? double(1.0f / float(counted_)) : 1.0 / weight_sum_;
  scale_.assign(std::size_t(N), 0.0f);
  for (std::int64_t n = 0; n < N; ++n)
    if (targets_[std::size_t(n)] != kIgnoreIndex)
      scale_[std::size_t(n)] = float(dloss * (weights_.empty() ? 1.0 : double(weights_[std::size_t(n)])));
  io_.write(lse_io_, lse_.data());
  io_.write(scale_io_, scale_.data());
  ops::vocab_parallel_ce_backward(dlogits.view({N, logits_.size(1)}), logits_, io_[targets_io_], io_[lse_io_], io_[scale_io_],
                                  int(logits_.size(1) * ranks_.rank()));
}

}  // namespace llmtk
