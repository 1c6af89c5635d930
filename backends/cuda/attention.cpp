// attention_forward / attention_backward: cuDNN's fused SDPA (cudnn_attention.cpp) when the
// precision is bf16 and the mask is one the graphs express (causal, no window, no ALiBi, no
// padding lengths, segments or learned bias), else the
// tiled kernel (attention.cu), which implements every mask and is the reference the cuDNN path is
// tested against. Either backward takes the lse either forward saved (cuDNN's softmax statistics
// are the same log-sum-exp).
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <string_view>

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

// cuDNN runs bf16 with these masks only; everything else takes the tiled kernel.
bool cudnn_applies(const kernels::AttentionDims& d, const AttentionMask& m) {
  return cudnn_enabled() && ops::matmul_precision() == DType::bf16 && m.causal && m.window == 0 && !m.alibi &&
         !m.lengths && !m.segments && !m.bias && m.q_offset == 0 && d.T == d.Tk && d.D % 8 == 0 && d.D <= 128;
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

std::uint16_t* to_bf16(Scratch slot, const TensorRef& t) {
  auto* out = scratch_as<std::uint16_t>(slot, std::size_t(t.numel()));
  kernels::to_bf16(out, t.f32(), t.numel(), stream());
  return out;
}

// k or v [B, Tk, KV, D] f32 → [B, Tk, H, D] bf16 for cuDNN: grouped kv heads are repeated.
std::uint16_t* to_bf16_heads(Scratch slot, const TensorRef& t, const backend::AttentionShape& s) {
  if (s.KV == s.H) return to_bf16(slot, t);
  auto* out = scratch_as<std::uint16_t>(slot, std::size_t(s.B * s.Tk * s.H * s.D));
  kernels::to_bf16_heads(out, t.f32(), s.B * s.Tk, s.KV, s.H, s.D, stream());
  return out;
}

// The gradient of to_bf16_heads: [B, Tk, H, D] bf16 → dk or dv [B, Tk, KV, D] f32, written.
void from_bf16_heads(const TensorRef& grad, const std::uint16_t* in, const backend::AttentionShape& s) {
  if (s.KV == s.H) return kernels::from_bf16(grad.f32(), in, grad.numel(), stream());
  kernels::from_bf16_sum_heads(grad.f32(), in, s.B * s.Tk, s.KV, s.H, s.D, stream());
}

}  // namespace

void attention_forward(TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v, AttentionMask mask) {
  const char* op = "attention_forward";
  const auto s = backend::attention_shape(q, k);
  const auto d = dims_of(s, mask);
  std::string unusable;
  if (cudnn_applies(d, mask) && !cudnn_sdpa_usable(false, d, unusable)) note_fallback(op, unusable);
  else if (cudnn_applies(d, mask)) {
    const std::uint16_t *qb = to_bf16(Scratch::attn_q, q), *kb = to_bf16_heads(Scratch::attn_k, k, s),
                        *vb = to_bf16_heads(Scratch::attn_v, v, s);
    auto* ob = scratch_as<std::uint16_t>(Scratch::attn_o, std::size_t(out.numel()));
    std::string why;
    if (cudnn_sdpa_forward(d, qb, kb, vb, ob, lse.f32(), why)) {
      kernels::from_bf16(out.f32(), ob, out.numel(), stream());
      return finish_op(op);
    }
    note_fallback(op, why);
  }
  check_limits(op, d);
  kernels::attention_forward(out.f32(), lse.f32(), q.f32(), k.f32(), v.f32(), mask.alibi ? alibi_slopes(s.H) : nullptr,
                             d, stream());
  finish_op(op);
}

void attention_backward(TensorRef dq, TensorRef dk, TensorRef dv, TensorRef dout, TensorRef q, TensorRef k,
                        TensorRef v, TensorRef out, TensorRef lse, AttentionMask mask) {
  const char* op = "attention_backward";
  const auto s = backend::attention_shape(q, k);
  const auto d = dims_of(s, mask);
  std::string unusable;
  if (cudnn_applies(d, mask) && !cudnn_sdpa_usable(true, d, unusable)) note_fallback(op, unusable);
  else if (cudnn_applies(d, mask)) {
    const std::uint16_t *qb = to_bf16(Scratch::attn_q, q), *kb = to_bf16_heads(Scratch::attn_k, k, s),
                        *vb = to_bf16_heads(Scratch::attn_v, v, s), *ob = to_bf16(Scratch::attn_o, out),
                        *dob = to_bf16(Scratch::attn_do, dout);
    // dk, dv have H heads here, like kb and vb: summed over each group into the kv heads below.
    const auto n_q = std::size_t(dq.numel()), n_kv = std::size_t(s.B * s.Tk * s.H * s.D);
    auto* dqb = scratch_as<std::uint16_t>(Scratch::attn_dq, n_q);
    auto* dkb = scratch_as<std::uint16_t>(Scratch::attn_dk, n_kv);
    auto* dvb = scratch_as<std::uint16_t>(Scratch::attn_dv, n_kv);
    std::string why;
    if (cudnn_sdpa_backward(d, dob, qb, kb, vb, ob, lse.f32(), dqb, dkb, dvb, why)) {
      kernels::from_bf16(dq.f32(), dqb, dq.numel(), stream());
      from_bf16_heads(dk, dkb, s);
      from_bf16_heads(dv, dvb, s);
      return finish_op(op);
    }
    note_fallback(op, why);
  }
  check_limits(op, d);
  float* delta = scratch_as<float>(Scratch::attn_delta, std::size_t(s.B * s.H * s.T));
  if (mask.dbias) LLMTK_CUDA_CHECK(op, cudaMemsetAsync(mask.dbias.data, 0, mask.dbias.bytes(), stream()));  // hidden keys: 0
  kernels::attention_backward(dq.f32(), dk.f32(), dv.f32(), dout.f32(), q.f32(), k.f32(), v.f32(), out.f32(),
                              lse.f32(), mask.alibi ? alibi_slopes(s.H) : nullptr, delta, d, stream());
  finish_op(op);
}

}  // namespace llmtk::cuda
