// The op list: the single source of truth. Every backend's table and every test table is
// generated from it, so an op added here that a backend or test forgets is a compile error.
// X(name, (parameters), (arguments)); contracts are in ops.hpp.
#pragma once

// clang-format off
#define LLMTK_OPS(X)                                                                              \
  X(matmul_forward,  (TensorRef y, TensorRef x, TensorRef w, TensorRef b), (y, x, w, b))          \
  X(matmul_backward, (TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x,       \
                      TensorRef w), (dx, dw, db, dy, x, w))                                       \
  X(matmul_gelu_forward,  (TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b),        \
                          (y, h, x, w, b))                                                        \
  X(gelu_matmul_backward, (TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a,   \
                           TensorRef w, TensorRef h), (dh, dw, db, dy, a, w, h))                  \
  X(add_forward,     (TensorRef y, TensorRef a, TensorRef b), (y, a, b))                          \
  X(layernorm_forward,  (TensorRef y, TensorRef mean, TensorRef rstd, TensorRef x, TensorRef w,  \
                         TensorRef b, float eps), (y, mean, rstd, x, w, b, eps))                  \
  X(layernorm_backward, (TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x,    \
                         TensorRef w, TensorRef mean, TensorRef rstd, TensorRef dres),           \
                        (dx, dw, db, dy, x, w, mean, rstd, dres))                                 \
  X(rmsnorm_forward,  (TensorRef y, TensorRef rstd, TensorRef x, TensorRef w, float eps),         \
                      (y, rstd, x, w, eps))                                                       \
  X(rmsnorm_backward, (TensorRef dx, TensorRef dw, TensorRef dy, TensorRef x, TensorRef w,        \
                       TensorRef rstd, TensorRef dres), (dx, dw, dy, x, w, rstd, dres))           \
  X(rope_forward,  (TensorRef y, TensorRef x, float base, int pos0), (y, x, base, pos0))          \
  X(rope_backward, (TensorRef dx, TensorRef dy, float base, int pos0), (dx, dy, base, pos0))      \
  X(attention_forward,  (TensorRef out, TensorRef lse, TensorRef q, TensorRef k, TensorRef v,     \
                         AttentionMask mask), (out, lse, q, k, v, mask))                          \
  X(attention_backward, (TensorRef dq, TensorRef dk, TensorRef dv, TensorRef dout, TensorRef q,   \
                         TensorRef k, TensorRef v, TensorRef out, TensorRef lse,                  \
                         AttentionMask mask), (dq, dk, dv, dout, q, k, v, out, lse, mask))        \
  X(gelu_forward,  (TensorRef y, TensorRef x), (y, x))                                            \
  X(gelu_backward, (TensorRef dx, TensorRef dy, TensorRef x), (dx, dy, x))                        \
  X(relu_forward,  (TensorRef y, TensorRef x), (y, x))                                            \
  X(relu_backward, (TensorRef dx, TensorRef dy, TensorRef x), (dx, dy, x))                        \
  X(silu_forward,  (TensorRef y, TensorRef x), (y, x))                                            \
  X(silu_backward, (TensorRef dx, TensorRef dy, TensorRef x), (dx, dy, x))                        \
  X(tanh_forward,  (TensorRef y, TensorRef x), (y, x))                                            \
  X(tanh_backward, (TensorRef dx, TensorRef dy, TensorRef x), (dx, dy, x))                        \
  X(swiglu_forward,  (TensorRef y, TensorRef gate, TensorRef up), (y, gate, up))                  \
  X(swiglu_backward, (TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate,               \
                      TensorRef up), (dgate, dup, dy, gate, up))                                  \
  X(geglu_forward,   (TensorRef y, TensorRef gate, TensorRef up), (y, gate, up))                  \
  X(geglu_backward,  (TensorRef dgate, TensorRef dup, TensorRef dy, TensorRef gate,               \
                      TensorRef up), (dgate, dup, dy, gate, up))                                  \
  X(embedding_forward,  (TensorRef y, TensorRef ids, TensorRef table), (y, ids, table))           \
  X(embedding_backward, (TensorRef dtable, TensorRef dy, TensorRef ids), (dtable, dy, ids))       \
  X(positions_forward,  (TensorRef y, TensorRef x, TensorRef table, int pos0), (y, x, table, pos0)) \
  X(positions_backward, (TensorRef dtable, TensorRef dy), (dtable, dy))                           \
  X(sinusoidal_forward, (TensorRef y, TensorRef x, int pos0), (y, x, pos0))                       \
  X(cross_entropy_forward,  (TensorRef losses, TensorRef logits, TensorRef targets,               \
                             int ignore_index), (losses, logits, targets, ignore_index))          \
  X(cross_entropy_backward, (TensorRef dlogits, TensorRef logits, TensorRef targets,              \
                             TensorRef weights, float dloss, int ignore_index),                   \
                            (dlogits, logits, targets, weights, dloss, ignore_index))             \
  X(vocab_parallel_ce_forward,  (TensorRef stats, TensorRef logits, TensorRef targets, int v0,    \
                                 int ignore_index), (stats, logits, targets, v0, ignore_index))   \
  X(vocab_parallel_ce_backward, (TensorRef dlogits, TensorRef logits, TensorRef targets,          \
                                 TensorRef lse, TensorRef scale, int v0),                         \
                                (dlogits, logits, targets, lse, scale, v0))                       \
  X(moe_route_forward,  (TensorRef probs, TensorRef lse, TensorRef index, TensorRef gate,           \
                         TensorRef logits, int normalize), (probs, lse, index, gate, logits, normalize)) \
  X(moe_route_backward, (TensorRef dlogits, TensorRef dgate, TensorRef dprobs, TensorRef probs,       \
                         TensorRef lse, TensorRef index, TensorRef gate, float z_scale, int normalize), \
                        (dlogits, dgate, dprobs, probs, lse, index, gate, z_scale, normalize))       \
  X(moe_gather, (TensorRef xs, TensorRef x, TensorRef token), (xs, x, token))                     \
  X(moe_combine_forward,  (TensorRef y, TensorRef ys, TensorRef gate, TensorRef slot),            \
                          (y, ys, gate, slot))                                                    \
  X(moe_combine_backward, (TensorRef dys, TensorRef dgate, TensorRef dy, TensorRef ys,            \
                           TensorRef gate, TensorRef slot), (dys, dgate, dy, ys, gate, slot))     \
  X(mingru_gates_forward,  (TensorRef a, TensorRef u, TensorRef z, TensorRef h), (a, u, z, h))    \
  X(mingru_gates_backward, (TensorRef dz, TensorRef dh, TensorRef da, TensorRef du, TensorRef z,  \
                            TensorRef h), (dz, dh, da, du, z, h))                                 \
  X(linear_scan_forward,  (TensorRef y, TensorRef a, TensorRef x, TensorRef h0,                   \
                           TensorRef segments), (y, a, x, h0, segments))                          \
  X(linear_scan_backward, (TensorRef da, TensorRef dx, TensorRef dy, TensorRef a, TensorRef y,    \
                           TensorRef h0, TensorRef segments), (da, dx, dy, a, y, h0, segments))   \
  X(adamw_step, (TensorRef param, TensorRef grad, TensorRef m, TensorRef v, AdamWArgs args),      \
                (param, grad, m, v, args))                                                        \
  X(sgd_step,   (TensorRef param, TensorRef grad, TensorRef buf, SgdArgs args),                   \
                (param, grad, buf, args))                                                         \
  X(lion_step,  (TensorRef param, TensorRef grad, TensorRef m, LionArgs args), (param, grad, m, args)) \
  X(sum_squares, (TensorRef out, TensorRef x), (out, x))                                          \
  X(scale_forward, (TensorRef y, TensorRef x, float s), (y, x, s))                                 \
  X(dropout, (TensorRef y, TensorRef x, float p, std::uint64_t seed), (y, x, p, seed))             \
  X(convert, (TensorRef y, TensorRef x), (y, x))
// clang-format on
