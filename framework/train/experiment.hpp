// Experiments (docs/experiments.md): a base recipe, axes of recipe keys with lists of values,
// seeds and a budget, expanded into runs that are each an ordinary `llmtk train`; their results
// gathered into one table, curves and (for scale sweeps) a fitted power law. This file plans and
// reports; tools/llmtk/experiment_cmd.cpp starts the runs.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace llmtk::train {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

struct ExperimentSpec {
  std::string file;       // the experiment's TOML file
  std::string name;       // results go to runs/experiments/NAME unless --out
  std::string recipe;     // the base recipe, as a path from the current directory
  std::vector<std::uint64_t> seeds{1};
  std::string combine = "product";  // or "zip"
  int jobs = 1;                       // runs at a time
  std::string budget_kind;            // "steps", "tokens" or "flops"
  double budget = 0;
  KeyValues sets;                                                    // every run
  std::vector<std::pair<std::string, std::vector<std::string>>> axes;  // in file order
  bool scaling = false;  // plot and fit loss against parameters and compute
};

// Reads and checks the file's own syntax (unknown keys, empty lists, a missing budget).
ExperimentSpec read_experiment(const std::string& path);

// One training run: a point of the axes and a seed.
struct ExperimentRun {
  std::string id;           // "p03-s2"
  int point = 0;            // the axes' point, 0-based
  std::uint64_t seed = 1;
  KeyValues keys;           // the axes' values at this point
  std::vector<std::string> sets;  // every --set of the run (fixed, axes, seed, steps)
  std::int64_t steps = 0, tokens_per_step = 0, params = 0;
  double train_flops_per_token = 0;  // 3 × forward
};

// Every run, each recipe read with its --sets and its model made (not allocated): a key that does
// not exist, a value a recipe refuses, an architecture that is not registered or a budget below
// one step fails here, naming the experiment file and the point, before anything runs.
std::vector<ExperimentRun> plan_experiment(const ExperimentSpec& spec);

// What one finished run measured, from its run directory (metrics.jsonl), as a results.jsonl line.
struct RunResult {
  std::string id;
  int point = 0;
  std::uint64_t seed = 1;
  KeyValues keys;
  std::vector<std::string> sets;
  std::int64_t steps = 0, tokens = 0, params = 0;
  double flops = 0, final_loss = 0, final_val_loss = 0, best_val_loss = 0, tokens_per_s = 0, seconds = 0;
  std::string run_dir;
};
RunResult collect_run(const ExperimentRun& run, const std::string& run_dir);
std::string to_json_line(const RunResult& r);
// results.jsonl: the runs finished so far (lines that do not parse, a torn last line, are skipped).
std::vector<RunResult> read_results(const std::string& path);

// L(x) = a·x^(−alpha) + c fitted by least squares; *_se: standard errors from the fit's
// covariance (NaN with only three points).
struct PowerLaw {
  double a = 0, alpha = 0, c = 0;
  double alpha_se = 0, c_se = 0, rms = 0;
  int points = 0;
};
PowerLaw fit_power_law(const std::vector<double>& x, const std::vector<double>& y);

// results.md and report.html in `out`, from the finished runs; returns the Markdown table.
std::string write_experiment_report(const ExperimentSpec& spec, const std::vector<ExperimentRun>& plan,
                                    const std::vector<RunResult>& results, const std::string& out);

}  // namespace llmtk::train
