// Repeat<B>: n_layers copies of one block, held in a std::vector. The count is a run-time size,
// so the type stays shallow however deep the model is; only heterogeneity belongs in types.
#pragma once
#include <string>
#include <vector>

#include "../protocol/part.hpp"

namespace llmtk {

template <class B>
struct Repeat;

// The stack, when B is a layer that returns the axes it takes.
template <class B>
  requires Layer<B> && KeepsAxes<B>
struct Repeat<B> {
  static constexpr Role role = Role::stack;
  using In = typename B::In;
  using Out = typename B::Out;
  using Item = B;
  using Parts = PartList<Child<"N", B>>;  // kEach: blocks 0 .. n_layers-1

  std::vector<B> blocks;
  std::vector<ActSlot> outs;  // outputs of blocks 0 .. n-2 (saved); the last writes y
  ActSlot grad[2];            // ping-pong gradient buffers (scratch)
  bool recompute = false;     // blocks share activation memory and re-run forward in backward
  std::string scope;          // "blocks.": block i's parameters are "blocks.i.*" (a probe's layer names)

  void declare(Planner& p) {
    const int n = p.dims.n_layers;
    scope = p.prefix();
    blocks.assign(static_cast<std::size_t>(n), B{});
    outs.assign(static_cast<std::size_t>(n > 0 ? n - 1 : 0), ActSlot{});
    recompute = p.recompute_blocks;
    const std::string first = p.prefix() + "0.";
    for (int i = 0; i < n; ++i) {
      auto s = p.scope(std::to_string(i));
      if (recompute && i > 0) p.share_activations(first, p.prefix());
      blocks[i].declare(p);
      p.share_activations("", "");
      if (i + 1 < n) outs[i] = p.act("out", {p.B, p.T, p.dims.d_model});
    }
    grad[0] = p.act("grad0", {p.B, p.T, p.dims.d_model});
    grad[1] = p.act("grad1", {p.B, p.T, p.dims.d_model});
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    const std::size_t n = blocks.size();
    TensorRef in = x;
    for (std::size_t i = 0; i < n; ++i) {
      TensorRef out = i + 1 == n ? y : c.a(outs[i]);
      if (c.probe) c.probe->enter(scope + std::to_string(i));
      blocks[i].forward(c, out, in);
      if (c.probe) c.probe->block_output(out);
      in = out;
    }
  }
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    const std::size_t n = blocks.size();
    TensorRef g = dy;
    for (std::size_t i = n; i-- > 0;) {
      TensorRef in = i == 0 ? x : c.a(outs[i - 1]);
      TensorRef dst = i == 0 ? dx : c.a(grad[i % 2]);
      // With shared memory the block's saved activations are another block's by now: recompute
      // them from the block's input (its output, rewritten with the same values, is not read).
      if (recompute && i + 1 < n) blocks[i].forward(c, c.a(outs[i]), in);
      blocks[i].backward(c, dst, g, in);
      if (c.gradient_hook) c.gradient_hook->layer_done(scope + std::to_string(i));
      g = dst;
    }
  }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return d.n_layers * B::flops_per_token(d, T);
  }
};

// Otherwise: the static_assert names the rule, and the stack stands in as a Rejected part
// (protocol/concepts.hpp) so that the error is not followed by a cascade from the model.
template <class B>
struct Repeat : Rejected<Role::stack> {
  static_assert(Layer<B> && KeepsAxes<B>,
                "repeat_keeps_axes: Repeat<B> feeds each block's output to the next, so B must be a "
                "layer that returns the axes it takes; the notes below name the type it got");
};

}  // namespace llmtk
