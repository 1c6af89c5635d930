// Llama family: RMSNorm, grouped-query attention with RoPE, SwiGLU, pre-norm blocks, token
// embeddings without position vectors.
#pragma once
#include "../core/dims.hpp"  // the presets' sizes
#include "../dsl/block.hpp"
#include "../dsl/decoder_lm.hpp"
#include "../dsl/repeat.hpp"
#include "../layers/attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/glu.hpp"
#include "../layers/lm_head.hpp"
#include "../layers/rmsnorm.hpp"

namespace llmtk {

struct LlamaBlock final : Block<RMSNorm, GQA<RoPE>, SwiGLU, PreNorm> {};
struct Llama final : DecoderLM<TokenEmbedding, Repeat<LlamaBlock>, RMSNorm, LMHead<Tied>> {};

// A Llama small enough to train on a laptop CPU in minutes.
struct LlamaTiny final {
  using Arch = Llama;
  static constexpr const char* name = "llama-tiny";
  static constexpr const char* about = "Llama shape (GQA 8/4 heads, RoPE, SwiGLU), 4 layers of 256";
  static constexpr Dims dims{.d_model = 256, .n_layers = 4, .n_heads = 8, .n_kv_heads = 4,
                             .d_ff = 688, .vocab = 4096, .max_seq = 256, .rope_base = 10000.0,
                             .norm_eps = 1e-5};
};

// The same with GeGLU in place of SwiGLU (GELU gates the up projection, as in Gemma): the
// feed-forward ablation as a preset. Transformers holds it as LlamaForCausalLM with
// hidden_act = "gelu_pytorch_tanh".
struct GegluLlamaBlock final : Block<RMSNorm, GQA<RoPE>, GeGLU, PreNorm> {};
struct GegluLlama final : DecoderLM<TokenEmbedding, Repeat<GegluLlamaBlock>, RMSNorm, LMHead<Tied>> {};
struct LlamaGegluTiny final {
  using Arch = GegluLlama;
  static constexpr const char* name = "llama-geglu-tiny";
  static constexpr const char* about = "llama-tiny with GeGLU in place of SwiGLU (Gemma's gated GELU)";
  static constexpr Dims dims = LlamaTiny::dims;
};

// The shape of Llama 3.2 1B (Meta, 2024): 16 layers of 2048, GQA 32/8, vocab 128256, tied head,
// RoPE base 500000 (its long-context RoPE frequency scaling is not modelled).
struct Llama3_1B final {
  using Arch = Llama;
  static constexpr const char* name = "llama3.2-1b";
  static constexpr const char* about = "Llama 3.2 1B shape: 16 x 2048, GQA 32/8, vocab 128256";
  static constexpr Dims dims{.d_model = 2048, .n_layers = 16, .n_heads = 32, .n_kv_heads = 8,
                             .d_ff = 8192, .vocab = 128256, .max_seq = 131072,
                             .rope_base = 500000.0, .norm_eps = 1e-5};
};

}  // namespace llmtk
