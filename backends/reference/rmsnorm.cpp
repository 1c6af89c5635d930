// rmsnorm_forward / rmsnorm_backward: y = x·rstd·w, rstd = 1/sqrt(mean(x²) + eps).
#include "reference.hpp"

namespace llmtk::reference {

void rmsnorm_forward(TensorRef y, TensorRef rstd, TensorRef x, TensorRef w, float eps) {
  const std::int64_t N = x.rows(), C = x.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const float* X = x.f32() + n * C;
    double ms = 0;
    for (std::int64_t c = 0; c < C; ++c) ms += double(X[c]) * X[c];
    const double r = 1.0 / std::sqrt(ms / double(C) + eps);
    for (std::int64_t c = 0; c < C; ++c) y.f32()[n * C + c] = static_cast<float>(X[c] * r * w.f32()[c]);
    rstd.f32()[n] = static_cast<float>(r);
  }
}

void rmsnorm_backward(TensorRef dx, TensorRef dw, TensorRef dy, TensorRef x, TensorRef w, TensorRef rstd,
                      TensorRef dres) {
  std::vector<float> res = residual_copy(dres);
  const std::int64_t N = x.rows(), C = x.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const float *X = x.f32() + n * C, *DY = dy.f32() + n * C;
    const double r = rstd.f32()[n];
    // dx = r · (g − x̂ · mean(g · x̂)), g = dy · w, x̂ = x · r
    double mgx = 0;
    for (std::int64_t c = 0; c < C; ++c) mgx += double(DY[c]) * w.f32()[c] * X[c] * r;
    mgx /= double(C);
    for (std::int64_t c = 0; c < C; ++c) {
      const double xh = X[c] * r, g = double(DY[c]) * w.f32()[c];
      dx.f32()[n * C + c] = static_cast<float>(r * (g - xh * mgx));
      if (dw) dw.f32()[c] += static_cast<float>(double(DY[c]) * xh);
    }
  }
  add_residual(dx, res);
}

}  // namespace llmtk::reference
