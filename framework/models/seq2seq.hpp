// Encoder-decoders (dsl/encoder_decoder_lm.hpp), the third family beside the decoders and BERT.
//
// Transformer: the original encoder-decoder (Vaswani et al. 2017, arXiv:1706.03762): sinusoidal
// positions added to one embedding table shared by the source, the target and the tied output
// layer (§3.4), post-norm blocks (§3.1: LayerNorm(x + Sublayer(x))) of multi-head attention and a
// ReLU feed-forward, the decoder's blocks with cross-attention between self-attention and the
// feed-forward. Differences, kept for the toolkit's conventions: a LayerNorm after the embedding
// (where a post-norm side puts its norm, as BERT and BART do) and no √d_model scale on the
// embedding, biases on every linear map as there.
#pragma once
#include "../core/dims.hpp"  // the presets' sizes
#include "../dsl/block.hpp"
#include "../dsl/cross_block.hpp"
#include "../dsl/encoder_decoder_lm.hpp"
#include "../dsl/repeat.hpp"
#include "../layers/attention.hpp"
#include "../layers/cross_attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/layernorm.hpp"
#include "../layers/lm_head.hpp"
#include "../layers/mlp.hpp"

namespace llmtk {

struct TransformerEncoderBlock final : Block<LayerNorm, MHA<NoPE, Bidirectional>, MLP<ReLU>, PostNorm> {};
struct TransformerDecoderBlock final
    : CrossBlock<LayerNorm, MHA<NoPE, Causal>, CrossAttention, MLP<ReLU>, PostNorm> {};
struct Transformer final : EncoderDecoderLM<Embedding<Sinusoidal>, Repeat<TransformerEncoderBlock>, LayerNorm,
                                            Repeat<TransformerDecoderBlock>, LayerNorm, LMHead<Tied>> {};

// Small enough to train on a laptop CPU in minutes: 3 + 3 layers of 256, the corpus tokenizer's
// 4096 tokens and the sentinels span corruption adds.
struct TransformerTiny final {
  using Arch = Transformer;
  static constexpr const char* name = "transformer-tiny";
  static constexpr const char* about = "the original encoder-decoder (post-norm, ReLU, sinusoidal), 3 + 3 layers of 256";
  static constexpr Dims dims = Dims{.d_model = 256, .n_layers = 3, .n_heads = 4, .n_kv_heads = 4, .d_ff = 1024,
                                    .vocab = 4096, .max_seq = 256, .norm_eps = 1e-5, .bias = true};
};

}  // namespace llmtk
