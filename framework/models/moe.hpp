// Mixture-of-experts decoders: the Llama block with an MoE feed-forward (layers/moe.hpp) in place
// of SwiGLU, as Mixtral has it: 8 SwiGLU experts, top-2 routing renormalised, untied head.
#pragma once
#include "../core/dims.hpp"  // the presets' sizes
#include "../dsl/block.hpp"
#include "../dsl/decoder_lm.hpp"
#include "../dsl/repeat.hpp"
#include "../layers/attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/glu.hpp"
#include "../layers/lm_head.hpp"
#include "../layers/moe.hpp"
#include "../layers/rmsnorm.hpp"

namespace llmtk {

struct MixtralBlock final : Block<RMSNorm, GQA<RoPE>, MoE<SwiGLU, TopKRouter>, PreNorm> {};
struct Mixtral final : DecoderLM<TokenEmbedding, Repeat<MixtralBlock>, RMSNorm, LMHead<Untied>> {};
struct TiedMixtral final : DecoderLM<TokenEmbedding, Repeat<MixtralBlock>, RMSNorm, LMHead<Tied>> {};

// llama-tiny with 8 experts of half its feed-forward width, top-2: the same parameters per token
// as llama-tiny (2 x 344 = 688 hidden units), four times its feed-forward parameters in all.
struct MoeTiny final {
  using Arch = TiedMixtral;
  static constexpr const char* name = "moe-tiny";
  static constexpr const char* about = "llama-tiny with 8 SwiGLU experts of 344, top-2 (its active size)";
  static constexpr Dims dims = Dims{.d_model = 256, .n_layers = 4, .n_heads = 8, .n_kv_heads = 4, .d_ff = 344,
                                    .vocab = 4096, .max_seq = 256, .rope_base = 10000.0, .norm_eps = 1e-5}
                                   .with("moe_experts", 8)
                                   .with("moe_top_k", 2);
};

// The shape of Mixtral 8x7B (Mistral AI, 2024): 32 layers of 4096, GQA 32/8, 8 experts of 14336,
// top-2, vocab 32000, untied head, RoPE base 1e6; 46,702,792,704 parameters, 12.9B per token.
struct Mixtral8x7B final {
  using Arch = Mixtral;
  static constexpr const char* name = "mixtral-8x7b";
  static constexpr const char* about = "Mixtral 8x7B shape: 32 x 4096, GQA 32/8, 8 experts of 14336, top-2";
  static constexpr Dims dims = Dims{.d_model = 4096, .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .d_ff = 14336,
                                    .vocab = 32000, .max_seq = 32768, .rope_base = 1000000.0, .norm_eps = 1e-5}
                                   .with("moe_experts", 8)
                                   .with("moe_top_k", 2)
                                   .with("moe_aux_coef", 0.02);
};

}  // namespace llmtk
