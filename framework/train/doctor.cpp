#include "doctor.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../data/shard.hpp"
#include "internals.hpp"
#include "recipe.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const char* kPage = "docs/learn/07-diagnose.md";

struct Curve {
  std::vector<double> step, v;
  bool empty() const { return v.empty(); }
};

struct RunMetrics {
  Curve loss, val, grad, mfu, tps;
  std::int64_t skipped = 0;
  double first_skip = NAN;     // the first logged step that counted a skipped step
  double nonfinite_step = NAN;  // the first logged step whose loss was not finite
};

std::string num(double v, const char* f = "%.3g") {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
std::string step_of(double s) { return num(s, "%.0f"); }

double median(std::vector<double> v) {
  std::erase_if(v, [](double x) { return !std::isfinite(x); });
  if (v.empty()) return NAN;
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(v.size() / 2), v.end());
  return v[v.size() / 2];
}

RunMetrics read_metrics(const std::string& dir) {
  const fs::path path = fs::path(dir) / "metrics.jsonl";
  LLMTK_CHECK(fs::exists(path), "doctor", "'", dir, "' has no metrics.jsonl; give a run directory (runs/NAME) that llmtk train wrote");
  RunMetrics m;
  std::ifstream in(path);
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.empty()) continue;
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() && in.peek() == std::char_traits<char>::eof()) break;  // a torn last line
    LLMTK_CHECK(j.is_object() && j.contains("step") && j["step"].is_number(), "doctor", path.string(), ":", lineno,
                ": not a metrics record (a JSON object with \"step\")");
    const double step = j["step"].get<double>();
    auto add = [&](Curve& c, const char* key) {
      if (j.contains(key) && j[key].is_number()) c.step.push_back(step), c.v.push_back(j[key].get<double>());
    };
    if (j.contains("loss")) {
      if (j["loss"].is_number() && std::isfinite(j["loss"].get<double>())) add(m.loss, "loss");
      else if (!std::isfinite(m.nonfinite_step)) m.nonfinite_step = step;
    }
    add(m.val, "val_loss"), add(m.grad, "grad_norm"), add(m.mfu, "mfu"), add(m.tps, "tokens_per_s");
    if (j.contains("skipped_steps") && j["skipped_steps"].is_number()) {
      m.skipped = std::max(m.skipped, j["skipped_steps"].get<std::int64_t>());
      if (!std::isfinite(m.first_skip)) m.first_skip = step;
    }
  }
  return m;
}

// A curve smoothed by the median of each point and its neighbours (k on each side): a single
// noisy batch is not a trend.
std::vector<double> smooth(const std::vector<double>& v, std::size_t k = 2) {
  std::vector<double> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::size_t a = i >= k ? i - k : 0, b = std::min(v.size(), i + k + 1);
    out[i] = median(std::vector<double>(v.begin() + std::ptrdiff_t(a), v.begin() + std::ptrdiff_t(b)));
  }
  return out;
}

// The unigram entropy of the training tokens, in nats: the loss of a model that knows how often
// each token occurs and nothing of its context. Read from the shards (a few million tokens at most
// for the course's corpora: one pass).
double unigram_entropy(const std::string& data_dir) {
  std::vector<std::uint64_t> count;
  std::uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(data_dir)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("train_") || e.path().extension() != ".bin") continue;
    const data::Shard s(e.path().string());
    if (count.size() < s.header().vocab_size) count.resize(s.header().vocab_size);
    for (std::uint64_t i = 0; i < s.size(); ++i) {
      const auto id = std::size_t(s[i]);
      if (id < count.size()) ++count[id], ++n;
    }
  }
  if (n == 0) return NAN;
  double h = 0;
  for (auto c : count)
    if (c) h -= double(c) / double(n) * std::log(double(c) / double(n));
  return h;
}

Finding finding(std::string id, std::string title, std::string evidence, std::string advice) {
  return {id, std::move(title), std::move(evidence), std::move(advice), std::string(kPage) + "#" + id};
}

// ---- the checks: each adds a finding only with its evidence --------------------------------------

// The loss rose well above its best, or became NaN/Inf (steps skipped).
bool check_divergence(const RunMetrics& m, const Recipe* r, Diagnosis& d) {
  std::string evidence;
  if (m.skipped > 0 || std::isfinite(m.nonfinite_step))
    evidence = std::to_string(std::max<std::int64_t>(m.skipped, 1)) + " step(s) had a non-finite loss or gradient (first logged at step " +
               step_of(std::isfinite(m.first_skip) ? m.first_skip : m.nonfinite_step) + ")";
  // Worse than guessing: a model's loss should never be far above ln V, the loss of a uniform guess
  // over the vocabulary (where training starts).
  if (r && !m.loss.empty()) {
    const double uniform = std::log(double(r->model.dims.vocab));
    const auto worst = std::size_t(std::max_element(m.loss.v.begin(), m.loss.v.end()) - m.loss.v.begin());
    if (m.loss.v[worst] > uniform + 1.0)
      evidence += std::string(evidence.empty() ? "" : "; ") + "the training loss reached " + num(m.loss.v[worst], "%.3f") + " at step " +
                  step_of(m.loss.step[worst]) + ", far above " + num(uniform, "%.3f") + " (ln " + std::to_string(r->model.dims.vocab) +
                  ": the loss of guessing uniformly, where training starts)";
  }
  // Or it fell, then rose well above its best for good: more than the batches' noise explains.
  const auto s = smooth(m.loss.v, std::max<std::size_t>(2, m.loss.v.size() / 15));
  if (s.size() >= 6 && evidence.empty()) {
    std::vector<double> residual;
    for (std::size_t i = 0; i < s.size(); ++i) residual.push_back(std::fabs(m.loss.v[i] - s[i]));
    const double noise = 1.4826 * median(residual);  // the standard deviation, from the median deviation
    const auto best = std::size_t(std::min_element(s.begin(), s.end()) - s.begin());
    const double end = s.back(), low = s[best];
    if (best + 3 < s.size() && end > low + std::max({0.5, 0.1 * low, 4 * noise}))
      evidence += "the training loss fell to " + num(low, "%.3f") + " at step " + step_of(m.loss.step[best]) + ", then rose to " +
                  num(end, "%.3f") + " by step " + step_of(m.loss.step.back()) + " (step-to-step noise: " + num(noise, "%.2f") + ")";
  }
  if (evidence.empty()) return false;
  std::string advice = "Lower optim.lr (by 3 to 10x)";
  if (r && r->schedule.warmup == 0) advice += ", add a warmup (schedule.warmup: a few percent of the steps; this run had none)";
  if (r && r->optim.grad_clip <= 0) advice += ", clip gradients (optim.grad_clip = 1.0; this run did not clip)";
  advice += ". Then train again: a diverged run does not recover by itself.";
  if (r) evidence += " (optim.lr = " + num(r->optim.lr) + ", schedule.warmup = " + std::to_string(r->schedule.warmup) + ")";
  d.findings.push_back(finding("divergence", "the run diverged: the loss blew up instead of falling", evidence, advice));
  return true;
}

// Single steps far above the loss around them (a run that recovers from each).
void check_spikes(const RunMetrics& m, const Recipe* r, Diagnosis& d) {
  const auto& v = m.loss.v;
  std::vector<std::string> at;
  double worst = 0;
  for (std::size_t i = 6; i < v.size(); ++i) {
    const std::vector<double> before(v.begin() + std::ptrdiff_t(i - 6), v.begin() + std::ptrdiff_t(i));
    const double mid = median(before);
    std::vector<double> dev;
    for (double x : before) dev.push_back(std::fabs(x - mid));
    const double jump = v[i] - mid;
    if (jump > std::max(0.5, 8 * median(dev))) at.push_back(step_of(m.loss.step[i])), worst = std::max(worst, jump);
  }
  if (at.empty()) return;
  std::string steps;
  for (std::size_t i = 0; i < std::min<std::size_t>(at.size(), 8); ++i) steps += (i ? ", " : "") + at[i];
  if (at.size() > 8) steps += ", ...";
  d.findings.push_back(finding("loss_spikes", "the loss spiked " + std::to_string(at.size()) + " time(s)",
                               "jumps of up to " + num(worst, "%.2f") + " nats above the loss just before, at step(s) " + steps +
                                   (r ? " (optim.lr = " + num(r->optim.lr) + ", optim.grad_clip = " + num(r->optim.grad_clip) + ")" : ""),
                               "Lower optim.lr or its peak (a longer schedule.warmup), set optim.grad_clip = 1.0 if it is off; "
                               "spikes that grow are the start of a divergence."));
}

// Hardly any progress from where the run started.
bool check_no_progress(const RunMetrics& m, const Recipe* r, const InternalsHistory& h, Diagnosis& d) {
  if (m.loss.v.size() < 6 || m.loss.step.back() < 100) return false;
  const auto s = smooth(m.loss.v);
  // Where training starts: ln V, the loss of a uniform guess (else the first logged loss). A model
  // that ends within a nat of it has learned almost nothing, not even token frequencies.
  const double start = r ? std::log(double(r->model.dims.vocab)) : m.loss.v.front(), end = s.back();
  if (!(end > start - (r ? 1.0 : 0.3))) return false;
  std::string evidence = "the training loss ended at " + num(end, "%.3f") + " (step " + step_of(m.loss.step.back()) + "), within " +
                         num(start - end, "%.2f") + " nats of " + num(start, "%.3f") +
                         (r ? " (ln " + std::to_string(r->model.dims.vocab) + ", the loss of guessing uniformly)" : " where it started");
  std::vector<double> ratios;
  for (std::size_t l = 0; l < h.layers.size(); ++l)
    if (const auto* row = h.row("update_ratio", l)) ratios.push_back(median(*row));
  if (const double u = median(ratios); std::isfinite(u))
    evidence += "; each step moved the weights by " + num(u) + " of their norm (median over layers; about 1e-3 is typical)";
  if (r) evidence += "; optim.lr = " + num(r->optim.lr);
  d.findings.push_back(finding("no_progress", "the model is not learning", evidence,
                               "Raise optim.lr (try 10x), check that the weights that should train are not frozen (train.freeze), "
                               "and that the data is what you expect (llmtk data inspect)."));
  return true;
}

// Stuck at the loss of token frequencies: the model ignores its context.
void check_unigram(const RunMetrics& m, const Recipe* r, double h1, Diagnosis& d) {
  if (!std::isfinite(h1) || m.loss.v.size() < 6 || m.loss.step.back() < 100) return;
  const auto s = smooth(m.loss.v);
  const std::size_t half = s.size() / 2;
  const double late_min = *std::min_element(s.begin() + std::ptrdiff_t(half), s.end()), end = s.back();
  if (!(late_min > h1 - 0.25 && end < h1 + 0.35)) return;
  std::string evidence = "the training loss stayed at " + num(end, "%.3f") + " from step " + step_of(m.loss.step[half]) + " to " +
                         step_of(m.loss.step.back()) + "; the unigram entropy of the training tokens is " + num(h1, "%.3f") +
                         " nats: the model predicts how often each token occurs, and nothing from its context";
  if (r) evidence += " (" + r->model.arch + ", optim.lr = " + num(r->optim.lr) + ", schedule.warmup = " + std::to_string(r->schedule.warmup) + ")";
  d.findings.push_back(finding("unigram_plateau", "the loss is stuck at the unigram entropy", evidence,
                               "A learning rate too high for the architecture without warmup (post-norm stacks need one), or too "
                               "low, or an initialisation that silences the blocks: lower optim.lr or raise schedule.warmup first, "
                               "then look at the internals' per-layer gradient norms (llmtk report)."));
}

// Validation loss rising while the training loss falls.
void check_overfitting(const RunMetrics& m, const std::string& data_dir, Diagnosis& d) {
  if (m.val.v.size() < 3 || m.loss.empty()) return;
  const auto best = std::size_t(std::min_element(m.val.v.begin(), m.val.v.end()) - m.val.v.begin());
  const double b = m.val.v[best], last = m.val.v.back();
  if (best + 1 >= m.val.v.size() || !(last > b + std::max(0.03, 0.01 * b))) return;
  auto train_at = [&](double step) {  // the smoothed training loss at the logged step nearest `step`
    const auto s = smooth(m.loss.v);
    std::size_t k = 0;
    for (std::size_t i = 0; i < m.loss.step.size(); ++i)
      if (std::fabs(m.loss.step[i] - step) < std::fabs(m.loss.step[k] - step)) k = i;
    return s[k];
  };
  const double t0 = train_at(m.val.step[best]), t1 = train_at(m.val.step.back());
  if (!(t1 < t0)) return;  // both rising: a divergence, not overfitting
  std::string evidence = "validation loss rose from " + num(b, "%.3f") + " (step " + step_of(m.val.step[best]) + ") to " +
                         num(last, "%.3f") + " (step " + step_of(m.val.step.back()) + ") while the training loss fell from " +
                         num(t0, "%.3f") + " to " + num(t1, "%.3f") + "; the gap grew from " + num(b - t0, "%.3f") + " to " +
                         num(last - t1, "%.3f");
  std::ifstream rep(fs::path(data_dir) / "report.json");
  const json j = rep ? json::parse(rep, nullptr, false) : json();
  if (j.is_object() && j.contains("split") && j["split"].contains("train") && j["split"]["train"].contains("tokens"))
    evidence += "; the training split holds " + j["split"]["train"]["tokens"].dump() + " tokens";
  d.findings.push_back(finding("overfitting", "the model is memorising its training data", evidence,
                               "Stop earlier (checkpoint.keep_best = true keeps the best validation checkpoint), train on more "
                               "data, or use a smaller model or more weight decay; many epochs over a small corpus do this."));
}

// Per-layer gradient norms from the internals: the first block's against the last block's.
void check_gradients(const InternalsHistory& h, Diagnosis& d) {
  std::vector<std::size_t> blocks;
  for (std::size_t l = 0; l < h.layers.size(); ++l)
    if (h.layers[l].find("blocks.") != std::string::npos && h.row("grad_norm", l)) blocks.push_back(l);
  if (blocks.size() < 2 || h.steps.size() < 2) return;
  const auto& first = *h.row("grad_norm", blocks.front());
  const auto& last = *h.row("grad_norm", blocks.back());
  std::vector<double> ratio;
  for (std::size_t k = h.steps.size() / 2; k < h.steps.size(); ++k) ratio.push_back(first[k] / last[k]);
  const double q = median(ratio);
  if (!std::isfinite(q)) return;
  const std::string ev = "over the second half of the run the gradient norm of " + h.layers[blocks.front()] + " is " + num(q) +
                         " times that of " + h.layers[blocks.back()] + " (median of " + std::to_string(ratio.size()) +
                         " records; last: " + num(first.back()) + " vs " + num(last.back()) + ")";
  if (q > 100)
    d.findings.push_back(finding("exploding_gradients", "gradients grow layer by layer toward the input", ev,
                                 "Use pre-norm blocks (or a warmup with post-norm), lower optim.lr, clip gradients "
                                 "(optim.grad_clip), and check the initialisation of the residual maps."));
  else if (q < 0.01)
    d.findings.push_back(finding("vanishing_gradients", "gradients fade layer by layer toward the input", ev,
                                 "The first layers hardly learn. Post-norm deep stacks do this: use pre-norm, or warm up longer "
                                 "with a lower learning rate."));
}

void check_dead_units(const InternalsHistory& h, Diagnosis& d) {
  // The median over the second half of the records: units that died and stayed dead. A healthy
  // ReLU stack has a few percent; GELU and SwiGLU none.
  std::string layers;
  for (std::size_t l = 0; l < h.layers.size(); ++l) {
    const auto* row = h.row("dead", l);
    if (!row) continue;
    const double dead = median(std::vector<double>(row->begin() + std::ptrdiff_t(row->size() / 2), row->end()));
    if (!(dead > 0.3)) continue;
    layers += (layers.empty() ? "" : ", ") + h.layers[l] + " " + num(100 * dead, "%.0f") + "%";
  }
  if (layers.empty()) return;
  d.findings.push_back(finding("dead_units", "many feed-forward units are dead",
                               "share of units near zero (|a| < 1e-3) on every token of a batch, median from step " +
                                   step_of(h.steps[h.steps.size() / 2]) + " to " + step_of(h.steps.back()) + ": " + layers,
                               "A unit whose input is negative on every token gets (almost) no gradient through ReLU-like "
                               "activations, so it rarely comes back: lower optim.lr or add a warmup (large early steps kill "
                               "units), and prefer GELU or SwiGLU to ReLU."));
}

void check_experts(const InternalsHistory& h, const Recipe* r, Diagnosis& d) {
  std::string layers;
  for (std::size_t l = 0; l < h.layers.size(); ++l) {
    const auto* row = h.row("router_top_share", l);
    if (!row || !std::isfinite(row->back()) || row->back() < 0.9) continue;
    layers += (layers.empty() ? "" : ", ") + h.layers[l] + " " + num(100 * row->back(), "%.0f") + "%";
  }
  if (layers.empty()) return;
  std::string even;
  if (r && r->model.dims.get("moe_experts") > 0)
    even = " (an even load sends " + num(100.0 * r->model.dims.get("moe_top_k") / r->model.dims.get("moe_experts"), "%.0f") +
           "% of tokens to each expert; model.moe_aux_coef = " + num(r->model.dims.get("moe_aux_coef")) + ")";
  d.findings.push_back(finding("expert_collapse", "one expert takes nearly all tokens",
                               "share of tokens routed to the busiest expert at step " + step_of(h.steps.back()) + ": " + layers + even,
                               "Raise the load-balancing loss (model.moe_aux_coef), lower optim.lr, or add router noise; a "
                               "collapsed router makes an MoE a dense model with unused experts."));
}

void check_speed(const RunMetrics& m, const Recipe* r, const std::string& dir, Diagnosis& d) {
  if (m.mfu.v.size() < 3) return;
  const double mfu = median(std::vector<double>(m.mfu.v.begin() + 1, m.mfu.v.end()));  // the first interval includes set-up
  if (!(mfu < 0.15)) return;  // a well-shaped small model reaches 0.4 to 0.7 of the peak on a CPU
  std::string evidence = "the median step used " + num(100 * mfu, "%.1f") + "% of this machine's measured matmul peak (MFU), " +
                         num(median(m.tps.v), "%.0f") + " tokens/s";
  if (r) evidence += "; batch " + std::to_string(r->train.batch) + " x seq " + std::to_string(r->train.seq) + " of " + r->model.arch;
  // A run trained with LLMTK_PROFILE=1 left its time per op (profile.json): name the op that dominates.
  std::ifstream in(fs::path(dir) / "profile.json");
  const json p = in ? json::parse(in, nullptr, false) : json();
  bool profiled = false;
  if (p.is_object() && p.contains("ops") && p["ops"].is_array() && !p["ops"].empty()) {
    double total = 0;
    for (const auto& o : p["ops"]) total += o.value("seconds", 0.0);
    const auto& top = p["ops"][0];
    if (total > 0 && top.contains("op") && top["op"].is_string()) {
      evidence += "; the op that took most of the time: " + top["op"].get<std::string>() + " (" +
                  num(100 * top.value("seconds", 0.0) / total, "%.0f") + "% of the time in ops, " +
                  std::to_string(top.value("calls", 0L)) + " calls; profile.json)";
      profiled = true;
    }
  }
  d.findings.push_back(finding("slow", "training runs far below the machine's speed", evidence,
                               std::string("Small matrices waste the machine: raise train.batch or train.seq (or the model's "
                                           "sizes), and check train.threads.") +
                                   (profiled ? "" : " Train again with LLMTK_PROFILE=1 and doctor names the op the time goes "
                                                    "to (profile.json in the run).")));
}

void check_tokenizer(const std::string& data_dir, const Recipe* r, Diagnosis& d) {
  std::ifstream rep(fs::path(data_dir) / "report.json");
  if (!rep) return;
  const json j = json::parse(rep, nullptr, false);
  if (!j.is_object() || !j.contains("tokens") || !j["tokens"].contains("bytes_per_token") || !j["tokens"]["bytes_per_token"].is_number())
    return;
  const double bpt = j["tokens"]["bytes_per_token"].get<double>();
  const std::int64_t vocab = r ? r->model.dims.vocab : 0;
  // A byte-level BPE of a few thousand tokens puts 3 to 5 bytes of English in a token; one that
  // barely merges (close to one byte per token) or merges whole phrases is not the corpus's.
  if (vocab >= 512 && bpt < 1.5)
    d.findings.push_back(finding("tokenizer", "the tokenizer barely compresses this corpus",
                                 num(bpt, "%.2f") + " bytes per token with a vocabulary of " + std::to_string(vocab) +
                                     " (a BPE of this size trained on the corpus gives about 3-5 for English)",
                                 "Train the tokenizer on this corpus ([tokenizer] in the data recipe) or pick a larger "
                                 "vocabulary; every token the model reads carries less text."));
  else if (bpt > 12)
    d.findings.push_back(finding("tokenizer", "the tokenizer merges far more than usual",
                                 num(bpt, "%.2f") + " bytes per token (a BPE of a few thousand tokens gives about 3-5 for English)",
                                 "Tokens this long are rare, so each is seen few times: a smaller vocabulary, or a "
                                 "tokenizer trained on more varied text."));
}

}  // namespace

Diagnosis diagnose(const std::string& run_dir) {
  Diagnosis d;
  d.run = run_dir;
  const RunMetrics m = read_metrics(run_dir);
  d.checked.push_back("loss curve: " + std::to_string(m.loss.v.size()) + " logged steps, " + std::to_string(m.val.v.size()) +
                      " validation points");
  std::unique_ptr<Recipe> recipe;
  const fs::path rp = fs::path(run_dir) / "recipe.toml";
  try {
    recipe = std::make_unique<Recipe>(read_recipe(rp.string()));
    d.checked.push_back("recipe: " + rp.string());
  } catch (const Error& e) {
    d.skipped.push_back("the recipe (" + rp.string() + "): " + e.what());
  }
  const Recipe* r = recipe.get();
  const InternalsHistory h = read_internals(run_dir);
  if (h.empty()) d.skipped.push_back("per-layer checks (gradients, dead units, experts): the run recorded no internals; train with [log] internals = true");
  else d.checked.push_back("internals: " + std::to_string(h.steps.size()) + " records of " + std::to_string(h.layers.size()) + " layers");
  double h1 = NAN;
  const bool next_token = r && !r->preference.enabled() && !r->rl.enabled() && !r->reward.enabled() && !r->classify.enabled() &&
                          !r->encoder && !r->seq2seq;
  if (next_token && !fs::is_directory(r->data.dir))
    d.skipped.push_back("the unigram plateau and the tokenizer: data.dir = \"" + r->data.dir + "\" is not here (run doctor from the "
                        "folder the run was trained in)");
  else if (next_token) {
    h1 = unigram_entropy(r->data.dir);
    if (std::isfinite(h1)) d.checked.push_back("unigram entropy of the training tokens: " + num(h1, "%.3f") + " nats");
  }

  if (!check_divergence(m, r, d)) {
    check_spikes(m, r, d);
    if (!check_no_progress(m, r, h, d)) check_unigram(m, r, h1, d);
    check_overfitting(m, r ? r->data.dir : "", d);
  }
  if (!h.empty()) {
    check_gradients(h, d);
    check_dead_units(h, d);
    check_experts(h, r, d);
  }
  check_speed(m, r, run_dir, d);
  if (r) check_tokenizer(r->data.dir, r, d);
  return d;
}

std::string to_text(const Diagnosis& d) {
  std::string s = "doctor: " + d.run + "\n";
  if (d.findings.empty()) s += "no problems found\n";
  for (std::size_t i = 0; i < d.findings.size(); ++i) {
    const Finding& f = d.findings[i];
    // Appended piece by piece: g++ 12 warns (-Wrestrict, a false positive) on "literal" + string chains.
    s += "\n";
    s += std::to_string(i + 1);
    s += ". " + f.title + " [" + f.id + "]\n   evidence: " + f.evidence + "\n   try: " + f.advice + "\n   read: " + f.page + "\n";
  }
  s += "\nchecked: ";
  for (std::size_t i = 0; i < d.checked.size(); ++i) s += (i ? "; " : "") + d.checked[i];
  s += "\n";
  for (const auto& k : d.skipped) s += "not checked: " + k + "\n";
  return s;
}

std::string to_json(const Diagnosis& d) {
  json f = json::array();
  for (const auto& x : d.findings)
    f.push_back({{"id", x.id}, {"title", x.title}, {"evidence", x.evidence}, {"advice", x.advice}, {"page", x.page}});
  return json{{"run", d.run}, {"findings", f}, {"checked", d.checked}, {"not_checked", d.skipped}}.dump(2);
}

}  // namespace llmtk::train
