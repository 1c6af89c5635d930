// Interop with Hugging Face Transformers checkpoints: GPT-2 (GPT2LMHeadModel) and the Llama
// family (LlamaForCausalLM). Export writes config.json, model.safetensors with Transformers'
// tensor names and layouts, and the tokenizer; import reads such a directory into a model.
//
// Layouts: llmtk stores every linear map as [out, in]. Transformers' GPT-2 uses Conv1D, [in, out],
// with q, k, v fused in c_attn ([C, 3C]); its Llama uses nn.Linear, [out, in], with RoPE's
// half-split pairs, which is llmtk's convention too, so Llama weights copy unchanged.
#pragma once
#include <string>
#include <vector>

#include "../data/chat.hpp"
#include "../data/tokenizer.hpp"
#include "../models/model.hpp"

namespace llmtk::train {

// "gpt2" or "llama": the Transformers family a model maps to. Fails, naming the part, for a
// composition the family cannot hold exactly (it never writes an approximation).
std::string hf_family(const AnyModel& model);
// The same rules for another format: `command` starts the messages, the targets name what the
// format calls its two families (GGUF: llama.cpp's "llama" architecture).
std::string model_family(const AnyModel& model, const char* command, const char* gpt2_target, const char* llama_target);
// The Llama family's hidden_act: "silu" (SwiGLU) or "gelu_pytorch_tanh" (GeGLU).
std::string hf_hidden_act(const AnyModel& model);

// Writes DIR.tmp and renames it to DIR when complete: a failure leaves nothing behind. In an
// existing DIR only the export's own files are replaced.
// With a chat template (an instruction-tuned run), tokenizer_config.json carries its Jinja
// chat_template and ends a turn at its end-of-turn token, so Transformers' apply_chat_template and
// generate() work as llmtk's chat does.
// A classifier (NAME+classify) is written as BertForSequenceClassification with `labels` (its
// class names by id, from the checkpoint) as id2label.
void export_hf(const AnyModel& model, const std::string& dir, const data::Tokenizer* tokenizer,
               const data::ChatTemplate* chat = nullptr, const std::vector<std::string>* labels = nullptr);
// tokenizer.json and tokenizer_config.json (with the chat template's Jinja and end of turn).
void write_hf_tokenizer(const std::string& dir, const data::Tokenizer& tokenizer, const data::ChatTemplate* chat, int max_seq);
// Fills the model's parameters from a Transformers checkpoint directory (config.json +
// model.safetensors). The config's sizes must equal the model's; the message names the key.
void import_hf(AnyModel& model, const std::string& dir);
// The Dims a Transformers config.json describes, for building the model to import into.
Dims hf_dims(const std::string& dir, std::string& family);

}  // namespace llmtk::train
