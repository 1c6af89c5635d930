// BERT (Devlin et al. 2019, arXiv:1810.04805): a bidirectional encoder trained to fill in masked
// tokens. Token + learned position + token-type embeddings, a LayerNorm after them, post-norm
// blocks of multi-head attention that sees the whole row and a GELU MLP, and the MLM head
// (transform, GELU, LayerNorm, decoder tied to the token embedding with its own bias).
// Transformers' BertForMaskedLM has the same parameters (train/hf.cpp maps the names). Not
// modelled: the exact erf GELU (the tanh approximation stands in; exports say "gelu_new"),
// dropout, and the pooler (a [CLS] classifier's, unused by the MLM).
#pragma once
#include "../core/dims.hpp"  // the presets' sizes
#include "../dsl/block.hpp"
#include "../dsl/encoder_lm.hpp"
#include "../dsl/repeat.hpp"
#include "../layers/attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/layernorm.hpp"
#include "../layers/mlm_head.hpp"
#include "../layers/mlp.hpp"

namespace llmtk {

using BertEmbedding = Embedding<LearnedPositions, TokenTypes>;
struct BertBlock final : Block<LayerNorm, MHA<NoPE, Bidirectional>, MLP<GELU>, PostNorm> {};
struct Bert final : EncoderLM<BertEmbedding, Repeat<BertBlock>, LayerNorm, MLMHead<Tied>> {};
// The ablation of the norm's place: pre-norm blocks, the model's norm after the stack.
struct BertPreNormBlock final : Block<LayerNorm, MHA<NoPE, Bidirectional>, MLP<GELU>, PreNorm> {};
struct BertPreNorm final : EncoderLM<BertEmbedding, Repeat<BertPreNormBlock>, LayerNorm, MLMHead<Tied>> {};

// bert-base-uncased's shape: 109,514,298 parameters as BertForMaskedLM counts them (no pooler).
struct BertBase final {
  using Arch = Bert;
  static constexpr const char* name = "bert-base";
  static constexpr const char* about = "BERT base (Devlin et al. 2019), MLM head tied, vocab 30522";
  static constexpr Dims dims = Dims{.d_model = 768, .n_layers = 12, .n_heads = 12, .n_kv_heads = 12, .d_ff = 3072,
                                    .vocab = 30522, .max_seq = 512, .norm_eps = 1e-12, .bias = true}
                                   .with("type_vocab", 2);
};

// A BERT small enough to train on a laptop CPU in minutes: the quickstart tokenizer's 4096 tokens
// and the four specials an MLM adds ([PAD], [CLS], [SEP], [MASK]).
struct BertTiny final {
  using Arch = Bert;
  static constexpr const char* name = "bert-tiny";
  static constexpr const char* about = "BERT shape, 4 post-norm layers of 256: for CPU experiments";
  static constexpr Dims dims = Dims{.d_model = 256, .n_layers = 4, .n_heads = 4, .n_kv_heads = 4, .d_ff = 1024,
                                    .vocab = 4100, .max_seq = 128, .norm_eps = 1e-12, .bias = true}
                                   .with("type_vocab", 2);
};

struct BertPreNormTiny final {
  using Arch = BertPreNorm;
  static constexpr const char* name = "bert-prenorm-tiny";
  static constexpr const char* about = "bert-tiny with pre-norm blocks and a final norm (the placement ablation)";
  static constexpr Dims dims = BertTiny::dims;
};

}  // namespace llmtk
