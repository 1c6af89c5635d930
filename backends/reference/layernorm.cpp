// layernorm_forward / layernorm_backward: y = (x − mean)·rstd·w + b over the last axis.
#include "reference.hpp"

namespace llmtk::reference {

void layernorm_forward(TensorRef y, TensorRef mean, TensorRef rstd, TensorRef x, TensorRef w,
                       TensorRef b, float eps) {
  const std::int64_t N = x.rows(), C = x.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const float* X = x.f32() + n * C;
    double m = 0, v = 0;
    for (std::int64_t c = 0; c < C; ++c) m += X[c];
    m /= double(C);
    for (std::int64_t c = 0; c < C; ++c) v += (X[c] - m) * (X[c] - m);
    v /= double(C);
    const double r = 1.0 / std::sqrt(v + eps);
    for (std::int64_t c = 0; c < C; ++c) {
      double out = (X[c] - m) * r * w.f32()[c] + (b ? b.f32()[c] : 0.0);
      y.f32()[n * C + c] = static_cast<float>(out);
    }
    mean.f32()[n] = static_cast<float>(m);
    rstd.f32()[n] = static_cast<float>(r);
  }
}

void layernorm_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x,
                        TensorRef w, TensorRef mean, TensorRef rstd, TensorRef dres) {
  std::vector<float> res = residual_copy(dres);
  const std::int64_t N = x.rows(), C = x.size(-1);
  for (std::int64_t n = 0; n < N; ++n) {
    const float *X = x.f32() + n * C, *DY = dy.f32() + n * C;
    const double m = mean.f32()[n], r = rstd.f32()[n];
    // dx = r · (g − mean(g) − x̂ · mean(g · x̂)), g = dy · w
    double mg = 0, mgx = 0;
    for (std::int64_t c = 0; c < C; ++c) {
      const double xh = (X[c] - m) * r, g = double(DY[c]) * w.f32()[c];
      mg += g, mgx += g * xh;
    }
    mg /= double(C), mgx /= double(C);
    for (std::int64_t c = 0; c < C; ++c) {
      const double xh = (X[c] - m) * r, g = double(DY[c]) * w.f32()[c];
      dx.f32()[n * C + c] = static_cast<float>(r * (g - mg - xh * mgx));
      if (dw) dw.f32()[c] += static_cast<float>(double(DY[c]) * xh);
      if (db) db.f32()[c] += DY[c];
    }
  }
  add_residual(dx, res);
}

}  // namespace llmtk::reference
