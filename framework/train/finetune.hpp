// Fine-tuning strategies a recipe selects (docs/finetune.md): LoRA adapters on chosen linear maps
// with the base frozen, and the base a fine-tuning run starts from.
#pragma once
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../core/arena.hpp"
#include "../core/dims.hpp"

namespace llmtk {
class AnyModel;
}
namespace llmtk::data {
class Tokenizer;
}

namespace llmtk::train {

// [lora]: rank 0 means no LoRA.
struct LoraConfig {
  std::int64_t rank = 0;
  double alpha = 16;              // the update is scaled by alpha / rank (alpha / √rank with rslora)
  bool rslora = false;
  double dropout = 0;             // on the adapter's input, in training (PEFT's lora_dropout)
  std::vector<std::string> targets = {"attn.wq", "attn.wv"};  // patterns over linear weight names
  // Parameters of the model that train in full beside the adapters (PEFT's modules_to_save), e.g.
  // "embed.tokens" when a chat template added tokens whose rows must learn.
  std::vector<std::string> modules_to_save;
  // Per-map exceptions (PEFT's options of the same names): a target pattern → its rank or alpha.
  // An adapter read from PEFT needs them where one fused map (GPT-2's c_attn) carried several.
  std::map<std::string, std::int64_t> rank_pattern;
  std::map<std::string, double> alpha_pattern;
  bool enabled() const { return rank > 0; }
  double scale() const { return scale_for(rank, alpha); }
  double scale_for(std::int64_t r, double a) const { return rslora ? a / std::sqrt(double(r)) : a / double(r); }
  // The rank and the scale of the adapter on `weight` (a full parameter name).
  std::int64_t rank_of(const std::string& weight) const;
  double scale_of(const std::string& weight) const;
  bool operator==(const LoraConfig&) const = default;
};

// [prompt_tuning] (Lester et al. 2021): n trainable vectors before every row, the model frozen.
struct PromptTuningConfig {
  std::int64_t n_tokens = 0;
  // Their first values: "vocab" (rows of the token table, drawn at random: the paper's best),
  // "random" (N(0, 0.02²), as the model's embeddings start), or "text:..." (the embeddings of
  // that text's tokens, repeated to n).
  std::string init = "vocab";
  bool enabled() const { return n_tokens > 0; }
  bool operator==(const PromptTuningConfig&) const = default;
};
// [prefix_tuning] (Li and Liang 2021): n trainable keys and values per attention layer, the model
// frozen. They start N(0, 0.02²); with `projection` an MLP makes them from a shared embedding.
struct PrefixTuningConfig {
  std::int64_t n_tokens = 0;
  std::int64_t projection = 0;  // > 0: the reparameterisation MLP's hidden width (PEFT's encoder_hidden_size)
  bool enabled() const { return n_tokens > 0; }
  bool operator==(const PrefixTuningConfig&) const = default;
};

// Sets the soft prompt's first values in `model` (whose base weights are loaded), as `init` says.
void init_soft_prompt(AnyModel& model, const PromptTuningConfig& config, const data::Tokenizer& tok, std::uint64_t seed);

// Whether a target pattern names a weight: a glob over the full name ("blocks.*.attn.wq") or
// over its tail after a dot ("attn.wq", "mlp.*").
bool lora_target_matches(const std::string& target, const std::string& weight);

// What the adapter factory saw while the model was planned: every linear weight, and how many
// each target matched.
struct LoraTargets {
  std::vector<std::string> weights;
  std::vector<int> hits;
};

// Before the first plan: LoRA adapters on every linear map a target names, and the model's own
// parameters frozen. After the plan, check_lora_targets() fails for a target that matched
// nothing, listing the weight names it could match.
std::shared_ptr<LoraTargets> apply_lora(AnyModel& model, const LoraConfig& lora);
void check_lora_targets(const LoraConfig& lora, const LoraTargets& seen);

// A model without adapters whose weights are W + s·B·A for every adapted map of `lora_model`
// (which must be allocated): what `export --hf --merge` writes. Planned for batch 1 × seq 1.
std::unique_ptr<AnyModel> merge_lora(const std::string& arch, const Dims& dims, const LoraConfig& lora,
                                     const AnyModel& lora_model);

// The base of `[finetune] from`: a run or checkpoint (state.json), a Transformers directory
// (config.json), or PEFT LoRA adapters (adapter_config.json) on either (train/peft.hpp). `checkpoint` is the llmtk checkpoint it reads ("" for Transformers).
struct FinetuneBase {
  std::string arch;
  Dims dims;
  std::string checkpoint;
  std::string tokenizer_hash;  // "" for Transformers
  std::string peft;            // `from` is a PEFT adapter on this base: its directory (else "")
};
FinetuneBase read_finetune_base(const std::string& from);

// Where the frozen weights of a fine-tuning run live. A checkpoint of a run with a base and frozen
// parameters holds only what trained (adapters, soft prompts, modules_to_save) plus this: the
// base's directory (an llmtk checkpoint or a Transformers directory) and a fingerprint of its
// weights file, so a base that moved or changed is an error, never a silently different model.
struct BaseIdentity {
  std::string path;  // "" : the checkpoint holds every parameter
  std::string hash;  // FNV-1a 64 of the base's model.safetensors, hex
  int vocab = 0;     // the base's vocabulary when this run's grew (a chat template's tokens), else 0
  bool empty() const { return path.empty(); }
  bool operator==(const BaseIdentity&) const = default;
};
// The identity of `from` (a run resolves to its best, else newest, checkpoint).
BaseIdentity identify_base(const std::string& from, int base_vocab);
// The base's parameters as a host arena (a model of `arch` with `dims`, the vocabulary the base's
// own), read from an llmtk checkpoint or a Transformers directory.
Arena read_base_weights(const std::string& arch, const Dims& dims, const std::string& dir);
// Loads the base into `model` after checking its fingerprint; `who` names the checkpoint that
// needs it in errors.
void load_base(const BaseIdentity& base, const std::string& arch, const Dims& dims, AnyModel& model,
               const std::string& who);

// Writes a base's parameters (host, by name) into `model`. With base_vocab > 0 a parameter whose
// first axis is the base's vocabulary may have more rows in `model` (a chat template's tokens
// were added): the base's rows are copied and each new row starts at the mean of the base's
// rows. Parameters whose names start with `skip` are left as they are (a language model's head,
// loaded into a reward model). Returns the names of the parameters that grew.
std::vector<std::string> load_weights(const Arena& weights, AnyModel& model, int base_vocab = 0, std::string_view skip = {});

}  // namespace llmtk::train
