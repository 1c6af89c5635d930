// Gemma 2's layer stack (Gemma Team, 2024, arXiv:2408.00118): local sliding-window attention and
// global attention alternating layer by layer (Pattern<...>, dsl/pattern.hpp), each sublayer
// between two RMSNorms (SandwichNorm), GeGLU, GQA with RoPE, tied head. Not modelled: the
// embedding's sqrt(d_model) scale, RMSNorm's (1 + w) weights (a reparameterisation) and logit
// soft-capping.
#pragma once
#include "../core/dims.hpp"  // the presets' sizes
#include "../dsl/block.hpp"
#include "../dsl/decoder_lm.hpp"
#include "../dsl/pattern.hpp"
#include "../layers/attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/glu.hpp"
#include "../layers/lm_head.hpp"
#include "../layers/rmsnorm.hpp"

namespace llmtk {

struct GemmaLocalBlock final : Block<RMSNorm, GQA<RoPE, Local>, GeGLU, SandwichNorm> {};
struct GemmaGlobalBlock final : Block<RMSNorm, GQA<RoPE>, GeGLU, SandwichNorm> {};
struct Gemma final : DecoderLM<TokenEmbedding, Pattern<GemmaLocalBlock, GemmaGlobalBlock>, RMSNorm, LMHead<Tied>> {};

// llama-tiny's sizes with Gemma 2's stack: layers 0 and 2 see the last 64 tokens, 1 and 3 all.
struct GemmaTiny final {
  using Arch = Gemma;
  static constexpr const char* name = "gemma-tiny";
  static constexpr const char* about = "Gemma 2 stack: local (window 64) and global attention alternating, sandwich norms, GeGLU";
  static constexpr Dims dims = Dims{.d_model = 256, .n_layers = 4, .n_heads = 8, .n_kv_heads = 4, .d_ff = 688,
                                    .vocab = 4096, .max_seq = 256, .rope_base = 10000.0, .norm_eps = 1e-6}
                                   .with("local_window", 64);
};

}  // namespace llmtk
