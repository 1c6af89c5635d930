// ParallelBlock<Norm, Mixer, FeedForward>: the GPT-J / PaLM block. Attention and the feed-forward
// read the same normed input and their outputs are added to the stream together:
//   y = x + attn(norm(x)) + mlp(norm(x))
// One norm instead of two, and the two sublayers are independent (a tensor-parallel run needs one
// all-reduce per block instead of two). Parameters: norm.*, attn.*, mlp.*.
#pragma once
#include "../protocol/part.hpp"
#include "../protocol/visit.hpp"
#include "placement.hpp"  // norm_backward_plus

namespace llmtk {

template <class N, class M, class F>
struct ParallelBlock;

// The block, when each part is what its slot needs; otherwise a Rejected stand-in (below) whose
// static_asserts name the slot, as for Block (block.hpp).
template <Norm N, Mixer M, FeedForward F>
struct ParallelBlock<N, M, F> {
  static constexpr Role role = Role::block;
  static constexpr std::string_view tags[] = {"parallel_block"};
  using In = Hidden;
  using Out = Hidden;
  using Composition = ParallelBlock;
  using Parts = PartList<Child<"norm", N>, Child<"attn", M>, Child<"mlp", F>>;

  N norm;
  M attn;
  F mlp;
  ActSlot normed, dnormed;  // norm(x) (saved) and its gradient (scratch): [B, T, C]
  ActSlot part;             // scratch: the feed-forward's output, then its input gradient

  void declare(Planner& p) {
    { auto s = p.scope("norm"); norm.declare(p); }
    { auto s = p.scope("attn"); attn.declare(p); }
    { auto s = p.scope("mlp"); mlp.declare(p); }
    const std::vector<std::int64_t> h{p.B, p.T, p.dims.d_model};
    normed = p.act("normed", h), dnormed = p.act("dnormed", h), part = p.act("part", h);
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    norm.forward(c, c.hidden(normed), x);
    attn.forward(c, y, c.hidden(normed));
    mlp.forward(c, c.hidden(part), c.hidden(normed));
    ops::add_forward(y, y, c.hidden(part));
    ops::add_forward(y, y, x);
  }
  // dx, dy, x: [B, T, C]
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    attn.backward(c, c.hidden(dnormed), dy, c.hidden(normed));
    mlp.backward(c, c.hidden(part), dy, c.hidden(normed));
    ops::add_forward(c.hidden(dnormed), c.hidden(dnormed), c.hidden(part));  // both read norm(x)
    norm_backward_plus(c, norm, dx, c.hidden(dnormed), x, dy);  // + dy: the residual path
  }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return N::flops_per_token(d, T) + M::flops_per_token(d, T) + F::flops_per_token(d, T) + 2.0 * d.d_model;
  }
};

template <class N, class M, class F>
struct ParallelBlock : Rejected<Role::block> {
  static_assert(Norm<N>, "ParallelBlock<Norm, Mixer, FeedForward>: the first part must be a norm "
                         "(RMSNorm, LayerNorm); the notes below name the type it got");
  static_assert(Mixer<M>, "ParallelBlock<Norm, Mixer, FeedForward>: the second part must be a mixer "
                          "(GQA<...>, MHA<...>, MQA<...>); the notes below name the type it got");
  static_assert(FeedForward<F>, "ParallelBlock<Norm, Mixer, FeedForward>: the third part must be a "
                                "feed-forward (MLP<...>, SwiGLU, GeGLU); the notes below name the type it got");
};

}  // namespace llmtk
