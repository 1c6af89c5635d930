// cross_entropy_forward / cross_entropy_backward: one row of logits per iteration, in parallel.
// The softmax is never stored: backward recomputes log Σ exp and writes the gradient, in place
// over the logits when the model asks (dlogits may alias logits).
#include <algorithm>
#include <limits>

#include "elementwise.hpp"
#include "fast_math.hpp"

namespace llmtk::cpu {

using namespace elementwise;

namespace {
// log Σ exp(z) over a row, reading the row from memory once: each chunk's max and sum of
// exponentials are taken while the chunk is still in L1, then merged into the running pair.
template <class T>
float logsumexp(const T* z, std::int64_t V) {
  constexpr std::int64_t kChunk = 2048;  // 8 KB
  float mx = -std::numeric_limits<float>::infinity(), sum = 0;
  for (std::int64_t c0 = 0; c0 < V; c0 += kChunk) {
    const std::int64_t n = std::min(kChunk, V - c0);
    const T* zc = z + c0;
    float cm = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : cm)
    for (std::int64_t v = 0; v < n; ++v) cm = std::max(cm, ld(zc, v));
    if (cm == -std::numeric_limits<float>::infinity()) continue;  // every logit masked: adds exp(−inf) = 0
    if (cm > mx) sum *= fast_exp(mx - cm), mx = cm;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (std::int64_t v = 0; v < n; ++v) s += fast_exp(ld(zc, v) - mx);
    sum += s;
  }
  return mx + std::log(sum);
}
}  // namespace

void cross_entropy_forward(TensorRef losses, TensorRef logits, TensorRef targets, int ignore_index) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  by_dtype(logits.dtype, [&]<class T>() {
#pragma omp parallel for schedule(static)
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int32_t t = targets.i32()[n];
      const T* z = as<T>(logits) + n * V;
      losses.f32()[n] = t == ignore_index ? 0.0f : logsumexp(z, V) - ld(z, t);
    }
  });
}

void cross_entropy_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef weights, float dloss,
                            int ignore_index) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  const float* w = weights ? weights.f32() : nullptr;
  by_dtype(logits.dtype, [&]<class T>() {
#pragma omp parallel for schedule(static)
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int32_t t = targets.i32()[n];
      const T* z = as<T>(logits) + n * V;
      T* dz = as<T>(dlogits) + n * V;
      const float g = w ? dloss * w[n] : dloss;
      if (t == ignore_index) {
        std::fill(dz, dz + V, T(0));
        continue;
      }
      const float lse = logsumexp(z, V);
      const float zt = ld(z, t);  // read before the row is overwritten (dlogits may alias logits)
#pragma omp simd
      for (std::int64_t v = 0; v < V; ++v) st(dz, v, g * fast_exp(ld(z, v) - lse));
      st(dz, t, g * fast_exp(zt - lse) - g);  // the gradient at the target, rounded once
    }
  });
}

void vocab_parallel_ce_forward(TensorRef stats, TensorRef logits, TensorRef targets, int v0, int ignore_index) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  by_dtype(logits.dtype, [&]<class T>() {
#pragma omp parallel for schedule(static)
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int32_t t = targets.i32()[n];
      const T* z = as<T>(logits) + n * V;
      const bool ignored = t == ignore_index, here = !ignored && t >= v0 && t < v0 + V;
      stats.f32()[2 * n] = ignored ? 0.0f : logsumexp(z, V);
      stats.f32()[2 * n + 1] = here ? ld(z, t - v0) : 0.0f;
    }
  });
}

void vocab_parallel_ce_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef lse, TensorRef scale,
                                int v0) {
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  by_dtype(logits.dtype, [&]<class T>() {
#pragma omp parallel for schedule(static)
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int64_t t = std::int64_t(targets.i32()[n]) - v0;  // this rank's column of the target, if any
      const T* z = as<T>(logits) + n * V;
      T* dz = as<T>(dlogits) + n * V;
      const float g = scale.f32()[n], l = lse.f32()[n];
      if (g == 0) {
        std::fill(dz, dz + V, T(0));
        continue;
      }
      const bool here = t >= 0 && t < V;
      const float zt = here ? ld(z, t) : 0.0f;  // read before the row is overwritten (dlogits may alias logits)
#pragma omp simd
      for (std::int64_t v = 0; v < V; ++v) st(dz, v, g * fast_exp(ld(z, v) - l));
      if (here) st(dz, t, g * fast_exp(zt - l) - g);
    }
  });
}

}  // namespace llmtk::cpu
