// CrossBlock<Norm, Mixer, CrossMixer, FeedForward, Placement>: an encoder-decoder's decoder block,
// read in data-flow order. Three sublayers, each wrapped by the placement:
//   attn   Norm + Mixer        the decoder's own tokens (causal self-attention)
//   cross  Norm + CrossMixer   the encoder's output (CrossAttention, Flow::memory)
//   mlp    Norm + FeedForward
// as in the original Transformer's decoder (Vaswani et al. 2017, §3.1) and T5's (layer.0, layer.1,
// layer.2 of each decoder block). Block (block.hpp) explains the two definitions.
#pragma once
#include "placement.hpp"

namespace llmtk {

template <class X>
concept CrossMixer = Mixer<X> && has_tag<X>("cross_attention");

template <class N, class M, class X, class F, class P>
struct CrossBlock;

template <Norm N, Mixer M, CrossMixer X, FeedForward F, Placement P>
  requires(!has_tag<M>("cross_attention"))
struct CrossBlock<N, M, X, F, P> {
  static constexpr Role role = Role::block;
  static constexpr std::string_view tags[] = {"sequential_block"};
  using In = Hidden;
  using Out = Hidden;
  using Composition = CrossBlock;
  using Attn = typename P::template Wrap<N, M>;
  using Cross = typename P::template Wrap<N, X>;
  using Mlp = typename P::template Wrap<N, F>;

  using Parts = PartList<Child<"attn", Attn>, Child<"cross", Cross>, Child<"mlp", Mlp>>;

  Attn attn;
  Cross cross;
  Mlp mlp;
  ActSlot mid0, mid1, dmid0, dmid1;  // the stream between the sublayers (saved) and its gradients

  void declare(Planner& p) {
    { auto s = p.scope("attn"); attn.declare(p); }
    { auto s = p.scope("cross"); cross.declare(p); }
    { auto s = p.scope("mlp"); mlp.declare(p); }
    const std::vector<std::int64_t> h{p.B, p.T, p.dims.d_model};
    mid0 = p.act("mid0", h), mid1 = p.act("mid1", h), dmid0 = p.act("dmid0", h), dmid1 = p.act("dmid1", h);
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    attn.forward(c, c.a(mid0), x);
    cross.forward(c, c.a(mid1), c.a(mid0));
    mlp.forward(c, y, c.a(mid1));
  }
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    mlp.backward(c, c.a(dmid1), dy, c.a(mid1));
    cross.backward(c, c.a(dmid0), c.a(dmid1), c.a(mid0));
    attn.backward(c, dx, c.a(dmid0), x);
  }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return Attn::flops_per_token(d, T) + Cross::flops_per_token(d, T) + Mlp::flops_per_token(d, T);
  }
};

template <class N, class M, class X, class F, class P>
struct CrossBlock : Rejected<Role::block> {
  static_assert(Norm<N>, "CrossBlock<Norm, Mixer, CrossMixer, FeedForward, Placement>: the first part must be a "
                         "norm (RMSNorm, LayerNorm); the notes below name the type it got");
  static_assert(Mixer<M> && !has_tag<M>("cross_attention"),
                "CrossBlock<Norm, Mixer, CrossMixer, FeedForward, Placement>: the second part must be the decoder's "
                "self-attention (MHA<NoPE>, GQA<RoPE>...), not a cross-attention; the notes below name the type it got");
  static_assert(CrossMixer<X>, "CrossBlock<Norm, Mixer, CrossMixer, FeedForward, Placement>: the third part must be "
                               "a cross-attention (CrossAttention); the notes below name the type it got");
  static_assert(FeedForward<F>, "CrossBlock<Norm, Mixer, CrossMixer, FeedForward, Placement>: the fourth part must "
                                "be a feed-forward (MLP<...>, GeGLU); the notes below name the type it got");
  static_assert(Placement<P>, "CrossBlock<Norm, Mixer, CrossMixer, FeedForward, Placement>: the fifth part must be "
                              "a placement (PreNorm, PostNorm); the notes below name the type it got");
};

}  // namespace llmtk
