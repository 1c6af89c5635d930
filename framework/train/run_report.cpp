#include "run_report.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../report/svg.hpp"
#include "../models/registry.hpp"
#include "checkpoint.hpp"  // write_file_atomically, the runs' checkpoints
#include "internals.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;

namespace {
struct Run {
  std::string name;
  report::Series loss, val, lr, grad, tps;
  double final_loss = NAN, best_val = NAN, tokens_per_s = NAN, elapsed = NAN;
  std::int64_t steps = 0;
  std::string arch = "–", params = "–";  // from the run's newest checkpoint, when it has one
  bool perplexity = false;                // its validation loss is a next-token loss (val_ppl logged)
  // The objective's own measurements (metrics.jsonl keys beyond the trainer's), in order of appearance.
  std::vector<std::pair<std::string, report::Series>> extra;
};

// Keys every run writes; any other numeric key is an objective's measurement and gets a chart.
bool trainer_key(const std::string& k) {
  for (const char* t : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_memory_bytes", "elapsed_s", "val_loss", "val_ppl"})
    if (k == t) return true;
  return false;
}

// The chart a measurement goes on: "val_" and "_chosen"/"_rejected" removed, so training and
// validation, chosen and rejected share one (reward_accuracy, val_reward_accuracy → reward_accuracy).
std::string chart_of(std::string k) {
  if (k.starts_with("val_")) k.erase(0, 4);
  // An MoE router's load per expert (moe_load_0 ... moe_load_7): one chart, a line per expert.
  if (k.starts_with("moe_load_") && k.size() > 9 && k.find_first_not_of("0123456789", 9) == std::string::npos)
    return "moe_load";
  for (const char* suffix : {"_chosen", "_rejected"})
    if (k.ends_with(suffix)) k.erase(k.size() - std::string(suffix).size());
  return k;
}

std::string chart_title(const std::string& chart, bool pairs) {
  if (chart == "reward" && pairs) return "rewards of chosen and rejected replies";
  if (chart == "logp" && pairs) return "log-probability of chosen and rejected replies";
  if (chart == "moe_load") return "router load per expert (share of tokens x experts: 1 = an even share)";
  if (chart == "moe_aux") return "load-balancing statistic (k when even)";
  std::string t = chart;
  for (char& c : t)
    if (c == '_') c = ' ';
  return t;
}

// "2,396,160"
std::string grouped(std::int64_t n) {
  const std::string d = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < d.size(); ++i) {
    if (i && (d.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(d[i]);
  }
  return out;
}

// The part of a series from step `from` on: where runs that start alike differ.
report::Series from_step(const report::Series& s, double from) {
  report::Series out{s.name, {}, {}};
  for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
    if (s.x[i] >= from) out.x.push_back(s.x[i]), out.y.push_back(s.y[i]);
  return out;
}

std::string fmt(double v, const char* f = "%.4g") { return report::format_number(v, f); }

// [log] internals: layer × step heat maps, per-layer lines of the gradient and update sizes, and
// the last record's attention entropy per head (train/internals.hpp).
std::string internals_section(const std::string& dir) {
  const InternalsHistory h = read_internals(dir);
  if (h.empty()) return {};
  std::string name = fs::path(dir).filename().string();
  if (name.empty()) name = fs::path(dir).parent_path().filename().string();
  std::string body = "<h2>Training internals: " + report::escape_html(name) + "</h2><p>Recorded every " +
                     (h.steps.size() > 1 ? fmt(h.steps[1] - h.steps[0], "%.0f") : std::string("–")) +
                     " steps (<code>[log] internals</code>); rows are layers from the input (top) to the output, "
                     "columns are steps. <code>llmtk doctor</code> reads the same numbers.</p><div class=charts>";
  struct Map {
    const char* key;
    const char* title;
    bool log;
  };
  for (const Map& m : {Map{"grad_norm", "gradient norm per layer (log scale)", true},
                       Map{"update_ratio", "update / weight norm per layer (log scale; ~1e-3 is typical)", true},
                       Map{"act_std", "standard deviation of each block's output", false},
                       Map{"act_max", "largest |activation| of each block's output (log scale)", true},
                       Map{"dead", "share of dead feed-forward units", false},
                       Map{"attn_entropy", "attention entropy, mean over heads (nats)", false},
                       Map{"router_top_share", "share of tokens at the busiest expert", false}}) {
    const auto it = h.values.find(m.key);
    if (it == h.values.end()) continue;
    // Only the layers that measured the quantity (blocks have activations, the embedding does not).
    std::vector<std::string> rows;
    std::vector<std::vector<double>> values;
    for (std::size_t l = 0; l < h.layers.size(); ++l)
      if (std::any_of(it->second[l].begin(), it->second[l].end(), [](double v) { return std::isfinite(v); }))
        rows.push_back(h.layers[l]), values.push_back(it->second[l]);
    if (!rows.empty()) body += report::heat_map(m.title, rows, h.steps, values, "step", m.log);
  }
  for (const Map& m : {Map{"grad_norm", "gradient norm per layer", true}, Map{"update_ratio", "update / weight norm per layer", true}}) {
    std::vector<report::Series> lines;
    for (std::size_t l = 0; l < h.layers.size(); ++l)
      if (const auto* row = h.row(m.key, l)) lines.push_back({h.layers[l], h.steps, *row});
    if (!lines.empty()) body += report::line_chart(m.title, lines, "step", m.key, m.log);
  }
  std::vector<std::string> rows;
  std::vector<std::vector<double>> per_head;
  std::size_t heads = 0;
  for (std::size_t l = 0; l < h.last_entropy.size(); ++l)
    if (!h.last_entropy[l].empty()) rows.push_back(h.layers[l]), per_head.push_back(h.last_entropy[l]), heads = std::max(heads, h.last_entropy[l].size());
  if (!rows.empty()) {
    std::vector<double> x;
    for (std::size_t i = 0; i < heads; ++i) x.push_back(double(i));
    body += report::heat_map("attention entropy per head at step " + fmt(h.steps.back(), "%.0f") + " (nats; low: a head that looks at few tokens)",
                             rows, x, per_head, "head");
  }
  return body + "</div>";
}
}  // namespace

std::string write_run_report(const std::vector<std::string>& dirs, const std::string& out) {
  LLMTK_CHECK(!dirs.empty(), "report", "give at least one run directory");
  std::vector<Run> runs;
  for (const auto& d : dirs) {
    const fs::path m = fs::path(d) / "metrics.jsonl";
    LLMTK_CHECK(fs::exists(m), "report", "'", d, "' has no metrics.jsonl; is it a run directory (runs/NAME)?");
    Run r;
    r.name = fs::path(d).filename().string();
    if (r.name.empty()) r.name = fs::path(d).parent_path().filename().string();
    r.loss.name = r.val.name = r.lr.name = r.grad.name = r.tps.name = r.name;
    std::ifstream in(m);
    std::string line;
    int lineno = 0;
    while (std::getline(in, line)) {
      ++lineno;
      if (line.empty()) continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        fail("report", m.string(), ":", lineno, ": not a JSON line");
      }
      const double step = j.value("step", 0.0);
      r.steps = std::max<std::int64_t>(r.steps, std::int64_t(step));
      auto add = [&](report::Series& s, const char* key) {
        if (j.contains(key) && j[key].is_number()) s.x.push_back(step), s.y.push_back(j[key].get<double>());
      };
      add(r.loss, "loss"), add(r.val, "val_loss"), add(r.lr, "lr"), add(r.grad, "grad_norm"), add(r.tps, "tokens_per_s");
      if (j.contains("loss")) r.final_loss = j["loss"];
      if (j.contains("val_loss") && j["val_loss"].is_number())
        r.best_val = std::isfinite(r.best_val) ? std::min(r.best_val, j["val_loss"].get<double>()) : j["val_loss"].get<double>();
      if (j.contains("elapsed_s")) r.elapsed = j["elapsed_s"];
      r.perplexity |= j.contains("val_ppl");
      for (const auto& [key, value] : j.items()) {
        if (trainer_key(key) || !value.is_number()) continue;
        auto it = std::find_if(r.extra.begin(), r.extra.end(), [&k = key](const auto& e) { return e.first == k; });
        if (it == r.extra.end()) it = r.extra.insert(r.extra.end(), {key, report::Series{r.name + " " + key, {}, {}}});
        it->second.x.push_back(step), it->second.y.push_back(value.get<double>());
      }
    }
    try {  // the architecture and its size, from the checkpoint (a run stopped before one has none)
      const CheckpointState st = read_checkpoint_state(best_or_newest_checkpoint(d));
      auto model = make_model(st.arch, st.dims);
      model->plan(1, 1);
      r.arch = st.arch, r.params = grouped(model->param_count());
    } catch (const Error&) {
    }
    if (!r.tps.y.empty()) {
      double s = 0;
      for (double v : r.tps.y) s += v;
      r.tokens_per_s = s / double(r.tps.y.size());
    }
    runs.push_back(std::move(r));
  }
  auto collect = [&](report::Series Run::*member, const std::string& suffix = "") {
    std::vector<report::Series> s;
    for (const auto& r : runs) {
      s.push_back(r.*member);
      s.back().name += suffix;
    }
    return s;
  };
  std::string body = "<h1>Training report</h1><p>" + std::to_string(runs.size()) + " run(s)</p><div class=charts>";
  // A next-token loss is a cross-entropy; a preference or RL objective's loss is its own quantity.
  bool lm = true;
  for (const auto& r : runs) lm &= r.perplexity || r.extra.empty();
  const char* loss_axis = lm ? "cross-entropy" : "loss";
  if (runs.size() == 1) {
    std::vector<report::Series> losses = collect(&Run::loss, " train");
    for (auto& v : collect(&Run::val, " val")) losses.push_back(v);
    body += report::line_chart("loss", losses, "step", loss_axis);
  } else {
    // Several runs: one line per run and chart, and the second half again on its own scale, where
    // runs that start alike differ by less than the first steps' drop.
    double last = 0;
    for (const auto& r : runs) last = std::max(last, double(r.steps));
    std::vector<report::Series> late, late_val;
    for (const auto& r : runs) late.push_back(from_step(r.loss, last / 2)), late_val.push_back(from_step(r.val, last / 2));
    // RL measures no held-out loss: no validation charts then, rather than empty ones.
    const bool any_val = std::any_of(runs.begin(), runs.end(), [](const Run& r) { return !r.val.y.empty(); });
    body += report::line_chart("training loss", collect(&Run::loss), "step", loss_axis);
    if (any_val) body += report::line_chart("validation loss", collect(&Run::val), "step", loss_axis);
    body += report::line_chart("training loss, second half", late, "step", loss_axis);
    if (any_val) body += report::line_chart("validation loss, second half", late_val, "step", loss_axis);
  }
  // The objectives' measurements: one chart per quantity, every run's training and validation
  // series (and chosen and rejected) on it.
  std::vector<std::string> charts;
  for (const auto& r : runs)
    for (const auto& [key, series] : r.extra)
      if (std::find(charts.begin(), charts.end(), chart_of(key)) == charts.end()) charts.push_back(chart_of(key));
  for (const auto& chart : charts) {
    // Several runs: their held-out series where they have them (the comparison that matters, and
    // half the lines).
    bool held_out = false;
    for (const auto& r : runs)
      for (const auto& [key, series] : r.extra) held_out |= runs.size() > 1 && chart_of(key) == chart && key.starts_with("val_");
    std::vector<report::Series> lines;
    for (const auto& r : runs)
      for (const auto& [key, series] : r.extra)
        if (chart_of(key) == chart && (!held_out || key.starts_with("val_"))) lines.push_back(series);
    bool pairs = false;  // chosen and rejected series: a preference objective's
    for (const auto& l : lines) pairs |= l.name.ends_with("_chosen") || l.name.ends_with("_rejected");
    body += report::line_chart(chart_title(chart, pairs), lines, "step", chart);
  }
  body += report::line_chart("learning rate", collect(&Run::lr), "step", "lr");
  body += report::line_chart("gradient norm (before clipping)", collect(&Run::grad), "step", "‖g‖", true);
  body += report::line_chart("throughput", collect(&Run::tps), "step", "tokens/s");
  double best = INFINITY;
  for (const auto& r : runs)
    if (std::isfinite(r.best_val)) best = std::min(best, r.best_val);
  body += "</div><h2>Final numbers</h2><table><tr><th>run</th><th>arch</th><th>params</th><th>steps</th><th>last train loss</th>"
          "<th>best val loss</th><th>vs the best run</th><th>best val perplexity</th><th>mean tokens/s</th><th>time</th></tr>";
  for (const auto& r : runs) {
    const bool is_best = runs.size() > 1 && r.best_val == best;
    body += "<tr><td>" + report::escape_html(r.name) + "</td><td>" + report::escape_html(r.arch) + "</td><td class=n>" +
            r.params + "</td><td class=n>" + std::to_string(r.steps) + "</td><td class=n>" + fmt(r.final_loss) +
            "</td><td class=n>" + (is_best ? "<b>" + fmt(r.best_val) + "</b>" : fmt(r.best_val)) + "</td><td class=n>" +
            (std::isfinite(best) && std::isfinite(r.best_val) ? fmt(r.best_val - best, "%+.4f") : std::string("–")) +
            "</td><td class=n>" + (r.perplexity ? fmt(std::exp(r.best_val), "%.1f") : std::string("–")) + "</td><td class=n>" + fmt(r.tokens_per_s, "%.0f") +
            "</td><td class=n>" + fmt(r.elapsed, "%.0f s") + "</td></tr>";
  }
  body += "</table>";
  for (const auto& d : dirs) body += internals_section(d);
  if (runs.size() > 1)
    body += "<p>One seed per run: a difference smaller than the spread between seeds of one recipe is noise (train each "
            "with a few values of train.seed to see that spread).</p>";
  write_file_atomically(out, report::html_page("llmtk training report", body), "report");
  return "report: " + out;
}

}  // namespace llmtk::train
