// The mixture-of-experts ops (rows in parallel: each writes rows no other row touches; the
// grouping's slots name every expert row once). f32 here; bf16 through the widening fallback.
#include <cstring>

#include "cpu.hpp"

namespace llmtk::cpu {

void moe_route_forward(TensorRef probs, TensorRef lse, TensorRef index, TensorRef gate, TensorRef logits,
                       int normalize) {
  const std::int64_t N = logits.rows(), E = logits.size(-1), K = index.size(-1);
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < N; ++n) {
    const float* l = logits.f32() + n * E;
    float* p = probs.f32() + n * E;
    float m = l[0];
    for (std::int64_t e = 1; e < E; ++e) m = l[e] > m ? l[e] : m;
    float s = 0;
    for (std::int64_t e = 0; e < E; ++e) s += (p[e] = std::exp(l[e] - m));
    lse.f32()[n] = m + std::log(s);
    for (std::int64_t e = 0; e < E; ++e) p[e] /= s;
    // The k largest in descending order, the lower expert first among equals (the reference's choice).
    std::int32_t* idx = index.i32() + n * K;
    float sum = 0;
    for (std::int64_t j = 0; j < K; ++j) {
      std::int64_t best = -1;
      for (std::int64_t e = 0; e < E; ++e) {
        bool taken = false;
        for (std::int64_t i = 0; i < j; ++i) taken = taken || idx[i] == e;
        if (!taken && (best < 0 || p[e] > p[best])) best = e;
      }
      idx[j] = std::int32_t(best);
      sum += p[best];
    }
    for (std::int64_t j = 0; j < K; ++j) gate.f32()[n * K + j] = normalize ? p[idx[j]] / sum : p[idx[j]];
  }
}

void moe_route_backward(TensorRef dlogits, TensorRef dgate, TensorRef dprobs, TensorRef probs, TensorRef lse,
                        TensorRef index, TensorRef gate, float z_scale, int normalize) {
  const std::int64_t N = probs.rows(), E = probs.size(-1), K = index.size(-1);
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < N; ++n) {
    const float* p = probs.f32() + n * E;
    const std::int32_t* idx = index.i32() + n * K;
    const float* dg = dgate.f32() + n * K;
    const float* g = gate.f32() + n * K;
    float* dl = dlogits.f32() + n * E;
    // dl holds dprobs first, then becomes dlogits.
    for (std::int64_t e = 0; e < E; ++e) dl[e] = dprobs ? dprobs.f32()[e] : 0.0f;
    float sum = 0, dot = 0;
    for (std::int64_t j = 0; j < K; ++j) sum += p[idx[j]], dot += dg[j] * g[j];
    for (std::int64_t j = 0; j < K; ++j) dl[idx[j]] += normalize ? (dg[j] - dot) / sum : dg[j];
    float inner = 0;
    for (std::int64_t e = 0; e < E; ++e) inner += dl[e] * p[e];
    const float z = z_scale * lse.f32()[n];
    for (std::int64_t e = 0; e < E; ++e) dl[e] = p[e] * (dl[e] - inner + z);
  }
}

void moe_gather(TensorRef xs, TensorRef x, TensorRef token) {
  const std::int64_t M = token.numel(), C = x.size(-1);
#pragma omp parallel for schedule(static)
  for (std::int64_t m = 0; m < M; ++m)
    std::memcpy(xs.f32() + m * C, x.f32() + std::int64_t(token.i32()[m]) * C, std::size_t(C) * sizeof(float));
}

void moe_combine_forward(TensorRef y, TensorRef ys, TensorRef gate, TensorRef slot) {
  const std::int64_t N = slot.rows(), K = slot.size(-1), C = y.size(-1);
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < N; ++n) {
    float* Y = y.f32() + n * C;
    std::memset(Y, 0, std::size_t(C) * sizeof(float));
    for (std::int64_t j = 0; j < K; ++j) {
      const std::int32_t s = slot.i32()[n * K + j];
      if (s < 0) continue;
      const float g = gate ? gate.f32()[n * K + j] : 1.0f;
      const float* YS = ys.f32() + std::int64_t(s) * C;
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) Y[c] += g * YS[c];
    }
  }
}

void moe_combine_backward(TensorRef dys, TensorRef dgate, TensorRef dy, TensorRef ys, TensorRef gate, TensorRef slot) {
  const std::int64_t N = slot.rows(), K = slot.size(-1), C = dy.size(-1);
#pragma omp parallel for schedule(static)
  for (std::int64_t n = 0; n < N; ++n) {
    const float* DY = dy.f32() + n * C;
    for (std::int64_t j = 0; j < K; ++j) {
      const std::int32_t s = slot.i32()[n * K + j];
      float dot = 0;
      if (s >= 0) {
        const float g = gate ? gate.f32()[n * K + j] : 1.0f;
        float* DYS = dys.f32() + std::int64_t(s) * C;
        const float* YS = ys.f32() + std::int64_t(s) * C;
#pragma omp simd reduction(+ : dot)
        for (std::int64_t c = 0; c < C; ++c) DYS[c] = g * DY[c], dot += DY[c] * YS[c];
      }
      if (dgate) dgate.f32()[n * K + j] = dot;
    }
  }
}

}  // namespace llmtk::cpu
