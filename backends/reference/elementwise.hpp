// Shared by the element-wise ops of the reference backend: the scalar functions and the loops
// that apply them. Each op's own file says which it uses.
#pragma once
#include "reference.hpp"

namespace llmtk::reference::elementwise {

inline constexpr double kSqrt2OverPi = 0.7978845608028654;

inline double gelu(double x) { return 0.5 * x * (1 + std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x))); }
inline double gelu_grad(double x) {
  const double u = kSqrt2OverPi * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * kSqrt2OverPi * (1 + 3 * 0.044715 * x * x);
}
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
inline double silu(double x) { return x * sigmoid(x); }
inline double silu_grad(double x) {
  const double s = sigmoid(x);
  return s * (1 + x * (1 - s));
}

// y = f(x); y may alias x.
template <class F>
void unary(TensorRef y, TensorRef x, F f) {
  for (std::int64_t i = 0, n = x.numel(); i < n; ++i) y.f32()[i] = static_cast<float>(f(double(x.f32()[i])));
}
// dx = dy · f'(x); dx may alias dy.
template <class F>
void unary_backward(TensorRef dx, TensorRef dy, TensorRef x, F df) {
  for (std::int64_t i = 0, n = x.numel(); i < n; ++i)
    dx.f32()[i] = static_cast<float>(double(dy.f32()[i]) * df(double(x.f32()[i])));
}
// y = f(gate) · up.
template <class F>
void gated(TensorRef y, TensorRef gate, TensorRef up, F f) {
  for (std::int64_t i = 0, n = y.numel(); i < n; ++i)
    y.f32()[i] = static_cast<float>(f(double(gate.f32()[i])) * up.f32()[i]);
}
// dgate = dy · up · f'(gate), dup = dy · f(gate); dgate may alias dy.
template <class F, class DF>
void gated_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate,
                    TensorRef up, F f, DF df) {
  for (std::int64_t i = 0, n = dy.numel(); i < n; ++i) {
    const double g = gate.f32()[i], u = up.f32()[i], d = dy.f32()[i];
    dgate.f32()[i] = static_cast<float>(d * u * df(g));
    dup.f32()[i] = static_cast<float>(d * f(g));
  }
}

}  // namespace llmtk::reference::elementwise
