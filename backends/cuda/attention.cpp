// attention_forward / attention_backward: cuDNN's fused SDPA (cudnn_attention.cpp) when the
// precision or the activations are bf16 and the mask is one the graphs express (causal, no window, no ALiBi, no
// padding lengths, segments or learned bias), else the
// tiled kernel (attention.cu), which implements every mask and is the reference the cuDNN path is
// tested against. Either backward takes the lse either forward saved (cuDNN's softmax statistics
// are the same log-sum-exp). bf16 activations go to cuDNN as they are; the tiled kernel computes
// in f32, so it gets them widened and its outputs rounded once (backends/widen.hpp).
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "../widen.hpp"
#include "cudnn_attention.hpp"
#include "cuda.hpp"

namespace llmtk::cuda {

namespace {

using i64 = std::int64_t;

kernels::AttentionDims dims_of(const backend::AttentionShape& s, const AttentionMask& m) {
  return {s.B,        s.T,        s.Tk,       s.H, s.KV, s.D, m.causal, m.window, m.q_offset,
          static_cast<float>(1.0 / std::sqrt(double(s.D))), m.lengths ? m.lengths.i32() : nullptr,
          m.segments ? m.segments.i32() : nullptr, m.bias ? m.bias.f32() : nullptr, m.dbias ? m.dbias.f32() : nullptr};
}

void check_limits(const char* op, const kernels::AttentionDims& d) {
  LLMTK_CHECK(d.D <= kernels::kAttentionMaxHeadDim, op, "head dim ", d.D, " is larger than the ",
              kernels::kAttentionMaxHeadDim, " the tiled kernel takes");
  LLMTK_CHECK(d.B * d.H <= 65535, op, "batch × heads = ", d.B * d.H, " exceeds 65535 (one grid axis)");
}

}  // namespace

bool cudnn_enabled() {
  static const bool on = env_switch("LLMTK_CUDNN_ATTENTION", "cuDNN's fused attention where it applies",
                                    "the tiled kernel always", "the default: cuDNN where it applies")
                             .value_or(true);
  return on;
}

namespace {

// cuDNN runs bf16 with these masks only; everything else takes the tiled kernel. With f32
// activations cuDNN is used when the precision is bf16 (q, k, v rounded into scratch); bf16
// activations it takes as they are.
bool cudnn_applies(const kernels::AttentionDims& d, const AttentionMask& m, DType act) {
  return cudnn_enabled() && (ops::matmul_precision() == DType::bf16 || act == DType::bf16) && m.causal &&
         m.window == 0 && !m.alibi && !m.lengths && !m.segments && !m.bias && m.q_offset == 0 && d.T == d.Tk &&
         d.D % 8 == 0 && d.D <= 128;
}

// Once per op: the forward and the backward graphs can fail for different reasons.
void note_fallback(const char* op, const std::string& why) {
  static bool said[2] = {false, false};
  bool& done = said[std::string_view(op) == "attention_backward" ? 1 : 0];
  if (done) return;
  done = true;
  std::fprintf(stderr, "[%s] cuDNN fused attention is not used (%s); running the tiled attention kernel\n", op,
               why.c_str());
}

// Whether cuDNN can read or write t in place: bf16 and 16-byte aligned.
bool in_place(const TensorRef& t) {
  return t.dtype == DType::bf16 && reinterpret_cast<std::uintptr_t>(t.data) % 16 == 0;
}

// q, out or dout as cuDNN reads it: bf16 [B, T, H, D], the tensor itself or a rounded copy in `slot`.
const std::uint16_t* bf16_input(Scratch slot, const TensorRef& t) {
  if (in_place(t)) return static_cast<const std::uint16_t*>(t.data);
  auto* out = scratch_as<std::uint16_t>(slot, std::size_t(t.numel()));
  if (t.dtype == DType::bf16) {
    LLMTK_CUDA_CHECK("attention", cudaMemcpyAsync(out, t.data, t.bytes(), cudaMemcpyDeviceToDevice, stream()));
  } else {
    kernels::to_bf16(out, t.f32(), t.numel(), stream());
  }
  return out;
}

// k or v [B, Tk, KV, D] → [B, Tk, H, D] bf16 for cuDNN: grouped kv heads are repeated (a copy);
// with as many kv heads as query heads, as bf16_input.
const std::uint16_t* bf16_heads(Scratch slot, const TensorRef& t, const backend::AttentionShape& s) {
  if (s.KV == s.H) return bf16_input(slot, t);
  auto* out = scratch_as<std::uint16_t>(slot, std::size_t(s.B * s.Tk * s.H * s.D));
  by_storage(t.dtype, [&]<class E>(E) { kernels::to_bf16_heads(out, data<E>(t), s.B * s.Tk, s.KV, s.H, s.D, stream()); });
  return out;
}

// Where cuDNN writes an output ([B, T, H, D] bf16, `elements` of them): the tensor itself when it
// can (bf16, aligned, and for dk, dv as many kv heads as query heads), else scratch that
// from_bf16_result then moves into it.
std::uint16_t* bf16_output(Scratch slot, const TensorRef& t, std::int64_t elements) {
  if (in_place(t) && t.numel() == elements) return static_cast<std::uint16_t*>(t.data);
  return scratch_as<std::uint16_t>(slot, std::size_t(elements));
}
// out, dq: widened; dk, dv: summed over each group of query heads into the kv heads (the
// gradient of bf16_heads' repeat), in f32 and stored in t's dtype.
void from_bf16_result(const TensorRef& t, const std::uint16_t* in, const backend::AttentionShape& s, bool kv) {
  if (in == t.data) return;
  if (kv && s.KV != s.H) {
    by_storage(t.dtype, [&]<class E>(E) { kernels::from_bf16_sum_heads(data<E>(t), in, s.B * s.Tk, s.KV, s.H, s.D, stream()); });
  } else if (t.dtype == DType::bf16) {
    LLMTK_CUDA_CHECK("attention", cudaMemcpyAsync(t.data, in, t.bytes(), cudaMemcpyDeviceToDevice, stream()));
  } else {
    kernels::from_bf16(t.f32(), in, t.numel(), stream());
  }
}

// The tiled kernels (attention.cu) on f32 tensors; bf16 ones reach them widened (backends/widen.hpp).
void tiled_forward(TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v, AttentionMask mask) {
  const auto s = backend::attention_shape(q, k);
  const auto d = dims_of(s, mask);
  check_limits("attention_forward", d);
  kernels::attention_forward(out.f32(), lse.f32(), q.f32(), k.f32(), v.f32(), mask.alibi ? alibi_slopes(s.H) : nullptr,
                             d, stream());
}
void tiled_backward(TensorRef dq, TensorRef dk, TensorRef dv, TensorRef dout, TensorRef q, TensorRef k, TensorRef v,
                    TensorRef out, TensorRef lse, AttentionMask mask) {
  const auto s = backend::attention_shape(q, k);
  const auto d = dims_of(s, mask);
  check_limits("attention_backward", d);
  float* delta = scratch_as<float>(Scratch::attn_delta, std::size_t(s.B * s.H * s.T));
  if (mask.dbias)  // hidden keys: 0
    LLMTK_CUDA_CHECK("attention_backward", cudaMemsetAsync(mask.dbias.data, 0, mask.dbias.bytes(), stream()));
  kernels::attention_backward(dq.f32(), dk.f32(), dv.f32(), dout.f32(), q.f32(), k.f32(), v.f32(), out.f32(),
                              lse.f32(), mask.alibi ? alibi_slopes(s.H) : nullptr, delta, d, stream());
}

}  // namespace

void attention_forward(TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v, AttentionMask mask) {
  const char* op = "attention_forward";
  const auto s = backend::attention_shape(q, k);
  const auto d = dims_of(s, mask);
  std::string unusable;
  if (cudnn_applies(d, mask, q.dtype) && !cudnn_sdpa_usable(false, d, unusable)) note_fallback(op, unusable);
  else if (cudnn_applies(d, mask, q.dtype)) {
    const std::uint16_t *qb = bf16_input(Scratch::attn_q, q), *kb = bf16_heads(Scratch::attn_k, k, s),
                        *vb = bf16_heads(Scratch::attn_v, v, s);
    auto* ob = bf16_output(Scratch::attn_o, out, out.numel());
    std::string why;
    if (cudnn_sdpa_forward(d, qb, kb, vb, ob, lse.f32(), why)) {
      from_bf16_result(out, ob, s, false);
      return finish_op(op);
    }
    note_fallback(op, why);
  }
  backend::widened<&tiled_forward, 2, &cuda::convert>(out, lse, q, k, v, mask);
  finish_op(op);
}

void attention_backward(TensorRef dq, TensorRef dk, TensorRef dv, TensorRef dout, TensorRef q, TensorRef k,
                        TensorRef v, TensorRef out, TensorRef lse, AttentionMask mask) {
  const char* op = "attention_backward";
  const auto s = backend::attention_shape(q, k);
  const auto d = dims_of(s, mask);
  std::string unusable;
  if (cudnn_applies(d, mask, q.dtype) && !cudnn_sdpa_usable(true, d, unusable)) note_fallback(op, unusable);
  else if (cudnn_applies(d, mask, q.dtype)) {
    const std::uint16_t *qb = bf16_input(Scratch::attn_q, q), *kb = bf16_heads(Scratch::attn_k, k, s),
                        *vb = bf16_heads(Scratch::attn_v, v, s), *ob = bf16_input(Scratch::attn_o, out),
                        *dob = bf16_input(Scratch::attn_do, dout);
    // dk, dv have H heads here, like kb and vb: summed over each group into the kv heads below.
    const auto n_kv = s.B * s.Tk * s.H * s.D;
    auto* dqb = bf16_output(Scratch::attn_dq, dq, dq.numel());
    auto* dkb = bf16_output(Scratch::attn_dk, dk, n_kv);
    auto* dvb = bf16_output(Scratch::attn_dv, dv, n_kv);
    std::string why;
    if (cudnn_sdpa_backward(d, dob, qb, kb, vb, ob, lse.f32(), dqb, dkb, dvb, why)) {
      from_bf16_result(dq, dqb, s, false);
      from_bf16_result(dk, dkb, s, true);
      from_bf16_result(dv, dvb, s, true);
      return finish_op(op);
    }
    note_fallback(op, why);
  }
  backend::widened<&tiled_backward, 3, &cuda::convert>(dq, dk, dv, dout, q, k, v, out, lse, mask);
  finish_op(op);
}

}  // namespace llmtk::cuda
