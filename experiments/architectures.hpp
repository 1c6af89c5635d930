// The architectures of the shipped experiments (docs/experiments.md): each an ablation of the
// Llama-style block, one Ablate<...> per question, registered with one line each. This header is
// read by the build as any header of yours in LLMTK_ARCH_DIRS would be (models/user.hpp).
#pragma once
#include "models/user.hpp"

namespace llmtk::experiments {

// The sizes every ablation below starts from: small enough that a run takes a minute on 2 cores.
inline constexpr Dims kSmall{.d_model = 128, .n_layers = 4, .n_heads = 4, .n_kv_heads = 2, .d_ff = 344,
                             .vocab = 4096, .max_seq = 256, .rope_base = 10000.0, .norm_eps = 1e-5};

// Position encodings. One axis, "pos", in two slots: what the embedding adds and what attention
// applies; the i-th alternatives go together (Alt<> names them).
using Pos = Axis<"pos">;
struct Positions final {
  using Arch = DecoderLM<Embedding<Ablate<Pos, Alt<"nope", NoPE>, Alt<"learned", LearnedPositions>,
                                          Alt<"sinusoidal", Sinusoidal>, Alt<"rope", NoPE>, Alt<"alibi", NoPE>>>,
                         Repeat<Block<RMSNorm, GQA<Ablate<Pos, NoPE, NoPE, NoPE, RoPE, ALiBi>>, SwiGLU, PreNorm>>,
                         RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "pos";
  static constexpr const char* about = "position encodings: none, learned, sinusoidal, RoPE, ALiBi";
  static constexpr Dims dims = kSmall;
};

// Feed-forwards. A gated one has three matrices to an MLP's two: experiments/ffn.toml sets d_ff
// per variant so that all have the same parameters.
struct FeedForwards final {
  using Arch = DecoderLM<TokenEmbedding,
                         Repeat<Block<RMSNorm, GQA<RoPE>,
                                      Ablate<Alt<"gelu", MLP<GELU>>, Alt<"relu", MLP<ReLU>>, Alt<"swiglu", SwiGLU>,
                                             Alt<"geglu", GeGLU>>,
                                      PreNorm>>,
                         RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "ffn";
  static constexpr const char* about = "feed-forwards: MLP<GELU>, MLP<ReLU>, SwiGLU, GeGLU";
  static constexpr Dims dims = kSmall;
};

// Where the norms sit around each sublayer.
struct NormPlacements final {
  using Arch = DecoderLM<TokenEmbedding,
                         Repeat<Block<RMSNorm, GQA<RoPE>, SwiGLU,
                                      Ablate<Axis<"norm">, Alt<"pre", PreNorm>, Alt<"post", PostNorm>,
                                             Alt<"sandwich", SandwichNorm>>>>,
                         RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "norm";
  static constexpr const char* about = "norm placement: pre-norm, post-norm, sandwich";
  static constexpr Dims dims = kSmall;
};

// Key/value heads: one per query head (MHA), shared by groups (GQA), one for all (MQA).
struct AttentionHeads final {
  using Arch = DecoderLM<TokenEmbedding,
                         Repeat<Block<RMSNorm, Ablate<MHA<RoPE>, GQA<RoPE>, MQA<RoPE>>, SwiGLU, PreNorm>>,
                         RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "attn";
  static constexpr const char* about = "attention: MHA, GQA, MQA (and a sliding window as a size)";
  static constexpr Dims dims = kSmall;
};

// Mixture of experts against the dense feed-forward it replaces: experiments/moe.toml sets d_ff per
// variant so that top-2 of 8 experts reads the dense model's parameters per token (d_ff / 2 each),
// Switch's top-1 likewise (d_ff each), and a dense model 4x wider has the top-2 model's total.
struct Experts final {
  using Arch = DecoderLM<TokenEmbedding,
                         Repeat<Block<RMSNorm, GQA<RoPE>,
                                      Ablate<Axis<"ffn">, Alt<"dense", SwiGLU>, Alt<"top2", MoE<SwiGLU, TopKRouter>>,
                                             Alt<"switch", MoE<SwiGLU, SwitchRouter>>>,
                                      PreNorm>>,
                         RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "moe";
  static constexpr const char* about = "feed-forwards: dense SwiGLU, 8 SwiGLU experts top-2 (Mixtral), top-1 (Switch)";
  static constexpr Dims dims = kSmall;
};

// Sequence mixers: attention (GQA with RoPE) against a linear recurrence (minGRU), every layer the
// same; benchmarks/recurrence/run.sh times them as the sequence grows.
struct Mixers final {
  using Arch = DecoderLM<TokenEmbedding,
                         Repeat<Block<RMSNorm, Ablate<Axis<"mixer">, Alt<"gqa", GQA<RoPE>>, Alt<"mingru", MinGRU<>>>,
                                      SwiGLU, PreNorm>>,
                         RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "mixer";
  static constexpr const char* about = "sequence mixers: attention (GQA, RoPE) or a linear recurrence (minGRU)";
  static constexpr Dims dims = kSmall;
};

}  // namespace llmtk::experiments

LLMTK_REGISTER_ABLATION(llmtk::experiments::Positions);
LLMTK_REGISTER_ABLATION(llmtk::experiments::FeedForwards);
LLMTK_REGISTER_ABLATION(llmtk::experiments::NormPlacements);
LLMTK_REGISTER_ABLATION(llmtk::experiments::AttentionHeads);
LLMTK_REGISTER_ABLATION(llmtk::experiments::Experts);
LLMTK_REGISTER_ABLATION(llmtk::experiments::Mixers);
