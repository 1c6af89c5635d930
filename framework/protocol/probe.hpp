// Probe: what parts show of their insides during one forward pass, when the trainer asks
// (`[log] internals`, train/internals.hpp). Stacks name the layer that runs; blocks hand over
// their output, feed-forwards their units after the activation, attention its queries, keys and
// log-sum-exp, an MoE router its load. Parts call it only when Ctx::probe is set, so a forward
// without a probe does no extra work, and a part that shows nothing needs no change.
#pragma once
#include <string>
#include <string_view>

#include "../core/tensor.hpp"
#include "../ops/ops.hpp"  // AttentionMask

namespace llmtk {

class Probe {
 public:
  virtual ~Probe() = default;
  // A stack is about to run layer `name` ("blocks.3", "decoder.blocks.0"): what follows belongs to it.
  virtual void enter(std::string name) = 0;
  // The layer's output [B, T, C] (the residual stream after it).
  virtual void block_output(TensorRef y) = 0;
  // A feed-forward's hidden units after the activation [N, F].
  virtual void units(TensorRef a) = 0;
  // Self-attention's inputs after the position transform: q [B, T, H, D], k [B, T, KV, D], the
  // log-sum-exp of each query's scores [B, H, T] (f32) and the mask they were computed with.
  virtual void attention(TensorRef q, TensorRef k, TensorRef lse, const AttentionMask& mask) = 0;
  // A named number (an MoE router's largest load share).
  virtual void value(std::string_view name, double v) = 0;
};

// What a backward pass tells data-parallel training (train/distributed.hpp): stacks call it as
// each layer's backward finishes, when that layer's parameters have their final gradients, so
// that their sum across ranks can start while the layers below still run backward.
class GradientHook {
 public:
  virtual ~GradientHook() = default;
  // Layer `name` ("blocks.3", "decoder.blocks.0") is done.
  virtual void layer_done(const std::string& name) = 0;
};

}  // namespace llmtk
