// EncoderLM<Embedding, Stack, Norm, Head>: a bidirectional encoder (BERT's family), token ids
// [B, T] to one output per position (an MLM head's logits). Every token sees the whole row (but
// padding), so the model fills in masked tokens rather than predicting the next one.
//
// The norm goes where the stream would otherwise be unnormalised, which the stack's placement
// decides:
//   PostNorm blocks (BERT):  embed → norm → blocks → head   every block ends in a norm, so the
//                                                            one norm left is the embedding's
//                                                            ("embed_norm", BERT's embeddings.LayerNorm)
//   PreNorm blocks:          embed → blocks → norm → head   as a pre-norm decoder ("final_norm")
// The static checks: the parts connect (as DecoderLM's), one position scheme, and every mixer of
// the stack sees both ways (rule encoder_bidirectional: a causal mask would hide from each token
// the words after it, which an encoder is there to read).
#pragma once
#include "decoder_lm.hpp"  // EmbeddingPart, StackPart, HeadPart, one_position_scheme

namespace llmtk {

template <class E, class S, class N, class H>
struct EncoderLM;

// encoder_bidirectional: no mixer of an encoder's stack is causal.
template <class S>
inline constexpr bool sees_both_ways = !has_tag<S>("causal");

template <EmbeddingPart E, StackPart S, Norm N, HeadPart H>
struct EncoderLM<E, S, N, H> {
  static constexpr Role role = Role::model;
  static constexpr std::string_view tags[] = {"encoder"};
  using In = Tokens;
  using Out = typename H::Out;
  using Composition = EncoderLM;
  using EmbeddingT = E;
  using StackT = S;
  using NormT = N;
  using HeadT = H;
  // Post-norm blocks normalise their own outputs: the model's norm then sits after the embedding.
  static constexpr bool norm_first = has_tag<S>("postnorm");
  static_assert(AxesConnect<S, typename S::In, typename E::Out>::value);
  static_assert(AxesConnect<N, typename N::In, typename E::Out>::value);
  static_assert(AxesConnect<H, typename H::In, typename S::Out>::value);
  static_assert(sees_both_ways<S>,
                "encoder_bidirectional: an encoder's attention sees the whole row; use GQA<Pos, Bidirectional> "
                "(MHA<NoPE, Bidirectional> for BERT) instead of a causal mixer, or DecoderLM for a causal model");
  static_assert(!has_tag<S>("cross_attention"),
                "cross_attention_needs_memory: an encoder-only model has no encoder output for CrossAttention to "
                "read; compose EncoderDecoderLM<...> with CrossBlock<...> in its decoder, or use self-attention");
  static_assert(one_position_scheme<E, S>,
                "single_position_scheme: an embedding that adds positions (LearnedPositions, Sinusoidal) "
                "cannot be combined with RoPE or ALiBi in the mixer");

  using Parts = std::conditional_t<norm_first,
                                   PartList<Child<"embed", E>, Child<"embed_norm", N>, Child<"blocks", S>, Child<"head", H>>,
                                   PartList<Child<"embed", E>, Child<"blocks", S>, Child<"final_norm", N>, Child<"head", H>>>;

  E embed;
  S blocks;
  N norm;
  H head;
  ActSlot h0, h1, h2;     // saved [B, T, C]: the embedding's output, then norm and stack in their order
  ActSlot dh0, dh1, dh2;  // their gradients (scratch)

  void declare(Planner& p) {
    { auto s = p.scope("embed"); embed.declare(p); }
    if constexpr (norm_first) {
      { auto s = p.scope("embed_norm"); norm.declare(p); }
      { auto s = p.scope("blocks"); blocks.declare(p); }
    } else {
      { auto s = p.scope("blocks"); blocks.declare(p); }
      { auto s = p.scope("final_norm"); norm.declare(p); }
    }
    { auto s = p.scope("head"); head.declare(p); }
    if constexpr (H::tied) head.tie(p, embed.tokens);
    const std::vector<std::int64_t> h{p.B, p.T, p.dims.d_model};
    h0 = p.act("h0", h), h1 = p.act("h1", h), h2 = p.act("h2", h);
    dh0 = p.act("dh0", h), dh1 = p.act("dh1", h), dh2 = p.act("dh2", h);
  }
  // outputs: [B, T, V]; ids: [B, T] i32
  void forward(Ctx& c, TensorRef outputs, TensorRef ids) {
    embed.forward(c, c.a(h0), ids);
    if constexpr (norm_first) {
      norm.forward(c, c.a(h1), c.a(h0));
      blocks.forward(c, c.a(h2), c.a(h1));
    } else {
      blocks.forward(c, c.a(h1), c.a(h0));
      norm.forward(c, c.a(h2), c.a(h1));
    }
    head.forward(c, outputs, c.a(h2));
  }
  void backward(Ctx& c, TensorRef /*dids*/, TensorRef doutputs, TensorRef ids) {
    head.backward(c, c.a(dh2), doutputs, c.a(h2));
    if constexpr (norm_first) {
      blocks.backward(c, c.a(dh1), c.a(dh2), c.a(h1));
      norm.backward(c, c.a(dh0), c.a(dh1), c.a(h0));
    } else {
      norm.backward(c, c.a(dh1), c.a(dh2), c.a(h1));
      blocks.backward(c, c.a(dh0), c.a(dh1), c.a(h0));
    }
    embed.backward(c, TensorRef{}, c.a(dh0), ids);
  }
  static std::int64_t outputs(const Dims& d) { return H::outputs(d); }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return E::flops_per_token(d, T) + S::flops_per_token(d, T) + N::flops_per_token(d, T) + H::flops_per_token(d, T);
  }
};

template <class E, class S, class N, class H>
struct EncoderLM : Rejected<Role::model, Tokens, Logits> {
  static_assert(EmbeddingPart<E>, "EncoderLM<Embedding, Stack, Norm, Head>: the first part must be an embedding "
                                  "(Embedding<LearnedPositions, TokenTypes>...); the notes below name the type it got");
  static_assert(StackPart<S>, "EncoderLM<Embedding, Stack, Norm, Head>: the second part must be a stack of blocks "
                              "(Repeat<...>) that returns the axes it takes; the notes below name the type it got");
  static_assert(Norm<N>, "EncoderLM<Embedding, Stack, Norm, Head>: the third part must be a norm (LayerNorm, "
                         "RMSNorm); the notes below name the type it got");
  static_assert(HeadPart<H>, "EncoderLM<Embedding, Stack, Norm, Head>: the fourth part must be a head (MLMHead<Tied>); "
                             "the notes below name the type it got");
};

}  // namespace llmtk
