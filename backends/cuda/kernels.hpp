// The kernel launchers of the CUDA backend: raw device pointers, sizes and the stream. Defined
// in the .cu files (C++17, no framework header); called by the host-side .cpp files after they
// have checked the op's arguments. Every launcher checks its launch (LLMTK_CUDA_LAUNCHED).
// Conventions as in ops.hpp: outputs first; parameter gradients accumulate (+=).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace llmtk::cuda::kernels {

using i64 = std::int64_t;

// ---- elementwise.cu -------------------------------------------------------------------------
// The activation ops come in both storage types (docs/bf16.md): float, and std::uint16_t for bf16
// (raw bits), which is read exactly, computed in f32 and rounded once on store.
enum class Unary { gelu, relu, silu, tanh };
enum class Gate { silu, gelu };
#define LLMTK_CUDA_ACTIVATION_KERNELS(E)                                                              \
  void unary_forward(Unary f, E* y, const E* x, i64 n, cudaStream_t s);               /* y = f(x) */ \
  void unary_backward(Unary f, E* dx, const E* dy, const E* x, i64 n, cudaStream_t s); /* dy·f'(x) */ \
  void gated_forward(Gate f, E* y, const E* gate, const E* up, i64 n, cudaStream_t s);               \
  void gated_backward(Gate f, E* dgate, E* dup, const E* dy, const E* gate, const E* up, i64 n,       \
                      cudaStream_t s);                                                                \
  void add(E* y, const E* a, const E* b, i64 n, cudaStream_t s);                                      \
  void scale(E* y, const E* x, float k, i64 n, cudaStream_t s);                                       \
  void dropout(E* y, const E* x, float p, std::uint64_t seed, i64 n, cudaStream_t s);
LLMTK_CUDA_ACTIVATION_KERNELS(float)
LLMTK_CUDA_ACTIVATION_KERNELS(std::uint16_t)
#undef LLMTK_CUDA_ACTIVATION_KERNELS
// The unfused GELU matmuls with bf16 results, from their f32 product p (each output rounded once):
// h = p and y = gelu(p); dx = p · gelu'(h).
void gelu_from_product(std::uint16_t* y, std::uint16_t* h, const float* p, i64 n, cudaStream_t s);
void gelu_backward_from_product(std::uint16_t* dx, const float* p, const std::uint16_t* h, i64 n, cudaStream_t s);
// tab[2·(j·D/2 + i) + 0/1] = cos/sin of p · base^(−2i/D) for positions p = lo + j, j < P
// (computed in double): the rope kernel reads it instead of evaluating pow and sincos for every
// element.
void rope_table(float* tab, i64 lo, i64 P, i64 D, float base, cudaStream_t s);
// Position schemes and the embedding lookup, activations in either storage type:
// positions: y[b, t, :] = x[b, t, :] + table[pos0 + t, :]; dtable[t, :] += Σ_b dy[b, t, :].
// rope: x, y [B, T, H, D], rotated by the angles of positions pos0 … pos0 + T − 1 in tab (a
// rope_table from position lo that covers them); sign −1 rotates backwards (rope_backward).
// embedding: y[n, :] = table[ids[n], :] (zeros for an id outside [0, V)).
#define LLMTK_CUDA_POSITION_KERNELS(E)                                                                           \
  void positions_forward(E* y, const E* x, const float* table, i64 B, i64 T, i64 C, i64 pos0, cudaStream_t s);    \
  void positions_backward(float* dtable, const E* dy, i64 B, i64 T, i64 C, cudaStream_t s);                      \
  void sinusoidal_forward(E* y, const E* x, i64 B, i64 T, i64 C, i64 pos0, cudaStream_t s);                      \
  void rope(E* y, const E* x, const float* tab, i64 lo, i64 B, i64 T, i64 H, i64 D, i64 pos0, float sign,         \
            cudaStream_t s);                                                                                     \
  void embedding_forward(E* y, const std::int32_t* ids, const float* table, i64 N, i64 C, i64 V, cudaStream_t s);
LLMTK_CUDA_POSITION_KERNELS(float)
LLMTK_CUDA_POSITION_KERNELS(std::uint16_t)
#undef LLMTK_CUDA_POSITION_KERNELS
// bf16 (as raw 16-bit words, round to nearest even) from f32 and back
void to_bf16(std::uint16_t* out, const float* in, i64 n, cudaStream_t s);
// out[r·ld + c] = bf16(in[r·cols + c]) for rows × cols, the ld − cols columns after each row
// zeroed: a matmul operand whose rows start 16-byte aligned (ld a multiple of 8).
void to_bf16_padded(std::uint16_t* out, const float* in, i64 rows, i64 cols, i64 ld, cudaStream_t s);
void to_bf16_padded(std::uint16_t* out, const std::uint16_t* in, i64 rows, i64 cols, i64 ld, cudaStream_t s);  // copied
void from_bf16(float* out, const std::uint16_t* in, i64 n, cudaStream_t s);
// dst[r·ld_dst + c] = src[r·ld_src + c] for r < rows, c < cols (a matrix between leading dimensions)
void copy_rows(float* dst, i64 ld_dst, const float* src, i64 ld_src, i64 rows, i64 cols, cudaStream_t s);
void copy_rows(std::uint16_t* dst, i64 ld_dst, const std::uint16_t* src, i64 ld_src, i64 rows, i64 cols,
               cudaStream_t s);
// out = in rounded to bf16 precision, kept as f32 (matmuls cuBLASLt cannot run in bf16 for a shape)
void round_to_bf16(float* out, const float* in, i64 n, cudaStream_t s);
// [rows, KV, D] f32 or bf16 → [rows, H, D] bf16: kv head h / (H / KV) repeated for each query head h.
void to_bf16_heads(std::uint16_t* out, const float* in, i64 rows, i64 KV, i64 H, i64 D, cudaStream_t s);
void to_bf16_heads(std::uint16_t* out, const std::uint16_t* in, i64 rows, i64 KV, i64 H, i64 D, cudaStream_t s);
// [rows, H, D] bf16 → [rows, KV, D] f32 or bf16 written: kv head g is the sum (in f32, rounded
// once) of query heads g·(H / KV) … (g + 1)·(H / KV) − 1 in order (the gradient of to_bf16_heads).
void from_bf16_sum_heads(float* out, const std::uint16_t* in, i64 rows, i64 KV, i64 H, i64 D, cudaStream_t s);
void from_bf16_sum_heads(std::uint16_t* out, const std::uint16_t* in, i64 rows, i64 KV, i64 H, i64 D,
                         cudaStream_t s);

// ---- embedding_backward.cu ------------------------------------------------------------------
// Scratch bytes embedding_backward needs for N positions.
std::size_t embedding_backward_scratch(i64 N);
// dtable[ids[n], :] += dy[n, :], summed per token in position order (deterministic); dy f32 or bf16.
void embedding_backward(float* dtable, const float* dy, const std::int32_t* ids, i64 N, i64 C, i64 V, void* scratch,
                        std::size_t scratch_bytes, cudaStream_t s);
void embedding_backward(float* dtable, const std::uint16_t* dy, const std::int32_t* ids, i64 N, i64 C, i64 V,
                        void* scratch, std::size_t scratch_bytes, cudaStream_t s);

// ---- norms.cu -------------------------------------------------------------------------------
// Activations (x, y, dy, dx, the summed a) in either storage type; w, b, mean, rstd, out f32.
// The backward_dx kernels add res (the residual path's gradient; null: none; may alias dx) to dx.
// Column sums over N rows of [N, C], added to out[C]; `partial` holds column_sum_scratch floats.
// Deterministic: each block sums a fixed range of rows, then the partials are added in order.
i64 column_sum_scratch(i64 N, i64 C);
#define LLMTK_CUDA_NORM_KERNELS(E)                                                                                 \
  void layernorm_forward(E* y, float* mean, float* rstd, const E* x, const float* w, const float* b, i64 N, i64 C,   \
                         float eps, cudaStream_t s);                                                              \
  void layernorm_backward_dx(E* dx, const E* dy, const E* x, const float* w, const float* mean, const float* rstd,   \
                             const E* res, i64 N, i64 C, cudaStream_t s);                                         \
  void rmsnorm_forward(E* y, float* rstd, const E* x, const float* w, i64 N, i64 C, float eps, cudaStream_t s);     \
  void rmsnorm_backward_dx(E* dx, const E* dy, const E* x, const float* w, const float* rstd, const E* res, i64 N,   \
                           i64 C, cudaStream_t s);                                                                \
  void column_sum(float* out, const E* a, i64 N, i64 C, float* partial, cudaStream_t s); /* Σ a */                \
  /* Σ dy · (x − mean) · rstd (LayerNorm dw); mean null: Σ dy · x · rstd (RMSNorm dw) */                          \
  void column_sum_normed(float* out, const E* dy, const E* x, const float* mean, const float* rstd, i64 N, i64 C,   \
                         float* partial, cudaStream_t s);
LLMTK_CUDA_NORM_KERNELS(float)
LLMTK_CUDA_NORM_KERNELS(std::uint16_t)
#undef LLMTK_CUDA_NORM_KERNELS

// ---- loss.cu --------------------------------------------------------------------------------
// logits and dlogits in either storage type; losses, weights and lse f32.
// losses[n] = logsumexp(logits[n]) − logits[n, t] (0 when ignored, NaN for a target outside [0, V))
// dlogits = dloss · w[n] · (softmax(logits) − onehot(t)) (may alias logits; weights may be null:
// w = 1); lse: N floats of scratch
#define LLMTK_CUDA_LOSS_KERNELS(E)                                                                                \
  void cross_entropy_forward(float* losses, const E* logits, const std::int32_t* targets, i64 N, i64 V,            \
                             int ignore_index, cudaStream_t s);                                                    \
  void cross_entropy_backward(E* dlogits, const E* logits, const std::int32_t* targets, const float* weights, i64 N, \
                              i64 V, float dloss, int ignore_index, float* lse, cudaStream_t s);
LLMTK_CUDA_LOSS_KERNELS(float)
LLMTK_CUDA_LOSS_KERNELS(std::uint16_t)
#undef LLMTK_CUDA_LOSS_KERNELS
// Tensor parallel's cross-entropy (ops.hpp): f32 logits, a rank's columns [v0, v0 + V).
void vocab_parallel_ce_forward(float* stats, const float* logits, const std::int32_t* targets, i64 N, i64 V, i64 v0,
                               int ignore_index, cudaStream_t s);
void vocab_parallel_ce_backward(float* dlogits, const float* logits, const std::int32_t* targets, const float* lse,
                                const float* scale, i64 N, i64 V, i64 v0, cudaStream_t s);

// ---- optimizer.cu ---------------------------------------------------------------------------
void adamw(float* p, const float* g, float* m, float* v, i64 n, float lr, float beta1, float beta2, float eps,
           float wd, float bias1, float bias2, cudaStream_t s);  // bias1 = 1 − β1^t, bias2 = 1 − β2^t
void sgd(float* p, const float* g, float* buf, i64 n, float lr, float momentum, float wd, bool nesterov,
         bool first_step, cudaStream_t s);
void lion(float* p, const float* g, float* m, i64 n, float lr, float beta1, float beta2, float wd, cudaStream_t s);
// out[0] += Σ x²; `partial` holds kSumPartials floats. Deterministic (two passes, fixed order).
inline constexpr int kSumPartials = 1024;
void sum_squares(float* out, const float* x, i64 n, float* partial, cudaStream_t s);

// ---- moe.cu -----------------------------------------------------------------------------------
// The router, gather and combine of ops.hpp's mixture-of-experts ops, on f32 rows.
void moe_route_forward(float* probs, float* lse, std::int32_t* index, float* gate, const float* logits, i64 N, i64 E,
                       i64 K, int normalize, cudaStream_t s);
void moe_route_backward(float* dlogits, const float* dgate, const float* dprobs, const float* probs, const float* lse,
                        const std::int32_t* index, const float* gate, i64 N, i64 E, i64 K, float z_scale, int normalize,
                        cudaStream_t s);
void moe_gather(float* xs, const float* x, const std::int32_t* token, i64 M, i64 C, cudaStream_t s);
void moe_combine_forward(float* y, const float* ys, const float* gate, const std::int32_t* slot, i64 N, i64 K, i64 C,
                         cudaStream_t s);
void moe_combine_backward(float* dys, float* dgate, const float* dy, const float* ys, const float* gate,
                          const std::int32_t* slot, i64 N, i64 K, i64 C, cudaStream_t s);

// ---- recurrence.cu ----------------------------------------------------------------------------
// minGRU's gates and the diagonal linear recurrence (ops.hpp), f32; the scan is chunked
// (kScanChunk steps per chunk) and needs linear_scan_scratch(B, T, D) floats of scratch.
inline constexpr int kScanChunk = 64;
i64 linear_scan_scratch(i64 B, i64 T, i64 D);
void mingru_gates_forward(float* a, float* u, const float* z, const float* h, i64 n, cudaStream_t s);
void mingru_gates_backward(float* dz, float* dh, const float* da, const float* du, const float* z, const float* h, i64 n,
                           cudaStream_t s);
void linear_scan_forward(float* y, const float* a, const float* x, const float* h0, const std::int32_t* segments, i64 B,
                         i64 T, i64 D, float* scratch, cudaStream_t s);
void linear_scan_backward(float* da, float* dx, const float* dy, const float* a, const float* y, const float* h0,
                          const std::int32_t* segments, i64 B, i64 T, i64 D, float* scratch, cudaStream_t s);

// ---- attention.cu ---------------------------------------------------------------------------
// q, out: [B, T, H, D]; k, v: [B, Tk, KV, D]; lse: [B, H, T]. window 0: none; q_offset: the
// first query's position among the keys. slopes: H ALiBi slopes (device memory) or null.
struct AttentionDims {
  i64 B, T, Tk, H, KV, D;
  bool causal;
  int window;
  int q_offset;
  float scale;  // 1/sqrt(D)
  const std::int32_t* lengths;   // [B] keys per row (padding after), or null
  const std::int32_t* segments;  // [B, Tk] document of each position, or null
  const float* bias = nullptr;   // [T, Tk, H] added to the scaled scores, or null
  float* dbias = nullptr;        // [B, T, Tk, H] its gradient (backward; zeroed first, written where visible), or null
};
// Largest head dim the tiled kernel takes.
inline constexpr int kAttentionMaxHeadDim = 128;
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const float* slopes,
                       const AttentionDims& d, cudaStream_t s);
// delta: [B, H, T] scratch (rowsum(dout · out)); dq, dk, dv written.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const float* slopes, float* delta,
                        const AttentionDims& d, cudaStream_t s);

}  // namespace llmtk::cuda::kernels
