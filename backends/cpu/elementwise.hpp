// Shared by the CPU backend's element-wise ops: float versions of the scalar functions and
// OpenMP loops that apply them. Pass the function as a lambda, not a function pointer: a pointer
// is an indirect call per element and the loop does not vectorise (-fopt-info-vec shows it).
#pragma once
#include "cpu.hpp"
#include "fast_math.hpp"

namespace llmtk::cpu::elementwise {

inline constexpr float kSqrt2OverPi = 0.7978845608028654f;

inline float gelu(float x) { return 0.5f * x * (1.0f + fast_tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x))); }
inline float gelu_grad(float x) {
  const float t = fast_tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
}
inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }
inline float silu(float x) { return x * sigmoid(x); }
inline float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

template <class F>
void unary(TensorRef y, TensorRef x, F f) {
  const float* X = x.f32();
  float* Y = y.f32();
  const std::int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) Y[i] = f(X[i]);
}
template <class F>
void unary_backward(TensorRef dx, TensorRef dy, TensorRef x, F df) {
  const float *X = x.f32(), *DY = dy.f32();
  float* DX = dx.f32();
  const std::int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) DX[i] = DY[i] * df(X[i]);
}
template <class F>
void gated(TensorRef y, TensorRef gate, TensorRef up, F f) {
  const float *G = gate.f32(), *U = up.f32();
  float* Y = y.f32();
  const std::int64_t n = y.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) Y[i] = f(G[i]) * U[i];
}
template <class F, class DF>
void gated_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up, F f,
                    DF df) {
  const float *G = gate.f32(), *U = up.f32(), *DY = dy.f32();
  float *DG = dgate.f32(), *DU = dup.f32();
  const std::int64_t n = dy.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = G[i], u = U[i], d = DY[i];
    DG[i] = d * u * df(g);
    DU[i] = d * f(g);
  }
}

}  // namespace llmtk::cpu::elementwise
