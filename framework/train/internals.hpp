// Training internals: what each layer of a model is doing, measured during one training step.
// `[log] internals = true` records, every `internals_every` steps, one line of internals.jsonl:
//
//   per layer (every "blocks.N", and the parts outside the stack: "embed", "head", "norm_f"...)
//     grad_norm      ‖g‖ of its parameters' gradients (before clipping, as grad_norm in metrics.jsonl)
//     weight_norm    ‖w‖ of its parameters
//     update_ratio   ‖Δw‖ / ‖w‖: how far this step's update moved them (≈ 1e-3 is the usual health)
//   per block, from the step's first forward pass
//     act_mean, act_std, act_max   of its output, the residual stream after it (max: of |x|)
//     dead           the share of its feed-forward units that are near zero (|a| < 1e-3) on every
//                    token of the batch, after the activation
//     attn_entropy   per head: the entropy of each query's attention distribution, in nats,
//                    averaged over the queries (log of the keys it sees when uniform, 0 when it
//                    looks at one key); not measured with ALiBi or a learned relative bias
//     router_top_share  an MoE layer: the share of tokens that visit its busiest expert (k / E
//                    when the load is even, 1 when every token goes there; layers/moe.hpp)
//   per parameter: grad_norm, weight_norm, update_ratio in "params" (name → [g, w, u])
//
// What it costs: one extra copy of the trainable weights (only while recording is on), one pass
// of sum-of-squares over weights, gradients and updates, one extra attention pass per layer (with
// the keys as values, see attention() in internals.cpp) and host copies of the activations it
// reads, at the recorded steps only. `llmtk report` draws it; `llmtk doctor` reads it.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "../core/arena.hpp"
#include "../models/model.hpp"
#include "../protocol/probe.hpp"

namespace llmtk::train {

// The layer a parameter belongs to: "blocks.3.attn.wq" → "blocks.3", "decoder.blocks.0.ffn.w_up"
// → "decoder.blocks.0", "embed.tokens" → "embed".
std::string layer_of(std::string_view param);

// A run's internals.jsonl read back: each quantity as a layer × record table.
struct InternalsHistory {
  std::vector<double> steps;                  // one per record
  std::vector<std::string> layers;            // every layer any record names, in the model's order
  // values[quantity][layer][record]: grad_norm, weight_norm, update_ratio, act_mean, act_std,
  // act_max, dead, router_top_share, and attn_entropy (the mean over heads); NaN where not measured.
  std::map<std::string, std::vector<std::vector<double>>> values;
  std::vector<std::vector<double>> last_entropy;  // the last record's entropy per layer and head
  bool empty() const { return steps.empty(); }
  const std::vector<double>* row(const std::string& quantity, std::size_t layer) const;
};
// Empty when the run recorded none; a line that is not a record is an error naming FILE:LINE.
InternalsHistory read_internals(const std::string& run_dir);

class Internals final : public Probe {
 public:
  // Before a step: keeps the weights (for the update's size) and watches the model's forwards.
  void begin(AnyModel& model);
  // After backward, before clipping and the update: the gradients' norms, or (ZeRO-2, where no
  // rank holds them whole) `squares`, Σg² of each gradient entry.
  void gradients(AnyModel& model, const std::vector<double>* squares = nullptr);
  // After the update: the update's size; stops watching. Returns the record for `step`: one line
  // of internals.jsonl (JSON, no newline). Tensor parallel: a collective of the model's
  // tensor-parallel ranks, each returning the whole model's record.
  std::string end(AnyModel& model, std::int64_t step);

  void enter(std::string name) override;
  void block_output(TensorRef y) override;
  void units(TensorRef a) override;
  void attention(TensorRef q, TensorRef k, TensorRef lse, const AttentionMask& mask) override;
  void value(std::string_view name, double v) override;

 private:
  struct Layer {
    std::string name;
    std::map<std::string, double> values;
    std::vector<double> entropy;  // per head
  };
  Layer* current();  // the layer entered last, or null once it has been measured in this step
  void gather_shares(const AnyModel& model, Communicator& tp, std::vector<double>& squares);
  std::vector<float>& host(TensorRef t);  // t's elements as f32 on the host (a buffer reused)

  std::vector<Layer> layers_;       // in the order the forward pass met them
  int current_ = -1;
  Arena before_{"internals.before"};  // the trainable weights before the update
  Arena sums_{"internals.sums"};      // Σx² of each weight, gradient and update
  Arena scratch_{"internals.scratch"};
  std::vector<float> host_, host2_, host3_;
  std::vector<std::int32_t> lengths_;
};

}  // namespace llmtk::train
