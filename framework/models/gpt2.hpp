// GPT-2: LayerNorm, multi-head attention without rotary positions, a GELU MLP, pre-norm blocks,
// learned positions and a head tied to the token embedding.
#pragma once
#include "../core/dims.hpp"  // the presets' sizes
#include "../dsl/block.hpp"
#include "../dsl/decoder_lm.hpp"
#include "../dsl/repeat.hpp"
#include "../layers/attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/layernorm.hpp"
#include "../layers/lm_head.hpp"
#include "../layers/mlp.hpp"

namespace llmtk {

struct Gpt2Block final : Block<LayerNorm, MHA<NoPE>, MLP<GELU>, PreNorm> {};
struct Gpt2 final : DecoderLM<Embedding<LearnedPositions>, Repeat<Gpt2Block>, LayerNorm, LMHead<Tied>> {};

// The 124M model of Radford et al. (2019): exactly 124,439,808 parameters.
struct Gpt2Small final {
  using Arch = Gpt2;
  static constexpr const char* name = "gpt2";
  static constexpr const char* about = "GPT-2 124M (Radford et al. 2019), tied head, vocab 50257";
  static constexpr Dims dims{.d_model = 768, .n_layers = 12, .n_heads = 12, .n_kv_heads = 12,
                             .d_ff = 3072, .vocab = 50257, .max_seq = 1024, .norm_eps = 1e-5,
                             .bias = true};
};

// A GPT-2 small enough to train on a laptop CPU in minutes.
struct Gpt2Tiny final {
  using Arch = Gpt2;
  static constexpr const char* name = "gpt2-tiny";
  static constexpr const char* about = "GPT-2 shape, 4 layers of 256: for CPU experiments";
  static constexpr Dims dims{.d_model = 256, .n_layers = 4, .n_heads = 4, .n_kv_heads = 4,
                             .d_ff = 1024, .vocab = 4096, .max_seq = 256, .norm_eps = 1e-5,
                             .bias = true};
};

}  // namespace llmtk
