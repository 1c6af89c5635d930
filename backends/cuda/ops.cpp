// Every op of the CUDA backend except matmul (matmul.cpp) and attention (attention.cpp): one
// kernel launcher each (kernels.hpp), on arguments the dispatcher has checked against the op's
// contract. Activation outputs and activation gradients are written; parameter gradients
// accumulate (+=).
#include <bit>
#include <cmath>

#include "cuda.hpp"

namespace llmtk::cuda {

namespace {
using i64 = std::int64_t;
using kernels::Gate;
using kernels::Unary;


void unary(const char* op, Unary f, TensorRef y, TensorRef x) {
  by_storage(y.dtype, [&]<class E>(E) { kernels::unary_forward(f, data<E>(y), data<E>(x), x.numel(), stream()); });
  finish_op(op);
}
void unary_backward(const char* op, Unary f, TensorRef dx, TensorRef dy, TensorRef x) {
  by_storage(dx.dtype, [&]<class E>(E) {
    kernels::unary_backward(f, data<E>(dx), data<E>(dy), data<E>(x), x.numel(), stream());
  });
  finish_op(op);
}
void gated(const char* op, Gate f, TensorRef y, TensorRef gate, TensorRef up) {
  by_storage(y.dtype, [&]<class E>(E) {
    kernels::gated_forward(f, data<E>(y), data<E>(gate), data<E>(up), y.numel(), stream());
  });
  finish_op(op);
}
void gated_backward(const char* op, Gate f, TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  by_storage(dy.dtype, [&]<class E>(E) {
    kernels::gated_backward(f, data<E>(dgate), data<E>(dup), data<E>(dy), data<E>(gate), data<E>(up), dy.numel(),
                            stream());
  });
  finish_op(op);
}
float* partials_for(i64 N, i64 C) {
  return scratch_as<float>(Scratch::partials, std::size_t(kernels::column_sum_scratch(N, C)));
}
}  // namespace

void add_forward(TensorRef y, TensorRef a, TensorRef b) {
  const char* op = "add_forward";
  by_storage(y.dtype, [&]<class E>(E) { kernels::add(data<E>(y), data<E>(a), data<E>(b), y.numel(), stream()); });
  finish_op(op);
}

void layernorm_forward(TensorRef y, TensorRef mean, TensorRef rstd, TensorRef x, TensorRef w, TensorRef b, float eps) {
  const char* op = "layernorm_forward";
  const i64 N = x.rows(), C = x.size(-1);
  by_storage(x.dtype, [&]<class E>(E) {
    kernels::layernorm_forward(data<E>(y), mean.f32(), rstd.f32(), data<E>(x), w.f32(), b ? b.f32() : nullptr, N, C, eps,
                               stream());
  });
  finish_op(op);
}

void layernorm_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x, TensorRef w,
                        TensorRef mean, TensorRef rstd, TensorRef dres) {
  const char* op = "layernorm_backward";
  const i64 N = x.rows(), C = x.size(-1);
  // Parameter gradients first: they read dy, which dx could share memory with in a caller.
  float* partial = partials_for(N, C);
  by_storage(x.dtype, [&]<class E>(E) {
    if (dw) kernels::column_sum_normed(dw.f32(), data<E>(dy), data<E>(x), mean.f32(), rstd.f32(), N, C, partial, stream());
    if (db) kernels::column_sum(db.f32(), data<E>(dy), N, C, partial, stream());
    kernels::layernorm_backward_dx(data<E>(dx), data<E>(dy), data<E>(x), w.f32(), mean.f32(), rstd.f32(),
                                   dres ? data<E>(dres) : nullptr, N, C, stream());
  });
  finish_op(op);
}

void rmsnorm_forward(TensorRef y, TensorRef rstd, TensorRef x, TensorRef w, float eps) {
  const char* op = "rmsnorm_forward";
  const i64 N = x.rows(), C = x.size(-1);
  by_storage(x.dtype, [&]<class E>(E) {
    kernels::rmsnorm_forward(data<E>(y), rstd.f32(), data<E>(x), w.f32(), N, C, eps, stream());
  });
  finish_op(op);
}

void rmsnorm_backward(TensorRef dx, TensorRef dw, TensorRef dy, TensorRef x, TensorRef w, TensorRef rstd,
                      TensorRef dres) {
  const char* op = "rmsnorm_backward";
  const i64 N = x.rows(), C = x.size(-1);
  by_storage(x.dtype, [&]<class E>(E) {
    if (dw)
      kernels::column_sum_normed(dw.f32(), data<E>(dy), data<E>(x), nullptr, rstd.f32(), N, C, partials_for(N, C),
                                 stream());
    kernels::rmsnorm_backward_dx(data<E>(dx), data<E>(dy), data<E>(x), w.f32(), rstd.f32(),
                                 dres ? data<E>(dres) : nullptr, N, C, stream());
  });
  finish_op(op);
}

namespace {
void rotate(const char* op, TensorRef y, TensorRef x, float base, int pos0, float sign) {
  const i64 D = x.size(3);
  const i64 T = x.size(1);
  // The angle table for positions lo … hi − 1, kept while it covers pos0 … pos0 + T − 1 and head
  // dim and base stay the same. hi is rounded up to a power of two, so decoding (one position
  // more per step) rebuilds it only when the position count doubles; lo is 0 unless pos0 < 0.
  static struct {
    const float* tab = nullptr;
    i64 lo = 0, hi = 0, D = 0;
    float base = 0.0f;
  } cached;
  const i64 lo = pos0 < 0 ? pos0 : 0, end = pos0 + T > 1 ? pos0 + T : 1;
  const bool covers = cached.D == D && cached.base == base && cached.lo <= lo && cached.hi >= end;
  const i64 first = covers ? cached.lo : lo, hi = covers ? cached.hi : i64(std::bit_ceil(std::uint64_t(end)));
  auto* tab = scratch_as<float>(Scratch::rope_table, std::size_t((hi - first) * D));
  if (tab != cached.tab || first != cached.lo || hi != cached.hi || D != cached.D || base != cached.base) {
    kernels::rope_table(tab, first, hi - first, D, base, stream());
    cached = {tab, first, hi, D, base};
  }
  by_storage(x.dtype, [&]<class E>(E) {
    kernels::rope(data<E>(y), data<E>(x), tab, first, x.size(0), T, x.size(2), D, pos0, sign, stream());
  });
  finish_op(op);
}
}  // namespace
void rope_forward(TensorRef y, TensorRef x, float base, int pos0) { rotate("rope_forward", y, x, base, pos0, 1.0f); }
void rope_backward(TensorRef dx, TensorRef dy, float base, int pos0) {
  rotate("rope_backward", dx, dy, base, pos0, -1.0f);
}

void gelu_forward(TensorRef y, TensorRef x) { unary("gelu_forward", Unary::gelu, y, x); }
void tanh_forward(TensorRef y, TensorRef x) { unary("tanh_forward", Unary::tanh, y, x); }
void tanh_backward(TensorRef dx, TensorRef dy, TensorRef x) { unary_backward("tanh_backward", Unary::tanh, dx, dy, x); }
void gelu_backward(TensorRef dx, TensorRef dy, TensorRef x) { unary_backward("gelu_backward", Unary::gelu, dx, dy, x); }
void relu_forward(TensorRef y, TensorRef x) { unary("relu_forward", Unary::relu, y, x); }
void relu_backward(TensorRef dx, TensorRef dy, TensorRef x) { unary_backward("relu_backward", Unary::relu, dx, dy, x); }
void silu_forward(TensorRef y, TensorRef x) { unary("silu_forward", Unary::silu, y, x); }
void silu_backward(TensorRef dx, TensorRef dy, TensorRef x) { unary_backward("silu_backward", Unary::silu, dx, dy, x); }
void swiglu_forward(TensorRef y, TensorRef gate, TensorRef up) { gated("swiglu_forward", Gate::silu, y, gate, up); }
void swiglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward("swiglu_backward", Gate::silu, dgate, dup, dy, gate, up);
}
void geglu_forward(TensorRef y, TensorRef gate, TensorRef up) { gated("geglu_forward", Gate::gelu, y, gate, up); }
void geglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward("geglu_backward", Gate::gelu, dgate, dup, dy, gate, up);
}

// Token ids in device memory are not range-checked (that would need a copy to the host every
// step): an id outside [0, V) gives a zero row forward and no gradient. The data loader checks
// ids against the tokenizer, and the op's check reads them where they are in host memory.
void embedding_forward(TensorRef y, TensorRef ids, TensorRef table) {
  const char* op = "embedding_forward";
  const i64 N = ids.numel(), V = table.size(0), C = table.size(-1);
  by_storage(y.dtype, [&]<class E>(E) { kernels::embedding_forward(data<E>(y), ids.i32(), table.f32(), N, C, V, stream()); });
  finish_op(op);
}

void embedding_backward(TensorRef dtable, TensorRef dy, TensorRef ids) {
  const char* op = "embedding_backward";
  const i64 N = ids.numel(), V = dtable.size(0), C = dtable.size(-1);
  const std::size_t bytes = kernels::embedding_backward_scratch(N);
  void* work = scratch(Scratch::embedding, bytes);
  by_storage(dy.dtype, [&]<class E>(E) {
    kernels::embedding_backward(dtable.f32(), data<E>(dy), ids.i32(), N, C, V, work, bytes, stream());
  });
  finish_op(op);
}

// The router's choices stay on the device; the layer copies index to the host to group tokens.
void moe_route_forward(TensorRef probs, TensorRef lse, TensorRef index, TensorRef gate, TensorRef logits,
                       int normalize) {
  kernels::moe_route_forward(probs.f32(), lse.f32(), index.i32(), gate.f32(), logits.f32(), logits.rows(),
                             logits.size(-1), index.size(-1), normalize, stream());
  finish_op("moe_route_forward");
}
void moe_route_backward(TensorRef dlogits, TensorRef dgate, TensorRef dprobs, TensorRef probs, TensorRef lse,
                        TensorRef index, TensorRef gate, float z_scale, int normalize) {
  kernels::moe_route_backward(dlogits.f32(), dgate.f32(), dprobs ? dprobs.f32() : nullptr, probs.f32(), lse.f32(),
                              index.i32(), gate.f32(), probs.rows(), probs.size(-1), index.size(-1), z_scale, normalize,
                              stream());
  finish_op("moe_route_backward");
}
void moe_gather(TensorRef xs, TensorRef x, TensorRef token) {
  kernels::moe_gather(xs.f32(), x.f32(), token.i32(), token.numel(), x.size(-1), stream());
  finish_op("moe_gather");
}
void moe_combine_forward(TensorRef y, TensorRef ys, TensorRef gate, TensorRef slot) {
  kernels::moe_combine_forward(y.f32(), ys.f32(), gate ? gate.f32() : nullptr, slot.i32(), slot.rows(), slot.size(-1),
                               y.size(-1), stream());
  finish_op("moe_combine_forward");
}
void moe_combine_backward(TensorRef dys, TensorRef dgate, TensorRef dy, TensorRef ys, TensorRef gate, TensorRef slot) {
  kernels::moe_combine_backward(dys.f32(), dgate ? dgate.f32() : nullptr, dy.f32(), ys.f32(),
                                gate ? gate.f32() : nullptr, slot.i32(), slot.rows(), slot.size(-1), dy.size(-1),
                                stream());
  finish_op("moe_combine_backward");
}

void mingru_gates_forward(TensorRef a, TensorRef u, TensorRef z, TensorRef h) {
  kernels::mingru_gates_forward(a.f32(), u.f32(), z.f32(), h.f32(), z.numel(), stream());
  finish_op("mingru_gates_forward");
}
void mingru_gates_backward(TensorRef dz, TensorRef dh, TensorRef da, TensorRef du, TensorRef z, TensorRef h) {
  kernels::mingru_gates_backward(dz.f32(), dh.f32(), da.f32(), du.f32(), z.f32(), h.f32(), z.numel(), stream());
  finish_op("mingru_gates_backward");
}
void linear_scan_forward(TensorRef y, TensorRef a, TensorRef x, TensorRef h0, TensorRef segments) {
  const i64 B = a.size(0), T = a.size(1), D = a.size(2);
  float* tmp = scratch_as<float>(Scratch::scan, std::size_t(kernels::linear_scan_scratch(B, T, D)));
  kernels::linear_scan_forward(y.f32(), a.f32(), x.f32(), h0 ? h0.f32() : nullptr, segments ? segments.i32() : nullptr,
                               B, T, D, tmp, stream());
  finish_op("linear_scan_forward");
}
void linear_scan_backward(TensorRef da, TensorRef dx, TensorRef dy, TensorRef a, TensorRef y, TensorRef h0,
                          TensorRef segments) {
  const i64 B = a.size(0), T = a.size(1), D = a.size(2);
  float* tmp = scratch_as<float>(Scratch::scan, std::size_t(kernels::linear_scan_scratch(B, T, D)));
  kernels::linear_scan_backward(da.f32(), dx.f32(), dy.f32(), a.f32(), y.f32(), h0 ? h0.f32() : nullptr,
                                segments ? segments.i32() : nullptr, B, T, D, tmp, stream());
  finish_op("linear_scan_backward");
}

void positions_forward(TensorRef y, TensorRef x, TensorRef table, int pos0) {
  const char* op = "positions_forward";
  const i64 B = x.size(0), T = x.size(1), C = x.size(2);
  by_storage(x.dtype, [&]<class E>(E) {
    kernels::positions_forward(data<E>(y), data<E>(x), table.f32(), B, T, C, pos0, stream());
  });
  finish_op(op);
}

void positions_backward(TensorRef dtable, TensorRef dy) {
  const char* op = "positions_backward";
  const i64 B = dy.size(0), T = dy.size(1), C = dy.size(2);
  by_storage(dy.dtype, [&]<class E>(E) { kernels::positions_backward(dtable.f32(), data<E>(dy), B, T, C, stream()); });
  finish_op(op);
}

void sinusoidal_forward(TensorRef y, TensorRef x, int pos0) {
  const char* op = "sinusoidal_forward";
  const i64 C = x.size(2);
  by_storage(x.dtype, [&]<class E>(E) {
    kernels::sinusoidal_forward(data<E>(y), data<E>(x), x.size(0), x.size(1), C, pos0, stream());
  });
  finish_op(op);
}

// A target outside [0, V) that is not ignore_index gives a NaN loss (and NaN gradients), which
// the trainer's non-finite guard reports; checking on the host would cost a copy per step.
void cross_entropy_forward(TensorRef losses, TensorRef logits, TensorRef targets, int ignore_index) {
  const char* op = "cross_entropy_forward";
  const i64 N = logits.rows(), V = logits.size(-1);
  by_storage(logits.dtype, [&]<class E>(E) {
    kernels::cross_entropy_forward(losses.f32(), data<E>(logits), targets.i32(), N, V, ignore_index, stream());
  });
  finish_op(op);
}

void cross_entropy_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef weights, float dloss,
                            int ignore_index) {
  const char* op = "cross_entropy_backward";
  const i64 N = logits.rows(), V = logits.size(-1);
  float* lse = scratch_as<float>(Scratch::loss_lse, std::size_t(N));
  by_storage(logits.dtype, [&]<class E>(E) {
    kernels::cross_entropy_backward(data<E>(dlogits), data<E>(logits), targets.i32(), weights ? weights.f32() : nullptr, N,
                                    V, dloss, ignore_index, lse, stream());
  });
  finish_op(op);
}

// f32 logits (tensor parallel keeps f32 activations; bf16 comes widened through table.cpp).
void vocab_parallel_ce_forward(TensorRef stats, TensorRef logits, TensorRef targets, int v0, int ignore_index) {
  const char* op = "vocab_parallel_ce_forward";
  kernels::vocab_parallel_ce_forward(stats.f32(), logits.f32(), targets.i32(), logits.rows(), logits.size(-1), v0, ignore_index,
                                     stream());
  finish_op(op);
}

void vocab_parallel_ce_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef lse, TensorRef scale,
                                int v0) {
  const char* op = "vocab_parallel_ce_backward";
  kernels::vocab_parallel_ce_backward(dlogits.f32(), logits.f32(), targets.i32(), lse.f32(), scale.f32(), logits.rows(),
                                      logits.size(-1), v0, stream());
  finish_op(op);
}

void adamw_step(TensorRef param, TensorRef grad, TensorRef m, TensorRef v, AdamWArgs a) {
  const char* op = "adamw_step";
  const float bias1 = static_cast<float>(1.0 - std::pow(double(a.beta1), a.step));
  const float bias2 = static_cast<float>(1.0 - std::pow(double(a.beta2), a.step));
  kernels::adamw(param.f32(), grad.f32(), m.f32(), v.f32(), param.numel(), a.lr, a.beta1, a.beta2, a.eps,
                 a.weight_decay, bias1, bias2, stream());
  finish_op(op);
}

void sgd_step(TensorRef param, TensorRef grad, TensorRef buf, SgdArgs a) {
  const char* op = "sgd_step";
  kernels::sgd(param.f32(), grad.f32(), buf.f32(), param.numel(), a.lr, a.momentum, a.weight_decay, a.nesterov,
               a.step == 1, stream());
  finish_op(op);
}

void lion_step(TensorRef param, TensorRef grad, TensorRef m, LionArgs a) {
  const char* op = "lion_step";
  kernels::lion(param.f32(), grad.f32(), m.f32(), param.numel(), a.lr, a.beta1, a.beta2, a.weight_decay, stream());
  finish_op(op);
}

void sum_squares(TensorRef out, TensorRef x) {
  const char* op = "sum_squares";
  kernels::sum_squares(out.f32(), x.f32(), x.numel(), scratch_as<float>(Scratch::partials, kernels::kSumPartials),
                       stream());
  finish_op(op);
}

void scale_forward(TensorRef y, TensorRef x, float s) {
  const char* op = "scale_forward";
  by_storage(y.dtype, [&]<class E>(E) { kernels::scale(data<E>(y), data<E>(x), s, x.numel(), stream()); });
  finish_op(op);
}

void dropout(TensorRef y, TensorRef x, float p, std::uint64_t seed) {
  const char* op = "dropout";
  by_storage(y.dtype, [&]<class E>(E) { kernels::dropout(data<E>(y), data<E>(x), p, seed, x.numel(), stream()); });
  finish_op(op);
}

void convert(TensorRef y, TensorRef x) {
  const char* op = "convert";
  if (x.dtype == y.dtype) {
    if (x.data != y.data)
      LLMTK_CUDA_CHECK(op, cudaMemcpyAsync(y.data, x.data, x.bytes(), cudaMemcpyDeviceToDevice, stream()));
  } else if (y.dtype == DType::bf16) {
    kernels::to_bf16(static_cast<std::uint16_t*>(y.data), x.f32(), x.numel(), stream());
  } else {
    kernels::from_bf16(y.f32(), static_cast<const std::uint16_t*>(x.data), x.numel(), stream());
  }
  finish_op(op);
}

}  // namespace llmtk::cuda
