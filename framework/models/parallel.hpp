// A GPT-J / PaLM-style model: parallel blocks (attention and an MLP read one LayerNorm), RoPE,
// GELU, an untied head. Shows a new block shape as one header (dsl/parallel_block.hpp) and a
// preset, with no change to any other part.
#pragma once
#include "../core/dims.hpp"  // the presets' sizes
#include "../dsl/decoder_lm.hpp"
#include "../dsl/parallel_block.hpp"
#include "../dsl/repeat.hpp"
#include "../layers/attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/layernorm.hpp"
#include "../layers/lm_head.hpp"
#include "../layers/mlp.hpp"

namespace llmtk {

struct ParallelLMBlock final : ParallelBlock<LayerNorm, MHA<RoPE>, MLP<GELU>> {};
struct ParallelLM final : DecoderLM<TokenEmbedding, Repeat<ParallelLMBlock>, LayerNorm, LMHead<Untied>> {};

struct ParallelTiny final {
  using Arch = ParallelLM;
  static constexpr const char* name = "parallel-tiny";
  static constexpr const char* about = "GPT-J/PaLM parallel blocks (one LayerNorm feeds attention and MLP), RoPE, 4 layers of 256";
  static constexpr Dims dims{.d_model = 256, .n_layers = 4, .n_heads = 8, .n_kv_heads = 8, .d_ff = 1024,
                             .vocab = 4096, .max_seq = 256, .rope_base = 10000.0, .norm_eps = 1e-5, .bias = true};
};

}  // namespace llmtk
