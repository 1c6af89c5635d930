// cross_entropy_forward / cross_entropy_backward: softmax cross-entropy per row, ignore_index rows 0.
#include <limits>

#include "reference.hpp"

namespace llmtk::reference {

namespace {
double logsumexp(const float* z, std::int64_t V) {
  double mx = -std::numeric_limits<double>::infinity(), s = 0;
  for (std::int64_t v = 0; v < V; ++v) mx = std::max(mx, double(z[v]));
  for (std::int64_t v = 0; v < V; ++v) s += std::exp(z[v] - mx);
  return mx + std::log(s);
}
}  // namespace

void cross_entropy_forward(TensorRef losses, TensorRef logits, TensorRef targets, int ignore_index) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets.i32()[n];
    const float* z = logits.f32() + n * V;
    losses.f32()[n] = t == ignore_index ? 0.0f : static_cast<float>(logsumexp(z, V) - z[t]);
  }
}

void cross_entropy_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef weights,
                            float dloss, int ignore_index) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets.i32()[n];
    const float* z = logits.f32() + n * V;
    float* dz = dlogits.f32() + n * V;
    if (t == ignore_index) {
      for (std::int64_t v = 0; v < V; ++v) dz[v] = 0.0f;
      continue;
    }
    const double lse = logsumexp(z, V), g = double(dloss) * (weights ? weights.f32()[n] : 1.0f);
    for (std::int64_t v = 0; v < V; ++v)
      dz[v] = static_cast<float>(g * (std::exp(z[v] - lse) - (v == t ? 1.0 : 0.0)));
  }
}

void vocab_parallel_ce_forward(TensorRef stats, TensorRef logits, TensorRef targets, int v0, int ignore_index) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets.i32()[n];
    const float* z = logits.f32() + n * V;
    const bool ignored = t == ignore_index, here = !ignored && t >= v0 && t < v0 + V;
    stats.f32()[2 * n] = ignored ? 0.0f : static_cast<float>(logsumexp(z, V));
    stats.f32()[2 * n + 1] = here ? z[t - v0] : 0.0f;
  }
}

void vocab_parallel_ce_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef lse, TensorRef scale,
                                int v0) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets.i32()[n];
    const float* z = logits.f32() + n * V;
    float* dz = dlogits.f32() + n * V;
    const double g = scale.f32()[n], l = lse.f32()[n];
    for (std::int64_t v = 0; v < V; ++v)
      dz[v] = g == 0 ? 0.0f : static_cast<float>(g * (std::exp(z[v] - l) - (v0 + v == t ? 1.0 : 0.0)));
  }
}

}  // namespace llmtk::reference
