// matmul_forward / matmul_backward: linear maps y = x·wᵀ + b.
#include <vector>

#include "reference.hpp"

namespace llmtk::reference {

namespace {
// An f32 view of a matmul input: the tensor itself, or a widened copy of a bf16 one (exact).
struct AsF32 {
  std::vector<float> copy;
  const float* p;
  explicit AsF32(const TensorRef& t) : p(t.f32()) {
    if (t.dtype != DType::bf16) return;
    const auto* h = static_cast<const bf16*>(t.data);
    copy.resize(std::size_t(t.numel()));
    for (std::size_t i = 0; i < copy.size(); ++i) copy[i] = float(h[i]);
    p = copy.data();
  }
};
}  // namespace

void matmul_forward(TensorRef y, TensorRef x, TensorRef w, TensorRef b) {
  const std::int64_t N = x.rows(), I = x.size(-1), O = w.size(0);
  const AsF32 xs(x), ws(w);
  const float *X = xs.p, *W = ws.p, *B = b ? b.f32() : nullptr;
  float* Y = y.f32();
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t o = 0; o < O; ++o) {
      double acc = B ? B[o] : 0.0;
      for (std::int64_t i = 0; i < I; ++i) acc += double(X[n * I + i]) * W[o * I + i];
      Y[n * O + o] = static_cast<float>(acc);
    }
}

void matmul_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x,
                     TensorRef w) {
  const std::int64_t N = x.rows(), I = x.size(-1), O = w.size(0);
  const AsF32 xs(x), ws(w);
  const float *DY = dy.f32(), *X = xs.p, *W = ws.p;
  if (dx) {
    float* DX = dx.f32();
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t i = 0; i < I; ++i) {
        double acc = 0;
        for (std::int64_t o = 0; o < O; ++o) acc += double(DY[n * O + o]) * W[o * I + i];
        DX[n * I + i] = static_cast<float>(acc);
      }
  }
  if (dw) {
    float* DW = dw.f32();
    for (std::int64_t o = 0; o < O; ++o)
      for (std::int64_t i = 0; i < I; ++i) {
        double acc = 0;
        for (std::int64_t n = 0; n < N; ++n) acc += double(DY[n * O + o]) * X[n * I + i];
        DW[o * I + i] += static_cast<float>(acc);
      }
  }
  if (db) {
    float* DB = db.f32();
    for (std::int64_t o = 0; o < O; ++o) {
      double acc = 0;
      for (std::int64_t n = 0; n < N; ++n) acc += DY[n * O + o];
      DB[o] += static_cast<float>(acc);
    }
  }
}

}  // namespace llmtk::reference
