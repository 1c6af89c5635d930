// Block<Norm, Mixer, FeedForward, Placement>: a transformer block read in data-flow order. Two
// sublayers, `attn` (Norm + Mixer) and `mlp` (Norm + FeedForward), each wrapped by the placement.
//
// Why two definitions: the block proper is defined for parts that fit their slots (the concepts
// in its template head); any other parts pick the second definition, which only reports, with a
// static_assert per slot in plain words, and stands in as a harmless part (Rejected). Written
// the usual way, template <Norm N, ...> struct Block, a wrong part would make Block<...> no type
// at all, and every use of it (Repeat, DecoderLM, ModelOf) would add errors of its own, a
// cascade after the one that says it all. The other combinators follow the same pattern.
#pragma once
#include "placement.hpp"

namespace llmtk {

template <class N, class M, class F, class P>
struct Block;

// The block, when each part is what its slot needs.
template <Norm N, Mixer M, FeedForward F, Placement P>
struct Block<N, M, F, P> {
  static constexpr Role role = Role::block;
  static constexpr std::string_view tags[] = {"sequential_block"};
  using In = Hidden;
  using Out = Hidden;
  using Composition = Block;  // what a strong name (struct LlamaBlock final : Block<...>) stands for
  using Attn = typename P::template Wrap<N, M>;
  using Mlp = typename P::template Wrap<N, F>;
  static_assert(AxesConnect<Mlp, typename Mlp::In, typename Attn::Out>::value);

  using Parts = PartList<Child<"attn", Attn>, Child<"mlp", Mlp>>;

  Attn attn;
  Mlp mlp;
  ActSlot mid, dmid;  // the stream between the sublayers (saved) and its gradient (scratch)

  void declare(Planner& p) {
    { auto s = p.scope("attn"); attn.declare(p); }
    { auto s = p.scope("mlp"); mlp.declare(p); }
    mid = p.act("mid", {p.B, p.T, p.dims.d_model});
    dmid = p.act("dmid", {p.B, p.T, p.dims.d_model});
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    attn.forward(c, c.a(mid), x);
    mlp.forward(c, y, c.a(mid));
  }
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    mlp.backward(c, c.a(dmid), dy, c.a(mid));
    attn.backward(c, dx, c.a(dmid), x);
  }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return Attn::flops_per_token(d, T) + Mlp::flops_per_token(d, T);
  }
};

// Otherwise: each static_assert names a slot and what it needs in words, and the compiler's notes
// under it the type it got and the requirement that type fails (protocol/concepts.hpp).
template <class N, class M, class F, class P>
struct Block : Rejected<Role::block> {
  static_assert(Norm<N>, "Block<Norm, Mixer, FeedForward, Placement>: the first part must be a norm "
                         "(RMSNorm, LayerNorm); the notes below name the type it got");
  static_assert(Mixer<M>, "Block<Norm, Mixer, FeedForward, Placement>: the second part must be a mixer "
                          "(GQA<...>, MHA<...>, MQA<...>); the notes below name the type it got");
  static_assert(FeedForward<F>, "Block<Norm, Mixer, FeedForward, Placement>: the third part must be a "
                                "feed-forward (MLP<...>, SwiGLU, GeGLU); the notes below name the type it got");
  static_assert(Placement<P>, "Block<Norm, Mixer, FeedForward, Placement>: the fourth part must be a "
                              "placement (PreNorm, PostNorm, SandwichNorm); the notes below name the type it got");
};

}  // namespace llmtk
