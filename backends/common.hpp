// Shared by every backend: the attention shape and visibility rules, ALiBi slopes, and the fused
// ops as compositions, so that backends cannot disagree on them. Argument checks are not here:
// the dispatcher runs each op's contract checks (framework/ops/checks.cpp) before a backend's op.
#pragma once
#include <cmath>
#include <cstdint>

#include "ops/ops.hpp"

namespace llmtk::backend {

// matmul_gelu_forward / gelu_matmul_backward as the composition of a backend's own matmul and
// GELU ops (the contract; the reference and CPU backends run them this way, the CUDA backend
// fuses them).
template <auto matmul_forward, auto gelu_forward>
void matmul_gelu_forward_composed(TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b) {
  matmul_forward(h, x, w, b);
  gelu_forward(y, h);
}
template <auto matmul_backward, auto gelu_backward>
void gelu_matmul_backward_composed(TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a, TensorRef w,
                                   TensorRef h) {
  matmul_backward(dh, dw, db, dy, a, w);
  gelu_backward(dh, dh, h);  // in place: dh becomes (dy·w) ⊙ gelu'(h)
}

struct AttentionShape {
  std::int64_t B, T, H, KV, D;  // T: query rows
  std::int64_t Tk;              // key rows (T when training; the cache length when decoding)
};

// The extents of an attention call whose arguments the op's check accepted.
inline AttentionShape attention_shape(const TensorRef& q, const TensorRef& k) {
  return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), k.size(1)};
}

// Whether key j (position among the keys) is visible to the query at position i of batch row b:
// AttentionMask's rules in one place for the host backends.
inline bool attention_visible(const AttentionMask& m, std::int64_t b, std::int64_t i, std::int64_t j, std::int64_t Tk) {
  if (m.causal && j > i) return false;
  if (m.window > 0 && (i - j >= m.window || j - i >= m.window)) return false;
  if (m.lengths && j >= m.lengths.i32()[b]) return false;
  if (m.segments && m.segments.i32()[b * Tk + i] != m.segments.i32()[b * Tk + j]) return false;
  return true;
}

// ALiBi slopes: 2^(-8(h+1)/H) for H a power of two; otherwise the closest power of two n below H
// gives the first n slopes and every other slope of 2n fills the rest (Press et al.'s code).
inline double alibi_slope(std::int64_t h, std::int64_t H) {
  std::int64_t n = 1;
  while (n * 2 <= H) n *= 2;
  if (h < n) return std::pow(2.0, -8.0 * double(h + 1) / double(n));
  return std::pow(2.0, -4.0 * double(2 * (h - n) + 1) / double(n));
}

}  // namespace llmtk::backend
