// gelu / relu / silu forward and backward, and the gated forms swiglu / geglu.
#include "reference.hpp"

namespace llmtk::reference {

namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654;

double gelu(double x) { return 0.5 * x * (1 + std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x))); }
double gelu_grad(double x) {
  const double u = kSqrt2OverPi * (x + 0.044715 * x * x * x), t = std::tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * kSqrt2OverPi * (1 + 3 * 0.044715 * x * x);
}
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double silu(double x) { return x * sigmoid(x); }
double silu_grad(double x) {
  const double s = sigmoid(x);
  return s * (1 + x * (1 - s));
}

template <class F>
void unary(const char* op, TensorRef y, TensorRef x, F f) {
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_same(op, "y", y, "x", x);
  for (std::int64_t i = 0, n = x.numel(); i < n; ++i) y.f32()[i] = static_cast<float>(f(double(x.f32()[i])));
}
template <class F>
void unary_backward(const char* op, TensorRef dx, TensorRef dy, TensorRef x, F df) {
  expect_f32(op, "dx", dx), expect_f32(op, "dy", dy), expect_f32(op, "x", x);
  expect_same(op, "dx", dx, "x", x), expect_same(op, "dy", dy, "x", x);
  for (std::int64_t i = 0, n = x.numel(); i < n; ++i)
    dx.f32()[i] = static_cast<float>(double(dy.f32()[i]) * df(double(x.f32()[i])));
}
template <class F>
void gated(const char* op, TensorRef y, TensorRef gate, TensorRef up, F f) {
  expect_f32(op, "y", y), expect_f32(op, "gate", gate), expect_f32(op, "up", up);
  expect_same(op, "gate", gate, "up", up), expect_same(op, "y", y, "gate", gate);
  for (std::int64_t i = 0, n = y.numel(); i < n; ++i)
    y.f32()[i] = static_cast<float>(f(double(gate.f32()[i])) * up.f32()[i]);
}
template <class F, class DF>
void gated_backward(const char* op, TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate,
                    TensorRef up, F f, DF df) {
  expect_f32(op, "dgate", dgate), expect_f32(op, "dup", dup), expect_f32(op, "dy", dy);
  expect_same(op, "gate", gate, "up", up), expect_same(op, "dy", dy, "gate", gate);
  for (std::int64_t i = 0, n = dy.numel(); i < n; ++i) {
    const double g = gate.f32()[i], u = up.f32()[i], d = dy.f32()[i];
    dgate.f32()[i] = static_cast<float>(d * u * df(g));
    dup.f32()[i] = static_cast<float>(d * f(g));
  }
}
}  // namespace

void gelu_forward(TensorRef y, TensorRef x) { unary("gelu_forward", y, x, gelu); }
void gelu_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward("gelu_backward", dx, dy, x, gelu_grad);
}
void relu_forward(TensorRef y, TensorRef x) {
  unary("relu_forward", y, x, [](double v) { return v > 0 ? v : 0.0; });
}
void relu_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward("relu_backward", dx, dy, x, [](double v) { return v > 0 ? 1.0 : 0.0; });
}
void silu_forward(TensorRef y, TensorRef x) { unary("silu_forward", y, x, silu); }
void silu_backward(TensorRef dx, TensorRef dy, TensorRef x) {
  unary_backward("silu_backward", dx, dy, x, silu_grad);
}
void swiglu_forward(TensorRef y, TensorRef gate, TensorRef up) {
  gated("swiglu_forward", y, gate, up, silu);
}
void swiglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward("swiglu_backward", dgate, dup, dy, gate, up, silu, silu_grad);
}
void geglu_forward(TensorRef y, TensorRef gate, TensorRef up) {
  gated("geglu_forward", y, gate, up, gelu);
}
void geglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward("geglu_backward", dgate, dup, dy, gate, up, gelu, gelu_grad);
}

}  // namespace llmtk::reference
