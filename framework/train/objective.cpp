#include "objective.hpp"

#include <cmath>

#include "../core/error.hpp"
#include "../ops/ops.hpp"

namespace llmtk {

namespace {
constexpr const char* kWhere = "next_token loss";
}

// Targets and weights as the ops need them: on the logits' device (copied into io_ if not).
TensorRef NextTokenLoss::on_device(TensorRef t, int slot) {
  if (t.device == io_.device()) return t.view({rows_});
  LLMTK_CHECK(t.device == Device::host, kWhere, "labels must be in host memory or on the logits' device");
  io_.write(slot, t.data);
  return io_[slot];
}

float NextTokenLoss::forward(TensorRef logits, const Labels& labels) {
  LLMTK_CHECK(logits && (logits.dtype == DType::f32 || logits.dtype == DType::bf16) && logits.rank >= 2, kWhere,
              "logits must be f32 or bf16 [..., V], got ", name_of(logits.dtype), " ", logits.shape_str());
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  LLMTK_CHECK(labels.targets && labels.targets.dtype == DType::i32 && labels.targets.numel() == N, kWhere,
              "targets must be ", N, " i32 values (one per position), got ", labels.targets.shape_str());
  LLMTK_CHECK(!labels.weights || (labels.weights.dtype == DType::f32 && labels.weights.numel() == N), kWhere,
              "weights must be ", N, " f32 values (one per position), got ", labels.weights.shape_str());
  if (N != rows_ || !io_.allocated() || io_.device() != logits.device) {
    io_ = Arena("objective");
    losses_ = io_.add("losses", {N});
    targets_io_ = io_.add("targets", {N}, DType::i32);
    weights_io_ = io_.add("weights", {N});
    io_.allocate(memory_of(logits.device));
    rows_ = N;
  }
  logits_ = logits.view({N, V});
  targets_ = on_device(labels.targets, targets_io_);
  weights_ = labels.weights ? on_device(labels.weights, weights_io_) : TensorRef{};
  ops::cross_entropy_forward(io_[losses_], logits_, targets_, kIgnoreIndex);

  // The sum is taken on the host in a fixed order (deterministic): N floats come back from a device.
  const float* loss = io_[losses_].f32();
  if (io_.device() != Device::host) {
    host_losses_.resize(std::size_t(N));
    io_.read(losses_, host_losses_.data());
    loss = host_losses_.data();
  }
  auto on_host = [&]<class T>(TensorRef t, std::vector<T>& copy) -> const T* {
    if (t.device == Device::host) return static_cast<const T*>(t.data);
    copy.resize(std::size_t(N));
    copy_bytes(copy.data(), Device::host, t.data, t.device, t.bytes());
    return copy.data();
  };
  const std::int32_t* tg = on_host(labels.targets, host_targets_);
  const float* w = labels.weights ? on_host(labels.weights, host_weights_) : nullptr;
  double sum = 0;
  counted_ = 0, weight_sum_ = 0;
  for (std::int64_t n = 0; n < N; ++n) {
    if (tg[n] == kIgnoreIndex) continue;
    ++counted_;
    if (!w) {
      sum += loss[n];
      continue;
    }
    LLMTK_CHECK(std::isfinite(w[n]) && w[n] >= 0, kWhere, "the weight of position ", n, " is ", w[n],
                "; weights must be finite and >= 0 (0 leaves a position out)");
    sum += double(w[n]) * loss[n];
    weight_sum_ += w[n];
  }
  if (!w) weight_sum_ = double(counted_);
  return weight_sum_ > 0 ? static_cast<float>(sum / weight_sum_) : 0.0f;
}

void NextTokenLoss::backward(TensorRef dlogits) {
  LLMTK_CHECK(logits_, kWhere, "backward() needs a forward() first");
  LLMTK_CHECK(dlogits.numel() == logits_.numel(), kWhere, "dlogits must have the logits' shape ", logits_.shape_str());
  // Without weights: 1 / counted as a float, as the mean's gradient always was.
  const float dloss = weight_sum_ <= 0 ? 0.0f
                      : weights_      ? static_cast<float>(1.0 / weight_sum_)
                                      : 1.0f / static_cast<float>(counted_);
  ops::cross_entropy_backward(dlogits.view({logits_.size(0), logits_.size(1)}), logits_, targets_, weights_, dloss,
                              kIgnoreIndex);
}

}  // namespace llmtk
