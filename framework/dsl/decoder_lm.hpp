// DecoderLM<Embedding, Repeat<Block>, FinalNorm, LMHead>: a decoder-only language model,
// token ids [B, T] to logits [B, T, V]. Checks at compile time that its parts connect and that
// it uses one position scheme.
#pragma once
#include "../protocol/part.hpp"

namespace llmtk {

template <class E>
concept EmbeddingPart = Layer<E> && IsEmbedding<E>;
template <class S>
concept StackPart = Layer<S> && KeepsAxes<S>;
template <class H>
concept HeadPart = Layer<H> && IsHead<H>;

template <class E, class S, class FinalNorm, class H>
struct DecoderLM;

// single_position_scheme: positions are added at the embedding or applied in the mixer, not both.
template <class E, class S>
inline constexpr bool one_position_scheme = !(has_tag<E>("additive_positions") && has_tag<S>("attention_positions"));

// The model, when each part is what its slot needs; otherwise a Rejected stand-in (below) whose
// static_asserts name the slot, as for Block (block.hpp).
template <EmbeddingPart E, StackPart S, Norm FinalNorm, HeadPart H>
struct DecoderLM<E, S, FinalNorm, H> {
  static constexpr Role role = Role::model;
  using In = Tokens;
  using Out = typename H::Out;  // Logits from an LM head, Scores from a score head
  using Composition = DecoderLM;
  using EmbeddingT = E;
  using StackT = S;
  using FinalNormT = FinalNorm;
  using HeadT = H;
  static_assert(AxesConnect<S, typename S::In, typename E::Out>::value);
  static_assert(AxesConnect<FinalNorm, typename FinalNorm::In, typename S::Out>::value);
  static_assert(AxesConnect<H, typename H::In, typename FinalNorm::Out>::value);

  using Parts = PartList<Child<"embed", E>, Child<"blocks", S>, Child<"final_norm", FinalNorm>, Child<"head", H>>;
  static_assert(one_position_scheme<E, S>,
                "single_position_scheme: an embedding that adds positions (LearnedPositions, "
                "Sinusoidal) cannot be combined with RoPE or ALiBi in the mixer");
  static_assert(!has_tag<S>("cross_attention"),
                "cross_attention_needs_memory: a decoder-only model has no encoder output for CrossAttention to "
                "read; compose EncoderDecoderLM<...> with CrossBlock<...> in its decoder, or use self-attention");
  static_assert(!has_tag<H>("mlm_head"),
                "mlm_head_needs_encoder: an MLM head predicts masked tokens from both sides, which a causal "
                "stack cannot see; compose EncoderLM<..., MLMHead<Tied>> with bidirectional attention, or give "
                "the decoder an LMHead");

  E embed;
  S blocks;
  FinalNorm final_norm;
  H head;
  ActSlot h0, hL, hn;       // embedding output, last block output, final norm output (saved)
  ActSlot dh0, dhL, dhn;    // their gradients (scratch)

  void declare(Planner& p) {
    { auto s = p.scope("embed"); embed.declare(p); }
    { auto s = p.scope("blocks"); blocks.declare(p); }
    { auto s = p.scope("final_norm"); final_norm.declare(p); }
    { auto s = p.scope("head"); head.declare(p); }
    if constexpr (H::tied) head.tie(p, embed.tokens);
    const std::vector<std::int64_t> h{p.B, p.T, p.dims.d_model};
    h0 = p.act("h0", h), hL = p.act("hL", h), hn = p.act("hn", h);
    dh0 = p.act("dh0", h), dhL = p.act("dhL", h), dhn = p.act("dhn", h);
  }
  // logits: [B, T, V]; ids: [B, T] i32
  void forward(Ctx& c, TensorRef logits, TensorRef ids) {
    embed.forward(c, c.a(h0), ids);
    blocks.forward(c, c.a(hL), c.a(h0));
    final_norm.forward(c, c.a(hn), c.a(hL));
    head.forward(c, logits, c.a(hn));
  }
  // dlogits: [B, T, V]; token ids have no gradient
  void backward(Ctx& c, TensorRef /*dids*/, TensorRef dlogits, TensorRef ids) {
    head.backward(c, c.a(dhn), dlogits, c.a(hn));
    final_norm.backward(c, c.a(dhL), c.a(dhn), c.a(hL));
    blocks.backward(c, c.a(dh0), c.a(dhL), c.a(h0));
    embed.backward(c, TensorRef{}, c.a(dh0), ids);
  }
  // The width of each position's output: the vocabulary (LM head) or 1 (score head).
  static std::int64_t outputs(const Dims& d) { return H::outputs(d); }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return E::flops_per_token(d, T) + S::flops_per_token(d, T) +
           FinalNorm::flops_per_token(d, T) + H::flops_per_token(d, T);
  }
};

template <class E, class S, class FinalNorm, class H>
struct DecoderLM : Rejected<Role::model, Tokens, Logits> {
  static_assert(EmbeddingPart<E>, "DecoderLM<Embedding, Stack, FinalNorm, Head>: the first part must be an "
                                  "embedding (TokenEmbedding, Embedding<...>); the notes below name the type it got");
  static_assert(StackPart<S>, "DecoderLM<Embedding, Stack, FinalNorm, Head>: the second part must be a stack "
                              "of blocks (Repeat<...>) that returns the axes it takes; the notes below name the "
                              "type it got");
  static_assert(Norm<FinalNorm>, "DecoderLM<Embedding, Stack, FinalNorm, Head>: the third part must be a norm "
                                 "(RMSNorm, LayerNorm); the notes below name the type it got");
  static_assert(HeadPart<H>, "DecoderLM<Embedding, Stack, FinalNorm, Head>: the fourth part must be a head "
                             "(LMHead<Tied>, LMHead<Untied>, ScoreHead); the notes below name the type it got");
};

}  // namespace llmtk
