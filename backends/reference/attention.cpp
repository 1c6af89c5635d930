// attention_forward / attention_backward: causal scaled-dot-product attention with grouped
// kv heads, an optional sliding window and ALiBi. Materialises one row of probabilities at a time.
#include <limits>
#include <vector>

#include "reference.hpp"

namespace llmtk::reference {

namespace {

struct Shape {
  std::int64_t B, T, H, KV, D;  // T: query rows
  std::int64_t Tk;              // key rows (T when training; the cache length when decoding)
};

Shape check(const char* op, TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v, const AttentionMask& m) {
  expect_f32(op, "q", q), expect_f32(op, "k", k), expect_f32(op, "v", v);
  expect_f32(op, "out", out), expect_f32(op, "lse", lse);
  expect_rank(op, "q", q, 4, "[B, T, H, D]");
  expect_rank(op, "k", k, 4, "[B, T, KV, D]");
  expect_rank(op, "v", v, 4, "[B, T, KV, D]");
  Shape s{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), k.size(1)};
  LLMTK_CHECK(k.size(0) == s.B && k.size(3) == s.D, op, "k ", k.shape_str(), " does not match q ", q.shape_str());
  LLMTK_CHECK(v.numel() == k.numel() && v.size(2) == s.KV, op, "v ", v.shape_str(),
              " must match k ", k.shape_str());
  LLMTK_CHECK(s.H % s.KV == 0, op, "KV = ", s.KV, " kv heads must divide H = ", s.H);
  LLMTK_CHECK(out.numel() == q.numel(), op, "out must have q's shape ", q.shape_str());
  LLMTK_CHECK(lse.numel() == s.B * s.H * s.T, op, "lse must be [B, H, T]");
  LLMTK_CHECK(m.q_offset >= 0 && s.Tk >= m.q_offset + s.T, op, "k has ", s.Tk, " rows, fewer than q_offset ",
              m.q_offset, " + ", s.T, " queries");
  return s;
}

// ALiBi slopes: 2^(-8(h+1)/H) for H a power of two; otherwise the closest power of two n below H
// gives the first n slopes and every other slope of 2n fills the rest (Press et al.'s code).
double alibi_slope(std::int64_t h, std::int64_t H) {
  std::int64_t n = 1;
  while (n * 2 <= H) n *= 2;
  if (h < n) return std::pow(2.0, -8.0 * double(h + 1) / double(n));
  return std::pow(2.0, -4.0 * double(2 * (h - n) + 1) / double(n));
}

bool visible(const AttentionMask& m, std::int64_t i, std::int64_t j) {
  if (m.causal && j > i) return false;
  if (m.window > 0 && i - j >= m.window) return false;
  return true;
}

// Scores of query (b, i, h) against every key, −inf where masked.
void scores(std::vector<double>& s, const Shape& S, TensorRef q, TensorRef k, AttentionMask mask,
            std::int64_t b, std::int64_t i, std::int64_t h) {
  const std::int64_t g = h / (S.H / S.KV);
  const double scale = 1.0 / std::sqrt(double(S.D));
  const double slope = mask.alibi ? alibi_slope(h, S.H) : 0.0;
  const float* Q = q.f32() + ((b * S.T + i) * S.H + h) * S.D;
  const std::int64_t at = mask.q_offset + i;  // the query's position among the keys
  for (std::int64_t j = 0; j < S.Tk; ++j) {
    if (!visible(mask, at, j)) {
      s[j] = -std::numeric_limits<double>::infinity();
      continue;
    }
    const float* K = k.f32() + ((b * S.Tk + j) * S.KV + g) * S.D;
    double dot = 0;
    for (std::int64_t d = 0; d < S.D; ++d) dot += double(Q[d]) * K[d];
    s[j] = dot * scale - slope * double(at - j);
  }
}

}  // namespace

void attention_forward(TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v,
                       AttentionMask mask) {
  const Shape S = check("attention_forward", out, lse, q, k, v, mask);
  std::vector<double> s(S.Tk), acc(S.D);
  for (std::int64_t b = 0; b < S.B; ++b)
    for (std::int64_t h = 0; h < S.H; ++h)
      for (std::int64_t i = 0; i < S.T; ++i) {
        scores(s, S, q, k, mask, b, i, h);
        double mx = -std::numeric_limits<double>::infinity();
        for (double x : s) mx = std::max(mx, x);
        double sum = 0;
        for (double& x : s) sum += (x = std::exp(x - mx));  // masked scores become 0
        std::fill(acc.begin(), acc.end(), 0.0);
        const std::int64_t g = h / (S.H / S.KV);
        for (std::int64_t j = 0; j < S.Tk; ++j) {
          if (s[j] == 0) continue;
          const float* V = v.f32() + ((b * S.Tk + j) * S.KV + g) * S.D;
          for (std::int64_t d = 0; d < S.D; ++d) acc[d] += s[j] / sum * V[d];
        }
        float* O = out.f32() + ((b * S.T + i) * S.H + h) * S.D;
        for (std::int64_t d = 0; d < S.D; ++d) O[d] = static_cast<float>(acc[d]);
        lse.f32()[(b * S.H + h) * S.T + i] = static_cast<float>(mx + std::log(sum));
      }
}

void attention_backward(TensorRef dq, TensorRef dk, TensorRef dv, TensorRef dout, TensorRef q,
                        TensorRef k, TensorRef v, TensorRef out, TensorRef lse,
                        AttentionMask mask) {
  const char* op = "attention_backward";
  const Shape S = check(op, out, lse, q, k, v, mask);
  LLMTK_CHECK(mask.q_offset == 0 && S.Tk == S.T, op, "backward needs as many keys as queries and q_offset 0");
  expect_f32(op, "dq", dq), expect_f32(op, "dk", dk), expect_f32(op, "dv", dv);
  expect_f32(op, "dout", dout);
  expect_same(op, "dq", dq, "q", q), expect_same(op, "dout", dout, "q", q);
  expect_same(op, "dk", dk, "k", k), expect_same(op, "dv", dv, "v", v);
  // dk and dv gather from several query heads, so sum in fp64 and write once at the end.
  std::vector<double> dK(static_cast<std::size_t>(k.numel()), 0.0), dV(dK.size(), 0.0);
  std::vector<double> p(S.T), dqrow(S.D);
  const double scale = 1.0 / std::sqrt(double(S.D));
  for (std::int64_t b = 0; b < S.B; ++b)
    for (std::int64_t h = 0; h < S.H; ++h)
      for (std::int64_t i = 0; i < S.T; ++i) {
        const std::int64_t g = h / (S.H / S.KV);
        scores(p, S, q, k, mask, b, i, h);
        const double l = lse.f32()[(b * S.H + h) * S.T + i];
        for (double& x : p) x = std::exp(x - l);
        const float* dO = dout.f32() + ((b * S.T + i) * S.H + h) * S.D;
        const float* O = out.f32() + ((b * S.T + i) * S.H + h) * S.D;
        const float* Q = q.f32() + ((b * S.T + i) * S.H + h) * S.D;
        // dp_j = dO·v_j; ds_j = p_j (dp_j − Σ_j p_j dp_j), and Σ_j p_j dp_j = dO·out_i
        double delta = 0;
        for (std::int64_t d = 0; d < S.D; ++d) delta += double(dO[d]) * O[d];
        std::fill(dqrow.begin(), dqrow.end(), 0.0);
        for (std::int64_t j = 0; j < S.T; ++j) {
          if (p[j] == 0) continue;
          const std::int64_t kv = ((b * S.T + j) * S.KV + g) * S.D;
          const float *K = k.f32() + kv, *V = v.f32() + kv;
          double dp = 0;
          for (std::int64_t d = 0; d < S.D; ++d) dp += double(dO[d]) * V[d];
          const double ds = p[j] * (dp - delta) * scale;
          for (std::int64_t d = 0; d < S.D; ++d) {
            dqrow[d] += ds * K[d];
            dK[kv + d] += ds * Q[d];
            dV[kv + d] += p[j] * dO[d];
          }
        }
        float* DQ = dq.f32() + ((b * S.T + i) * S.H + h) * S.D;
        for (std::int64_t d = 0; d < S.D; ++d) DQ[d] = static_cast<float>(dqrow[d]);
      }
  for (std::size_t n = 0; n < dK.size(); ++n) {
    dk.f32()[n] = static_cast<float>(dK[n]);
    dv.f32()[n] = static_cast<float>(dV[n]);
  }
}

}  // namespace llmtk::reference
