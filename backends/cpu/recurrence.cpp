// minGRU's gates (element-wise) and the diagonal linear recurrence: rows b and channel blocks in
// parallel, the time steps of each in order (the recurrence's only sequential axis), a block of
// channels contiguous so the inner loop vectorises. f32 here; bf16 through the widening fallback.
#include <algorithm>

#include "elementwise.hpp"

namespace llmtk::cpu {

using elementwise::sigmoid;

void mingru_gates_forward(TensorRef a, TensorRef u, TensorRef z, TensorRef h) {
  const std::int64_t n = z.numel();
  const float *Z = z.f32(), *H = h.f32();
  float *A = a.f32(), *U = u.f32();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const float s = sigmoid(Z[i]);
    A[i] = 1.0f - s;
    U[i] = s * H[i];
  }
}

void mingru_gates_backward(TensorRef dz, TensorRef dh, TensorRef da, TensorRef du, TensorRef z, TensorRef h) {
  const std::int64_t n = z.numel();
  const float *Z = z.f32(), *H = h.f32(), *DA = da.f32(), *DU = du.f32();
  float *DZ = dz.f32(), *DH = dh.f32();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const float s = sigmoid(Z[i]), g = DU[i];
    DZ[i] = (g * H[i] - DA[i]) * s * (1.0f - s);
    DH[i] = g * s;
  }
}

namespace {
constexpr std::int64_t kBlock = 64;  // channels per task: a cache line's worth of rows, vectorised
bool starts(const std::int32_t* seg, std::int64_t b, std::int64_t t, std::int64_t T) {
  return seg && t > 0 && seg[b * T + t] != seg[b * T + t - 1];
}
}  // namespace

void linear_scan_forward(TensorRef y, TensorRef a, TensorRef x, TensorRef h0, TensorRef segments) {
  const std::int64_t B = a.size(0), T = a.size(1), D = a.size(2), blocks = (D + kBlock - 1) / kBlock;
  const float *A = a.f32(), *X = x.f32(), *H0 = h0 ? h0.f32() : nullptr;
  const std::int32_t* seg = segments ? segments.i32() : nullptr;
  float* Y = y.f32();
#pragma omp parallel for schedule(static)
  for (std::int64_t task = 0; task < B * blocks; ++task) {
    const std::int64_t b = task / blocks, d0 = (task % blocks) * kBlock, n = std::min(kBlock, D - d0);
    float state[kBlock];
    for (std::int64_t j = 0; j < n; ++j) state[j] = H0 ? H0[b * D + d0 + j] : 0.0f;
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t row = (b * T + t) * D + d0;
      if (starts(seg, b, t, T))
        for (std::int64_t j = 0; j < n; ++j) state[j] = 0.0f;
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) Y[row + j] = state[j] = A[row + j] * state[j] + X[row + j];
    }
  }
}

void linear_scan_backward(TensorRef da, TensorRef dx, TensorRef dy, TensorRef a, TensorRef y, TensorRef h0,
                          TensorRef segments) {
  const std::int64_t B = a.size(0), T = a.size(1), D = a.size(2), blocks = (D + kBlock - 1) / kBlock;
  const float *A = a.f32(), *Y = y.f32(), *DY = dy.f32(), *H0 = h0 ? h0.f32() : nullptr;
  const std::int32_t* seg = segments ? segments.i32() : nullptr;
  float *DA = da.f32(), *DX = dx.f32();
#pragma omp parallel for schedule(static)
  for (std::int64_t task = 0; task < B * blocks; ++task) {
    const std::int64_t b = task / blocks, d0 = (task % blocks) * kBlock, n = std::min(kBlock, D - d0);
    float g[kBlock] = {};
    for (std::int64_t t = T; t-- > 0;) {
      const std::int64_t row = (b * T + t) * D + d0;
      const bool carry = t + 1 < T && !starts(seg, b, t + 1, T), first = starts(seg, b, t, T);
#pragma omp simd
      for (std::int64_t j = 0; j < n; ++j) g[j] = DY[row + j] + (carry ? A[row + D + j] * g[j] : 0.0f);
      for (std::int64_t j = 0; j < n; ++j) {
        DX[row + j] = g[j];
        const float prev = first ? 0.0f : t > 0 ? Y[row - D + j] : H0 ? H0[b * D + d0 + j] : 0.0f;
        DA[row + j] = first ? 0.0f : g[j] * prev;
      }
    }
  }
}

}  // namespace llmtk::cpu
