// Block<Norm, Mixer, FeedForward, Placement>: a transformer block read in data-flow order. Two
// sublayers, `attn` (Norm + Mixer) and `mlp` (Norm + FeedForward), each wrapped by the placement.
#pragma once
#include "placement.hpp"

namespace llmtk {

template <Norm N, Mixer M, FeedForward F, Placement P>
struct Block {
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

}  // namespace llmtk
