// The trainer: data → forward → loss → backward → clip → optimizer → schedule → metrics →
// eval / checkpoint, driven by a recipe. Writes into a run directory:
//   recipe.toml            the resolved recipe
//   metrics.jsonl          one JSON object per logged step and per evaluation
//   internals.jsonl        per-layer internals every log.internals_every steps (train/internals.hpp)
//   checkpoints/step_N/    model.safetensors, optimizer.safetensors, state.json
//   checkpoints/best/      the checkpoint with the lowest validation loss
//   samples.txt            text sampled at each evaluation (when log.sample_prompt is set)
//   profile.json           seconds and calls per op (when LLMTK_PROFILE is set; ops/profile.hpp)
// The run directory is TrainOptions::run_dir; else, resuming, the run the checkpoint belongs to;
// else runs/<recipe name>/. A directory that holds another run (or, resuming from an earlier
// checkpoint, later checkpoints of this one) is refused before anything is written unless
// TrainOptions::overwrite is set (docs/training.md, "Run directories").
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "checkpoint.hpp"  // find_checkpoint
#include "recipe.hpp"

namespace llmtk::train {

struct TrainOptions {
  std::string run_dir;   // default: runs/<recipe name>/
  std::string resume;    // a run directory or a checkpoint directory; the run continues in the
                         // run it belongs to unless run_dir says otherwise
  bool overwrite = false;  // replace a run already in run_dir (or, resuming from an earlier
                           // checkpoint, the later checkpoints it would abandon)
  std::string init;      // start from these weights: a Transformers directory (config.json) or an
                         // llmtk run or checkpoint (weights only: a new run at step 0)
  std::function<void(const std::string&)> log;  // one line at a time; default: stdout
  bool progress_bar = false;                    // redraw one line on a terminal
  std::int64_t stop_after = 0;                  // stop (with a checkpoint) after this step; 0: run to the end
};

struct TrainResult {
  std::int64_t steps = 0;
  double loss = 0, val_loss = 0;
  std::string run_dir, checkpoint;
  bool interrupted = false;
  int signal = 0;  // the signal that interrupted the run (SIGINT, SIGTERM), 0 if none
  bool writer = true;  // this process wrote the run's files (false: a rank other than 0 of a distributed run)
};


TrainResult train(const Recipe& recipe, const TrainOptions& options);

// This machine's matmul throughput on the active backend and precision, in FLOP/s: the
// denominator of MFU for the trainer and `llmtk bench step`. LLMTK_MATMUL_PEAK_GFLOPS replaces
// the measurement.
double measure_matmul_peak_flops();
// LLMTK_MATMUL_PEAK_GFLOPS in FLOP/s, if set; a value that is not a positive number fails, naming
// the variable. Commands call it at start-up so a bad value stops them before any work.
std::optional<double> matmul_peak_override();

}  // namespace llmtk::train
