// Shared by every backend: argument checks (each message starts with the op's name), the
// attention shape rules and ALiBi slopes, and the fused ops as compositions, so that backends
// cannot disagree on them.
#pragma once
#include <cmath>
#include <cstdint>

#include "ops/ops.hpp"

namespace llmtk::backend {

// `where`: the memory this backend computes on (host, or the GPU for the cuda backend).
inline void expect_f32(const char* op, const char* what, const TensorRef& t, Device where = Device::host) {
  LLMTK_CHECK(t.data != nullptr, op, what, " is null");
  LLMTK_CHECK(t.dtype == DType::f32, op, what, " is ", name_of(t.dtype), "; this backend computes in f32");
  if (where == Device::host) LLMTK_CHECK(t.device == Device::host, op, what, " is not in host memory");
  else LLMTK_CHECK(t.device == where, op, what, " is in host memory; the cuda backend needs device tensors "
                   "(allocate arenas after use_backend(\"cuda\"))");
}
// Matmul inputs may be f32 or bf16 (a bf16 copy of the weights, or a bf16 matrix for the peak
// measurement); everything else is f32.
inline void expect_f32_or_bf16(const char* op, const char* what, const TensorRef& t, Device where = Device::host) {
  LLMTK_CHECK(t.data != nullptr, op, what, " is null");
  LLMTK_CHECK(t.dtype == DType::f32 || t.dtype == DType::bf16, op, what, " is ", name_of(t.dtype),
              "; matmul inputs are f32 or bf16");
  if (where == Device::host) LLMTK_CHECK(t.device == Device::host, op, what, " is not in host memory");
  else LLMTK_CHECK(t.device == where, op, what, " is in host memory; the cuda backend needs device tensors "
                   "(allocate arenas after use_backend(\"cuda\"))");
}
inline void expect_rank(const char* op, const char* what, const TensorRef& t, int rank, const char* axes) {
  LLMTK_CHECK(t.rank == rank, op, what, " has ", t.rank, " axes ", t.shape_str(), ", expected ", axes);
}
inline void expect_same(const char* op, const char* a, const TensorRef& x, const char* b, const TensorRef& y) {
  LLMTK_CHECK(x.numel() == y.numel() && x.size(-1) == y.size(-1), op, a, " ", x.shape_str(), " and ", b, " ",
              y.shape_str(), " must have the same shape");
}

// matmul_gelu_forward / gelu_matmul_backward: the checks every backend makes, and the two ops
// as the composition of a backend's own matmul and GELU ops (the contract; the reference and CPU
// backends run them this way, the CUDA backend fuses them).
inline void check_matmul_gelu_forward(const TensorRef& y, const TensorRef& h) {
  expect_same("matmul_gelu_forward", "y", y, "h", h);
  LLMTK_CHECK(y.data != h.data, "matmul_gelu_forward",
              "y and h must be different tensors (h is kept for the backward)");
}
inline void check_gelu_matmul_backward(const TensorRef& dh, const TensorRef& h) {
  LLMTK_CHECK(dh, "gelu_matmul_backward", "dh is required (it is the op's activation gradient)");
  expect_same("gelu_matmul_backward", "dh", dh, "h", h);
  LLMTK_CHECK(dh.data != h.data, "gelu_matmul_backward",
              "dh and h must be different tensors (h is read after dh is written)");
}
template <auto matmul_forward, auto gelu_forward>
void matmul_gelu_forward_composed(TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b) {
  check_matmul_gelu_forward(y, h);
  matmul_forward(h, x, w, b);
  gelu_forward(y, h);
}
template <auto matmul_backward, auto gelu_backward>
void gelu_matmul_backward_composed(TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a, TensorRef w,
                                   TensorRef h) {
  check_gelu_matmul_backward(dh, h);
  matmul_backward(dh, dw, db, dy, a, w);
  gelu_backward(dh, dh, h);  // in place: dh becomes (dy·w) ⊙ gelu'(h)
}

struct AttentionShape {
  std::int64_t B, T, H, KV, D;  // T: query rows
  std::int64_t Tk;              // key rows (T when training; the cache length when decoding)
};

inline AttentionShape check_attention(const char* op, TensorRef out, TensorRef lse, TensorRef q, TensorRef k,
                                      TensorRef v, const AttentionMask& m, Device where = Device::host) {
  expect_f32(op, "q", q, where), expect_f32(op, "k", k, where), expect_f32(op, "v", v, where);
  expect_f32(op, "out", out, where), expect_f32(op, "lse", lse, where);
  expect_rank(op, "q", q, 4, "[B, T, H, D]");
  expect_rank(op, "k", k, 4, "[B, T, KV, D]");
  expect_rank(op, "v", v, 4, "[B, T, KV, D]");
  AttentionShape s{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), k.size(1)};
  LLMTK_CHECK(k.size(0) == s.B && k.size(3) == s.D, op, "k ", k.shape_str(), " does not match q ", q.shape_str());
  LLMTK_CHECK(v.numel() == k.numel() && v.size(2) == s.KV, op, "v ", v.shape_str(), " must match k ", k.shape_str());
  LLMTK_CHECK(s.H % s.KV == 0, op, "KV = ", s.KV, " kv heads must divide H = ", s.H);
  LLMTK_CHECK(out.numel() == q.numel(), op, "out must have q's shape ", q.shape_str());
  LLMTK_CHECK(lse.numel() == s.B * s.H * s.T, op, "lse must be [B, H, T]");
  LLMTK_CHECK(m.q_offset >= 0 && s.Tk >= m.q_offset + s.T, op, "k has ", s.Tk, " rows, fewer than q_offset ",
              m.q_offset, " + ", s.T, " queries");
  LLMTK_CHECK(m.window >= 0, op, "window is ", m.window, "; 0 means no window");
  LLMTK_CHECK(!(m.lengths && m.segments), op, "lengths and segments cannot be combined: pack documents with "
              "segments (padding as a document of its own) or pad rows with lengths");
  if (m.lengths) {
    LLMTK_CHECK(m.lengths.dtype == DType::i32 && m.lengths.numel() == s.B, op, "lengths must be [B] = [", s.B,
                "] i32, got ", m.lengths.shape_str());
    LLMTK_CHECK(m.lengths.device == where, op, "lengths is not in the memory this backend computes on");
  }
  if (m.segments) {
    LLMTK_CHECK(m.segments.dtype == DType::i32 && m.segments.numel() == s.B * s.Tk, op, "segments must be [B, T] = [",
                s.B, ", ", s.Tk, "] i32, got ", m.segments.shape_str());
    LLMTK_CHECK(m.segments.device == where, op, "segments is not in the memory this backend computes on");
    LLMTK_CHECK(m.q_offset == 0 && s.Tk == s.T, op, "segments need as many keys as queries and q_offset 0");
  }
  // Values are checked where they are readable (host memory); a device backend trusts the caller.
  if (m.lengths && where == Device::host)
    for (std::int64_t b = 0; b < s.B; ++b) {
      const std::int32_t n = m.lengths.i32()[b];
      LLMTK_CHECK(n >= 1 && n <= s.Tk, op, "lengths[", b, "] = ", n, " is outside [1, ", s.Tk, "]");
    }
  return s;
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
