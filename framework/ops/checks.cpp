// Each op's argument checks, in the order and sections of the contracts in ops.hpp (each check
// quotes the contract it holds the arguments to). Messages start with the op's name. Values
// (token ids, targets, attention lengths) are checked where the host can read them; a device
// backend trusts the caller with them (the trainer's non-finite guard catches a bad target).
#include "checks.hpp"

#include <utility>

#include "../core/memory.hpp"

namespace llmtk::ops {

namespace {

// The op being checked, and the memory its tensors must be in: the active backend's.
struct Op {
  const char* name;
  Device memory = current_memory().device;

  void in_memory(const char* what, const TensorRef& t) const {
    if (memory == Device::host) LLMTK_CHECK(t.device == Device::host, name, what, " is not in host memory");
    else
      LLMTK_CHECK(t.device == memory, name, what, " is in host memory; the ", active().backend,
                  " backend needs device tensors (allocate arenas after use_backend(\"", active().backend, "\"))",
                  why_not_here());
  }
  // Why the active backend cannot run on this machine, if it cannot (a build without CUDA): the
  // likelier cause of host tensors handed to it. Asked only once a check has failed.
  static std::string why_not_here() {
    const BackendInfo& b = *context().backend;
    const std::string why = b.unavailable ? b.unavailable() : std::string();
    return why.empty() ? why : "; " + why;
  }
  // Parameters, their gradients, optimizer state and the statistics a backward reads: f32 in
  // every precision (docs/bf16.md).
  void f32(const char* what, const TensorRef& t) const {
    LLMTK_CHECK(t.data != nullptr, name, what, " is null");
    LLMTK_CHECK(t.dtype == DType::f32, name, what, " is ", name_of(t.dtype),
                "; it must be f32 (parameters, gradients, optimizer state and statistics stay f32 in bf16 mode)");
    in_memory(what, t);
  }
  // Activations and their gradients: f32 or bf16, one dtype for all of an op call's activations.
  mutable DType act_dtype = DType::f32;
  mutable const char* first_act = nullptr;
  void act(const char* what, const TensorRef& t) const {
    LLMTK_CHECK(t.data != nullptr, name, what, " is null");
    LLMTK_CHECK(t.dtype == DType::f32 || t.dtype == DType::bf16, name, what, " is ", name_of(t.dtype),
                "; activations are f32 or bf16");
    if (!first_act) first_act = what, act_dtype = t.dtype;
    LLMTK_CHECK(t.dtype == act_dtype, name, what, " is ", name_of(t.dtype), " but ", first_act, " is ",
                name_of(act_dtype), "; an op's activations and their gradients share one dtype");
    in_memory(what, t);
  }
  // A matmul's weight: f32, or its bf16 working copy, whatever the activations are.
  void f32_or_bf16(const char* what, const TensorRef& t) const {
    LLMTK_CHECK(t.data != nullptr, name, what, " is null");
    LLMTK_CHECK(t.dtype == DType::f32 || t.dtype == DType::bf16, name, what, " is ", name_of(t.dtype),
                "; a matmul's weight is f32 or bf16");
    in_memory(what, t);
  }
  void i32(const char* what, const TensorRef& t) const {
    LLMTK_CHECK(t.data != nullptr, name, what, " is null");
    LLMTK_CHECK(t.dtype == DType::i32, name, what, " must be i32");
    in_memory(what, t);
  }
  // An optional tensor: absent (null), or f32.
  void f32_if(const char* what, const TensorRef& t) const {
    if (t) f32(what, t);
  }
  void rank(const char* what, const TensorRef& t, int r, const char* axes) const {
    LLMTK_CHECK(t.rank == r, name, what, " has ", t.rank, " axes ", t.shape_str(), ", expected ", axes);
  }
  void same(const char* a, const TensorRef& x, const char* b, const TensorRef& y) const {
    LLMTK_CHECK(x.numel() == y.numel() && x.size(-1) == y.size(-1), name, a, " ", x.shape_str(), " and ", b, " ",
                y.shape_str(), " must have the same shape");
  }
  // Whether the values of t can be read here.
  static bool readable(const TensorRef& t) { return t.device == Device::host; }
};

// ---- linear maps --------------------------------------------------------------------------

// y[N, O] = x[N, I] · w[O, I]ᵀ + b[O]; x and w may be bf16. Returns {N, I, O}.
struct MatmulShape {
  std::int64_t N, I, O;
};
MatmulShape matmul_product(const Op& op, TensorRef y, const char* y_name, TensorRef x, TensorRef w, TensorRef b) {
  op.act(y_name, y), op.act("x", x), op.f32_or_bf16("w", w);
  const std::int64_t N = x.rows(), I = x.size(-1), O = w.size(0);
  LLMTK_CHECK(w.rank == 2 && w.size(1) == I, op.name, "w ", w.shape_str(), " must be [O, I] with I = ", I, " (x is ",
              x.shape_str(), ")");
  LLMTK_CHECK(y.rows() == N && y.size(-1) == O, op.name, y_name, " ", y.shape_str(), " must be [", N, ", ", O, "]");
  if (b) {
    op.f32("b", b);
    LLMTK_CHECK(b.numel() == O, op.name, "b has ", b.numel(), " elements, expected ", O);
  }
  return {N, I, O};
}
// dx[N, I] = dy · w (dx may be null); dw[O, I] += dyᵀ · x; db[O] += Σ_n dy (dw, db may be null).
void matmul_gradients(const Op& op, TensorRef dx, const char* dx_name, TensorRef dw, TensorRef db, TensorRef dy,
                      TensorRef x, const char* x_name, TensorRef w) {
  op.act("dy", dy), op.act(x_name, x), op.f32_or_bf16("w", w);
  const std::int64_t N = x.rows(), I = x.size(-1), O = w.size(0);
  LLMTK_CHECK(w.rank == 2 && w.size(1) == I, op.name, "w ", w.shape_str(), " must be [O, I] with I = ", I, " (",
              x_name, " is ", x.shape_str(), ")");
  LLMTK_CHECK(dy.rows() == N && dy.size(-1) == O, op.name, "dy ", dy.shape_str(), " must be [", N, ", ", O, "]");
  if (dx) {
    op.act(dx_name, dx);
    LLMTK_CHECK(dx.rows() == N && dx.size(-1) == I, op.name, dx_name, " ", dx.shape_str(), " must be [", N, ", ", I,
                "]");
  }
  if (dw) {
    op.f32("dw", dw);
    LLMTK_CHECK(dw.numel() == O * I, op.name, "dw must be [", O, ", ", I, "]");
  }
  if (db) {
    op.f32("db", db);
    LLMTK_CHECK(db.numel() == O, op.name, "db must have ", O, " elements");
  }
}

void check_matmul_forward(TensorRef y, TensorRef x, TensorRef w, TensorRef b) {
  matmul_product(Op{"matmul_forward"}, y, "y", x, w, b);
}
void check_matmul_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x, TensorRef w) {
  matmul_gradients(Op{"matmul_backward"}, dx, "dx", dw, db, dy, x, "x", w);
}
// h = x · wᵀ + b is saved for backward, y = gelu(h); y, h: [N, O] and distinct.
void check_matmul_gelu_forward(TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b) {
  const Op op{"matmul_gelu_forward"};
  op.act("h", h);
  op.same("y", y, "h", h);
  LLMTK_CHECK(y.data != h.data, op.name, "y and h must be different tensors (h is kept for the backward)");
  matmul_product(op, y, "y", x, w, b);
}
// dh[N, I] = (dy · w) ⊙ gelu'(h), written (required); dw, db as matmul_backward with x = a.
void check_gelu_matmul_backward(TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a, TensorRef w,
                                TensorRef h) {
  const Op op{"gelu_matmul_backward"};
  LLMTK_CHECK(dh, op.name, "dh is required (it is the op's activation gradient)");
  op.same("dh", dh, "h", h);
  LLMTK_CHECK(dh.data != h.data, op.name, "dh and h must be different tensors (h is read after dh is written)");
  op.act("h", h);
  matmul_gradients(op, dh, "dh", dw, db, dy, a, "a", w);
}
// y = a + b, all the same shape (y may alias a or b).
void check_add_forward(TensorRef y, TensorRef a, TensorRef b) {
  const Op op{"add_forward"};
  op.act("y", y), op.act("a", a), op.act("b", b);
  op.same("a", a, "b", b), op.same("y", y, "a", a);
}

// ---- norms (rows of x are the last axis C; N = all other axes) -----------------------------

// y[N, C], mean[N], rstd[N]; w[C], b[C] or null.
void check_layernorm_forward(TensorRef y, TensorRef mean, TensorRef rstd, TensorRef x, TensorRef w, TensorRef b,
                             float) {
  const Op op{"layernorm_forward"};
  op.act("y", y), op.act("x", x), op.f32("w", w), op.f32_if("b", b);
  op.f32("mean", mean), op.f32("rstd", rstd);
  op.same("y", y, "x", x);
  const std::int64_t N = x.rows(), C = x.size(-1);
  LLMTK_CHECK(w.numel() == C && (!b || b.numel() == C), op.name, "w and b must have ", C, " elements");
  LLMTK_CHECK(mean.numel() == N && rstd.numel() == N, op.name, "mean and rstd must have ", N, " elements");
}
// dx written (required); dw, db accumulate and may be null.
void check_layernorm_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x, TensorRef w,
                              TensorRef mean, TensorRef rstd, TensorRef dres) {
  const Op op{"layernorm_backward"};
  op.act("dx", dx), op.act("dy", dy), op.act("x", x), op.f32("w", w);
  if (dres) op.act("dres", dres), op.same("dres", dres, "x", x);
  op.f32("mean", mean), op.f32("rstd", rstd), op.f32_if("dw", dw), op.f32_if("db", db);
  op.same("dx", dx, "x", x), op.same("dy", dy, "x", x);
  const std::int64_t N = x.rows(), C = x.size(-1);
  LLMTK_CHECK(w.numel() == C && (!dw || dw.numel() == C) && (!db || db.numel() == C), op.name,
              "w, dw and db must have ", C, " elements");
  LLMTK_CHECK(mean.numel() == N && rstd.numel() == N, op.name, "mean and rstd must have ", N, " elements");
}
// y[N, C], rstd[N], w[C].
void check_rmsnorm_forward(TensorRef y, TensorRef rstd, TensorRef x, TensorRef w, float) {
  const Op op{"rmsnorm_forward"};
  op.act("y", y), op.act("x", x), op.f32("w", w), op.f32("rstd", rstd);
  op.same("y", y, "x", x);
  const std::int64_t N = x.rows(), C = x.size(-1);
  LLMTK_CHECK(w.numel() == C, op.name, "w must have ", C, " elements");
  LLMTK_CHECK(rstd.numel() == N, op.name, "rstd must have ", N, " elements");
}
// dx written (required); dw accumulates and may be null.
void check_rmsnorm_backward(TensorRef dx, TensorRef dw, TensorRef dy, TensorRef x, TensorRef w, TensorRef rstd,
                            TensorRef dres) {
  const Op op{"rmsnorm_backward"};
  op.act("dx", dx), op.act("dy", dy), op.act("x", x), op.f32("w", w), op.f32("rstd", rstd), op.f32_if("dw", dw);
  if (dres) op.act("dres", dres), op.same("dres", dres, "x", x);
  op.same("dx", dx, "x", x), op.same("dy", dy, "x", x);
  const std::int64_t N = x.rows(), C = x.size(-1);
  LLMTK_CHECK(w.numel() == C && (!dw || dw.numel() == C), op.name, "w and dw must have ", C, " elements");
  LLMTK_CHECK(rstd.numel() == N, op.name, "rstd must have ", N, " elements");
}

// ---- positions ----------------------------------------------------------------------------

// x, y: [B, T, heads, D], D even (y may alias x; in backward dx may alias dy).
void rope(const Op& op, const char* y_name, TensorRef y, const char* x_name, TensorRef x) {
  op.act(y_name, y), op.act(x_name, x);
  op.rank(x_name, x, 4, "[B, T, heads, D]");
  op.same(y_name, y, x_name, x);
  LLMTK_CHECK(x.size(3) % 2 == 0, op.name, "head dim ", x.size(3), " must be even");
}
void check_rope_forward(TensorRef y, TensorRef x, float, int) { rope(Op{"rope_forward"}, "y", y, "x", x); }
void check_rope_backward(TensorRef dx, TensorRef dy, float, int) { rope(Op{"rope_backward"}, "dx", dx, "dy", dy); }
// y[B, T, C] = x + table[pos0 + t, :], table: [P ≥ pos0 + T, C].
void check_positions_forward(TensorRef y, TensorRef x, TensorRef table, int pos0) {
  const Op op{"positions_forward"};
  op.act("y", y), op.act("x", x), op.f32("table", table);
  op.rank("x", x, 3, "[B, T, C]"), op.same("y", y, "x", x);
  const std::int64_t T = x.size(1), C = x.size(2);
  LLMTK_CHECK(pos0 >= 0 && table.size(0) >= pos0 + T && table.size(-1) == C, op.name, "table ", table.shape_str(),
              " must be [P >= ", pos0 + T, ", ", C, "]");
}
// dtable[t, :] += Σ_b dy[b, t, :]; dy: [B, T, C].
void check_positions_backward(TensorRef dtable, TensorRef dy) {
  const Op op{"positions_backward"};
  op.f32("dtable", dtable), op.act("dy", dy);
  op.rank("dy", dy, 3, "[B, T, C]");
  const std::int64_t T = dy.size(1), C = dy.size(2);
  LLMTK_CHECK(dtable.size(0) >= T && dtable.size(-1) == C, op.name, "dtable ", dtable.shape_str(), " must be [P >= ",
              T, ", ", C, "]");
}
// y[B, T, C] = x + PE[pos0 + t], C even (y may alias x).
void check_sinusoidal_forward(TensorRef y, TensorRef x, int) {
  const Op op{"sinusoidal_forward"};
  op.act("y", y), op.act("x", x);
  op.rank("x", x, 3, "[B, T, C]"), op.same("y", y, "x", x);
  LLMTK_CHECK(x.size(2) % 2 == 0, op.name, "C = ", x.size(2), " must be even");
}

// ---- attention ----------------------------------------------------------------------------

// Whether the mask never compares a query's position with a key's: bidirectional, no window, no
// ALiBi, no segments, q_offset 0. Then keys are any other sequence (cross-attention reads an
// encoder's output) and Tk is free.
bool free_keys(const AttentionMask& m) {
  return !m.causal && m.window == 0 && !m.alibi && !m.segments && m.q_offset == 0;
}

// q, out: [B, Tq, H, D]; k, v: [B, Tk, KV, D], Tk ≥ q_offset + Tq unless free_keys, H % KV == 0; lse: [B, H, Tq];
// the mask's rules (AttentionMask): window ≥ 0, lengths [B] i32 in [1, Tk] or segments [B, Tk] i32
// (not both; segments need q_offset = 0 and Tk = Tq).
void attention(const Op& op, TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v,
               const AttentionMask& m) {
  op.act("q", q), op.act("k", k), op.act("v", v), op.act("out", out), op.f32("lse", lse);
  op.rank("q", q, 4, "[B, T, H, D]");
  op.rank("k", k, 4, "[B, T, KV, D]");
  op.rank("v", v, 4, "[B, T, KV, D]");
  const std::int64_t B = q.size(0), T = q.size(1), H = q.size(2), D = q.size(3), KV = k.size(2), Tk = k.size(1);
  LLMTK_CHECK(k.size(0) == B && k.size(3) == D, op.name, "k ", k.shape_str(), " does not match q ", q.shape_str());
  LLMTK_CHECK(v.numel() == k.numel() && v.size(2) == KV, op.name, "v ", v.shape_str(), " must match k ",
              k.shape_str());
  LLMTK_CHECK(H % KV == 0, op.name, "KV = ", KV, " kv heads must divide H = ", H);
  LLMTK_CHECK(out.numel() == q.numel(), op.name, "out must have q's shape ", q.shape_str());
  LLMTK_CHECK(lse.numel() == B * H * T, op.name, "lse must be [B, H, T]");
  LLMTK_CHECK(m.q_offset >= 0 && (free_keys(m) || Tk >= m.q_offset + T), op.name, "k has ", Tk,
              " rows, fewer than q_offset ", m.q_offset, " + ", T, " queries");
  LLMTK_CHECK(m.window >= 0, op.name, "window is ", m.window, "; 0 means no window");
  LLMTK_CHECK(!(m.lengths && m.segments), op.name, "lengths and segments cannot be combined: pack documents with "
              "segments (padding as a document of its own) or pad rows with lengths");
  if (m.lengths) {
    LLMTK_CHECK(m.lengths.dtype == DType::i32 && m.lengths.numel() == B, op.name, "lengths must be [B] = [", B,
                "] i32, got ", m.lengths.shape_str());
    LLMTK_CHECK(m.lengths.device == op.memory, op.name, "lengths is not in the memory this backend computes on");
    if (Op::readable(m.lengths))
      for (std::int64_t b = 0; b < B; ++b) {
        const std::int32_t n = m.lengths.i32()[b];
        LLMTK_CHECK(n >= 1 && n <= Tk, op.name, "lengths[", b, "] = ", n, " is outside [1, ", Tk, "]");
      }
  }
  if (m.bias) {
    LLMTK_CHECK(m.bias.dtype == DType::f32 && m.bias.numel() == T * Tk * H, op.name, "bias must be [Tq, Tk, H] = [", T, ", ",
                Tk, ", ", H, "] f32, got ", m.bias.shape_str(), " ", name_of(m.bias.dtype));
    LLMTK_CHECK(m.bias.device == op.memory, op.name, "bias is not in the memory this backend computes on");
  }
  if (m.segments) {
    LLMTK_CHECK(m.segments.dtype == DType::i32 && m.segments.numel() == B * Tk, op.name, "segments must be [B, T] = [",
                B, ", ", Tk, "] i32, got ", m.segments.shape_str());
    LLMTK_CHECK(m.segments.device == op.memory, op.name, "segments is not in the memory this backend computes on");
    LLMTK_CHECK(m.q_offset == 0 && Tk == T, op.name, "segments need as many keys as queries and q_offset 0");
  }
}
void check_attention_forward(TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v,
                             AttentionMask mask) {
  attention(Op{"attention_forward"}, out, lse, q, k, v, mask);
}
// dq, dk, dv written, shaped as q, k, v; backward needs Tk = q_offset + Tq (every key before the
// queries, a prefix's, and theirs), or a mask with free keys (cross-attention's).
void check_attention_backward(TensorRef dq, TensorRef dk, TensorRef dv, TensorRef dout, TensorRef q, TensorRef k,
                              TensorRef v, TensorRef out, TensorRef lse, AttentionMask mask) {
  const Op op{"attention_backward"};
  attention(op, out, lse, q, k, v, mask);
  LLMTK_CHECK(free_keys(mask) || k.size(1) == mask.q_offset + q.size(1), op.name, "backward needs q_offset + Tq keys (",
              mask.q_offset, " + ", q.size(1), "), got ", k.size(1));
  op.act("dq", dq), op.act("dk", dk), op.act("dv", dv), op.act("dout", dout);
  op.same("dq", dq, "q", q), op.same("dout", dout, "q", q);
  op.same("dk", dk, "k", k), op.same("dv", dv, "v", v);
  if (mask.dbias) {
    const std::int64_t B = q.size(0), T = q.size(1), H = q.size(2), Tk = k.size(1);
    LLMTK_CHECK(mask.bias, op.name, "dbias is the gradient of a bias: give the bias too");
    LLMTK_CHECK(mask.dbias.dtype == DType::f32 && mask.dbias.numel() == B * T * Tk * H, op.name, "dbias must be [B, Tq, Tk, H] = [",
                B, ", ", T, ", ", Tk, ", ", H, "] f32, got ", mask.dbias.shape_str());
    LLMTK_CHECK(mask.dbias.device == op.memory, op.name, "dbias is not in the memory this backend computes on");
  }
}

// ---- element-wise -------------------------------------------------------------------------

// y = f(x) (y may alias x).
void unary(const char* name, TensorRef y, TensorRef x) {
  const Op op{name};
  op.act("y", y), op.act("x", x), op.same("y", y, "x", x);
}
// dx = dy · f'(x) (dx may alias dy).
void unary_backward(const char* name, TensorRef dx, TensorRef dy, TensorRef x) {
  const Op op{name};
  op.act("dx", dx), op.act("dy", dy), op.act("x", x);
  op.same("dx", dx, "x", x), op.same("dy", dy, "x", x);
}
// y[N, F] = f(gate) · up.
void gated(const char* name, TensorRef y, TensorRef gate, TensorRef up) {
  const Op op{name};
  op.act("y", y), op.act("gate", gate), op.act("up", up);
  op.same("gate", gate, "up", up), op.same("y", y, "gate", gate);
}
// dgate, dup written (dgate may alias dy).
void gated_backward(const char* name, TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  const Op op{name};
  op.act("dgate", dgate), op.act("dup", dup), op.act("dy", dy), op.act("gate", gate), op.act("up", up);
  op.same("gate", gate, "up", up), op.same("dy", dy, "gate", gate);
  op.same("dgate", dgate, "gate", gate), op.same("dup", dup, "gate", gate);
}
void check_gelu_forward(TensorRef y, TensorRef x) { unary("gelu_forward", y, x); }
void check_gelu_backward(TensorRef dx, TensorRef dy, TensorRef x) { unary_backward("gelu_backward", dx, dy, x); }
void check_relu_forward(TensorRef y, TensorRef x) { unary("relu_forward", y, x); }
void check_relu_backward(TensorRef dx, TensorRef dy, TensorRef x) { unary_backward("relu_backward", dx, dy, x); }
void check_silu_forward(TensorRef y, TensorRef x) { unary("silu_forward", y, x); }
void check_silu_backward(TensorRef dx, TensorRef dy, TensorRef x) { unary_backward("silu_backward", dx, dy, x); }
void check_tanh_forward(TensorRef y, TensorRef x) { unary("tanh_forward", y, x); }
void check_tanh_backward(TensorRef dx, TensorRef dy, TensorRef x) { unary_backward("tanh_backward", dx, dy, x); }
void check_swiglu_forward(TensorRef y, TensorRef gate, TensorRef up) { gated("swiglu_forward", y, gate, up); }
void check_swiglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward("swiglu_backward", dgate, dup, dy, gate, up);
}
void check_geglu_forward(TensorRef y, TensorRef gate, TensorRef up) { gated("geglu_forward", y, gate, up); }
void check_geglu_backward(TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate, TensorRef up) {
  gated_backward("geglu_backward", dgate, dup, dy, gate, up);
}

// ---- embeddings and loss ------------------------------------------------------------------

// ids: [B, T] i32 in [0, V) (checked when the host can read them).
void token_ids(const Op& op, TensorRef ids, std::int64_t V) {
  if (!Op::readable(ids)) return;
  for (std::int64_t n = 0, N = ids.numel(); n < N; ++n) {
    const std::int32_t id = ids.i32()[n];
    LLMTK_CHECK(id >= 0 && id < V, op.name, "token id ", id, " at position ", n, " is outside the vocabulary [0, ", V,
                ")");
  }
}
// y[B, T, C] = table[ids[b, t], :]; table [V, C].
void check_embedding_forward(TensorRef y, TensorRef ids, TensorRef table) {
  const Op op{"embedding_forward"};
  op.act("y", y), op.f32("table", table);
  op.i32("ids", ids);
  const std::int64_t N = ids.numel(), C = table.size(-1);
  LLMTK_CHECK(y.rows() == N && y.size(-1) == C, op.name, "y ", y.shape_str(), " must be [", N, ", ", C, "]");
  token_ids(op, ids, table.size(0));
}
// dtable[ids[b, t], :] += dy[b, t, :].
void check_embedding_backward(TensorRef dtable, TensorRef dy, TensorRef ids) {
  const Op op{"embedding_backward"};
  op.f32("dtable", dtable), op.act("dy", dy);
  op.i32("ids", ids);
  const std::int64_t N = ids.numel(), C = dtable.size(-1);
  LLMTK_CHECK(dy.rows() == N && dy.size(-1) == C, op.name, "dy ", dy.shape_str(), " must be [", N, ", ", C, "]");
  token_ids(op, ids, dtable.size(0));
}
// targets [N] i32, each in [0, V) or ignore_index (checked when the host can read them).
void targets_in_range(const Op& op, TensorRef targets, std::int64_t V, int ignore) {
  if (!Op::readable(targets)) return;
  for (std::int64_t n = 0, N = targets.numel(); n < N; ++n) {
    const std::int32_t t = targets.i32()[n];
    LLMTK_CHECK(t == ignore || (t >= 0 && t < V), op.name, "target ", t, " at row ", n, " is outside [0, ", V,
                ") and is not ignore_index ", ignore);
  }
}
// losses[N]; logits [N, V]; targets [N] i32.
void check_cross_entropy_forward(TensorRef losses, TensorRef logits, TensorRef targets, int ignore_index) {
  const Op op{"cross_entropy_forward"};
  op.f32("losses", losses), op.act("logits", logits), op.i32("targets", targets);
  const std::int64_t N = logits.rows();
  LLMTK_CHECK(targets.numel() == N && losses.numel() == N, op.name, "losses and targets need ", N, " rows");
  targets_in_range(op, targets, logits.size(-1), ignore_index);
}
// dlogits [N, V] (may alias logits); weights [N] f32 or null.
void check_cross_entropy_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef weights, float,
                                  int ignore_index) {
  const Op op{"cross_entropy_backward"};
  op.act("dlogits", dlogits), op.act("logits", logits), op.i32("targets", targets), op.f32_if("weights", weights);
  op.same("dlogits", dlogits, "logits", logits);
  const std::int64_t N = logits.rows();
  LLMTK_CHECK(targets.numel() == N, op.name, "targets must be ", N, " i32 values");
  LLMTK_CHECK(!weights || weights.numel() == N, op.name, "weights must be ", N, " f32 values");
  targets_in_range(op, targets, logits.size(-1), ignore_index);
}
// stats [N, 2] f32; logits [N, V]: a rank's columns [v0, v0 + V) of the vocabulary; targets [N]
// i32, whole-vocabulary ids (any rank's), so only their sign is checked here.
void check_vocab_parallel_ce_forward(TensorRef stats, TensorRef logits, TensorRef targets, int v0, int) {
  const Op op{"vocab_parallel_ce_forward"};
  op.f32("stats", stats), op.act("logits", logits), op.i32("targets", targets);
  const std::int64_t N = logits.rows();
  LLMTK_CHECK(targets.numel() == N && stats.numel() == 2 * N, op.name, "targets need ", N, " rows and stats [", N, ", 2]");
  LLMTK_CHECK(v0 >= 0, op.name, "v0 (this rank's first column) is ", v0, "; it must be >= 0");
}
// dlogits [N, V] (may alias logits); lse, scale [N] f32.
void check_vocab_parallel_ce_backward(TensorRef dlogits, TensorRef logits, TensorRef targets, TensorRef lse, TensorRef scale,
                                      int v0) {
  const Op op{"vocab_parallel_ce_backward"};
  op.act("dlogits", dlogits), op.act("logits", logits), op.i32("targets", targets), op.f32("lse", lse), op.f32("scale", scale);
  op.same("dlogits", dlogits, "logits", logits);
  const std::int64_t N = logits.rows();
  LLMTK_CHECK(targets.numel() == N && lse.numel() == N && scale.numel() == N, op.name, "targets, lse and scale need ", N, " rows");
  LLMTK_CHECK(v0 >= 0, op.name, "v0 (this rank's first column) is ", v0, "; it must be >= 0");
}

// ---- mixture of experts ----------------------------------------------------------------------

// probs [N, E], lse [N], index and gate [N, k] with 1 ≤ k ≤ E; logits [N, E] (an activation).
void check_moe_route_forward(TensorRef probs, TensorRef lse, TensorRef index, TensorRef gate, TensorRef logits, int) {
  const Op op{"moe_route_forward"};
  op.act("logits", logits), op.f32("probs", probs), op.f32("lse", lse), op.i32("index", index), op.f32("gate", gate);
  const std::int64_t N = logits.rows(), E = logits.size(-1), K = index.size(-1);
  op.same("probs", probs, "logits", logits);
  LLMTK_CHECK(lse.numel() == N, op.name, "lse must have ", N, " elements (a row's log-sum-exp)");
  LLMTK_CHECK(K >= 1 && K <= E, op.name, "index ", index.shape_str(), ": k = ", K, " must be between 1 and the ", E,
              " experts");
  LLMTK_CHECK(index.rows() == N && gate.rows() == N && gate.size(-1) == K, op.name, "index ", index.shape_str(),
              " and gate ", gate.shape_str(), " must both be [", N, ", k]");
}
// dlogits [N, E] written; dgate, gate, index [N, k]; dprobs [E] or null.
void check_moe_route_backward(TensorRef dlogits, TensorRef dgate, TensorRef dprobs, TensorRef probs, TensorRef lse,
                              TensorRef index, TensorRef gate, float, int) {
  const Op op{"moe_route_backward"};
  op.act("dlogits", dlogits), op.f32("dgate", dgate), op.f32_if("dprobs", dprobs), op.f32("probs", probs);
  op.f32("lse", lse), op.i32("index", index), op.f32("gate", gate);
  const std::int64_t N = probs.rows(), E = probs.size(-1), K = index.size(-1);
  op.same("dlogits", dlogits, "probs", probs);
  LLMTK_CHECK(lse.numel() == N, op.name, "lse must have ", N, " elements");
  LLMTK_CHECK(K >= 1 && K <= E && index.rows() == N, op.name, "index ", index.shape_str(), " must be [", N,
              ", k] with 1 ≤ k ≤ ", E);
  op.same("dgate", dgate, "index", index), op.same("gate", gate, "index", index);
  LLMTK_CHECK(!dprobs || dprobs.numel() == E, op.name, "dprobs must have ", E, " elements (one per expert)");
}
// Slots and tokens are read where the host can: each in range.
void indices_below(const Op& op, const char* what, TensorRef t, std::int64_t bound, bool allow_dropped) {
  if (!Op::readable(t)) return;
  for (std::int64_t i = 0, n = t.numel(); i < n; ++i) {
    const std::int32_t v = t.i32()[i];
    LLMTK_CHECK((v >= 0 && v < bound) || (allow_dropped && v == -1), op.name, what, " ", v, " at ", i,
                " is outside [0, ", bound, ")", allow_dropped ? " and is not -1 (dropped)" : "");
  }
}
// xs [M, C]; x [N, C]; token [M] i32 in [0, N).
void check_moe_gather(TensorRef xs, TensorRef x, TensorRef token) {
  const Op op{"moe_gather"};
  op.act("xs", xs), op.act("x", x), op.i32("token", token);
  LLMTK_CHECK(xs.rows() == token.numel() && xs.size(-1) == x.size(-1), op.name, "xs ", xs.shape_str(), " must be [",
              token.numel(), ", ", x.size(-1), "] (a row per token index)");
  indices_below(op, "token", token, x.rows(), false);
}
// y [N, C]; ys [M, C]; gate [N, k] f32 or null; slot [N, k] i32 in [0, M) or −1.
void check_moe_combine_forward(TensorRef y, TensorRef ys, TensorRef gate, TensorRef slot) {
  const Op op{"moe_combine_forward"};
  op.act("y", y), op.act("ys", ys), op.f32_if("gate", gate), op.i32("slot", slot);
  LLMTK_CHECK(slot.rows() == y.rows() && ys.size(-1) == y.size(-1), op.name, "y ", y.shape_str(), ", ys ",
              ys.shape_str(), " and slot ", slot.shape_str(), " must be [N, C], [M, C] and [N, k]");
  LLMTK_CHECK(!gate || gate.numel() == slot.numel(), op.name, "gate must have the shape of slot ", slot.shape_str());
  indices_below(op, "slot", slot, ys.rows(), true);
}
// dys, ys [M, C]; dgate (or null), gate (or null), slot [N, k]; dy [N, C].
void check_moe_combine_backward(TensorRef dys, TensorRef dgate, TensorRef dy, TensorRef ys, TensorRef gate,
                                TensorRef slot) {
  const Op op{"moe_combine_backward"};
  op.act("dys", dys), op.act("dy", dy), op.act("ys", ys), op.f32_if("dgate", dgate), op.f32_if("gate", gate);
  op.i32("slot", slot);
  op.same("dys", dys, "ys", ys);
  LLMTK_CHECK(slot.rows() == dy.rows() && ys.size(-1) == dy.size(-1), op.name, "dy ", dy.shape_str(), ", ys ",
              ys.shape_str(), " and slot ", slot.shape_str(), " must be [N, C], [M, C] and [N, k]");
  LLMTK_CHECK((!gate || gate.numel() == slot.numel()) && (!dgate || dgate.numel() == slot.numel()), op.name,
              "gate and dgate must have the shape of slot ", slot.shape_str());
  indices_below(op, "slot", slot, ys.rows(), true);
}

// ---- linear recurrences ---------------------------------------------------------------------

// a, u, z, h: one shape.
void check_mingru_gates_forward(TensorRef a, TensorRef u, TensorRef z, TensorRef h) {
  const Op op{"mingru_gates_forward"};
  op.act("a", a), op.act("u", u), op.act("z", z), op.act("h", h);
  op.same("a", a, "z", z), op.same("u", u, "z", z), op.same("h", h, "z", z);
}
void check_mingru_gates_backward(TensorRef dz, TensorRef dh, TensorRef da, TensorRef du, TensorRef z, TensorRef h) {
  const Op op{"mingru_gates_backward"};
  op.act("dz", dz), op.act("dh", dh), op.act("da", da), op.act("du", du), op.act("z", z), op.act("h", h);
  for (auto [what, t] : {std::pair{"dz", &dz}, std::pair{"dh", &dh}, std::pair{"da", &da}, std::pair{"du", &du},
                         std::pair{"h", &h}})
    op.same(what, *t, "z", z);
}
// [B, T, D] each; h0 [B, D] f32 or null; segments [B, T] i32 or null.
void scan_shapes(const Op& op, TensorRef a, TensorRef h0, TensorRef segments) {
  op.rank("a", a, 3, "[B, T, D]");
  const std::int64_t B = a.size(0), T = a.size(1), D = a.size(2);
  if (h0) {
    op.f32("h0", h0);
    LLMTK_CHECK(h0.numel() == B * D, op.name, "h0 ", h0.shape_str(), " must be [", B, ", ", D, "] (a row's state)");
  }
  if (segments) {
    op.i32("segments", segments);
    LLMTK_CHECK(segments.numel() == B * T, op.name, "segments ", segments.shape_str(), " must be [", B, ", ", T, "]");
  }
}
void check_linear_scan_forward(TensorRef y, TensorRef a, TensorRef x, TensorRef h0, TensorRef segments) {
  const Op op{"linear_scan_forward"};
  op.act("y", y), op.act("a", a), op.act("x", x);
  op.same("y", y, "a", a), op.same("x", x, "a", a);
  scan_shapes(op, a, h0, segments);
  LLMTK_CHECK(y.data != x.data && y.data != a.data, op.name, "y must be a tensor of its own (backward reads a and x's scan)");
}
void check_linear_scan_backward(TensorRef da, TensorRef dx, TensorRef dy, TensorRef a, TensorRef y, TensorRef h0,
                                TensorRef segments) {
  const Op op{"linear_scan_backward"};
  op.act("da", da), op.act("dx", dx), op.act("dy", dy), op.act("a", a), op.act("y", y);
  op.same("da", da, "a", a), op.same("dx", dx, "a", a), op.same("dy", dy, "a", a), op.same("y", y, "a", a);
  scan_shapes(op, a, h0, segments);
  LLMTK_CHECK(dx.data != dy.data && da.data != dy.data, op.name, "da and dx must not alias dy");
}

// ---- optimizer ----------------------------------------------------------------------------

// All f32, the same shape; step counts from 1.
void check_adamw_step(TensorRef param, TensorRef grad, TensorRef m, TensorRef v, AdamWArgs a) {
  const Op op{"adamw_step"};
  op.f32("param", param), op.f32("grad", grad), op.f32("m", m), op.f32("v", v);
  op.same("param", param, "grad", grad);
  op.same("m", m, "param", param), op.same("v", v, "param", param);
  LLMTK_CHECK(a.step >= 1, op.name, "step counts from 1, got ", a.step);
}
void check_sgd_step(TensorRef param, TensorRef grad, TensorRef buf, SgdArgs) {
  const Op op{"sgd_step"};
  op.f32("param", param), op.f32("grad", grad), op.f32("buf", buf);
  op.same("param", param, "grad", grad), op.same("buf", buf, "param", param);
}
void check_lion_step(TensorRef param, TensorRef grad, TensorRef m, LionArgs) {
  const Op op{"lion_step"};
  op.f32("param", param), op.f32("grad", grad), op.f32("m", m);
  op.same("param", param, "grad", grad), op.same("m", m, "param", param);
}
// out[0] += Σ x².
void check_sum_squares(TensorRef out, TensorRef x) {
  const Op op{"sum_squares"};
  op.f32("out", out), op.f32("x", x);
  LLMTK_CHECK(out.numel() >= 1, op.name, "out needs one element");
}
// y = s · x (y may alias x), in one dtype (gradients f32, or activations).
void check_scale_forward(TensorRef y, TensorRef x, float) {
  const Op op{"scale_forward"};
  op.act("y", y), op.act("x", x), op.same("y", y, "x", x);
}
// y = x · mask / (1 − p) (y may alias x), in one dtype, 0 ≤ p < 1.
void check_dropout(TensorRef y, TensorRef x, float p, std::uint64_t) {
  const Op op{"dropout"};
  op.act("y", y), op.act("x", x), op.same("y", y, "x", x);
  LLMTK_CHECK(p >= 0 && p < 1, op.name, "p = ", p, " is outside [0, 1)");
}
// y = x in y's dtype; both f32 or bf16 with the same element count.
void check_convert(TensorRef y, TensorRef x) {
  const Op op{"convert"};
  for (auto [what, t] : {std::pair{"y", &y}, std::pair{"x", &x}}) {
    LLMTK_CHECK(t->data != nullptr, op.name, what, " is null");
    LLMTK_CHECK(t->dtype == DType::f32 || t->dtype == DType::bf16, op.name, what, " is ", name_of(t->dtype),
                "; convert goes between f32 and bf16");
    op.in_memory(what, *t);
  }
  LLMTK_CHECK(y.numel() == x.numel(), op.name, "y ", y.shape_str(), " and x ", x.shape_str(),
              " must have the same number of elements");
}

}  // namespace

const OpChecks op_checks = {
#define LLMTK_X(name, params, args) &check_##name,
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

}  // namespace llmtk::ops
