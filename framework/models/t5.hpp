// T5 (Raffel et al. 2020, arXiv:1910.10683): an encoder-decoder trained on span corruption.
// One token embedding shared by the encoder, the decoder and the tied head; no position
// embedding: each stack learns a relative position bias (RelativeBias: 32 buckets, offsets up to
// 128), bidirectional in the encoder and causal in the decoder; pre-norm blocks with RMSNorm
// without bias (T5's layer norm), a ReLU feed-forward, no biases anywhere, and a final norm per
// side. The tied head scales its input by d_model^-1/2 (TiedScaled). Transformers'
// T5ForConditionalGeneration of t5-small has the same parameters (60,506,624).
//
// One difference in form, not in function: llmtk's attention scales scores by 1/sqrt(head_dim)
// and T5's does not (its initialisation absorbs the scale); the Transformers export multiplies the
// query weights by 1/sqrt(head_dim), so both compute the same scores. Not modelled: dropout, and
// T5 v1.1's gated-GELU feed-forward and untied head (GeGLU and LMHead<Untied> compose it).
#pragma once
#include "../core/dims.hpp"  // the presets' sizes
#include "../dsl/block.hpp"
#include "../dsl/cross_block.hpp"
#include "../dsl/encoder_decoder_lm.hpp"
#include "../dsl/repeat.hpp"
#include "../layers/attention.hpp"
#include "../layers/cross_attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/lm_head.hpp"
#include "../layers/mlp.hpp"
#include "../layers/positions.hpp"
#include "../layers/rmsnorm.hpp"

namespace llmtk {

using T5Positions = RelativeBias<32, 128>;
struct T5EncoderBlock final : Block<RMSNorm, MHA<T5Positions, Bidirectional>, MLP<ReLU>, PreNorm> {};
struct T5DecoderBlock final : CrossBlock<RMSNorm, MHA<T5Positions, Causal>, CrossAttention, MLP<ReLU>, PreNorm> {};
struct T5 final : EncoderDecoderLM<TokenEmbedding, Repeat<T5EncoderBlock>, RMSNorm, Repeat<T5DecoderBlock>, RMSNorm,
                                   LMHead<TiedScaled>> {};

// t5-small's shape: 6 + 6 layers of 512, 8 heads of 64, d_ff 2048, vocab 32128.
struct T5Small final {
  using Arch = T5;
  static constexpr const char* name = "t5-small";
  static constexpr const char* about = "T5 small (Raffel et al. 2020), 6 + 6 layers of 512, relative position bias, vocab 32128";
  static constexpr Dims dims = Dims{.d_model = 512, .n_layers = 6, .n_heads = 8, .n_kv_heads = 8, .d_ff = 2048,
                                    .vocab = 32128, .max_seq = 512, .norm_eps = 1e-6, .bias = false};
};

// Small enough to train on a laptop CPU in minutes: 4 + 4 layers of 256, the corpus tokenizer's
// 4096 tokens with [PAD] and 100 sentinels (recipes/data/kjv-t5.toml).
struct T5Tiny final {
  using Arch = T5;
  static constexpr const char* name = "t5-tiny";
  static constexpr const char* about = "T5 shape, 4 + 4 layers of 256, relative position bias: for CPU experiments";
  static constexpr Dims dims = Dims{.d_model = 256, .n_layers = 4, .n_heads = 4, .n_kv_heads = 4, .d_ff = 1024,
                                    .vocab = 4197, .max_seq = 256, .norm_eps = 1e-6, .bias = false};
};

}  // namespace llmtk
