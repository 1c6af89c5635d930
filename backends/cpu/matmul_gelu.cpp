// matmul_gelu_forward / gelu_matmul_backward: a matmul and GELU as one op. On the CPU they run as
// their composition: a oneDNN GELU post-op would not also write h, which the backward needs. With
// bf16 activations the product goes to f32 scratch first, so that GELU (forward) and its
// gradient (backward) read the unrounded product and each output is rounded once, as the contract
// says (ops.hpp).
#include <vector>

#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

namespace {
std::vector<float>& product_scratch() {
  static std::vector<float> buffer;  // ops run one at a time
  return buffer;
}
TensorRef f32_like(const TensorRef& t) {
  auto& b = product_scratch();
  if (b.size() < std::size_t(t.numel())) b.resize(std::size_t(t.numel()));
  TensorRef s = t;
  s.data = b.data(), s.dtype = DType::f32;
  return s;
}
}  // namespace

void matmul_gelu_forward(TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b) {
  if (y.dtype != DType::bf16) return backend::matmul_gelu_forward_composed<&matmul_forward, &gelu_forward>(y, h, x, w, b);
  const TensorRef h32 = f32_like(h);
  matmul_forward(h32, x, w, b);  // bf16 inputs, f32 result
  const float* H = h32.f32();
  auto *Y = as<std::uint16_t>(y), *Hs = as<std::uint16_t>(h);
  const std::int64_t n = h.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) Hs[i] = bf16_bits(H[i]), Y[i] = bf16_bits(gelu(H[i]));
}

void gelu_matmul_backward(TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a, TensorRef w,
                          TensorRef h) {
  if (dh.dtype != DType::bf16)
    return backend::gelu_matmul_backward_composed<&matmul_backward, &gelu_backward>(dh, dw, db, dy, a, w, h);
  const TensorRef g32 = f32_like(dh);
  matmul_backward(g32, dw, db, dy, a, w);  // dy·w in f32; dw, db accumulate as usual
  const float* G = g32.f32();
  const auto* Hs = as<std::uint16_t>(h);
  auto* DH = as<std::uint16_t>(dh);
  const std::int64_t n = dh.numel();
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) DH[i] = bf16_bits(G[i] * gelu_grad(bf16_value(Hs[i])));
}

}  // namespace llmtk::cpu
