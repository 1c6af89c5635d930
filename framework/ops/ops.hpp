// Ops: the contract between layers and backends. Each op takes non-owning TensorRefs (row-major,
// the last axis contiguous) and dispatches to the active backend. Conventions:
//   - outputs first, then inputs; gradients are prefixed d;
//   - activation outputs and activation gradients are written (=);
//   - parameter gradients (dw, db, dtable) are accumulated (+=); a null one (a frozen parameter,
//     or an absent bias) is skipped, and the op still writes its activation gradient;
//   - an absent optional tensor (a bias the model does not have) is a null TensorRef;
//   - y may alias x in element-wise ops (rope, positions, sinusoidal, add, activations), and dx
//     may alias dy in element-wise backward ops (rope, activations; swiglu/geglu: dgate may
//     alias dy), and dlogits may alias logits in cross_entropy_backward (the objective computes
//     the loss gradient in place). Layers rely on this to work in place; tests/test_ops.cpp checks it.
//   - dtypes (docs/bf16.md): activations and activation gradients are in the call's activation
//     dtype, f32 or bf16, the same for all of them; statistics the backward reads (mean, rstd,
//     lse, losses, cross-entropy weights), parameters, their gradients and optimizer state are
//     f32. A matmul's w may be f32 or bf16 (the working copy) whatever the activations are. An
//     op computes in f32 or wider and rounds once when it stores a bf16 result (one exception:
//     the CUDA backend adds a matmul's bias to a bf16 result in bf16, cuBLASLt's rule for its
//     epilogue; docs/cuda.md); no op's accumulated (+=) output is bf16.
// checks.cpp checks each op's arguments against these contracts; backends/reference runs them.
#pragma once
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "../core/memory.hpp"
#include "../core/tensor.hpp"

namespace llmtk {

// Which keys a query may see, every rule at once (each backend's kernel implements all of them):
//   causal:   key j <= query i (false: bidirectional, every key);
//   window:   > 0: also |i - j| < window (i - j < window when causal): a sliding window;
//   alibi:    scores get -slope_h * (i - j) (ALiBi, slopes from the head count);
//   q_offset: query row i is at position q_offset + i among the keys (decoding with a KV cache:
//             one new query against every cached key). Backward needs q_offset = 0;
//   lengths:  [B] i32 or null: row b has lengths[b] real tokens (1 ≤ lengths[b] ≤ Tk), and keys
//             j ≥ lengths[b] (padding) are hidden from every query;
//   segments: [B, Tk] i32 or null: the document of each position in a packed row; query i sees key
//             j only when they are in the same document (per-document resets). Needs q_offset = 0
//             and Tq = Tk; not combined with lengths (give padding its own document instead).
// A query that sees no key at all (possible only with lengths and a window) gets out = 0 and
// lse = -inf, and contributes nothing in backward.
// Cross-attention: a bidirectional mask with no window, ALiBi, segments or q_offset compares no
// positions, so its keys may be another sequence of any length Tk (an encoder's output, whose
// padding `lengths` hides).
struct AttentionMask {
  bool causal = true;
  int window = 0;
  bool alibi = false;
  int q_offset = 0;
  TensorRef lengths;
  TensorRef segments;
  // A learned bias on the scores (T5's relative positions, layers/positions.hpp): bias [Tq, Tk, H]
  // f32 or null, added to query i's score of key j in head h after the 1/sqrt(D) scale, the same
  // for every batch row; attention_backward then writes its gradient dbias [B, Tq, Tk, H] f32
  // (=, per batch row: the caller sums the rows; 0 where a key is hidden).
  TensorRef bias = {};
  TensorRef dbias = {};
  // Positional, like an aggregate: AttentionMask{true, 5} is causal with a window of 5.
  AttentionMask(bool causal_ = true, int window_ = 0, bool alibi_ = false, int q_offset_ = 0, TensorRef lengths_ = {},
                TensorRef segments_ = {})
      : causal(causal_), window(window_), alibi(alibi_), q_offset(q_offset_), lengths(lengths_), segments(segments_) {}
};

// Hyper-parameters of one AdamW update (decoupled weight decay); step counts from 1.
struct AdamWArgs {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  int step = 1;
};

// SGD with momentum (PyTorch's form): buf = μ·buf + g (buf = g at step 1); the update direction
// is buf, or g + μ·buf with Nesterov; p −= lr·(direction + wd·p).
struct SgdArgs {
  float lr = 1e-2f, momentum = 0.9f, weight_decay = 0.0f;
  bool nesterov = false;
  int step = 1;
};

// Lion (Chen et al. 2023): c = β1·m + (1−β1)·g; p −= lr·(sign(c) + wd·p); m = β2·m + (1−β2)·g.
struct LionArgs {
  float lr = 1e-4f, beta1 = 0.9f, beta2 = 0.99f, weight_decay = 0.0f;
};

#include "op_list.hpp"

namespace ops {

// ---- linear maps --------------------------------------------------------------------------
// matmul_forward:  y[N, O] = x[N, I] · w[O, I]ᵀ + b[O]   (w is K-major: its I axis is contiguous)
//                  x, y in the activation dtype; w f32 or bf16 (a bf16 product accumulates in f32)
// matmul_backward: dx[N, I] = dy · w  (skipped when dx is null)
//                  dw[O, I] += dyᵀ · x;  db[O] += Σ_n dy[n, :]  (db may be null)
// matmul_gelu_forward:  h = x · wᵀ + b (as matmul_forward, saved for backward), y = gelu(h):
//                       a matmul with GELU after it, one op so a backend can fuse the two
//                       (cuBLASLt's GELU_AUX epilogue); y, h: [N, O]
// gelu_matmul_backward: the backward of y = gelu(h) · wᵀ + b with a = gelu(h) saved: dw, db as
//                       matmul_backward with x = a; dh[N, I] = (dy · w) ⊙ gelu'(h) (cuBLASLt's
//                       DGELU epilogue fuses the product and the GELU gradient)
// add_forward:     y = a + b, all the same shape
//
// ---- norms (rows of x are the last axis C; N = all other axes) -----------------------------
// layernorm_forward:  mean[N], rstd[N] = 1/sqrt(var + eps) (biased var) are saved for backward;
//                     y[N, C] = (x - mean) · rstd · w + b   (b may be null)
// layernorm_backward: dx written; dw += Σ_n dy · x̂; db += Σ_n dy. dres (optional, may alias dx):
//                     the residual path's gradient, added to dx in the same pass — a pre-norm
//                     block's backward is norm_backward + dres in one op instead of an add after
// rmsnorm_forward:    rstd[N] = 1/sqrt(mean(x²) + eps); y = x · rstd · w
// rmsnorm_backward:   dx written; dw += Σ_n dy · x · rstd; dres as layernorm_backward's
//
// ---- positions ----------------------------------------------------------------------------
// rope_forward:  x, y: [B, T, heads, D], D even. Half-split pairs (i, i + D/2), angle
//                (pos0 + t) · base^(-2i/D): y_i = x_i cos − x_{i+D/2} sin, y_{i+D/2} = x_{i+D/2} cos + x_i sin
// rope_backward: dx = the inverse rotation of dy (rope needs no saved input)
// positions_forward:  y[B, T, C] = x + table[pos0 + t, :], table: [P ≥ pos0 + T, C]
// positions_backward: dtable[t, :] += Σ_b dy[b, t, :]
// sinusoidal_forward: y[B, T, C] = x + PE[pos0 + t], PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(…);
//                     its backward is the identity (no op)
//
// ---- attention ----------------------------------------------------------------------------
// attention_forward: q, out: [B, Tq, H, D]; k, v: [B, Tk, KV, D], Tk ≥ q_offset + Tq (Tk = Tq when
//   training; any Tk for cross-attention, see AttentionMask), H % KV == 0; query head h reads
//   kv head h / (H / KV). s_ij = q_i·k_j / sqrt(D) (+ ALiBi), masked by `mask`, p = softmax_j(s),
//   out_i = Σ_j p_ij v_j. lse: [B, H, Tq] = log Σ_j exp(s_ij), saved for backward.
// attention_backward: dq, dk, dv written (same shapes as q, k, v); recomputes p from q, k, lse.
//   Tk = q_offset + Tq: the keys before the queries' own (a prefix's) get gradients too (any Tk
//   for cross-attention).
//
// ---- element-wise -------------------------------------------------------------------------
// gelu (tanh approximation, GPT-2's), relu, silu, tanh: y = f(x); backward dx = dy · f'(x).
// swiglu_forward: y[N, F] = silu(gate) · up;  geglu_forward: y = gelu(gate) · up
// swiglu/geglu_backward: dgate, dup written.
//
// ---- embeddings and loss ------------------------------------------------------------------
// embedding_forward:  y[B, T, C] = table[ids[b, t], :]; ids: [B, T] i32 in [0, V); table [V, C]
// embedding_backward: dtable[ids[b, t], :] += dy[b, t, :]
// cross_entropy_forward:  losses[N] = logsumexp(logits[n, :]) − logits[n, targets[n]],
//                         0 where targets[n] == ignore_index. logits [N, V], targets [N] i32
// cross_entropy_backward: dlogits[N, V] = dloss · w[n] · (softmax(logits[n]) − onehot(targets[n])),
//                         0 rows where ignored. weights: [N] f32, or null for w = 1 (a loss mask
//                         or per-token weights). dloss is d(total loss)/d(w[n] · losses[n]).
// vocab_parallel_ce_forward:  tensor parallel's cross-entropy (train/objective.hpp, VocabParallelLoss):
//                         logits [N, V] are a rank's columns [v0, v0 + V) of the vocabulary;
//                         stats [N, 2] f32: logsumexp(logits[n, :]) and logits[n, targets[n] − v0]
//                         where v0 ≤ targets[n] < v0 + V, else 0 (both 0 where ignored)
// vocab_parallel_ce_backward: dlogits[n, j] = scale[n] · (exp(logits[n, j] − lse[n]) − [v0 + j ==
//                         targets[n]]), lse [N] the whole row's (over every rank's columns), scale
//                         [N] = dloss · w[n]; a row with scale 0 is written 0 (may alias logits)
//
// ---- mixture of experts (layers/moe.hpp) ----------------------------------------------------
// moe_route_forward:  the router: probs[N, E] = softmax(logits[N, E]) and lse[N] = logsumexp (f32,
//                     saved); index[N, k] i32 the k most probable experts of each row in descending
//                     order (the lower expert first among equal probabilities, on every backend);
//                     gate[N, k] f32 their weights: probs[index] / Σ_j probs[index_j] (normalize,
//                     Mixtral's) or probs[index] (Switch's).
// moe_route_backward: dlogits[N, E] written, from dgate[N, k] (the gate weights' gradient),
//                     dprobs[E] f32 or null (added to every row's probability gradient: the
//                     load-balancing loss) and z_scale (the router z-loss Σ lse² gives
//                     dlogits += z_scale · lse[n] · probs[n, :]).
// moe_gather:         xs[m, :] = x[token[m], :]: tokens grouped by expert. token [M] i32 in [0, N).
// moe_combine_forward:  y[n, :] = Σ_j gate[n, j] · ys[slot[n, j], :] (written; a slot of −1, a
//                       token an expert at capacity dropped, adds nothing; gate null: weights 1,
//                       which makes it the backward of moe_gather). slot [N, k] i32; gate [N, k] f32.
// moe_combine_backward: dys[slot[n, j], :] = gate[n, j] · dy[n, :] (each expert row named by one
//                       slot; rows no slot names are not written); dgate[n, j] = dy[n, :] ·
//                       ys[slot[n, j], :] (0 for a dropped slot; dgate may be null).
//
// ---- linear recurrences (layers/recurrence.hpp) ------------------------------------------
// mingru_gates_forward:  minGRU's gates: a = 1 − σ(z) (what the state keeps), u = σ(z) · h (what
//                        enters it); a, u, z, h all the same shape.
// mingru_gates_backward: dz = (du · h − da) · σ(z)(1 − σ(z)), dh = du · σ(z) (written).
// linear_scan_forward:   y[b, t] = a[b, t] ⊙ y[b, t − 1] + x[b, t] over t (a, x, y: [B, T, D]),
//                        from y[b, −1] = h0[b] ([B, D] f32, or null: 0). segments [B, T] i32 or
//                        null: where a row's document changes (segments[b, t] ≠ segments[b, t −
//                        1]) the state restarts: y[b, t] = x[b, t].
// linear_scan_backward:  da, dx written from dy (the same shapes): g[t] = dy[t] + a'[t + 1] ⊙
//                        g[t + 1] (a' is a with 0 where a document starts), dx = g, da[t] =
//                        g[t] ⊙ y[t − 1] (0 where a document starts; y[−1] = h0 or 0).
//
// ---- optimizer ----------------------------------------------------------------------------
// adamw_step: m = β1 m + (1-β1) g; v = β2 v + (1-β2) g²; m̂ = m/(1-β1^t); v̂ = v/(1-β2^t);
//             p -= lr · (m̂ / (sqrt(v̂) + eps) + wd · p). All f32, same shape.
// sgd_step, lion_step: see SgdArgs and LionArgs above; buf / m are the optimizer state.
// sum_squares: out[0] += Σ x² (accumulates, so one output gathers a global gradient norm²).
// scale_forward: y = s · x (y may alias x): gradient clipping.
// dropout: y = x · keep(seed, i) / (1 − p), 0 ≤ p < 1 (y may alias x; ops/dropout_mask.hpp). The
//          mask is a function of (seed, i), so backward is the same op on dy with the same seed.
// convert: y = x in y's dtype (f32 or bf16, same element count): bf16 → f32 is exact, f32 → bf16
//          rounds to nearest even (NaN stays NaN). The working copy of the weights is made with it.

#define LLMTK_X(name, params, args) void name params;
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

// The table a backend provides: one function pointer per op, in op-list order.
struct OpTable {
  const char* backend;
  std::string (*info)();  // what the backend runs on, e.g. "oneDNN 2.6, ISA avx512_core_bf16, 2 threads"
#define LLMTK_X(name, params, args) void(*name) params;
  LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

// A backend as it registers itself, from its own files (backends/<name>/table.cpp): its op table,
// whose name selects it; the memory its ops compute on; why it cannot run on this machine ("" or
// null: it can); how to set the number of host threads it computes with (null: it has none to
// set); and one line on what it runs, starting with a verb ("runs on the first NVIDIA GPU; ...")
// for help texts and hints. bf16_activations: whether a bf16 run stores its activations in bf16
// on this backend (docs/bf16.md); false keeps f32 activations with bf16 matmuls in a bf16 run (a
// backend whose ops still widen bf16 in separate passes, or whose bf16 path is not measured yet).
// LLMTK_BF16_ACTIVATIONS=1/0 in the environment overrides it (activation_dtype).
struct BackendInfo {
  const OpTable* table;
  const DeviceMemory& (*memory)();
  std::string (*unavailable)();
  void (*set_threads)(int threads);
  const char* description;
  bool bf16_activations = true;
};
// The activation dtype of a run in `precision` ("fp32" or "bf16") on the active backend.
DType activation_dtype(std::string_view precision);

// The process-wide state of the ops in one object: the backend ops dispatch to, the matmul
// precision, the host thread count asked for (0: backends' defaults). The free functions below
// are its accessors; a backend's own device state stays with it (cuda: backends/cuda/context.cpp).
struct Context {
  const BackendInfo* backend;
  DType matmul_dtype = DType::f32;
  int threads = 0;
};
const Context& context();

// The op names, in op-list order (tests iterate over them).
inline constexpr std::string_view kOpNames[] = {
#define LLMTK_X(name, params, args) #name,
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};
inline constexpr int kOpCount = static_cast<int>(std::size(kOpNames));

// Select the backend every op dispatches to (one of backends()). Unknown names fail with the
// list of backends built into this binary. The backend's memory becomes current_memory(), so
// arenas allocated afterwards live where its ops compute.
void use_backend(std::string_view name);
// use_backend for a run (train, bench, generate): a backend that cannot run on this machine
// (cuda without a GPU, or a build without CUDA) fails here, at start-up, naming the problem
// and the fix, instead of at the first op.
void require_backend(std::string_view name);
// Why `name` cannot run on this machine, or "" when it can (tests skip on it).
std::string backend_unavailable(std::string_view name);
// For a name that is no backend: the one it most likely means (a word of a backend's description,
// "gpu"; else the closest name, "cdua"), or "".
std::string suggest_backend(std::string_view name);
// "unknown backend 'gpu' (did you mean cuda?); this build has: reference, cpu, cuda"
std::string unknown_backend(std::string_view name);
const OpTable& active();
std::string backend_info();  // active().info()
// LLMTK_PROFILE=1: ops are timed one by one (on an asynchronous backend such as cuda each op is
// waited for before and after, so the times are device times plus a launch each) and a table is
// printed at exit. profile_reset() forgets what was timed so far (bench calls it after warm-up,
// so plan building and first-use compilation stay out of the table).
void profile_reset();

// Mixed precision: with DType::bf16, backends that support it round matmul inputs to bf16 and
// accumulate in f32 (outputs, parameters and optimizer state stay f32). The reference backend
// always computes in f32: it is the oracle. Default: f32.
void set_matmul_precision(DType t);
DType matmul_precision();
// The number of host threads backends compute with (at least 1; the trainer's train.threads):
// handed to the active backend's thread setter now, and to each backend made active later.
void set_threads(int threads);
std::vector<std::string> backends();  // names built into this binary, then those added
const OpTable* find_backend(std::string_view name);
const BackendInfo* find_backend_info(std::string_view name);
// Adds a backend (a test's, or one a program brings) whose ops compute on `memory()`; selectable by
// its table's name like the built-in ones, and runs anywhere. Names are unique.
void add_backend(const OpTable& table, const DeviceMemory& (*memory)());

// Sets a backend for one scope, then restores the previous one.
class ScopedBackend {
 public:
  explicit ScopedBackend(std::string_view name);
  ~ScopedBackend();
  ScopedBackend(const ScopedBackend&) = delete;
  ScopedBackend& operator=(const ScopedBackend&) = delete;

 private:
  const BackendInfo* previous_;
};

}  // namespace ops
}  // namespace llmtk
