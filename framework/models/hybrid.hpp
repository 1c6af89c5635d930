// A hybrid of recurrence and attention, in the spirit of Griffin and Jamba (two recurrent layers
// for each attention layer): minGRU mixers (layers/recurrence.hpp) and grouped-query attention
// with RoPE, in Llama's blocks (RMSNorm, SwiGLU, pre-norm), repeated as a pattern.
#pragma once
#include "../core/dims.hpp"  // the presets' sizes
#include "../dsl/block.hpp"
#include "../dsl/decoder_lm.hpp"
#include "../dsl/pattern.hpp"
#include "../layers/attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/glu.hpp"
#include "../layers/lm_head.hpp"
#include "../layers/recurrence.hpp"
#include "../layers/rmsnorm.hpp"

namespace llmtk {

struct RecurrentBlock final : Block<RMSNorm, MinGRU<>, SwiGLU, PreNorm> {};
struct AttentionBlock final : Block<RMSNorm, GQA<RoPE>, SwiGLU, PreNorm> {};
struct Hybrid final
    : DecoderLM<TokenEmbedding, Pattern<RecurrentBlock, RecurrentBlock, AttentionBlock>, RMSNorm, LMHead<Tied>> {};

// llama-tiny's width, six layers: recurrent, recurrent, attention, twice.
struct HybridTiny final {
  using Arch = Hybrid;
  static constexpr const char* name = "hybrid-tiny";
  static constexpr const char* about = "2 minGRU layers per attention layer (GQA 8/4, RoPE), 6 layers of 256, SwiGLU";
  static constexpr Dims dims{.d_model = 256, .n_layers = 6, .n_heads = 8, .n_kv_heads = 4, .d_ff = 688,
                             .vocab = 4096, .max_seq = 256, .rope_base = 10000.0, .norm_eps = 1e-5};
};

}  // namespace llmtk
