// LoRA adapters in the layout Hugging Face PEFT reads and writes: a directory with
// adapter_config.json (peft_type "LORA", r, lora_alpha, target_modules, rank_pattern,
// alpha_pattern, fan_in_fan_out, modules_to_save...) and adapter_model.safetensors, whose tensors
// are named after the Transformers modules they adapt:
//   base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight   [r, in]    (Llama)
//   base_model.model.transformer.h.0.attn.c_attn.lora_B.weight       [3C, r]    (GPT-2)
// PEFT computes y = base(x) + s · (x·Aᵀ)·Bᵀ with s = lora_alpha / r (or / √r with use_rslora),
// which is llmtk's LoRA (layers/lora.hpp). Two things differ in the names:
//   - GPT-2 fuses q, k and v into one Conv1D, c_attn. Adapters on wq, wk, wv (ranks r_q, r_k, r_v)
//     are one c_attn adapter of rank r_q + r_k + r_v: A stacks their A rows, B is block-diagonal
//     (each part's B in its rows and its own columns). Read back, each part keeps the columns of B
//     that are not zero in its rows, so an export returns as the adapters it came from, and an
//     adapter trained in PEFT (dense B) becomes exact rank-R adapters on wq, wk and wv sharing A.
//   - Ranks and alphas that differ between maps go to rank_pattern / alpha_pattern.
// docs/finetune.md shows the layout and how the export is checked (tests/golden/check_hf_export.py).
#pragma once
#include <string>

#include "../data/chat.hpp"
#include "../data/tokenizer.hpp"
#include "../models/model.hpp"
#include "finetune.hpp"

namespace llmtk::train {

// Whether `dir` holds a PEFT adapter (adapter_config.json).
bool is_peft_dir(const std::string& dir);
// Its peft_type: "LORA", "PROMPT_TUNING" or "PREFIX_TUNING"; any other is refused by name.
std::string peft_type(const std::string& dir);

// A PEFT LoRA adapter read into llmtk's names.
struct PeftAdapter {
  std::string dir;
  std::string base;  // base_model_name_or_path, resolved to a local directory
  LoraConfig lora;   // targets, ranks and scales in llmtk's parameter names
  // The adapter's tensors under llmtk's names (…_adapter.lora_A / lora_B, modules_to_save).
  std::vector<std::pair<std::string, std::vector<float>>> tensors;
};

// Reads `dir` for a model of `family` ("gpt2" or "llama") with `n_layers` layers. Fails naming
// the file and the problem: not LoRA, DoRA, a module llmtk has no map for, shapes that disagree.
PeftAdapter read_peft(const std::string& dir, const std::string& family, int n_layers);
// The base an adapter names, without reading its tensors (for the recipe's [finetune] from).
std::string peft_base(const std::string& dir);

// Writes the adapter's tensors into `model`, which was planned with `adapter.lora`.
void load_peft(const PeftAdapter& adapter, AnyModel& model);

// Prompt or prefix tuning's vectors from a PEFT directory (the layouts export_peft_prompt and
// export_peft_prefix write): how many virtual tokens, and prompt_embeddings.
struct PeftVirtualTokens {
  std::string type;  // "PROMPT_TUNING" or "PREFIX_TUNING"
  std::int64_t n = 0;
  std::vector<std::int64_t> shape;
  std::vector<float> values;
};
PeftVirtualTokens read_peft_virtual_tokens(const std::string& dir);
// Writes them into `model`, set up with a soft prompt or prefix of as many positions; the shapes
// must be the model's (the message names what differs).
void load_peft_virtual_tokens(const PeftVirtualTokens& tokens, AnyModel& model);

// Writes DIR (whole or not at all: DIR.tmp, renamed) with adapter_config.json,
// adapter_model.safetensors and, when given, the tokenizer (tokenizer.json, tokenizer_config.json
// with the chat template). `base_name` goes to base_model_name_or_path.
void export_peft(const AnyModel& model, const LoraConfig& lora, const std::string& dir, const std::string& base_name,
                 const data::Tokenizer* tokenizer = nullptr, const data::ChatTemplate* chat = nullptr);

// Prompt tuning in PEFT's layout (peft_type "PROMPT_TUNING"): adapter_model.safetensors holds
// "prompt_embeddings" [n, C], the vectors a PeftModel puts before the input embeddings.
void export_peft_prompt(const AnyModel& model, const std::string& dir, const std::string& base_name,
                        const data::Tokenizer* tokenizer = nullptr, const data::ChatTemplate* chat = nullptr);

// Prefix tuning in PEFT's layout (peft_type "PREFIX_TUNING", no projection): "prompt_embeddings"
// [n, L · 2 · KV·D], for each virtual position every layer's key then value (PEFT views it as
// [n, 2L, KV, D] and hands layer l the entries 2l and 2l + 1 as its cached keys and values).
// A model that makes its prefixes with the reparameterisation MLP exports the values it makes
// (what PEFT's own prefix_projection computes at inference).
void export_peft_prefix(const AnyModel& model, const std::string& dir, const std::string& base_name,
                        const data::Tokenizer* tokenizer = nullptr, const data::ChatTemplate* chat = nullptr);

}  // namespace llmtk::train
