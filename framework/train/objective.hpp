// Objectives: a model returns its outputs (logits, or hidden states); an objective turns them and
// the batch's labels into a loss and seeds the outputs' gradient for the model's backward.
//
//   TensorRef logits = model.forward(inputs);       // [B, T, V]
//   float loss = objective.forward(logits, labels);  // keeps what backward needs
//   objective.backward(logits);                      // d loss / d logits, here in place
//   model.backward(logits);                          // parameter gradients +=
//
// NextTokenLoss is the language-modelling objective; MLM, span corruption, DPO, reward and RL
// objectives are further implementations of the same interface.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../core/arena.hpp"

namespace llmtk {

inline constexpr int kIgnoreIndex = -100;  // targets equal to this are left out of the loss

// What an objective compares the outputs with. Objectives document which fields they read.
struct Labels {
  TensorRef targets;  // [B, T] i32: the token each position should predict, or kIgnoreIndex
  TensorRef weights;  // [B, T] f32 or null: how much each position counts (a loss mask: 0 or 1)
};

class Objective {
 public:
  virtual ~Objective() = default;
  virtual std::string name() const = 0;
  // The loss of `outputs` against `labels` (host or device memory); keeps what backward needs.
  virtual float forward(TensorRef outputs, const Labels& labels) = 0;
  // Writes d(loss)/d(outputs) into `doutputs`, which may be the outputs' own buffer.
  virtual void backward(TensorRef doutputs) = 0;
};

// Next-token cross-entropy: loss = Σ_n w_n · ce_n / Σ_n w_n over the positions whose target is not
// kIgnoreIndex, with w_n = 1 when there are no weights (the mean over counted positions). A
// position with weight 0 contributes nothing to the loss or to any gradient.
class NextTokenLoss final : public Objective {
 public:
  std::string name() const override { return "next_token"; }
  float forward(TensorRef logits, const Labels& labels) override;
  void backward(TensorRef dlogits) override;
  // Positions that counted in the last forward, and the sum of their weights.
  std::int64_t counted() const { return counted_; }
  double weight_sum() const { return weight_sum_; }

 private:
  TensorRef on_device(TensorRef t, int slot);
  Arena io_{"objective"};  // losses, and device copies of targets and weights
  int losses_ = -1, targets_io_ = -1, weights_io_ = -1;
  std::int64_t rows_ = 0;
  TensorRef logits_, targets_, weights_;
  std::vector<float> host_losses_, host_weights_;
  std::vector<std::int32_t> host_targets_;
  std::int64_t counted_ = 0;
  double weight_sum_ = 0;
};

}  // namespace llmtk
