// mingru_gates_forward / backward and linear_scan_forward / backward: minGRU's gates and the
// diagonal linear recurrence, step by step (contracts in framework/ops/ops.hpp).
#include "reference.hpp"

namespace llmtk::reference {

namespace {
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
// Whether row b's position t starts a document (the state restarts there).
bool starts(TensorRef segments, std::int64_t b, std::int64_t t, std::int64_t T) {
  return segments && t > 0 && segments.i32()[b * T + t] != segments.i32()[b * T + t - 1];
}
}  // namespace

void mingru_gates_forward(TensorRef a, TensorRef u, TensorRef z, TensorRef h) {
  for (std::int64_t i = 0, n = z.numel(); i < n; ++i) {
    const double s = sigmoid(z.f32()[i]);
    a.f32()[i] = float(1.0 - s);
    u.f32()[i] = float(s * h.f32()[i]);
  }
}

void mingru_gates_backward(TensorRef dz, TensorRef dh, TensorRef da, TensorRef du, TensorRef z, TensorRef h) {
  for (std::int64_t i = 0, n = z.numel(); i < n; ++i) {
    const double s = sigmoid(z.f32()[i]), g = du.f32()[i];
    dz.f32()[i] = float((g * h.f32()[i] - da.f32()[i]) * s * (1.0 - s));
    dh.f32()[i] = float(g * s);
  }
}

void linear_scan_forward(TensorRef y, TensorRef a, TensorRef x, TensorRef h0, TensorRef segments) {
  const std::int64_t B = a.size(0), T = a.size(1), D = a.size(2);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t d = 0; d < D; ++d) {
      double state = h0 ? h0.f32()[b * D + d] : 0.0;
      for (std::int64_t t = 0; t < T; ++t) {
        const std::int64_t i = (b * T + t) * D + d;
        if (starts(segments, b, t, T)) state = 0;
        state = a.f32()[i] * state + x.f32()[i];
        y.f32()[i] = float(state);
      }
    }
}

void linear_scan_backward(TensorRef da, TensorRef dx, TensorRef dy, TensorRef a, TensorRef y, TensorRef h0,
                          TensorRef segments) {
  const std::int64_t B = a.size(0), T = a.size(1), D = a.size(2);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t d = 0; d < D; ++d) {
      double g = 0;
      for (std::int64_t t = T; t-- > 0;) {
        const std::int64_t i = (b * T + t) * D + d;
        // g[t] = dy[t] + a'[t + 1] · g[t + 1], with a' = 0 where the next position starts a document.
        const bool next_starts = t + 1 < T && starts(segments, b, t + 1, T);
        g = dy.f32()[i] + (t + 1 < T && !next_starts ? a.f32()[i + D] * g : 0.0);
        dx.f32()[i] = float(g);
        const double prev = starts(segments, b, t, T) ? 0.0 : t > 0 ? y.f32()[i - D] : h0 ? h0.f32()[b * D + d] : 0.0;
        da.f32()[i] = float(starts(segments, b, t, T) ? 0.0 : g * prev);
      }
    }
}

}  // namespace llmtk::reference
