// Fine-tuning strategies a recipe selects (docs/finetune.md): LoRA adapters on chosen linear maps
// with the base frozen, and the base a fine-tuning run starts from.
#pragma once
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../core/dims.hpp"

namespace llmtk {
class AnyModel;
class Arena;
}

namespace llmtk::train {

// [lora]: rank 0 means no LoRA.
struct LoraConfig {
  std::int64_t rank = 0;
  double alpha = 16;              // the update is scaled by alpha / rank (alpha / √rank with rslora)
  bool rslora = false;
  std::vector<std::string> targets = {"attn.wq", "attn.wv"};  // patterns over linear weight names
  // Parameters of the model that train in full beside the adapters (PEFT's modules_to_save), e.g.
  // "embed.tokens" when a chat template added tokens whose rows must learn.
  std::vector<std::string> modules_to_save;
  bool enabled() const { return rank > 0; }
  double scale() const { return rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank); }
  bool operator==(const LoraConfig&) const = default;
};

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

// The base of `[finetune] from`: a run or checkpoint (state.json) or a Transformers directory
// (config.json). `checkpoint` is the llmtk checkpoint it reads ("" for Transformers).
struct FinetuneBase {
  std::string arch;
  Dims dims;
  std::string checkpoint;
  std::string tokenizer_hash;  // "" for Transformers
};
FinetuneBase read_finetune_base(const std::string& from);

// Writes a base's parameters (host, by name) into `model`. With base_vocab > 0 a parameter whose
// first axis is the base's vocabulary may have more rows in `model` (a chat template's tokens
// were added): the base's rows are copied and each new row starts at the mean of the base's
// rows. Returns the names of the parameters that grew.
std::vector<std::string> load_weights(const Arena& weights, AnyModel& model, int base_vocab = 0);

}  // namespace llmtk::train
