// Every op of the CUDA backend except matmul (matmul.cpp) and attention (attention.cpp): the
// contract's argument checks, then one kernel launcher (kernels.hpp). Activation outputs and
// activation gradients are written; parameter gradients accumulate (+=).
#include <bit>
#include <cmath>

#include "cuda.hpp"

namespace llmtk::cuda {

namespace {
using i64 = std::int64_t;
using kernels::Gate;
using kernels::Unary;

void unary(const char* op, Unary f, TensorRef y, TensorRef x) {
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_same(op, "y", y, "x", x);
  kernels::unary_forward(f, y.f32(), x.f32(), x.numel(), stream());
  finish_op(op);
}
void unary_backward(const char* op, Unary f, TensorRef dx, TensorRef dy, TensorRef x) {
  expect_f32(op, "dx", dx), expect_f32(op, "dy", dy), expect_f32(op, "x", x);
  expect_same(op, "dx", dx, "x", x), expect_same(op, "dy", dy, "x", x);
  kernels::unary_backward(f, dx.f32(), dy.f32(), x.f32(), x.numel(), stream());
  finish_op(op);
}
void gated(const char* op, Gate f, TensorRef y, TensorRef gate, TensorRef up) {
  expect_f32(op, "y", y), expect_f32(op, "gate", gate), expect_f32(op, "up", up);
  expect_same(op, "gate", gate, "up", up), expect_same(op, "y", y, "gate", gate);
  kernels::gated_forward(f, y.f32(), gate.f32(), up.f32(), y.numel(), stream());
  finish_op(op);
}
void gated_backward(const char* op, Gate f, TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  expect_f32(op, "dgate", dgate), expect_f32(op, "dup", dup), expect_f32(op, "dy", dy);
  expect_f32(op, "gate", gate), expect_f32(op, "up", up);
  expect_same(op, "gate", gate, "up", up), expect_same(op, "dy", dy, "gate", gate);
  expect_same(op, "dgate", dgate, "gate", gate), expect_same(op, "dup", dup, "gate", gate);
  kernels::gated_backward(f, dgate.f32(), dup.f32(), dy.f32(), gate.f32(), up.f32(), dy.numel(), stream());
  finish_op(op);
}
float* partials_for(i64 N, i64 C) {
  return scratch_as<float>(Scratch::partials, std::size_t(kernels::column_sum_scratch(N, C)));
}
}  // namespace

void add_forward(TensorRef y, TensorRef a, TensorRef b) {
  const char* op = "add_forward";
  expect_f32(op, "y", y), expect_f32(op, "a", a), expect_f32(op, "b", b);
  expect_same(op, "a", a, "b", b), expect_same(op, "y", y, "a", a);
  kernels::add(y.f32(), a.f32(), b.f32(), y.numel(), stream());
  finish_op(op);
}

void layernorm_forward(TensorRef y, TensorRef mean, TensorRef rstd, TensorRef x, TensorRef w, TensorRef b, float eps) {
  const char* op = "layernorm_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_f32(op, "w", w);
  expect_f32(op, "mean", mean), expect_f32(op, "rstd", rstd);
  if (b) expect_f32(op, "b", b);
  expect_same(op, "y", y, "x", x);
  const i64 N = x.rows(), C = x.size(-1);
  LLMTK_CHECK(w.numel() == C && (!b || b.numel() == C), op, "w and b must have ", C, " elements");
  LLMTK_CHECK(mean.numel() == N && rstd.numel() == N, op, "mean and rstd must have ", N, " elements");
  kernels::layernorm_forward(y.f32(), mean.f32(), rstd.f32(), x.f32(), w.f32(), b ? b.f32() : nullptr, N, C, eps,
                             stream());
  finish_op(op);
}

void layernorm_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x, TensorRef w,
                        TensorRef mean, TensorRef rstd) {
  const char* op = "layernorm_backward";
  expect_f32(op, "dx", dx), expect_f32(op, "dy", dy), expect_f32(op, "x", x);
  expect_f32(op, "w", w), expect_f32(op, "mean", mean), expect_f32(op, "rstd", rstd);
  if (dw) expect_f32(op, "dw", dw);
  if (db) expect_f32(op, "db", db);
  expect_same(op, "dx", dx, "x", x), expect_same(op, "dy", dy, "x", x);
  const i64 N = x.rows(), C = x.size(-1);
  LLMTK_CHECK(w.numel() == C && (!dw || dw.numel() == C) && (!db || db.numel() == C), op, "w, dw and db must have ", C,
              " elements");
  LLMTK_CHECK(mean.numel() == N && rstd.numel() == N, op, "mean and rstd must have ", N, " elements");
  // Parameter gradients first: they read dy, which dx could share memory with in a caller.
  float* partial = partials_for(N, C);
  if (dw) kernels::column_sum_normed(dw.f32(), dy.f32(), x.f32(), mean.f32(), rstd.f32(), N, C, partial, stream());
  if (db) kernels::column_sum(db.f32(), dy.f32(), N, C, partial, stream());
  kernels::layernorm_backward_dx(dx.f32(), dy.f32(), x.f32(), w.f32(), mean.f32(), rstd.f32(), N, C, stream());
  finish_op(op);
}

void rmsnorm_forward(TensorRef y, TensorRef rstd, TensorRef x, TensorRef w, float eps) {
  const char* op = "rmsnorm_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_f32(op, "w", w), expect_f32(op, "rstd", rstd);
  expect_same(op, "y", y, "x", x);
  const i64 N = x.rows(), C = x.size(-1);
  LLMTK_CHECK(w.numel() == C, op, "w must have ", C, " elements");
  LLMTK_CHECK(rstd.numel() == N, op, "rstd must have ", N, " elements");
  kernels::rmsnorm_forward(y.f32(), rstd.f32(), x.f32(), w.f32(), N, C, eps, stream());
  finish_op(op);
}

void rmsnorm_backward(TensorRef dx, TensorRef dw, TensorRef dy, TensorRef x, TensorRef w, TensorRef rstd) {
  const char* op = "rmsnorm_backward";
  expect_f32(op, "dx", dx), expect_f32(op, "dy", dy), expect_f32(op, "x", x);
  expect_f32(op, "w", w), expect_f32(op, "rstd", rstd);
  if (dw) expect_f32(op, "dw", dw);
  expect_same(op, "dx", dx, "x", x), expect_same(op, "dy", dy, "x", x);
  const i64 N = x.rows(), C = x.size(-1);
  LLMTK_CHECK(w.numel() == C && (!dw || dw.numel() == C), op, "w and dw must have ", C, " elements");
  LLMTK_CHECK(rstd.numel() == N, op, "rstd must have ", N, " elements");
  if (dw) kernels::column_sum_normed(dw.f32(), dy.f32(), x.f32(), nullptr, rstd.f32(), N, C, partials_for(N, C), stream());
  kernels::rmsnorm_backward_dx(dx.f32(), dy.f32(), x.f32(), w.f32(), rstd.f32(), N, C, stream());
  finish_op(op);
}

namespace {
void rotate(const char* op, TensorRef y, TensorRef x, float base, int pos0, float sign) {
  expect_f32(op, "y", y), expect_f32(op, "x", x);
  expect_rank(op, "x", x, 4, "[B, T, heads, D]");
  expect_same(op, "y", y, "x", x);
  const i64 D = x.size(3);
  LLMTK_CHECK(D % 2 == 0, op, "head dim ", D, " must be even");
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
  kernels::rope(y.f32(), x.f32(), tab, first, x.size(0), T, x.size(2), D, pos0, sign, stream());
  finish_op(op);
}
}  // namespace
void rope_forward(TensorRef y, TensorRef x, float base, int pos0) { rotate("rope_forward", y, x, base, pos0, 1.0f); }
void rope_backward(TensorRef dx, TensorRef dy, float base, int pos0) {
  rotate("rope_backward", dx, dy, base, pos0, -1.0f);
}

void gelu_forward(TensorRef y, TensorRef x) { unary("gelu_forward", Unary::gelu, y, x); }
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

// Token ids are not range-checked here (that would need a copy to the host every step): an id
// outside [0, V) gives a zero row forward and no gradient. The data loader checks ids against
// the tokenizer, and the reference and cpu backends check them.
void embedding_forward(TensorRef y, TensorRef ids, TensorRef table) {
  const char* op = "embedding_forward";
  expect_f32(op, "y", y), expect_f32(op, "table", table), expect_i32(op, "ids", ids);
  const i64 N = ids.numel(), V = table.size(0), C = table.size(-1);
  LLMTK_CHECK(y.rows() == N && y.size(-1) == C, op, "y ", y.shape_str(), " must be [", N, ", ", C, "]");
  kernels::embedding_forward(y.f32(), ids.i32(), table.f32(), N, C, V, stream());
  finish_op(op);
}

void embedding_backward(TensorRef dtable, TensorRef dy, TensorRef ids) {
  const char* op = "embedding_backward";
  expect_f32(op, "dtable", dtable), expect_f32(op, "dy", dy), expect_i32(op, "ids", ids);
  const i64 N = ids.numel(), V = dtable.size(0), C = dtable.size(-1);
  LLMTK_CHECK(dy.rows() == N && dy.size(-1) == C, op, "dy ", dy.shape_str(), " must be [", N, ", ", C, "]");
  const std::size_t bytes = kernels::embedding_backward_scratch(N);
  kernels::embedding_backward(dtable.f32(), dy.f32(), ids.i32(), N, C, V, scratch(Scratch::embedding, bytes), bytes,
                              stream());
  finish_op(op);
}

void positions_forward(TensorRef y, TensorRef x, TensorRef table, int pos0) {
  const char* op = "positions_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_f32(op, "table", table);
  expect_rank(op, "x", x, 3, "[B, T, C]"), expect_same(op, "y", y, "x", x);
  const i64 B = x.size(0), T = x.size(1), C = x.size(2);
  LLMTK_CHECK(pos0 >= 0 && table.size(0) >= pos0 + T && table.size(-1) == C, op, "table ", table.shape_str(),
              " must be [P >= ", pos0 + T, ", ", C, "]");
  kernels::positions_forward(y.f32(), x.f32(), table.f32(), B, T, C, pos0, stream());
  finish_op(op);
}

void positions_backward(TensorRef dtable, TensorRef dy) {
  const char* op = "positions_backward";
  expect_f32(op, "dtable", dtable), expect_f32(op, "dy", dy);
  expect_rank(op, "dy", dy, 3, "[B, T, C]");
  const i64 B = dy.size(0), T = dy.size(1), C = dy.size(2);
  LLMTK_CHECK(dtable.size(0) >= T && dtable.size(-1) == C, op, "dtable ", dtable.shape_str(), " must be [P >= ", T,
              ", ", C, "]");
  kernels::positions_backward(dtable.f32(), dy.f32(), B, T, C, stream());
  finish_op(op);
}

void sinusoidal_forward(TensorRef y, TensorRef x, int pos0) {
  const char* op = "sinusoidal_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x);
  expect_rank(op, "x", x, 3, "[B, T, C]"), expect_same(op, "y", y, "x", x);
  const i64 C = x.size(2);
  LLMTK_CHECK(C % 2 == 0, op, "C = ", C, " must be even");
  kernels::sinusoidal_forward(y.f32(), x.f32(), x.size(0), x.size(1), C, pos0, stream());
  finish_op(op);
}

// A target outside [0, V) that is not ignore_index gives a NaN loss (and NaN gradients), which
// the trainer's non-finite guard reports; checking on the host would cost a copy per step.
void cross_entropy_forward(TensorRef losses, TensorRef logits, TensorRef targets, int ignore_index) {
  const char* op = "cross_entropy_forward";
  expect_f32(op, "losses", losses), expect_f32(op, "logits", logits), expect_i32(op, "targets", targets);
  const i64 N = logits.rows(), V = logits.size(-1);
  LLMTK_CHECK(targets.numel() == N && losses.numel() == N, op, "losses and targets need ", N, " rows");
  kernels::cross_entropy_forward(losses.f32(), logits.f32(), targets.i32(), N, V, ignore_index, stream());
  finish_op(op);
}

void cross_entropy_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef weights, float dloss,
                            int ignore_index) {
  const char* op = "cross_entropy_backward";
  expect_f32(op, "dlogits", dlogits), expect_f32(op, "logits", logits), expect_i32(op, "targets", targets);
  expect_same(op, "dlogits", dlogits, "logits", logits);
  const i64 N = logits.rows(), V = logits.size(-1);
  LLMTK_CHECK(targets.numel() == N, op, "targets must be ", N, " i32 values");
  if (weights) expect_f32(op, "weights", weights);
  LLMTK_CHECK(!weights || weights.numel() == N, op, "weights must be ", N, " f32 values");
  kernels::cross_entropy_backward(dlogits.f32(), logits.f32(), targets.i32(), weights ? weights.f32() : nullptr, N, V,
                                  dloss, ignore_index,
                                  scratch_as<float>(Scratch::loss_lse, std::size_t(N)), stream());
  finish_op(op);
}

void adamw_step(TensorRef param, TensorRef grad, TensorRef m, TensorRef v, AdamWArgs a) {
  const char* op = "adamw_step";
  expect_f32(op, "param", param), expect_f32(op, "grad", grad), expect_f32(op, "m", m), expect_f32(op, "v", v);
  expect_same(op, "param", param, "grad", grad);
  expect_same(op, "m", m, "param", param), expect_same(op, "v", v, "param", param);
  LLMTK_CHECK(a.step >= 1, op, "step counts from 1, got ", a.step);
  const float bias1 = static_cast<float>(1.0 - std::pow(double(a.beta1), a.step));
  const float bias2 = static_cast<float>(1.0 - std::pow(double(a.beta2), a.step));
  kernels::adamw(param.f32(), grad.f32(), m.f32(), v.f32(), param.numel(), a.lr, a.beta1, a.beta2, a.eps,
                 a.weight_decay, bias1, bias2, stream());
  finish_op(op);
}

void sgd_step(TensorRef param, TensorRef grad, TensorRef buf, SgdArgs a) {
  const char* op = "sgd_step";
  expect_f32(op, "param", param), expect_f32(op, "grad", grad), expect_f32(op, "buf", buf);
  expect_same(op, "param", param, "grad", grad), expect_same(op, "buf", buf, "param", param);
  kernels::sgd(param.f32(), grad.f32(), buf.f32(), param.numel(), a.lr, a.momentum, a.weight_decay, a.nesterov,
               a.step == 1, stream());
  finish_op(op);
}

void lion_step(TensorRef param, TensorRef grad, TensorRef m, LionArgs a) {
  const char* op = "lion_step";
  expect_f32(op, "param", param), expect_f32(op, "grad", grad), expect_f32(op, "m", m);
  expect_same(op, "param", param, "grad", grad), expect_same(op, "m", m, "param", param);
  kernels::lion(param.f32(), grad.f32(), m.f32(), param.numel(), a.lr, a.beta1, a.beta2, a.weight_decay, stream());
  finish_op(op);
}

void sum_squares(TensorRef out, TensorRef x) {
  const char* op = "sum_squares";
  expect_f32(op, "out", out), expect_f32(op, "x", x);
  LLMTK_CHECK(out.numel() >= 1, op, "out needs one element");
  kernels::sum_squares(out.f32(), x.f32(), x.numel(), scratch_as<float>(Scratch::partials, kernels::kSumPartials),
                       stream());
  finish_op(op);
}

void scale_forward(TensorRef y, TensorRef x, float s) {
  const char* op = "scale_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_same(op, "y", y, "x", x);
  kernels::scale(y.f32(), x.f32(), s, x.numel(), stream());
  finish_op(op);
}

}  // namespace llmtk::cuda
