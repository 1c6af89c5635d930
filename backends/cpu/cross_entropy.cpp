// cross_entropy_forward / cross_entropy_backward: one row of logits per iteration, in parallel.
// The softmax is never stored: backward recomputes log Σ exp and writes the gradient, in place
// over the logits when the model asks (dlogits may alias logits).
#include <algorithm>
#include <limits>

#include "cpu.hpp"
#include "fast_math.hpp"

namespace llmtk::cpu {

namespace {
// log Σ exp(z) over a row, reading the row from memory once: each chunk's max and sum of
// exponentials are taken while the chunk is still in L1, then merged into the running pair.
float logsumexp(const float* z, std::int64_t V) {
  constexpr std::int64_t kChunk = 2048;  // 8 KB
  float mx = -std::numeric_limits<float>::infinity(), sum = 0;
  for (std::int64_t c0 = 0; c0 < V; c0 += kChunk) {
    const std::int64_t n = std::min(kChunk, V - c0);
    const float* zc = z + c0;
    float cm = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : cm)
    for (std::int64_t v = 0; v < n; ++v) cm = std::max(cm, zc[v]);
    if (cm == -std::numeric_limits<float>::infinity()) continue;  // every logit masked: adds exp(−inf) = 0
    if (cm > mx) sum *= fast_exp(mx - cm), mx = cm;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (std::int64_t v = 0; v < n; ++v) s += fast_exp(zc[v] - mx);
    sum += s;
  }
  return mx + std::log(sum);
}
}  // namespace

void cross_entropy_forward(TensorRef losses, TensorRef logits, TensorRef targets, int ignore_index) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets.i32()[n];
    const float* z = logits.f32() + n * V;
    losses.f32()[n] = t == ignore_index ? 0.0f : logsumexp(z, V) - z[t];
  }
}

void cross_entropy_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef weights, float dloss,
                            int ignore_index) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  const float* w = weights ? weights.f32() : nullptr;
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int32_t t = targets.i32()[n];
    const float* z = logits.f32() + n * V;
    float* dz = dlogits.f32() + n * V;
    const float g = w ? dloss * w[n] : dloss;
    if (t == ignore_index) {
      std::fill(dz, dz + V, 0.0f);
      continue;
    }
    const float lse = logsumexp(z, V);
#pragma omp simd
    for (std::int64_t v = 0; v < V; ++v) dz[v] = g * fast_exp(z[v] - lse);
    dz[t] -= g;
  }
}

}  // namespace llmtk::cpu
