// A training recipe: TOML read into plain structs with defaults. Every key is checked (type,
// range, allowed values) and unknown keys are errors naming FILE:LINE and the closest key.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../core/dims.hpp"
#include "finetune.hpp"
#include "objective.hpp"  // PreferenceLossOptions

namespace llmtk {
class ConfigFile;
}

namespace llmtk::train {

struct Recipe {
  std::string file;  // where it came from (messages, run directory name)
  struct Model {
    std::string arch = "llama-tiny";
    Dims dims;                          // the preset's, with the recipe's keys applied
    std::vector<std::string> set_keys;  // which model.* keys the recipe set
  } model;
  struct Finetune {
    std::string from;                   // the base: an llmtk run or checkpoint, or a Transformers directory
    int base_vocab = 0;                 // > 0: the data's tokenizer adds tokens (a chat template's), and
                                        // model.vocab grew from this (docs/sft.md)
  } finetune;
  LoraConfig lora;                      // [lora]; rank 0: none
  PromptTuningConfig prompt_tuning;     // [prompt_tuning]; n_tokens 0: none
  PrefixTuningConfig prefix_tuning;     // [prefix_tuning]; n_tokens 0: none
  struct Preference {                   // [preference]: train on pairs of replies (docs/alignment.md)
    PreferenceLossOptions loss;         // loss, beta, label_smoothing, simpo_gamma
    std::string train, test;            // JSONL pair files (test: the validation pairs)
    std::string reference;              // the frozen reference model; default: finetune.from
    bool enabled() const { return !train.empty(); }
  } preference;
  struct Reward {                       // [reward]: a reward model on pairs of replies (docs/alignment.md)
    std::string train, test;            // JSONL pair files, as [preference] reads them
    bool enabled() const { return !train.empty(); }
  } reward;
  struct Rl {                           // [rl]: learn from the policy's own samples (docs/alignment.md)
    std::string algorithm = "grpo";     // grpo | ppo
    std::string task, test;             // instruction JSONL: prompts and their reference answers
    std::string reward = "exact_match"; // exact_match | contains | model
    std::string reward_model;           // reward = "model": a reward model's run ([reward]); PPO's critic starts from it
    std::string reference;              // the frozen reference model (KL); default: finetune.from
    std::int64_t group = 8;             // replies sampled per prompt
    int max_tokens = 16;                // per reply
    double temperature = 1.0, top_p = 1.0;
    GrpoLossOptions loss;               // beta (KL weight: in the loss for GRPO, in the rewards for PPO), clip
    double gamma = 1.0, lambda = 0.95;  // PPO: GAE's discount and λ
    double critic_lr = 0;               // PPO: the critic's learning rate (0: optim.lr)
    std::int64_t sample_every = 50;     // write the rollouts to samples.txt every this many steps (0: never)
    bool enabled() const { return !task.empty(); }
  } rl;
  struct Classify {                     // [classify]: an encoder fine-tuned as a sequence classifier (train/classify.hpp)
    std::string train, test;            // JSONL {"text", "label"[, "text_pair"]}
    std::vector<std::string> labels;    // the class names; their order gives the ids
    bool enabled() const { return !train.empty(); }
  } classify;
  // [objective]: the masked-language-model objective of an encoder (train/masked.hpp).
  MaskingOptions masking;
  bool encoder = false;                 // model.arch is an encoder (EncoderLM): it trains with [objective]
  // [objective]: span corruption, the objective of an encoder-decoder (train/span.hpp).
  SpanOptions span;
  bool seq2seq = false;                 // model.arch is an encoder-decoder (EncoderDecoderLM)
  struct Data {
    std::string dir;                    // output of `llmtk data prepare`: tokenizer.json, train_*.bin, val_*.bin
    std::string order = "shuffled";     // shuffled | sequential | by_length | random
    bool packing = true;                // instruction data: several examples per row (false: one, padded)
  } data;
  struct Train {
    std::int64_t batch = 8, seq = 128;  // micro-batch (with [preference]: pairs, two rows each; with
                                        // [rl]: prompts, rl.group rows each)
    std::int64_t steps = 0, tokens = 0; // one of them: optimizer steps, or tokens to see
    std::int64_t grad_accum = 1;        // micro-batches per optimizer step
    std::string precision = "fp32";
    std::uint64_t seed = 1;
    std::string device = "cpu";         // a backend of this build (ops::backends())
    int threads = 0;                    // host threads of the backend (ops::set_threads); 0: its default
    std::string recompute = "none";
    int max_bad_steps = 3;              // NaN/Inf steps in a row before stopping
    std::vector<std::string> freeze;    // parameter-name patterns that get no gradient or optimizer state
  } train;
  struct Optim {
    std::string name = "adamw";         // adamw | sgd | lion
    double lr = 3e-4, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
    double momentum = 0.9;
    bool nesterov = false;
    bool decay_embeddings = false;      // weight decay on embeddings (never on norms and biases)
    double grad_clip = 1.0;             // global-norm clipping; 0 turns it off
    // Learning-rate multipliers by parameter-name pattern ({ "embed.*" = 0.1 }): a trainable
    // parameter matched by a pattern trains at lr × its multiplier (at most one pattern each).
    std::vector<std::pair<std::string, double>> lr_scale;
  } optim;
  struct Schedule {
    std::string name = "cosine";        // constant | cosine | linear | wsd
    std::int64_t warmup = 0;            // linear warmup steps
    double min_lr = 0.0;
    double decay_fraction = 0.2;        // wsd: the last fraction of steps decays
  } schedule;
  struct Eval {
    std::int64_t every = 0, batches = 8;  // 0: only at the end
    // Multiple-choice task files (JSONL {context, endings, label}, docs/evaluation.md) scored at
    // every eval: task_<file stem> = accuracy in metrics.jsonl and the report; at most task_limit
    // items of each, evenly spaced.
    std::vector<std::string> tasks;
    std::int64_t task_limit = 200;
  } eval;
  struct Checkpoint {
    std::int64_t every = 0;             // 0: only at the end
    int keep = 2;
    bool keep_best = true;
    std::string on_error = "stop";      // a checkpoint that cannot be written: "stop" or "continue"
  } checkpoint;
  struct Log {
    std::int64_t every = 10;
    std::string sample_prompt;          // when set, a sample is written at every eval
    int sample_tokens = 64;
    // Training internals per layer (train/internals.hpp) into internals.jsonl every this many steps
    // (and at the last step): what `llmtk report` draws and `llmtk doctor` reads.
    bool internals = false;
    std::int64_t internals_every = 25;
  } log;
  // [distributed]: how the processes of `mpirun -np N llmtk train` share the work
  // (docs/distributed.md). One process ignores it.
  struct Distributed {
    std::string strategy = "ddp";       // ddp: every rank a copy of the model and a part of each batch;
                                        // zero1: the same, each rank the optimizer state of a shard
                                        // zero2: and the summed gradients of that shard only
                                        // tp: every rank a share of each layer (heads, hidden width)
                                        // tp+zero1, tp+zero2: tp, its data-parallel groups sharding
                                        // as zero1 and zero2 do (the 2-D layout: tp_size)
    double bucket_mb = 25;              // gradients are summed across ranks in buckets of this size
    bool overlap = true;                // ... each as soon as its layers' backward is done
    double timeout_s = 300;             // a collective that takes longer ends the job, naming the call
    int tp_size = 0;                    // strategy "tp", "tp+zero*": ranks that split each layer (0: every process)
    bool tensor_parallel() const { return strategy.starts_with("tp"); }
    // What the data-parallel ranks shard: 0 nothing (ddp, tp), 1 the optimizer state, 2 and the gradients.
    int zero() const { return strategy.ends_with("zero1") ? 1 : strategy.ends_with("zero2") ? 2 : 0; }
  } distributed;

  std::int64_t rows() const;            // rows of a micro-batch: batch, 2·batch ([preference], [reward]),
                                        // batch·group ([rl])
  std::int64_t total_steps() const;     // steps, or tokens / (rows · seq · grad_accum)
};

// Reads and validates a recipe; `sets` are --set KEY=VALUE overrides applied before validation.
Recipe read_recipe(const std::string& path, const std::vector<std::string>& sets = {});
// The fully resolved recipe as TOML (every key, defaults included).
std::string to_toml(const Recipe& r);

}  // namespace llmtk::train
