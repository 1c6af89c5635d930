// moe_route_forward / moe_route_backward: the router's softmax, top-k choice and gate weights;
// moe_gather, moe_combine_forward / moe_combine_backward: tokens grouped by expert and their
// outputs weighted back into place (contracts in framework/ops/ops.hpp).
#include <vector>

#include "reference.hpp"

namespace llmtk::reference {

void moe_route_forward(TensorRef probs, TensorRef lse, TensorRef index, TensorRef gate, TensorRef logits,
                       int normalize) {
  const std::int64_t N = logits.rows(), E = logits.size(-1), K = index.size(-1);
  std::vector<bool> taken(std::size_t(E), false);
  for (std::int64_t n = 0; n < N; ++n) {
    const float* l = logits.f32() + n * E;
    float* p = probs.f32() + n * E;
    double m = l[0];
    for (std::int64_t e = 1; e < E; ++e) m = l[e] > m ? l[e] : m;
    double s = 0;
    for (std::int64_t e = 0; e < E; ++e) s += std::exp(double(l[e]) - m);
    lse.f32()[n] = float(m + std::log(s));
    for (std::int64_t e = 0; e < E; ++e) p[e] = float(std::exp(double(l[e]) - m) / s);
    // The k largest, in descending order; of equal probabilities the lower expert first.
    taken.assign(std::size_t(E), false);
    double sum = 0;
    for (std::int64_t j = 0; j < K; ++j) {
      std::int64_t best = -1;
      for (std::int64_t e = 0; e < E; ++e)
        if (!taken[std::size_t(e)] && (best < 0 || p[e] > p[best])) best = e;
      taken[std::size_t(best)] = true;
      index.i32()[n * K + j] = std::int32_t(best);
      sum += p[best];
    }
    for (std::int64_t j = 0; j < K; ++j) {
      const double pj = p[index.i32()[n * K + j]];
      gate.f32()[n * K + j] = float(normalize ? pj / sum : pj);
    }
  }
}

void moe_route_backward(TensorRef dlogits, TensorRef dgate, TensorRef dprobs, TensorRef probs, TensorRef lse,
                        TensorRef index, TensorRef gate, float z_scale, int normalize) {
  const std::int64_t N = probs.rows(), E = probs.size(-1), K = index.size(-1);
  std::vector<double> dp(static_cast<std::size_t>(E));
  for (std::int64_t n = 0; n < N; ++n) {
    const float* p = probs.f32() + n * E;
    const std::int32_t* idx = index.i32() + n * K;
    for (std::int64_t e = 0; e < E; ++e) dp[std::size_t(e)] = dprobs ? dprobs.f32()[e] : 0.0;
    double sum = 0, dot = 0;
    for (std::int64_t j = 0; j < K; ++j) {
      sum += p[idx[j]];
      dot += double(dgate.f32()[n * K + j]) * gate.f32()[n * K + j];
    }
    for (std::int64_t j = 0; j < K; ++j) {
      const double g = dgate.f32()[n * K + j];
      dp[std::size_t(idx[j])] += normalize ? (g - dot) / sum : g;
    }
    double inner = 0;
    for (std::int64_t e = 0; e < E; ++e) inner += dp[std::size_t(e)] * p[e];
    for (std::int64_t e = 0; e < E; ++e)
      dlogits.f32()[n * E + e] = float(p[e] * (dp[std::size_t(e)] - inner) + double(z_scale) * lse.f32()[n] * p[e]);
  }
}

void moe_gather(TensorRef xs, TensorRef x, TensorRef token) {
  const std::int64_t M = token.numel(), C = x.size(-1);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t c = 0; c < C; ++c) xs.f32()[m * C + c] = x.f32()[std::int64_t(token.i32()[m]) * C + c];
}

void moe_combine_forward(TensorRef y, TensorRef ys, TensorRef gate, TensorRef slot) {
  const std::int64_t N = slot.rows(), K = slot.size(-1), C = y.size(-1);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (std::int64_t j = 0; j < K; ++j) {
        const std::int32_t s = slot.i32()[n * K + j];
        if (s >= 0) acc += (gate ? double(gate.f32()[n * K + j]) : 1.0) * ys.f32()[std::int64_t(s) * C + c];
      }
      y.f32()[n * C + c] = float(acc);
    }
}

void moe_combine_backward(TensorRef dys, TensorRef dgate, TensorRef dy, TensorRef ys, TensorRef gate, TensorRef slot) {
  const std::int64_t N = slot.rows(), K = slot.size(-1), C = dy.size(-1);
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t j = 0; j < K; ++j) {
      const std::int32_t s = slot.i32()[n * K + j];
      double dot = 0;
      if (s >= 0) {
        const double g = gate ? double(gate.f32()[n * K + j]) : 1.0;
        for (std::int64_t c = 0; c < C; ++c) {
          dys.f32()[std::int64_t(s) * C + c] = float(g * dy.f32()[n * C + c]);
          dot += double(dy.f32()[n * C + c]) * ys.f32()[std::int64_t(s) * C + c];
        }
      }
      if (dgate) dgate.f32()[n * K + j] = float(dot);
    }
}

}  // namespace llmtk::reference
