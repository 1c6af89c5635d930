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
void check_target(const char* op, std::int32_t t, std::int64_t n, std::int64_t V, int ignore) {
  LLMTK_CHECK(t == ignore || (t >= 0 && t < V), op, "target ", t, " at row ", n,
              " is outside [0, ", V, ") and is not ignore_index ", ignore);
}
}  // namespace

void cross_entropy_forward(TensorRef losses, TensorRef logits, TensorRef targets, int ignore_index) {
  const char* op = "cross_entropy_forward";
  expect_f32(op, "losses", losses), expect_f32(op, "logits", logits);
  LLMTK_CHECK(targets.dtype == DType::i32, op, "targets must be i32");
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  LLMTK_CHECK(targets.numel() == N && losses.numel() == N, op, "losses and targets need ", N,
              " rows");
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets.i32()[n];
    check_target(op, t, n, V, ignore_index);
    const float* z = logits.f32() + n * V;
    losses.f32()[n] = t == ignore_index ? 0.0f : static_cast<float>(logsumexp(z, V) - z[t]);
  }
}

void cross_entropy_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef weights,
                            float dloss, int ignore_index) {
  const char* op = "cross_entropy_backward";
  expect_f32(op, "dlogits", dlogits), expect_f32(op, "logits", logits);
  expect_same(op, "dlogits", dlogits, "logits", logits);
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  LLMTK_CHECK(targets.dtype == DType::i32 && targets.numel() == N, op, "targets must be ", N, " i32 values");
  if (weights) expect_f32(op, "weights", weights);
  LLMTK_CHECK(!weights || weights.numel() == N, op, "weights must be ", N, " f32 values");
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets.i32()[n];
    check_target(op, t, n, V, ignore_index);
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

}  // namespace llmtk::reference
