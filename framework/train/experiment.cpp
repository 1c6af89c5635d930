#include "experiment.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "../config/config.hpp"
#include "../core/error.hpp"
#include "../core/text.hpp"
#include "../models/registry.hpp"
#include "../report/svg.hpp"
#include "recipe.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// ---- the experiment file -------------------------------------------------------------------

ExperimentSpec read_experiment(const std::string& path) {
  ConfigFile file(path);
  auto root = file.root();
  ExperimentSpec s;
  s.file = path;
  auto e = root.table("experiment");
  s.name = e.string("name", fs::path(path).stem().string());
  const std::string recipe = e.string("recipe", "");
  LLMTK_CHECK(!recipe.empty(), path, "[experiment] recipe is missing: the base recipe every run starts from, "
              "e.g. recipe = \"../recipes/quickstart.toml\" (relative to this file)");
  s.recipe = fs::path(recipe).is_absolute() ? recipe : (fs::path(path).parent_path() / recipe).lexically_normal().string();
  LLMTK_CHECK(fs::is_regular_file(s.recipe), path, "[experiment] recipe = \"", recipe, "\": no such file (", s.recipe,
              "; the path is relative to the experiment file's folder)");
  s.seeds.clear();
  for (const std::int64_t seed : e.integers("seeds", {1}, 0, INT64_MAX)) s.seeds.push_back(std::uint64_t(seed));
  LLMTK_CHECK(!s.seeds.empty(), path, "[experiment] seeds is an empty list; give at least one, e.g. seeds = [1, 2]");
  LLMTK_CHECK(std::set<std::uint64_t>(s.seeds.begin(), s.seeds.end()).size() == s.seeds.size(), path,
              "[experiment] seeds repeats a seed; each must differ");
  s.combine = e.string("combine", s.combine, {"product", "zip"});
  s.jobs = int(e.integer("jobs", 1, 1, 64));
  s.scaling = e.boolean("scaling", false);
  auto b = root.table("budget");
  int given = 0;
  for (const char* kind : {"steps", "tokens", "flops"})
    if (b.has(kind)) {
      ++given;
      s.budget_kind = kind;
      s.budget = b.number(kind, 0, 1, 1e30);
    }
  LLMTK_CHECK(given == 1, path, given == 0 ? "[budget] is missing" : "[budget] gives more than one budget",
              ": set exactly one of steps = N (optimizer steps), tokens = N (training tokens per run) or "
              "flops = F (training FLOPs per run), so that every run gets the same");
  s.sets.clear();
  for (auto& [k, v] : root.values_by_name("set", false)) s.sets.emplace_back(k, v.front());
  s.axes = root.values_by_name("axes", true);
  LLMTK_CHECK(!s.axes.empty(), path, "[axes] is empty: give at least one recipe key with a list of values, "
              "e.g. \"optim.lr\" = [1e-3, 3e-3]");
  for (const auto& [k, v] : s.axes) {
    LLMTK_CHECK(!v.empty(), path, "[axes] \"", k, "\" is an empty list; give it at least one value");
    for (const auto& [fixed, value] : s.sets)
      LLMTK_CHECK(fixed != k, path, "\"", k, "\" is both in [set] and in [axes]; keep one");
  }
  file.reject_unknown_keys();
  return s;
}

namespace {

// "ffn[*]": every variant of the ablation ffn, in registration order.
std::vector<std::string> expand_arch(const std::string& file, const std::string& value) {
  if (!value.ends_with("[*]")) {
    try {
      (void)find_arch(value);  // fails with the registered names
    } catch (const Error& err) {
      fail(file, "[axes] \"model.arch\": ", err.what());
    }
    return {value};
  }
  const std::string group = value.substr(0, value.size() - 3);
  std::vector<std::string> out, groups;
  for (const auto& a : architectures()) {
    if (a.group == group) out.push_back(a.name);
    if (!a.group.empty() && std::find(groups.begin(), groups.end(), a.group) == groups.end()) groups.push_back(a.group);
  }
  if (out.empty()) {
    std::string known;
    for (const auto& g : groups) known += (known.empty() ? "" : ", ") + g + "[*]";
    const std::string best = closest(group, groups);
    fail(file, "[axes] \"model.arch\" = \"", value, "\": no ablation is registered as '", group, "'",
         best.empty() ? std::string() : cat(" (did you mean ", best, "[*]?)"), "; registered ablations: ",
         known.empty() ? std::string("none") : known);
  }
  return out;
}

std::string run_id(int point, std::uint64_t seed) {
  char b[48];
  std::snprintf(b, sizeof b, "p%02d-s%llu", point, static_cast<unsigned long long>(seed));
  return b;
}

}  // namespace

std::vector<ExperimentRun> plan_experiment(const ExperimentSpec& spec_in) {
  const ExperimentSpec& spec = spec_in;
  // The axes' values, with "NAME[*]" expanded.
  std::vector<std::pair<std::string, std::vector<std::string>>> axes;
  for (const auto& [k, v] : spec.axes) {
    std::vector<std::string> values;
    for (const auto& x : v) {
      if (k == "model.arch") {
        for (auto& a : expand_arch(spec.file, x)) values.push_back(a);
      } else {
        values.push_back(x);
      }
    }
    axes.emplace_back(k, values);
  }
  // Each key alone first, so that a bad key is named as the file's, not as a --set. The run's
  // length is the budget's, so the base recipe needs none (a stand-in here).
  const std::string length = "train.steps=1000000", no_tokens = "train.tokens=0";
  for (const auto& [k, v] : axes) {
    try {
      (void)read_recipe(spec.recipe, {length, no_tokens, k + "=" + v.front()});
    } catch (const Error& err) {
      fail(spec.file, "[axes] \"", k, "\": ", err.what());
    }
  }
  for (const auto& [k, v] : spec.sets) {
    try {
      (void)read_recipe(spec.recipe, {length, no_tokens, k + "=" + v});
    } catch (const Error& err) {
      fail(spec.file, "[set] \"", k, "\": ", err.what());
    }
  }
  // The points.
  std::vector<KeyValues> points;
  if (spec.combine == "zip") {
    const std::size_t n = axes.front().second.size();
    for (const auto& [k, v] : axes)
      LLMTK_CHECK(v.size() == n, spec.file, "combine = \"zip\" takes the axes' i-th values together, so every axis "
                  "needs as many values: \"", axes.front().first, "\" has ", n, ", \"", k, "\" has ", v.size());
    for (std::size_t i = 0; i < n; ++i) {
      KeyValues p;
      for (const auto& [k, v] : axes) p.emplace_back(k, v[i]);
      points.push_back(p);
    }
  } else {
    points.emplace_back();
    for (const auto& [k, v] : axes) {
      std::vector<KeyValues> next;
      for (const auto& p : points)
        for (const auto& x : v) {
          KeyValues q = p;
          q.emplace_back(k, x);
          next.push_back(q);
        }
      points = next;
    }
  }
  std::vector<ExperimentRun> runs;
  for (std::size_t i = 0; i < points.size(); ++i) {
    for (const std::uint64_t seed : spec.seeds) {
      ExperimentRun r;
      r.point = int(i), r.seed = seed, r.keys = points[i], r.id = run_id(int(i), seed);
      for (const auto& [k, v] : spec.sets) r.sets.push_back(k + "=" + v);
      for (const auto& [k, v] : points[i]) r.sets.push_back(k + "=" + v);
      r.sets.push_back("train.seed=" + std::to_string(seed));
      r.sets.push_back(length), r.sets.push_back(no_tokens);  // replaced by the budget's below
      std::string where;
      for (const auto& [k, v] : points[i]) where += (where.empty() ? "" : ", ") + k + " = " + v;
      Recipe recipe;
      try {
        recipe = read_recipe(spec.recipe, r.sets);
      } catch (const Error& err) {
        fail(spec.file, "the point ", where, ": ", err.what());
      }
      // Recipes name their data relative to the folder llmtk runs in; a run would only find out after
      // every run before it.
      LLMTK_CHECK(recipe.data.dir.empty() || fs::is_directory(recipe.data.dir), spec.file, "the point ", where,
                  ": data.dir = \"", recipe.data.dir, "\" is not a folder here (", fs::current_path().string(),
                  "); run llmtk from the folder the recipe's paths are relative to (the repository's root for "
                  "the shipped experiments, after ./setup.sh), or set \"data.dir\" in [set]");
      r.tokens_per_step = recipe.rows() * recipe.train.seq * recipe.train.grad_accum;
      std::unique_ptr<AnyModel> model;
      try {
        model = find_arch(recipe.model.arch).make(recipe.model.dims);
      } catch (const Error& err) {
        fail(spec.file, "the point ", where, ": ", err.what());
      }
      model->plan(1, 1);
      r.params = model->param_count();
      r.train_flops_per_token = 3 * model->forward_flops_per_token(recipe.train.seq);
      double steps = 0;
      if (spec.budget_kind == "steps") steps = std::floor(spec.budget);
      else if (spec.budget_kind == "tokens") steps = std::floor(spec.budget / double(r.tokens_per_step));
      else steps = std::floor(spec.budget / (r.train_flops_per_token * double(r.tokens_per_step)));
      LLMTK_CHECK(steps >= 1, spec.file, "[budget] ", spec.budget_kind, " = ", spec.budget,
                  " is less than one step of the point ", where, " (a step is ", r.tokens_per_step, " tokens, ",
                  r.train_flops_per_token * double(r.tokens_per_step), " FLOPs); raise the budget");
      r.steps = std::int64_t(steps);
      LLMTK_CHECK(recipe.schedule.warmup < r.steps, spec.file, "the point ", where, " has ", r.steps,
                  " steps within the budget, not more than schedule.warmup (", recipe.schedule.warmup,
                  "); raise the budget or lower the warmup");
      r.sets.pop_back(), r.sets.pop_back();
      r.sets.push_back("train.steps=" + std::to_string(r.steps));
      r.sets.push_back("train.tokens=0");
      runs.push_back(r);
    }
  }
  return runs;
}

// ---- results -------------------------------------------------------------------------------

namespace {

// What a run's metrics.jsonl says, read once: the training and validation curves and the time. A
// resumed run's elapsed_s starts from 0 again: the time before each restart is added back.
struct Curve {
  std::vector<double> step, val, loss, loss_step, elapsed;  // val at step[i], elapsed[i] s into the run
  std::int64_t steps = 0;
  double tokens_per_s = 0;  // mean over the logged steps after the first
  double seconds = 0;       // the whole run's time
};
Curve read_curve(const std::string& run_dir) {
  const std::string path = (fs::path(run_dir) / "metrics.jsonl").string();
  std::ifstream in(path);
  LLMTK_CHECK(in.good(), path, "cannot be read: the run did not write its metrics");
  Curve c;
  std::string line;
  double offset = 0, last = 0, tps_sum = 0;
  int tps_n = 0;
  while (std::getline(in, line)) {
    const json m = json::parse(line, nullptr, false);
    if (m.is_discarded() || !m.is_object()) continue;
    const auto step = m.value("step", std::int64_t(0));
    c.steps = std::max(c.steps, step);
    if (m.contains("elapsed_s")) {
      const double e = m["elapsed_s"].get<double>();
      if (e < last) offset += last;
      last = e;
    }
    if (m.contains("tokens_per_s") && step > 1) tps_sum += m["tokens_per_s"].get<double>(), ++tps_n;
    if (m.contains("loss")) c.loss_step.push_back(double(step)), c.loss.push_back(m["loss"].get<double>());
    if (m.contains("val_loss"))
      c.step.push_back(double(step)), c.val.push_back(m["val_loss"].get<double>()), c.elapsed.push_back(offset + last);
  }
  c.seconds = offset + last;
  c.tokens_per_s = tps_n ? tps_sum / tps_n : 0;
  return c;
}

}  // namespace

RunResult collect_run(const ExperimentRun& run, const std::string& run_dir) {
  RunResult r;
  r.id = run.id, r.point = run.point, r.seed = run.seed, r.keys = run.keys, r.sets = run.sets;
  r.params = run.params, r.run_dir = run_dir;
  const Curve c = read_curve(run_dir);
  r.steps = c.steps;
  if (!c.loss.empty()) r.final_loss = c.loss.back();
  r.final_val_loss = r.best_val_loss = NAN;
  for (double v : c.val) {  // a NaN (a diverged run) makes the best NaN too, as the table shows it
    r.final_val_loss = v;
    if (!(r.best_val_loss <= v)) r.best_val_loss = v;
  }
  r.seconds = c.seconds;
  r.tokens_per_s = c.tokens_per_s;
  r.tokens = r.steps * run.tokens_per_step;
  r.flops = double(r.tokens) * run.train_flops_per_token;
  return r;
}

std::string to_json_line(const RunResult& r) {
  json keys = json::object();
  for (const auto& [k, v] : r.keys) keys[k] = v;
  auto num = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  json j = {{"id", r.id}, {"point", r.point}, {"seed", r.seed}, {"keys", keys}, {"steps", r.steps},
            {"tokens", r.tokens}, {"params", r.params}, {"flops", r.flops}, {"final_loss", num(r.final_loss)},
            {"final_val_loss", num(r.final_val_loss)}, {"best_val_loss", num(r.best_val_loss)},
            {"tokens_per_s", r.tokens_per_s}, {"seconds", r.seconds}, {"run_dir", r.run_dir}, {"sets", r.sets}};
  return j.dump();
}

std::vector<RunResult> read_results(const std::string& path) {
  std::vector<RunResult> out;
  std::ifstream in(path);
  std::string line;
  auto num = [](const json& j, const char* k) { return j.contains(k) && j[k].is_number() ? j[k].get<double>() : NAN; };
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("id")) continue;
    RunResult r;
    r.id = j["id"].get<std::string>();
    r.point = j.value("point", 0), r.seed = j.value("seed", std::uint64_t(1));
    for (const auto& [k, v] : j["keys"].items()) r.keys.emplace_back(k, v.get<std::string>());
    r.steps = j.value("steps", std::int64_t(0)), r.tokens = j.value("tokens", std::int64_t(0));
    r.params = j.value("params", std::int64_t(0));
    r.flops = num(j, "flops"), r.final_loss = num(j, "final_loss"), r.final_val_loss = num(j, "final_val_loss");
    r.best_val_loss = num(j, "best_val_loss"), r.tokens_per_s = num(j, "tokens_per_s"), r.seconds = num(j, "seconds");
    r.run_dir = j.value("run_dir", std::string());
    r.sets = j.value("sets", std::vector<std::string>{});
    out.push_back(r);
  }
  return out;
}

// ---- the power law ---------------------------------------------------------------------------

namespace {

// Solves the 3×3 system A·x = b (Gaussian elimination with partial pivoting); false if singular.
bool solve3(double A[3][3], double b[3], double x[3]) {
  int idx[3] = {0, 1, 2};
  double M[3][4];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) M[i][j] = A[i][j];
    M[i][3] = b[i];
  }
  for (int c = 0; c < 3; ++c) {
    int p = c;
    for (int r = c + 1; r < 3; ++r)
      if (std::fabs(M[r][c]) > std::fabs(M[p][c])) p = r;
    if (std::fabs(M[p][c]) < 1e-300) return false;
    std::swap(M[p], M[c]);
    for (int r = 0; r < 3; ++r) {
      if (r == c) continue;
      const double f = M[r][c] / M[c][c];
      for (int k = c; k < 4; ++k) M[r][k] -= f * M[c][k];
    }
  }
  for (int i = 0; i < 3; ++i) x[idx[i]] = M[i][3] / M[i][i];
  return true;
}

}  // namespace

// Written here rather than taken from a library: Debian has GSL and Ceres, but a three-parameter
// fit is forty lines and keeps a solver out of the build. The model is fitted in u = log x with
// parameters (log a, alpha, c): a grid over c (below the smallest loss) with the exact log-linear
// fit of the other two at each c finds the basin; Levenberg–Marquardt on all three polishes it.
PowerLaw fit_power_law(const std::vector<double>& x, const std::vector<double>& y) {
  LLMTK_CHECK(x.size() == y.size() && x.size() >= 3, "fit_power_law", "needs at least 3 points (got ", x.size(), ")");
  const std::size_t n = x.size();
  for (std::size_t i = 0; i < n; ++i)
    LLMTK_CHECK(x[i] > 0 && std::isfinite(y[i]), "fit_power_law", "point ", i, " is (", x[i], ", ", y[i],
                "); x must be positive and y finite");
  std::vector<double> u(n);
  for (std::size_t i = 0; i < n; ++i) u[i] = std::log(x[i]);
  const double ymin = *std::min_element(y.begin(), y.end());
  auto sse = [&](double la, double al, double c) {
    double s = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double r = la - al * u[i];
      const double f = std::exp(r) + c - y[i];
      s += f * f;
    }
    return s;
  };
  double best[3] = {0, 0, 0}, best_sse = INFINITY;
  for (int g = 0; g <= 400; ++g) {
    // c from below (ymin - |ymin|) up to just under ymin.
    const double c = ymin - (std::fabs(ymin) + 1e-12) * std::pow(10.0, -4.0 + 4.0 * g / 400.0) * 1.0;
    double su = 0, sv = 0, suu = 0, suv = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double v = std::log(y[i] - c);
      su += u[i], sv += v, suu += u[i] * u[i], suv += u[i] * v;
    }
    const double den = double(n) * suu - su * su;
    if (std::fabs(den) < 1e-300) continue;
    const double slope = (double(n) * suv - su * sv) / den, icpt = (sv - slope * su) / double(n);
    const double s = sse(icpt, -slope, c);
    if (s < best_sse) best_sse = s, best[0] = icpt, best[1] = -slope, best[2] = c;
  }
  // Levenberg–Marquardt.
  double p[3] = {best[0], best[1], best[2]}, lambda = 1e-3, cur = sse(p[0], p[1], p[2]);
  double JtJ[3][3] = {};
  for (int it = 0; it < 200; ++it) {
    double g[3] = {0, 0, 0};
    for (auto& row : JtJ) row[0] = row[1] = row[2] = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const double e = std::exp(p[0] - p[1] * u[i]);
      const double J[3] = {e, -u[i] * e, 1.0};
      const double r = e + p[2] - y[i];
      for (int a = 0; a < 3; ++a) {
        g[a] += J[a] * r;
        for (int b = 0; b < 3; ++b) JtJ[a][b] += J[a] * J[b];
      }
    }
    double A[3][3], rhs[3] = {-g[0], -g[1], -g[2]}, d[3];
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) A[a][b] = JtJ[a][b] + (a == b ? lambda * (JtJ[a][a] + 1e-12) : 0);
    if (!solve3(A, rhs, d)) break;
    const double next = sse(p[0] + d[0], p[1] + d[1], p[2] + d[2]);
    if (next < cur) {
      p[0] += d[0], p[1] += d[1], p[2] += d[2];
      const bool done = cur - next < 1e-15 * (1 + cur);
      cur = next, lambda = std::max(lambda / 10, 1e-12);
      if (done) break;
    } else {
      lambda *= 10;
      if (lambda > 1e12) break;
    }
  }
  PowerLaw f;
  f.a = std::exp(p[0]), f.alpha = p[1], f.c = p[2], f.points = int(n);
  f.rms = std::sqrt(cur / double(n));
  f.alpha_se = f.c_se = NAN;
  if (n > 3) {
    // Covariance σ²·(JᵀJ)⁻¹ at the optimum: the columns of the inverse for alpha and c.
    const double s2 = cur / double(n - 3);
    for (int col : {1, 2}) {
      double A[3][3], e[3] = {0, 0, 0}, xcol[3];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) A[a][b] = JtJ[a][b];
      e[col] = 1;
      if (solve3(A, e, xcol)) (col == 1 ? f.alpha_se : f.c_se) = std::sqrt(std::max(0.0, s2 * xcol[col]));
    }
  }
  return f;
}

// ---- the report ------------------------------------------------------------------------------

namespace {

struct Stat {
  double mean = NAN, sd = NAN;
  int n = 0;
};
Stat stat_of(const std::vector<double>& v) {
  Stat s;
  std::vector<double> ok;
  for (double x : v)
    if (std::isfinite(x)) ok.push_back(x);
  s.n = int(ok.size());
  if (ok.empty()) return s;
  double m = 0;
  for (double x : ok) m += x;
  m /= double(ok.size());
  s.mean = m;
  if (ok.size() > 1) {
    double q = 0;
    for (double x : ok) q += (x - m) * (x - m);
    s.sd = std::sqrt(q / double(ok.size() - 1));  // the sample standard deviation
  }
  return s;
}

std::string fmt_num(double x, const char* f = "%.4f") { return report::format_number(x, f); }
std::string fmt_si(double x) {
  const char* units[] = {"", "K", "M", "G", "T", "P", "E"};
  int u = 0;
  while (std::fabs(x) >= 1000 && u < 6) x /= 1000, ++u;
  char b[32];
  std::snprintf(b, sizeof b, "%.3g%s", x, units[u]);
  return b;
}
std::string pm(const Stat& s) {
  if (!std::isfinite(s.mean)) return "–";
  return fmt_num(s.mean) + (std::isfinite(s.sd) ? " ± " + fmt_num(s.sd) : "");
}

}  // namespace

std::string write_experiment_report(const ExperimentSpec& spec, const std::vector<ExperimentRun>& plan,
                                    const std::vector<RunResult>& results, const std::string& out) {
  // Points in plan order; each with its finished runs.
  std::map<int, std::vector<const RunResult*>> by_point;
  for (const auto& r : results) by_point[r.point].push_back(&r);
  std::map<int, const ExperimentRun*> first_run;
  for (const auto& r : plan)
    if (!first_run.count(r.point)) first_run[r.point] = &r;
  std::vector<std::string> axis_keys;
  for (const auto& [k, v] : spec.axes) axis_keys.push_back(k);

  struct Row {
    int point;
    std::string label;
    KeyValues keys;
    Stat final_val, best_val, tps, seconds;
    std::int64_t params = 0;
    double flops = 0;
    int runs = 0;
  };
  std::vector<Row> rows;
  for (const auto& [point, runs] : by_point) {
    Row row;
    row.point = point;
    row.keys = runs.front()->keys;
    // A short legend name: "ffn=geglu" for an ablation variant, "lr=0.003" for a recipe key.
    for (const auto& [k, v] : row.keys) {
      std::string part = k.substr(k.rfind('.') + 1) + "=" + v;
      if (k == "model.arch" && v.ends_with("]") && v.find('[') != std::string::npos)
        part = v.substr(v.find('[') + 1, v.size() - v.find('[') - 2);
      row.label += (row.label.empty() ? "" : ", ") + part;
    }
    std::vector<double> fv, bv, tps, sec;
    for (const auto* r : runs) {
      fv.push_back(r->final_val_loss), bv.push_back(r->best_val_loss), tps.push_back(r->tokens_per_s);
      sec.push_back(r->seconds);
      row.params = r->params, row.flops = r->flops;
    }
    row.final_val = stat_of(fv), row.best_val = stat_of(bv), row.tps = stat_of(tps), row.seconds = stat_of(sec);
    row.runs = int(runs.size());
    rows.push_back(row);
  }
  // The best point by mean final validation loss; others within the seed-to-seed spread of it
  // (|difference| below the two points' standard deviations combined) are marked "~".
  const Row* best = nullptr;
  for (const auto& r : rows)
    if (std::isfinite(r.final_val.mean) && (!best || r.final_val.mean < best->final_val.mean)) best = &r;
  auto mark = [&](const Row& r) -> std::string {
    if (!best || !std::isfinite(r.final_val.mean)) return "";
    if (&r == best) return "best";
    if (!std::isfinite(r.final_val.sd) || !std::isfinite(best->final_val.sd)) return "? (one seed)";
    const double spread = std::sqrt(r.final_val.sd * r.final_val.sd + best->final_val.sd * best->final_val.sd);
    const double diff = r.final_val.mean - best->final_val.mean;
    return diff < spread ? "~ (within seed spread)" : "+" + fmt_num(diff, "%.3f");
  };

  // Markdown.
  std::string md = "| ";
  for (const auto& k : axis_keys) md += k + " | ";
  md += "params | train FLOPs | final val loss | best val loss | vs best | tokens/s | time (s) | seeds |\n|";
  for (std::size_t i = 0; i < axis_keys.size() + 8; ++i) md += "---|";
  md += "\n";
  for (const auto& r : rows) {
    md += "| ";
    for (const auto& [k, v] : r.keys) md += "`" + v + "` | ";
    md += fmt_si(double(r.params)) + " | " + fmt_si(r.flops) + " | " + pm(r.final_val) + " | " + pm(r.best_val) + " | " +
          mark(r) + " | " + fmt_num(r.tps.mean, "%.0f") + " | " + fmt_num(r.seconds.mean, "%.1f") + " | " +
          std::to_string(r.runs) + " |\n";
  }
  const std::size_t planned = plan.size();
  std::string header = "# Experiment " + spec.name + "\n\n" + std::to_string(results.size()) + " of " +
                       std::to_string(planned) + " runs finished; budget: " + spec.budget_kind + " = " +
                       fmt_si(spec.budget) + " per run. Mean ± standard deviation over seeds. `~`: the difference "
                       "from the best is smaller than the seed-to-seed spread, so this run does not tell them apart.\n\n";

  // Scaling: the fitted laws.
  std::string scaling_md, scaling_html, scaling_svg;
  if (spec.scaling && rows.size() >= 3) {
    std::vector<double> n, c, l;
    for (const auto& r : rows)
      if (std::isfinite(r.final_val.mean)) n.push_back(double(r.params)), c.push_back(r.flops), l.push_back(r.final_val.mean);
    if (n.size() >= 3) {
      auto law_text = [](const char* var, const PowerLaw& f) {
        return std::string("L(") + var + ") = " + fmt_num(f.a, "%.4g") + "·" + var + "^(−" + fmt_num(f.alpha, "%.3f") +
               (std::isfinite(f.alpha_se) ? " ± " + fmt_num(f.alpha_se, "%.3f") : std::string()) + ") + " +
               fmt_num(f.c, "%.3f") + (std::isfinite(f.c_se) ? " ± " + fmt_num(f.c_se, "%.3f") : std::string()) +
               "  (rms residual " + fmt_num(f.rms, "%.4f") + ", " + std::to_string(f.points) + " points)";
      };
      const PowerLaw fn = fit_power_law(n, l), fc = fit_power_law(c, l);
      scaling_md = "\n## Scaling\n\n- " + law_text("N", fn) + ", N = parameters\n- " + law_text("C", fc) +
                   ", C = training FLOPs\n";
      auto law_chart = [&](const char* title, const std::vector<double>& x, const PowerLaw& f, const char* xl) {
        report::Series pts{"runs (mean over seeds)", {}, {}}, fit{"fit", {}, {}};
        for (std::size_t i = 0; i < x.size(); ++i) pts.x.push_back(std::log10(x[i])), pts.y.push_back(l[i]);
        std::vector<std::size_t> order(x.size());
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
        std::vector<double> px, py;
        for (auto i : order) px.push_back(pts.x[i]), py.push_back(pts.y[i]);
        pts.x = px, pts.y = py;
        const double lo = std::log10(x[order.front()]), hi = std::log10(x[order.back()]);
        for (int i = 0; i <= 40; ++i) {
          const double lx = lo + (hi - lo) * i / 40.0;
          fit.x.push_back(lx), fit.y.push_back(f.a * std::pow(std::pow(10.0, lx), -f.alpha) + f.c);
        }
        return report::line_chart(title, {pts, fit}, xl, "final val loss", true);
      };
      scaling_svg = law_chart("loss against parameters", n, fn, "log10 parameters");
      scaling_html = "<h2>Scaling</h2><p>" + report::escape_html(law_text("N", fn)) + " (N: parameters)<br>" +
                     report::escape_html(law_text("C", fc)) + " (C: training FLOPs)</p><div class='charts'>" + scaling_svg +
                     law_chart("loss against compute", c, fc, "log10 training FLOPs");
      // Iso-FLOP: each run's validation curve read at fixed compute levels; loss against size.
      std::vector<std::pair<double, Curve>> curves;  // (params, curve in FLOPs)
      for (const auto& r : rows) {
        const auto* first = by_point[r.point].front();
        Curve cv = read_curve(first->run_dir);
        const double per_step = first->flops / double(std::max<std::int64_t>(first->steps, 1));
        for (auto& s : cv.step) s *= per_step;
        if (cv.step.size() >= 2) curves.emplace_back(double(r.params), cv);
      }
      if (curves.size() >= 3) {
        double lo = INFINITY, hi = 0;
        for (const auto& [p, cv] : curves) lo = std::min(lo, cv.step.back()), hi = std::max(hi, cv.step[1]);
        std::vector<report::Series> iso;
        if (hi < lo) {
          for (int k = 0; k < 4; ++k) {
            const double C = std::exp(std::log(hi) + (std::log(lo) - std::log(hi)) * k / 3.0);
            report::Series s{"C = " + fmt_si(C) + "FLOP", {}, {}};
            for (const auto& [p, cv] : curves) {
              for (std::size_t i = 1; i < cv.step.size(); ++i)
                if (cv.step[i] >= C) {
                  const double t = (C - cv.step[i - 1]) / (cv.step[i] - cv.step[i - 1]);
                  s.x.push_back(std::log10(p)), s.y.push_back(cv.val[i - 1] + t * (cv.val[i] - cv.val[i - 1]));
                  break;
                }
            }
            if (s.x.size() >= 2) iso.push_back(s);
          }
        }
        if (!iso.empty())
          scaling_html += report::line_chart("iso-FLOP: loss against size at fixed compute", iso, "log10 parameters",
                                             "val loss", false);
      }
    }
  }

  // Curves: per point, the mean over its seeds at each evaluation.
  std::vector<report::Series> by_step, by_tokens, by_flops, by_time, train_loss;
  for (const auto& r : rows) {
    std::map<double, std::vector<double>> val, el, tl;
    const auto& runs = by_point[r.point];
    for (const auto* run : runs) {
      const Curve cv = read_curve(run->run_dir);
      for (std::size_t i = 0; i < cv.step.size(); ++i) val[cv.step[i]].push_back(cv.val[i]), el[cv.step[i]].push_back(cv.elapsed[i]);
      for (std::size_t i = 0; i < cv.loss.size(); ++i) tl[cv.loss_step[i]].push_back(cv.loss[i]);
    }
    const auto* first = runs.front();
    const double tokens_per_step = double(first->tokens) / double(std::max<std::int64_t>(first->steps, 1));
    const double flops_per_step = first->flops / double(std::max<std::int64_t>(first->steps, 1));
    report::Series s{r.label, {}, {}}, t{r.label, {}, {}}, f{r.label, {}, {}}, w{r.label, {}, {}}, tr{r.label, {}, {}};
    for (const auto& [step, v] : val) {
      const double m = stat_of(v).mean;
      s.x.push_back(step), s.y.push_back(m);
      t.x.push_back(step * tokens_per_step), t.y.push_back(m);
      f.x.push_back(step * flops_per_step), f.y.push_back(m);
      w.x.push_back(stat_of(el[step]).mean), w.y.push_back(m);
    }
    // Training loss, smoothed over a window of ~2% of the run (it is noisy step to step).
    std::vector<double> xs, ys;
    for (const auto& [step, v] : tl) xs.push_back(step), ys.push_back(stat_of(v).mean);
    const std::size_t win = std::max<std::size_t>(1, xs.size() / 50);
    for (std::size_t i = 0; i + win <= xs.size(); i += win) {
      double m = 0;
      for (std::size_t j = i; j < i + win; ++j) m += ys[j];
      tr.x.push_back(xs[i + win - 1]), tr.y.push_back(m / double(win));
    }
    by_step.push_back(s), by_tokens.push_back(t), by_flops.push_back(f), by_time.push_back(w), train_loss.push_back(tr);
  }

  const std::string title = "Experiment " + spec.name;
  std::string body = "<h1>" + report::escape_html(title) + "</h1><p>" +
                     report::escape_html(std::to_string(results.size()) + " of " + std::to_string(planned) +
                                         " runs finished; budget " + spec.budget_kind + " = " + fmt_si(spec.budget) +
                                         " per run; mean ± standard deviation over seeds; ~ marks a difference from "
                                         "the best smaller than the seed-to-seed spread.") +
                     "</p><table><tr>";
  for (const auto& k : axis_keys) body += "<th>" + report::escape_html(k) + "</th>";
  body += "<th>params</th><th>train FLOPs</th><th>final val loss</th><th>best val loss</th><th>vs best</th>"
          "<th>tokens/s</th><th>time (s)</th><th>seeds</th></tr>";
  for (const auto& r : rows) {
    body += "<tr>";
    for (const auto& [k, v] : r.keys) body += "<td>" + report::escape_html(v) + "</td>";
    body += "<td>" + fmt_si(double(r.params)) + "</td><td>" + fmt_si(r.flops) + "</td><td>" + report::escape_html(pm(r.final_val)) +
            "</td><td>" + report::escape_html(pm(r.best_val)) + "</td><td>" + report::escape_html(mark(r)) + "</td><td>" +
            fmt_num(r.tps.mean, "%.0f") + "</td><td>" + fmt_num(r.seconds.mean, "%.1f") + "</td><td>" +
            std::to_string(r.runs) + "</td></tr>";
  }
  body += "</table>" + (scaling_html.empty() ? std::string() : scaling_html + "</div>") + "<h2>Curves</h2><div class='charts'>";
  const std::string val_chart = report::line_chart("validation loss by step (mean over seeds)", by_step, "step", "val loss");
  body += val_chart;
  body += report::line_chart("validation loss by tokens", by_tokens, "tokens", "val loss");
  body += report::line_chart("validation loss by training FLOPs", by_flops, "FLOPs", "val loss");
  body += report::line_chart("validation loss by wall time", by_time, "seconds", "val loss");
  body += report::line_chart("training loss (smoothed)", train_loss, "step", "loss") + "</div>";
  fs::create_directories(out);
  // The charts alone too, for pages that show results (docs/experiments.md), with the styles the
  // HTML page would give them.
  auto standalone = [](std::string svg) {
    const auto end = svg.find('>');
    return svg.insert(end + 1, "<style>text{font-family:system-ui,sans-serif}.t{font-size:13px;font-weight:600}"
                               ".a{font-size:10px;fill:#444}.grid{stroke:#eee}</style><rect width='100%' "
                               "height='100%' fill='white'/>");
  };
  std::ofstream(fs::path(out) / "val_loss.svg") << standalone(val_chart);
  if (!scaling_svg.empty()) std::ofstream(fs::path(out) / "scaling.svg") << standalone(scaling_svg);
  {
    std::ofstream f(fs::path(out) / "report.html");
    f << report::html_page(title, body);
  }
  const std::string md_all = header + md + scaling_md;
  {
    std::ofstream f(fs::path(out) / "results.md");
    f << md_all;
  }
  return md_all;
}

}  // namespace llmtk::train
