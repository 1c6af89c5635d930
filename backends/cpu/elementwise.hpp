// Shared by the CPU backend's element-wise ops: float versions of the scalar functions and
// OpenMP loops that apply them. Pass the function as a lambda, not a function pointer: a pointer
// is an indirect call per element and the loop does not vectorise (-fopt-info-vec shows it).
#pragma once
#include "bf16.hpp"
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

// Loads and stores in the tensor's dtype: f32 as it is, bf16 widened on load and rounded once on
// store (bf16.hpp). Each loop below is written once over the storage type T and instantiated for
// both, so a bf16 activation costs half the bytes and no separate conversion pass.
inline float ld(const float* p, std::int64_t i) { return p[i]; }
inline float ld(const std::uint16_t* p, std::int64_t i) { return bf16_value(p[i]); }
inline void st(float* p, std::int64_t i, float v) { p[i] = v; }
inline void st(std::uint16_t* p, std::int64_t i, float v) { p[i] = bf16_bits(v); }
template <class T>
T* as(const TensorRef& t) {
  return static_cast<T*>(t.data);
}
// Calls body.template operator()<T>() with T the storage type of activations in dtype `t`.
template <class Body>
void by_dtype(DType t, Body body) {
  if (t == DType::bf16) body.template operator()<std::uint16_t>();
  else body.template operator()<float>();
}

template <class F>
void unary(TensorRef y, TensorRef x, F f) {
  by_dtype(x.dtype, [&]<class T>() {
    const T* X = as<T>(x);
    T* Y = as<T>(y);
    const std::int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) st(Y, i, f(ld(X, i)));
  });
}
template <class F>
void unary_backward(TensorRef dx, TensorRef dy, TensorRef x, F df) {
  by_dtype(x.dtype, [&]<class T>() {
    const T *X = as<T>(x), *DY = as<T>(dy);
    T* DX = as<T>(dx);
    const std::int64_t n = x.numel();
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) st(DX, i, ld(DY, i) * df(ld(X, i)));
  });
}
template <class F>
void gated(TensorRef y, TensorRef gate, TensorRef up, F f) {
  by_dtype(y.dtype, [&]<class T>() {
    const T *G = as<T>(gate), *U = as<T>(up);
    T* Y = as<T>(y);
    const std::int64_t n = y.numel();
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) st(Y, i, f(ld(G, i)) * ld(U, i));
  });
}
template <class F, class DF>
void gated_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up, F f,
                    DF df) {
  by_dtype(dy.dtype, [&]<class T>() {
    const T *G = as<T>(gate), *U = as<T>(up), *DY = as<T>(dy);
    T *DG = as<T>(dgate), *DU = as<T>(dup);
    const std::int64_t n = dy.numel();
#pragma omp parallel for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) {
      const float g = ld(G, i), u = ld(U, i), d = ld(DY, i);
      st(DG, i, d * u * df(g));
      st(DU, i, d * f(g));
    }
  });
}

}  // namespace llmtk::cpu::elementwise
