// Checkpoints: one directory per checkpoint with model.safetensors, optimizer.<state>.safetensors
// and state.json (step, data position, architecture and sizes, tokenizer and its hash, losses, the
// resolved recipe). This module is the only code that writes or reads state.json; the trainer and
// the command line call it.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "../core/dims.hpp"
#include "../data/tokenizer.hpp"
#include "../models/model.hpp"
#include "finetune.hpp"
#include "optimizer.hpp"

namespace llmtk::train {

// What state.json records.
struct CheckpointState {
  std::int64_t step = 0;
  std::string arch;
  Dims dims;
  std::vector<std::string> frozen;      // the model's freeze patterns
  LoraConfig lora;                      // LoRA adapters the model carries (rank 0: none)
  std::int64_t soft_prompt = 0;         // prompt tuning's vectors before every row (0: none)
  std::int64_t prefix = 0;              // prefix tuning's keys and values per layer (0: none)
  std::int64_t prefix_projection = 0;   // and its reparameterisation MLP's width (0: none)
  std::int64_t data_epoch = 0, data_step = 0;
  std::string data_dir;
  std::string tokenizer;                // path of tokenizer.json
  std::string tokenizer_hash;
  double val_loss = NAN, best_val_loss = NAN;  // NaN: no evaluation yet
  std::string recipe;                   // the resolved recipe as TOML
  // Set when the run has a base and frozen parameters: model.safetensors then holds only the
  // parameters that train, and the rest are read from the base (docs/finetune.md).
  BaseIdentity base;
  std::vector<std::string> labels;      // a classifier's class names, by id ([classify] labels)
};

// Writes `dir` whole or not at all: the model's parameters, the optimizer's state (when given)
// and state.json (last) into DIR.tmp, every file and the directory synced to disk, then published
// in one step (core/durable.hpp: a rename, or an atomic exchange with an old `dir`). A kill, a
// power cut or a full disk leaves the old `dir` or the new one, never a mixture; a failed write
// is an error naming the file and the cause, and removes DIR.tmp. Returns `dir`.
// `extra` writes what else belongs to the checkpoint into the directory being made, before it
// appears whole (PPO's critic: BatchSource::save).
std::string save_checkpoint(const std::string& dir, const AnyModel& model, Optimizer* optimizer,
                            const CheckpointState& state, const std::function<void(const std::string&)>& extra = {});
// The same from arenas the caller gathered: under tensor parallel, the whole model's parameters
// and optimizer state (AnyModel::gather_whole), so that the checkpoint is one process's.
std::string save_checkpoint(const std::string& dir, const Arena& params, const std::vector<Arena*>& optimizer_state,
                            const CheckpointState& state, const std::function<void(const std::string&)>& extra = {});
// state.json of a checkpoint directory; fails naming the file and what is missing.
CheckpointState read_checkpoint_state(const std::string& dir);
// Parameters (and, when given, the optimizer's state) from a checkpoint directory; a checkpoint
// that holds only the trained parameters reads the rest from its base. Under tensor parallel each
// rank reads the whole tensors and keeps its share, whatever number of ranks wrote them.
void load_checkpoint(const std::string& dir, AnyModel& model, Optimizer* optimizer);

// Writes `text` to `path` whole or not at all (a temporary file, synced, renamed; durable::write_file);
// `who` starts the error.
void write_file_atomically(const std::string& path, std::string_view text, const char* who);

// "step_00000042", the directory name of a step's checkpoint.
std::string step_checkpoint_name(std::int64_t step);
// The newest checkpoint under a run directory (or DIR itself if it is one).
std::string find_checkpoint(const std::string& dir);
// The best checkpoint by validation loss if the run kept one, else the newest.
std::string best_or_newest_checkpoint(const std::string& dir);
// Deletes step checkpoints under run_dir/checkpoints older than `newest` (the one just written)
// until `keep` remain, `newest` included; never deletes `newest` or anything after it.
void prune_checkpoints(const std::string& run_dir, std::int64_t keep, const std::string& newest);
// Deletes one checkpoint directory so that no moment of the deletion looks like a checkpoint:
// renamed to NAME.tmp (which readers skip) first, then removed.
void remove_checkpoint(const std::string& dir);
// The step a checkpoint directory holds (from its state.json).
std::int64_t checkpoint_step(const std::string& dir);
// Whether every floating-point value in the arena is finite.
bool all_finite(const Arena& arena);
// The newest checkpoint of a run whose weights are all finite (shaped like `params`); "" if none.
std::string newest_finite_checkpoint(const std::string& run_dir, const Arena& params);

// A trained model with its tokenizer, for generate, eval and export: the best or newest
// checkpoint of a run, loaded on `device` and planned for batch 1 × seq 1.
struct LoadedRun {
  std::unique_ptr<AnyModel> model;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::string checkpoint;
  CheckpointState state;
};
LoadedRun load_run(const std::string& dir, const std::string& device);

}  // namespace llmtk::train
