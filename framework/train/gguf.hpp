// GGUF export: the file llama.cpp (and everything built on it: Ollama, LM Studio, node-llama-cpp)
// loads. A Llama-style model (RMSNorm, GQA with RoPE, SwiGLU, pre-norm; tied or untied head) is
// written as llama.cpp's "llama" architecture (a Mixtral-style mixture of experts too: the router
// as ffn_gate_inp, the experts' matrices stacked in ffn_{gate,up,down}_exps), a GPT-2-style one (learned positions, LayerNorm
// and biases, GELU) as its "gpt2" architecture (q, k and v fused into attn_qkv, the tied head
// written out as output.weight, as llama.cpp's converter does), each with its hyper-parameters
// and the byte-level BPE tokenizer in the metadata, so the one file is the whole model.
//
// Two layouts differ from llmtk's. GGUF lists a tensor's extents innermost first, so a [out, in]
// weight is declared {in, out} with its bytes unchanged. And llama.cpp's "llama" RoPE rotates
// adjacent pairs (x[2i], x[2i+1]) where llmtk (as Transformers) rotates the two halves of each
// head (x[i], x[i + D/2]): the rows of wq and wk are interleaved per head, row 2i + j of a head
// taking row j·D/2 + i, so q·k, and the model, are unchanged.
//
// The format is described in llama.cpp's docs (gguf.md); tests/scripts/gguf_llamacpp.sh checks a
// file with llama.cpp itself (node-llama-cpp's prebuilt binary): tokens, next-token
// log-probabilities and greedy text.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../data/chat.hpp"
#include "../data/tokenizer.hpp"
#include "../models/model.hpp"

namespace llmtk::train {

// The tensor types an export can write: "f32", "f16", "bf16", or "q8_0" (blocks of 32 weights,
// one f16 scale each, as llama.cpp's reference quantizer). Norm weights are always f32.
inline constexpr std::string_view kGgufTypes[] = {"f32", "f16", "bf16", "q8_0"};

// Writes PATH.tmp and renames it to PATH when complete. Refuses, before writing anything, a model
// whose parts llama.cpp's "llama" architecture cannot hold (naming the part), a tokenizer that is
// not byte-level BPE with GPT-2's pre-tokenizer, and q8_0 for rows that are not a multiple of 32.
// With a chat template: tokenizer.chat_template (Jinja) and the end-of-turn token as eos, where
// llama.cpp's chat stops.
void export_gguf(const AnyModel& model, const std::string& path, const data::Tokenizer& tokenizer,
                 std::string_view type, const data::ChatTemplate* chat = nullptr);

// Reads a GGUF file of llama.cpp's "llama" or "gpt2" architecture (as export_gguf writes it: f32,
// f16, bf16 or q8_0 tensors, the "gpt2" byte-level BPE tokenizer) back into a model at the file's
// sizes — "llama-tiny" (the q/k rows returned to half-split RoPE order; a tied head), "gpt2", or
// with experts "moe-tiny" (tied) or "mixtral-8x7b" (untied) — and its tokenizer. A hostile file ends with an error naming the file and what is wrong: every count,
// length and offset is checked against the file's size before anything is allocated.
struct GgufModel {
  std::unique_ptr<AnyModel> model;
  std::unique_ptr<data::Tokenizer> tokenizer;
  std::string arch;
  Dims dims;
  std::string type;  // the matrices' type: "f32", "f16", "bf16" or "q8_0"
};
GgufModel load_gguf(const std::string& path);
// Whether a file starts with GGUF's magic.
bool is_gguf_file(const std::string& path);

// The encodings, for tests (gguf.cpp has their notes).
namespace gguf {
std::uint16_t half_bits(float f);  // IEEE binary16, round to nearest even
// One Q8_0 block: 32 values → f16 scale d = max|x| / 127, then round(x / d) as int8 (34 bytes).
std::vector<char> q8_0_block(const float* x);
// Rows of each of `heads` heads of size D reordered from half-split RoPE pairs to adjacent ones.
std::vector<float> rope_pairs_adjacent(const std::vector<float>& w, std::int64_t heads, std::int64_t D, std::int64_t in);
std::vector<float> rope_pairs_half_split(const std::vector<float>& w, std::int64_t heads, std::int64_t D, std::int64_t in);
float half_to_float(std::uint16_t h);
}  // namespace gguf

}  // namespace llmtk::train
