// attention_forward / attention_backward: causal attention with grouped kv heads, sliding window
// and ALiBi, computed one query row at a time so memory is linear in the sequence length (no T×T
// matrix). Forward: parallel over (batch, head, query). Backward: parallel over (batch, kv group),
// so each thread owns the dk, dv rows it accumulates into.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "cpu.hpp"
#include "fast_math.hpp"

namespace llmtk::cpu {

namespace {

using Shape = backend::AttentionShape;
float alibi_slope(std::int64_t h, std::int64_t H) { return float(backend::alibi_slope(h, H)); }

// The keys query i sees: [lo, hi).
void visible(const AttentionMask& m, std::int64_t i, std::int64_t T, std::int64_t& lo, std::int64_t& hi) {
  hi = m.causal ? i + 1 : T;
  lo = m.window > 0 ? std::max<std::int64_t>(0, i - m.window + 1) : 0;
}

// s[j - lo] = q·k_j · scale − slope·(i − j) for the visible keys; returns the max.
float row_scores(float* s, const float* Q, const float* K, std::int64_t kstride, std::int64_t D, std::int64_t lo,
                 std::int64_t hi, std::int64_t i, float scale, float slope) {
  float mx = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = lo; j < hi; ++j) {
    const float* Kj = K + j * kstride;
    float dot = 0;
#pragma omp simd reduction(+ : dot)
    for (std::int64_t d = 0; d < D; ++d) dot += Q[d] * Kj[d];
    const float v = dot * scale - slope * float(i - j);
    s[j - lo] = v;
    mx = std::max(mx, v);
  }
  return mx;
}

}  // namespace

void attention_forward(TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v, AttentionMask mask) {
  const Shape S = backend::check_attention("attention_forward", out, lse, q, k, v, mask);
  const float scale = 1.0f / std::sqrt(float(S.D));
  const std::int64_t qstride = S.H * S.D, kstride = S.KV * S.D, group = S.H / S.KV;
  float* rows = scratch(std::size_t(max_threads()) * std::size_t(S.Tk));
#pragma omp parallel for collapse(3) schedule(static)
  for (std::int64_t b = 0; b < S.B; ++b)
    for (std::int64_t h = 0; h < S.H; ++h)
      for (std::int64_t i = 0; i < S.T; ++i) {
        float* s = rows + std::int64_t(omp_get_thread_num()) * S.Tk;
        const std::int64_t g = h / group, at = mask.q_offset + i;  // the query's position among the keys
        const float* Q = q.f32() + (b * S.T + i) * qstride + h * S.D;
        const float* K = k.f32() + b * S.Tk * kstride + g * S.D;
        const float* V = v.f32() + b * S.Tk * kstride + g * S.D;
        float* O = out.f32() + (b * S.T + i) * qstride + h * S.D;
        std::int64_t lo, hi;
        visible(mask, at, S.Tk, lo, hi);
        const float mx = row_scores(s, Q, K, kstride, S.D, lo, hi, at, scale, mask.alibi ? alibi_slope(h, S.H) : 0.0f);
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (std::int64_t j = lo; j < hi; ++j) sum += (s[j - lo] = fast_exp(s[j - lo] - mx));
        const float inv = 1.0f / sum;
        std::fill(O, O + S.D, 0.0f);
        for (std::int64_t j = lo; j < hi; ++j) {
          const float p = s[j - lo] * inv;
          const float* Vj = V + j * kstride;
#pragma omp simd
          for (std::int64_t d = 0; d < S.D; ++d) O[d] += p * Vj[d];
        }
        lse.f32()[(b * S.H + h) * S.T + i] = mx + std::log(sum);
      }
}

void attention_backward(TensorRef dq, TensorRef dk, TensorRef dv, TensorRef dout, TensorRef q, TensorRef k,
                        TensorRef v, TensorRef out, TensorRef lse, AttentionMask mask) {
  const char* op = "attention_backward";
  const Shape S = backend::check_attention(op, out, lse, q, k, v, mask);
  LLMTK_CHECK(mask.q_offset == 0 && S.Tk == S.T, op, "backward needs as many keys as queries and q_offset 0");
  expect_f32(op, "dq", dq), expect_f32(op, "dk", dk), expect_f32(op, "dv", dv), expect_f32(op, "dout", dout);
  expect_same(op, "dq", dq, "q", q), expect_same(op, "dout", dout, "q", q);
  expect_same(op, "dk", dk, "k", k), expect_same(op, "dv", dv, "v", v);
  const float scale = 1.0f / std::sqrt(float(S.D));
  const std::int64_t qstride = S.H * S.D, kstride = S.KV * S.D, group = S.H / S.KV;
  float* rows = scratch(std::size_t(max_threads()) * std::size_t(S.T));
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t b = 0; b < S.B; ++b)
    for (std::int64_t g = 0; g < S.KV; ++g) {
      float* p = rows + std::int64_t(omp_get_thread_num()) * S.T;
      const float* K = k.f32() + b * S.T * kstride + g * S.D;
      const float* V = v.f32() + b * S.T * kstride + g * S.D;
      float* dK = dk.f32() + b * S.T * kstride + g * S.D;
      float* dV = dv.f32() + b * S.T * kstride + g * S.D;
      for (std::int64_t j = 0; j < S.T; ++j) {
        std::fill(dK + j * kstride, dK + j * kstride + S.D, 0.0f);
        std::fill(dV + j * kstride, dV + j * kstride + S.D, 0.0f);
      }
      for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
        const float slope = mask.alibi ? alibi_slope(h, S.H) : 0.0f;
        for (std::int64_t i = 0; i < S.T; ++i) {
          const std::int64_t row = (b * S.T + i) * qstride + h * S.D;
          const float *Q = q.f32() + row, *dO = dout.f32() + row, *O = out.f32() + row;
          float* dQ = dq.f32() + row;
          std::int64_t lo, hi;
          visible(mask, i, S.T, lo, hi);
          row_scores(p, Q, K, kstride, S.D, lo, hi, i, scale, slope);
          const float l = lse.f32()[(b * S.H + h) * S.T + i];
#pragma omp simd
          for (std::int64_t j = lo; j < hi; ++j) p[j - lo] = fast_exp(p[j - lo] - l);  // probabilities
          float delta = 0;  // Σ_j p_j dp_j = dO · out_i
#pragma omp simd reduction(+ : delta)
          for (std::int64_t d = 0; d < S.D; ++d) delta += dO[d] * O[d];
          std::fill(dQ, dQ + S.D, 0.0f);
          for (std::int64_t j = lo; j < hi; ++j) {
            const float pj = p[j - lo];
            const float *Kj = K + j * kstride, *Vj = V + j * kstride;
            float* dKj = dK + j * kstride;
            float* dVj = dV + j * kstride;
            float dp = 0;
#pragma omp simd reduction(+ : dp)
            for (std::int64_t d = 0; d < S.D; ++d) dp += dO[d] * Vj[d];
            const float ds = pj * (dp - delta) * scale;
#pragma omp simd
            for (std::int64_t d = 0; d < S.D; ++d) {
              dQ[d] += ds * Kj[d];
              dKj[d] += ds * Q[d];
              dVj[d] += pj * dO[d];
            }
          }
        }
      }
    }
}

}  // namespace llmtk::cpu
