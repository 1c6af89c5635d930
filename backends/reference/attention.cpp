// attention_forward / attention_backward: scaled-dot-product attention with grouped kv heads and
// every rule of AttentionMask (causal or bidirectional, sliding window, ALiBi, padding lengths,
// document segments, a learned bias). Materialises one row of probabilities at a time.
#include <limits>
#include <vector>

#include "reference.hpp"

namespace llmtk::reference {

namespace {

using Shape = backend::AttentionShape;
using backend::alibi_slope;

// Scores of query (b, i, h) against every key, −inf where masked.
void scores(std::vector<double>& s, const Shape& S, TensorRef q, TensorRef k, AttentionMask mask,
            std::int64_t b, std::int64_t i, std::int64_t h) {
  const std::int64_t g = h / (S.H / S.KV);
  const double scale = 1.0 / std::sqrt(double(S.D));
  const double slope = mask.alibi ? alibi_slope(h, S.H) : 0.0;
  const float* Q = q.f32() + ((b * S.T + i) * S.H + h) * S.D;
  const std::int64_t at = mask.q_offset + i;  // the query's position among the keys
  for (std::int64_t j = 0; j < S.Tk; ++j) {
    if (!backend::attention_visible(mask, b, at, j, S.Tk)) {
      s[j] = -std::numeric_limits<double>::infinity();
      continue;
    }
    const float* K = k.f32() + ((b * S.Tk + j) * S.KV + g) * S.D;
    double dot = 0;
    for (std::int64_t d = 0; d < S.D; ++d) dot += double(Q[d]) * K[d];
    s[j] = dot * scale - slope * double(at - j) + (mask.bias ? double(mask.bias.f32()[(i * S.Tk + j) * S.H + h]) : 0.0);
  }
}

}  // namespace

void attention_forward(TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v,
                       AttentionMask mask) {
  const Shape S = backend::attention_shape(q, k);
  std::vector<double> s(S.Tk), acc(S.D);
  for (std::int64_t b = 0; b < S.B; ++b)
    for (std::int64_t h = 0; h < S.H; ++h)
      for (std::int64_t i = 0; i < S.T; ++i) {
        scores(s, S, q, k, mask, b, i, h);
        double mx = -std::numeric_limits<double>::infinity();
        for (double x : s) mx = std::max(mx, x);
        float* O = out.f32() + ((b * S.T + i) * S.H + h) * S.D;
        if (mx == -std::numeric_limits<double>::infinity()) {  // no visible key: out 0, lse -inf
          for (std::int64_t d = 0; d < S.D; ++d) O[d] = 0.0f;
          lse.f32()[(b * S.H + h) * S.T + i] = -std::numeric_limits<float>::infinity();
          continue;
        }
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - mx));  // masked scores become 0
        std::fill(acc.begin(), acc.end(), 0.0);
        const std::int64_t g = h / (S.H / S.KV);
        for (std::int64_t j = 0; j < S.Tk; ++j) {
          if (s[j] == 0) continue;
          const float* V = v.f32() + ((b * S.Tk + j) * S.KV + g) * S.D;
          for (std::int64_t d = 0; d < S.D; ++d) acc[d] += s[j] / sum * V[d];
        }
        for (std::int64_t d = 0; d < S.D; ++d) O[d] = static_cast<float>(acc[d]);
        lse.f32()[(b * S.H + h) * S.T + i] = static_cast<float>(mx + std::log(sum));
      }
}

void attention_backward(TensorRef dq, TensorRef dk, TensorRef dv, TensorRef dout, TensorRef q,
                        TensorRef k, TensorRef v, TensorRef out, TensorRef lse,
                        AttentionMask mask) {
  const Shape S = backend::attention_shape(q, k);
  // dk and dv gather from several query heads, so sum in fp64 and write once at the end.
  std::vector<double> dK(static_cast<std::size_t>(k.numel()), 0.0), dV(dK.size(), 0.0);
  std::vector<double> p(S.Tk), dqrow(S.D);
  const double scale = 1.0 / std::sqrt(double(S.D));
  if (mask.dbias) std::fill_n(mask.dbias.f32(), mask.dbias.numel(), 0.0f);  // hidden keys: 0
  for (std::int64_t b = 0; b < S.B; ++b)
    for (std::int64_t h = 0; h < S.H; ++h)
      for (std::int64_t i = 0; i < S.T; ++i) {
        const std::int64_t g = h / (S.H / S.KV);
        scores(p, S, q, k, mask, b, i, h);
        const double l = lse.f32()[(b * S.H + h) * S.T + i];
        float* DQ = dq.f32() + ((b * S.T + i) * S.H + h) * S.D;
        if (l == -std::numeric_limits<double>::infinity()) {  // a query that saw no key
          for (std::int64_t d = 0; d < S.D; ++d) DQ[d] = 0.0f;
          continue;
        }
        for (double& x : p) x = std::exp(x - l);
        const float* dO = dout.f32() + ((b * S.T + i) * S.H + h) * S.D;
        const float* O = out.f32() + ((b * S.T + i) * S.H + h) * S.D;
        const float* Q = q.f32() + ((b * S.T + i) * S.H + h) * S.D;
        // dp_j = dO·v_j; ds_j = p_j (dp_j − Σ_j p_j dp_j), and Σ_j p_j dp_j = dO·out_i
        double delta = 0;
        for (std::int64_t d = 0; d < S.D; ++d) delta += double(dO[d]) * O[d];
        std::fill(dqrow.begin(), dqrow.end(), 0.0);
        float* dB = mask.dbias ? mask.dbias.f32() + ((b * S.T + i) * S.Tk) * S.H + h : nullptr;  // [j · H]
        for (std::int64_t j = 0; j < S.Tk; ++j) {
          if (p[j] == 0) continue;
          const std::int64_t kv = ((b * S.Tk + j) * S.KV + g) * S.D;
          const float *K = k.f32() + kv, *V = v.f32() + kv;
          double dp = 0;
          for (std::int64_t d = 0; d < S.D; ++d) dp += double(dO[d]) * V[d];
          if (dB) dB[j * S.H] = static_cast<float>(p[j] * (dp - delta));  // the bias adds to the score unscaled
          const double ds = p[j] * (dp - delta) * scale;
          for (std::int64_t d = 0; d < S.D; ++d) {
            dqrow[d] += ds * K[d];
            dK[kv + d] += ds * Q[d];
            dV[kv + d] += p[j] * dO[d];
          }
        }
        for (std::int64_t d = 0; d < S.D; ++d) DQ[d] = static_cast<float>(dqrow[d]);
      }
  for (std::size_t n = 0; n < dK.size(); ++n) {
    dk.f32()[n] = static_cast<float>(dK[n]);
    dv.f32()[n] = static_cast<float>(dV[n]);
  }
}

}  // namespace llmtk::reference
