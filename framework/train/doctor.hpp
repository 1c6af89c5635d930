// llmtk doctor: reads a run (metrics.jsonl, internals.jsonl, recipe.toml, the data's report and
// shards) and says what went wrong and what to try. Every finding carries its evidence (steps and
// numbers from the run) and the course page that explains it; with no evidence there is no
// finding, and a healthy run gets "no problems found". docs/learn/07-diagnose.md explains each
// check, its threshold and why.
#pragma once
#include <string>
#include <vector>

namespace llmtk::train {

struct Finding {
  std::string id;        // divergence, loss_spikes, no_progress, unigram_plateau, overfitting,
                         // exploding_gradients, vanishing_gradients, dead_units, expert_collapse,
                         // slow, tokenizer
  std::string title;     // what is wrong, one line
  std::string evidence;  // the numbers that show it, with their steps
  std::string advice;    // what to try
  std::string page;      // where the course explains it
};

struct Diagnosis {
  std::string run;
  std::vector<Finding> findings;
  std::vector<std::string> checked;  // what was examined ("loss curve: 100 points", ...)
  std::vector<std::string> skipped;  // what could not be, and why (no internals recorded, ...)
};

// Reads the run directory; an error names what is missing (no metrics.jsonl: not a run).
Diagnosis diagnose(const std::string& run_dir);
std::string to_text(const Diagnosis& d);
std::string to_json(const Diagnosis& d);

}  // namespace llmtk::train
