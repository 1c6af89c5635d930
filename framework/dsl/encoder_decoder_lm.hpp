// EncoderDecoderLM<Embedding, EncoderStack, EncoderNorm, DecoderStack, DecoderNorm, Head>: the
// third family (the original Transformer, T5, BART). Source ids [B, S] and target ids [B, T] to
// logits [B, T, V]:
//
//   source → embed → encoder stack (+ its norm) → memory [B, S, C]
//   target → embed → decoder stack (+ its norm) → head → logits
//                    └ each CrossAttention reads the memory (Flow::memory)
//
// One embedding table serves both sides (T5's `shared`, and a tied head reads it too): the
// decoder side is a second instance of the embedding that plans its own activations at the
// target's rows and reuses the first's parameters (Planner::reuse_params), so their gradients add.
// Each side's norm goes where EncoderLM puts it: after the embedding when the stack's blocks are
// post-norm (they normalise their own outputs), after the stack when they are pre-norm (T5).
//
// Backward runs the decoder first: every cross-attention layer adds its share of the memory's
// gradient into Flow::dmemory, which the encoder's backward then takes as its output's gradient.
//
// Decoding (a KV cache planned): encode() runs the encoder once per source; forward then runs the
// decoder alone, one position at a time, against the kept memory.
//
// The static checks: the parts connect; the encoder sees both ways (encoder_bidirectional); the
// decoder's self-attention is causal (decoder_causal); cross-attention is in the decoder, where
// there is a memory to read (cross_attention_needs_memory), and the decoder has some
// (decoder_reads_memory); one position scheme per side.
#pragma once
#include "encoder_lm.hpp"  // EmbeddingPart, StackPart, HeadPart, one_position_scheme, sees_both_ways

namespace llmtk {

// A stack with its norm, placed as the blocks need (see above): one side of the model.
template <StackPart S, Norm N>
struct StackWithNorm {
  static constexpr Role role = Role::other;
  using In = Hidden;
  using Out = Hidden;
  static constexpr bool norm_first = has_tag<S>("postnorm");
  using Parts = std::conditional_t<norm_first, PartList<Child<"embed_norm", N>, Child<"blocks", S>>,
                                   PartList<Child<"blocks", S>, Child<"final_norm", N>>>;
  S blocks;
  N norm;
  ActSlot mid, dmid;  // between the norm and the stack (saved) and its gradient (scratch)

  void declare(Planner& p) {
    if constexpr (norm_first) {
      { auto s = p.scope("embed_norm"); norm.declare(p); }
      { auto s = p.scope("blocks"); blocks.declare(p); }
    } else {
      { auto s = p.scope("blocks"); blocks.declare(p); }
      { auto s = p.scope("final_norm"); norm.declare(p); }
    }
    mid = p.act("mid", {p.B, p.T, p.dims.d_model}), dmid = p.act("dmid", {p.B, p.T, p.dims.d_model});
  }
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    if constexpr (norm_first) norm.forward(c, c.a(mid), x), blocks.forward(c, y, c.a(mid));
    else blocks.forward(c, c.a(mid), x), norm.forward(c, y, c.a(mid));
  }
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    if constexpr (norm_first) blocks.backward(c, c.a(dmid), dy, c.a(mid)), norm.backward(c, dx, c.a(dmid), x);
    else norm.backward(c, c.a(dmid), dy, c.a(mid)), blocks.backward(c, dx, c.a(dmid), x);
  }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return S::flops_per_token(d, T) + N::flops_per_token(d, T);
  }
};

template <class E, class ES, class EN, class DS, class DN, class H>
struct EncoderDecoderLM;

template <EmbeddingPart E, StackPart ES, Norm EN, StackPart DS, Norm DN, HeadPart H>
struct EncoderDecoderLM<E, ES, EN, DS, DN, H> {
  static constexpr Role role = Role::model;
  static constexpr std::string_view tags[] = {"encoder_decoder"};
  using In = Tokens;
  using Out = typename H::Out;
  using Composition = EncoderDecoderLM;
  using EmbeddingT = E;
  using EncoderT = StackWithNorm<ES, EN>;
  using DecoderT = StackWithNorm<DS, DN>;
  using HeadT = H;
  static_assert(AxesConnect<ES, typename ES::In, typename E::Out>::value);
  static_assert(AxesConnect<DS, typename DS::In, typename E::Out>::value);
  static_assert(AxesConnect<H, typename H::In, typename DS::Out>::value);
  static_assert(sees_both_ways<ES>,
                "encoder_bidirectional: an encoder's attention sees the whole source; use MHA<Pos, Bidirectional> in "
                "the encoder's blocks instead of a causal mixer");
  static_assert(has_tag<DS>("causal") && !has_tag<DS>("bidirectional"),
                "decoder_causal: the decoder predicts each target token from the ones before it, so its "
                "self-attention must be causal (MHA<Pos, Causal>); bidirectional self-attention would let it read "
                "the token it predicts");
  static_assert(!has_tag<ES>("cross_attention"),
                "cross_attention_needs_memory: the encoder has no encoder output to attend to; CrossAttention "
                "goes in the decoder's blocks (CrossBlock<...>)");
  static_assert(has_tag<DS>("cross_attention"),
                "decoder_reads_memory: the decoder's blocks have no CrossAttention, so nothing reads the encoder; "
                "use CrossBlock<Norm, Mixer, CrossAttention, FeedForward, Placement> for the decoder");
  static_assert(one_position_scheme<E, ES> && one_position_scheme<E, DS>,
                "single_position_scheme: an embedding that adds positions (LearnedPositions, Sinusoidal) cannot "
                "be combined with RoPE, ALiBi or a relative bias in the mixer");
  static_assert(!has_tag<H>("mlm_head") && !has_tag<H>("class_head"),
                "encoder_decoder_head: the decoder predicts the next target token; give it an LMHead");

  using Parts = PartList<Child<"embed", E>, Child<"encoder", EncoderT>, Child<"decoder", DecoderT>, Child<"head", H>>;

  E embed;        // the source side; also the table both sides read
  E dec_embed;    // the target side: the same parameters, its own activations
  EncoderT encoder;
  DecoderT decoder;
  H head;
  std::int64_t S = 0;  // the planned source length
  bool decoding = false;
  ActSlot e0, memory, de0, dmemory, zeros;  // [B, S, C]: embedded source, encoder output, gradients, zeros
  ActSlot h0, hn, dh0, dhn;                 // [B, T, C]: embedded target, decoder output, gradients

  void declare(Planner& p) {
    S = p.S;
    LLMTK_CHECK(S > 0, "encoder_decoder", "plan a source length (AnyModel::plan's S)");
    decoding = p.kv_cache > 0;
    const std::int64_t C = p.dims.d_model, kv = p.kv_cache;
    {
      // The encoder: S rows, run whole once per source (no KV cache when decoding).
      auto rows = p.rows(p.B, S);
      p.kv_cache = 0;
      { auto s = p.scope("embed"); embed.declare(p); }
      { auto s = p.scope("encoder"); encoder.declare(p); }
      p.kv_cache = kv;
      const std::vector<std::int64_t> m{p.B, S, C};
      e0 = p.act("encoder_input", m), memory = p.act("memory", m);
      de0 = p.act("dencoder_input", m), dmemory = p.act("dmemory", m);
      zeros = p.act("memory_zeros", m);  // never written: the arena starts zeroed
    }
    {
      auto reuse = p.reuse_params("embed", "decoder_embed");
      auto s = p.scope("decoder_embed");
      dec_embed.declare(p);
    }
    { auto s = p.scope("decoder"); decoder.declare(p); }
    { auto s = p.scope("head"); head.declare(p); }
    if constexpr (H::tied) head.tie(p, embed.tokens);
    const std::vector<std::int64_t> h{p.B, p.T, C};
    h0 = p.act("h0", h), hn = p.act("hn", h), dh0 = p.act("dh0", h), dhn = p.act("dhn", h);
  }

  // The encoder alone: c.flow.source → memory.
  void encode(Ctx& c) {
    Ctx e = encoder_ctx(c);
    embed.forward(e, e.a(e0), c.flow.source);
    encoder.forward(e, e.a(memory), e.a(e0));
  }
  // logits: [B, T, V]; ids: the decoder's [B, T] i32 (the source is c.flow.source)
  void forward(Ctx& c, TensorRef logits, TensorRef ids) {
    if (!decoding) encode(c);
    c.flow.memory = memory_of(c, memory);
    dec_embed.forward(c, c.a(h0), ids);
    decoder.forward(c, c.a(hn), c.a(h0));
    head.forward(c, logits, c.a(hn));
  }
  void backward(Ctx& c, TensorRef /*dids*/, TensorRef dlogits, TensorRef ids) {
    c.flow.memory = memory_of(c, memory), c.flow.dmemory = memory_of(c, dmemory);
    ops::convert(c.flow.dmemory, c.a(zeros));  // each cross-attention layer adds its share
    head.backward(c, c.a(dhn), dlogits, c.a(hn));
    decoder.backward(c, c.a(dh0), c.a(dhn), c.a(h0));
    dec_embed.backward(c, TensorRef{}, c.a(dh0), ids);
    Ctx e = encoder_ctx(c);
    encoder.backward(e, e.a(de0), e.a(dmemory), e.a(e0));
    embed.backward(e, TensorRef{}, e.a(de0), c.flow.source);
  }
  static std::int64_t outputs(const Dims& d) { return H::outputs(d); }
  // Per target token, with the source taken to be as long as the target.
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return 2 * E::flops_per_token(d, T) + EncoderT::flops_per_token(d, T) + DecoderT::flops_per_token(d, T) +
           H::flops_per_token(d, T);
  }

 private:
  // The encoder's view of the batch: S rows, its padding from the source's lengths.
  Ctx encoder_ctx(const Ctx& c) const {
    Ctx e = c;
    e.T = S, e.pos0 = 0;
    e.flow = Flow{};
    e.flow.lengths = c.flow.source_lengths;
    return e;
  }
  TensorRef memory_of(const Ctx& c, ActSlot s) const { return c.a(s).view({c.B, S, c.dims.d_model}); }
};

template <class E, class ES, class EN, class DS, class DN, class H>
struct EncoderDecoderLM : Rejected<Role::model, Tokens, Logits> {
  static_assert(EmbeddingPart<E>, "EncoderDecoderLM<Embedding, EncoderStack, EncoderNorm, DecoderStack, DecoderNorm, "
                                  "Head>: the first part must be an embedding; the notes below name the type it got");
  static_assert(StackPart<ES>, "EncoderDecoderLM<...>: the second part must be the encoder's stack of blocks "
                               "(Repeat<...>); the notes below name the type it got");
  static_assert(Norm<EN>, "EncoderDecoderLM<...>: the third part must be the encoder's norm (RMSNorm, LayerNorm); "
                          "the notes below name the type it got");
  static_assert(StackPart<DS>, "EncoderDecoderLM<...>: the fourth part must be the decoder's stack of blocks "
                               "(Repeat<CrossBlock<...>>); the notes below name the type it got");
  static_assert(Norm<DN>, "EncoderDecoderLM<...>: the fifth part must be the decoder's norm (RMSNorm, LayerNorm); "
                          "the notes below name the type it got");
  static_assert(HeadPart<H>, "EncoderDecoderLM<...>: the sixth part must be a head (LMHead<Tied>); the notes below "
                             "name the type it got");
};

}  // namespace llmtk
