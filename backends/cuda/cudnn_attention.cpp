// cuDNN fused SDPA through the backend (graph) C API (cudnn-frontend is not used). The forward
// graph is the flash-attention pattern cuDNN's runtime fusion engine recognises:
//   S = Q·Kᵀ (f32) → S·scale → causal mask (row index ≥ column index, else −inf; the lowest
//   finite float before cuDNN 9.10)
//   → softmax with statistics: M = max_j S, E = exp(S − M), Z = Σ_j E, stats = M + log Z, P = E / Z
//   → O = P·V (bf16)
// The backward graph is the one the cuDNN frontend builds for sdpa_backward (no dropout, no bias):
//   Δ = Σ_d dO∘O (per row; a real f32 tensor, as cudnn-frontend makes it)
//   P = exp(causal(Q·Kᵀ·scale) − stats);  dV = Pᵀ·dO (P rounded to bf16 through a reshape to Pᵀ)
//   dS = P∘(dO·Vᵀ − Δ)·scale;  dK = dSᵀ·Q;  dQ = dS·K (accumulated in f32 in dQ_accum, then written)
// q, out, dout, dq, dk, dv: [B, T, H, D] bf16; k, v are expanded to H heads by the caller (which
// sums dk, dv over each group). stats is the op's lse ([B, H, T] f32): the forward writes it, the
// backward reads it, and the tiled kernels use the same values. Plans are built once per shape; a
// shape cuDNN cannot build is remembered and reported once, and the caller runs the tiled kernel.
#include "cudnn_attention.hpp"

#include <cudnn.h>

#include <array>
#include <cfloat>
#include <cmath>
#include <map>
#include <memory>
#include <tuple>
#include <utility>
#include <vector>

#include "cuda.hpp"

namespace llmtk::cuda {

std::string cudnn_version() {
  const std::size_t v = cudnnGetVersion();  // major·10000 + minor·100 + patch (cuDNN 9)
  return cat(v / 10000, ".", (v / 100) % 100, ".", v % 100);
}

namespace {

using i64 = std::int64_t;
using Ref = cudnnBackendDescriptor_t;

// One backend descriptor, destroyed with its owner.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) { status_ = cudnnBackendCreateDescriptor(type, &d_); }
  Desc(Desc&& o) noexcept : d_(std::exchange(o.d_, nullptr)), status_(o.status_) {}
  Desc& operator=(Desc&& o) noexcept {
    std::swap(d_, o.d_), std::swap(status_, o.status_);
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  ~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Ref get() const { return d_; }
  cudnnStatus_t created() const { return status_; }

 private:
  Ref d_ = nullptr;
  cudnnStatus_t status_ = CUDNN_STATUS_SUCCESS;
};

// Builds a graph; the first failing call is kept (with what it was doing) and the rest skipped,
// so a graph cuDNN cannot build ends in one readable reason instead of an exception. The builder
// owns every descriptor it makes (handed on to the plan, so nothing a finalized plan might refer
// to is destroyed while the plan lives; cudnn-frontend keeps them alive in the same way).
class Builder {
 public:
  bool ok() const { return why_.empty(); }
  const std::string& why() const { return why_; }
  std::vector<Desc> release() { return std::move(owned_); }

  void check(cudnnStatus_t s, const char* what) {
    if (ok() && s != CUDNN_STATUS_SUCCESS) why_ = cat(what, ": ", cudnnGetErrorString(s));
  }
  Ref make(cudnnBackendDescriptorType_t type, const char* what) {
    owned_.emplace_back(type);
    check(owned_.back().created(), what);
    return owned_.back().get();
  }
  template <class T>
  void set(Ref d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, i64 count, const T* values,
           const char* what) {
    if (ok()) check(cudnnBackendSetAttribute(d, name, type, count, values), what);
  }
  void finalize(Ref d, const char* what) {
    if (ok()) check(cudnnBackendFinalize(d), what);
  }

  // A tensor: 4 dims and strides, a unique id, virtual (inside the graph) or not.
  Ref tensor(i64 uid, cudnnDataType_t type, const std::array<i64, 4>& dims, const std::array<i64, 4>& strides,
           bool is_virtual, bool by_value = false) {
    const Ref t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor");
    const i64 alignment = 16;
    set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor type");
    set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor dims");
    set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor strides");
    set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor id");
    set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor alignment");
    set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "tensor virtual");
    set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "tensor by value");
    finalize(t, "tensor");
    return t;
  }

  // y = f(x [, b [, t]]) element-wise, computed in `prec` (f32 for arithmetic; the causal mask's
  // index generation is INT32 and its comparison BOOLEAN, as cudnn-frontend builds them); `axis`
  // for GEN_INDEX. b and t may be null.
  Ref pointwise(cudnnPointwiseMode_t mode, Ref x, Ref b, Ref t, Ref y, cudnnDataType_t prec = CUDNN_DATA_FLOAT, i64 axis = -1) {
    const Ref pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise");
    set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
    if (axis >= 0) set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
    finalize(pw, "pointwise");
    const Ref op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise op");
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw, "pointwise op");
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "pointwise x");
    if (b) set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "pointwise b");
    if (t) set(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t, "pointwise t");
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "pointwise y");
    finalize(op, "pointwise op");
    return op;
  }

  Ref reduction(cudnnReduceTensorOp_t how, Ref x, Ref y) {
    const Ref r = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction");
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    set(r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &how, "reduction operator");
    set(r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec, "reduction precision");
    finalize(r, "reduction");
    const Ref op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction op");
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &r, "reduction op");
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "reduction x");
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "reduction y");
    finalize(op, "reduction op");
    return op;
  }

  Ref matmul(Ref a, Ref b, Ref c) {
    const Ref mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul");
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec, "matmul precision");
    finalize(mm, "matmul");
    const Ref op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul op");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm, "matmul op");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a, "matmul a");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b, "matmul b");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c, "matmul c");
    finalize(op, "matmul op");
    return op;
  }

  // y = x seen through y's dims and strides (the backward's transposes of P, dS and Kᵀ).
  Ref reshape(Ref x, Ref y) {
    const Ref op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape op");
    set(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x, "reshape x");
    set(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y, "reshape y");
    finalize(op, "reshape op");
    return op;
  }

  // The causal mask: y = row ≥ col ? x : fill, with INT32 row/column indices over x's shape and a
  // BOOLEAN comparison (cudnn-frontend's types for these nodes). Appends its 4 ops.
  void causal_mask(std::vector<Ref>& ops, Ref x, Ref fill, Ref y, const std::array<i64, 4>& dims,
                   const std::array<i64, 4>& strides, i64& next_uid) {
    const Ref row = tensor(next_uid++, CUDNN_DATA_INT32, dims, strides, true);
    const Ref col = tensor(next_uid++, CUDNN_DATA_INT32, dims, strides, true);
    const Ref keep = tensor(next_uid++, CUDNN_DATA_BOOLEAN, dims, strides, true);
    ops.push_back(pointwise(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, nullptr, row, CUDNN_DATA_INT32, 2));
    ops.push_back(pointwise(CUDNN_POINTWISE_GEN_INDEX, x, nullptr, nullptr, col, CUDNN_DATA_INT32, 3));
    ops.push_back(pointwise(CUDNN_POINTWISE_CMP_GE, row, col, nullptr, keep, CUDNN_DATA_BOOLEAN));
    ops.push_back(pointwise(CUDNN_POINTWISE_BINARY_SELECT, x, fill, keep, y));
  }

 private:
  std::string why_;
  std::vector<Desc> owned_;
};

// The cuDNN handle, created once; null when cuDNN cannot start here (create_status() says why),
// which makes every graph build fail and attention fall back to the tiled kernel.
cudnnStatus_t& create_status() {
  static cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
  return s;
}
cudnnHandle_t handle() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t created = nullptr;
    create_status() = cudnnCreate(&created);
    return create_status() == CUDNN_STATUS_SUCCESS ? created : nullptr;
  }();
  return h;
}

// The value masked scores take: −inf from cuDNN 9.10 on; before that cuDNN's softmax wants the
// lowest finite float (what cudnn-frontend passes for those versions).
float mask_fill() { return cudnnGetVersion() < 91000 ? -FLT_MAX : -INFINITY; }

// Shapes and versions cuDNN's SDPA is known to get wrong, refused up front (cudnn-frontend's
// support surface refuses the same): 9.10.0 and 9.10.1 (bf16 SDPA bugs); one query and one key
// (T = 1); and, for the backward before 9.15.1, a sequence length that is not a multiple of 128
// (an invalid memory access the frontend works around with a padding mask). Returns the reason,
// or "".
std::string known_unsupported(bool backward, i64 T) {
  const std::size_t v = cudnnGetVersion();
  if (v == 91000 || v == 91001) return cat("cuDNN ", cudnn_version(), " has known SDPA bugs (use 9.10.2 or newer)");
  if (T == 1) return "T = 1 (cuDNN's SDPA needs more than one query)";
  if (backward && v < 91501 && T % 128 != 0)
    return cat("before cuDNN 9.15.1 the SDPA backward needs T a multiple of 128, T is ", T);
  return "";
}

// Tensor ids in the variant pack.
enum : i64 { kQ = 1, kK, kV, kO, kStats, kScale, kFill, kDO, kDQ, kDK, kDV, kDQAccum, kSoftmaxSum, kOne };

struct Plan {
  std::string why;  // empty: usable
  i64 offered = 0;                       // engine configurations the heuristics offered
  std::map<std::string, int> failures;  // how those that did not finalize failed
  std::vector<Desc> descriptors;  // the graph's, kept alive with the plan
  Ref plan = nullptr;
  i64 workspace = 0;
};

// Finalizes the operation graph of `ops` and picks the first engine configuration cuDNN's
// heuristics offer that finalizes into an execution plan; a failure leaves the reason in `why`.
// `device`: a device-properties descriptor to plan for instead of the GPU present
// (cudnn_sdpa_plan_offline); heuristics and plans then take it in place of the handle.
std::unique_ptr<Plan> make_plan(Builder& g, const std::vector<Ref>& ops, Ref device) {
  auto out = std::make_unique<Plan>();
  const cudnnHandle_t h = device ? nullptr : handle();
  if (!h && !device) {
    out->why = cat("cudnnCreate failed: ", cudnnGetErrorString(create_status()));
    return out;
  }
  const Ref graph = g.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
  g.set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, i64(ops.size()), ops.data(), "graph ops");
  if (h) g.set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h, "graph handle");
  g.finalize(graph, "operation graph");

  const Ref heur = g.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics");
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  g.set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph, "heuristics graph");
  g.set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
  if (device)
    g.set(heur, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &device, "heuristics device");
  g.finalize(heur, "heuristics");
  i64 count = 0;
  if (g.ok())
    g.check(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                     nullptr),
            "heuristics count");
  if (g.ok() && count == 0) g.check(CUDNN_STATUS_NOT_SUPPORTED, "no engine for this graph");
  std::vector<Ref> configs;
  for (i64 i = 0; g.ok() && i < count; ++i) configs.push_back(g.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config"));
  i64 got = 0;
  if (g.ok())
    g.check(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                     configs.data()),
            "heuristics results");
  std::map<std::string, int>& failures = out->failures;
  out->offered = got;
  for (i64 i = 0; g.ok() && i < got; ++i) {
    Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    if (plan.created() != CUDNN_STATUS_SUCCESS) {
      ++failures[cat("creating the plan: ", cudnnGetErrorString(plan.created()))];
      continue;
    }
    const Ref cfg = configs[std::size_t(i)];
    cudnnStatus_t st =
        device ? cudnnBackendSetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                          1, &device)
               : cudnnBackendSetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
    if (st == CUDNN_STATUS_SUCCESS)
      st = cudnnBackendSetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                    &cfg);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(plan.get());
    if (st != CUDNN_STATUS_SUCCESS) {
      ++failures[cudnnGetErrorString(st)];
      continue;
    }
    i64 ws = 0, n = 0;
    if (const cudnnStatus_t ws_st =
            cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws);
        ws_st != CUDNN_STATUS_SUCCESS) {
      ++failures[cat("its workspace size: ", cudnnGetErrorString(ws_st))];
      continue;
    }
    out->plan = plan.get();
    out->workspace = ws;
    out->descriptors = g.release();
    out->descriptors.push_back(std::move(plan));
    return out;
  }
  std::string how;
  for (const auto& [status, n] : failures) how += cat(how.empty() ? ": " : ", ", status, " x", n);
  out->why = g.ok() ? cat("no engine configuration finalizes (", got, " offered", how, ")") : g.why();
  return out;
}

std::unique_ptr<Plan> refused(std::string why) {
  auto out = std::make_unique<Plan>();
  out->why = std::move(why);
  return out;
}

// The forward graph for (B, H, T, D), planned for `device` (null: the GPU present).
std::unique_ptr<Plan> build_forward(i64 B, i64 H, i64 T, i64 D, Ref device) {
  if (std::string why = known_unsupported(false, T); !why.empty()) return refused(why);
  Builder g;
  const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
  // [B, H, T, D] over memory laid out [B, T, H, D]
  const std::array<i64, 4> bhtd{B, H, T, D}, bhtd_strides{T * H * D, D, H * D, 1};
  const std::array<i64, 4> bhdt{B, H, D, T}, bhdt_strides{T * H * D, D, 1, H * D};  // Kᵀ: the same memory as K
  const std::array<i64, 4> scores{B, H, T, T}, scores_strides{H * T * T, T * T, T, 1};
  const std::array<i64, 4> rows{B, H, T, 1}, rows_strides{H * T, T, 1, 1};
  const std::array<i64, 4> one{1, 1, 1, 1};

  const Ref q = g.tensor(kQ, bf16, bhtd, bhtd_strides, false);
  const Ref kt = g.tensor(kK, bf16, bhdt, bhdt_strides, false);
  const Ref v = g.tensor(kV, bf16, bhtd, bhtd_strides, false);
  const Ref o = g.tensor(kO, bf16, bhtd, bhtd_strides, false);
  const Ref stats = g.tensor(kStats, f32, rows, rows_strides, false);
  const Ref scale = g.tensor(kScale, f32, one, one, false, true);
  const Ref fill = g.tensor(kFill, f32, one, one, false, true);
  i64 next = 100;
  auto virt = [&](cudnnDataType_t t, const std::array<i64, 4>& dims, const std::array<i64, 4>& strides) {
    return g.tensor(next++, t, dims, strides, true);
  };
  const Ref s = virt(f32, scores, scores_strides), s_scaled = virt(f32, scores, scores_strides);
  const Ref s_masked = virt(f32, scores, scores_strides);
  const Ref m = virt(f32, rows, rows_strides), shifted = virt(f32, scores, scores_strides);
  const Ref e = virt(f32, scores, scores_strides), z = virt(f32, rows, rows_strides);
  // P in the inputs' type: the P·V matmul takes its A operand in the I/O type (cudnn-frontend
  // sets the softmax output to Q's type for the same reason).
  const Ref log_z = virt(f32, rows, rows_strides), p = virt(bf16, scores, scores_strides);

  std::vector<Ref> ops;
  ops.push_back(g.matmul(q, kt, s));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_MUL, s, scale, nullptr, s_scaled));
  g.causal_mask(ops, s_scaled, fill, s_masked, scores, scores_strides, next);
  ops.push_back(g.reduction(CUDNN_REDUCE_TENSOR_MAX, s_masked, m));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_SUB, s_masked, m, nullptr, shifted));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_EXP, shifted, nullptr, nullptr, e));
  ops.push_back(g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, z));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_LOG, z, nullptr, nullptr, log_z));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_ADD, m, log_z, nullptr, stats));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_DIV, e, z, nullptr, p));
  ops.push_back(g.matmul(p, v, o));
  return make_plan(g, ops, device);
}

// The backward graph for (B, H, T, D), node for node cudnn-frontend's sdpa_backward without
// dropout or bias. As there, Kᵀ and Vᵀ are the graph's inputs (K for dQ is a reshape of Kᵀ); Δ
// (the frontend's softmax_sum, [B, H, T, 1] f32) and dQ_accum ([B, H, T, D] f32, zeroed before
// each run) are real tensors in scratch memory, dense, not reordered: dQ accumulates in f32.
std::unique_ptr<Plan> build_backward(i64 B, i64 H, i64 T, i64 D, Ref device) {
  if (std::string why = known_unsupported(true, T); !why.empty()) return refused(why);
  Builder g;
  const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
  // [B, H, T, D] over memory laid out [B, T, H, D]
  const std::array<i64, 4> bhtd{B, H, T, D}, bhtd_strides{T * H * D, D, H * D, 1};
  const std::array<i64, 4> bhdt{B, H, D, T}, bhdt_strides{T * H * D, D, 1, H * D};  // Kᵀ, Vᵀ: K's, V's memory
  const std::array<i64, 4> accum_strides{H * T * D, T * D, D, 1};                    // dQ_accum: [B, H, T, D]
  const std::array<i64, 4> scores{B, H, T, T}, scores_strides{H * T * T, T * T, T, 1};
  const std::array<i64, 4> scores_t_strides{H * T * T, T * T, 1, T};  // [B, H, Tk, T] over the scores
  const std::array<i64, 4> rows{B, H, T, 1}, rows_strides{H * T, T, 1, 1};
  const std::array<i64, 4> one{1, 1, 1, 1};

  const Ref q = g.tensor(kQ, bf16, bhtd, bhtd_strides, false);
  const Ref kt = g.tensor(kK, bf16, bhdt, bhdt_strides, false);
  const Ref vt = g.tensor(kV, bf16, bhdt, bhdt_strides, false);
  const Ref o = g.tensor(kO, bf16, bhtd, bhtd_strides, false);
  const Ref d_o = g.tensor(kDO, bf16, bhtd, bhtd_strides, false);
  const Ref stats = g.tensor(kStats, f32, rows, rows_strides, false);
  const Ref dq = g.tensor(kDQ, bf16, bhtd, bhtd_strides, false);
  const Ref dk = g.tensor(kDK, bf16, bhtd, bhtd_strides, false);
  const Ref dv = g.tensor(kDV, bf16, bhtd, bhtd_strides, false);
  const Ref dq_accum = g.tensor(kDQAccum, f32, bhtd, accum_strides, false);
  const Ref delta = g.tensor(kSoftmaxSum, f32, rows, rows_strides, false);
  const Ref scale = g.tensor(kScale, f32, one, one, false, true);
  const Ref fill = g.tensor(kFill, f32, one, one, false, true);
  const Ref unit = g.tensor(kOne, f32, one, one, false, true);  // the frontend's dropout scale, here 1
  i64 next = 100;
  auto virt = [&](cudnnDataType_t t, const std::array<i64, 4>& dims, const std::array<i64, 4>& strides) {
    return g.tensor(next++, t, dims, strides, true);
  };
  // Δ = Σ_d dO∘O
  const Ref do_o = virt(f32, bhtd, bhtd_strides), delta_sum = virt(f32, rows, rows_strides);
  // P = exp(causal(S·scale) − stats), Pᵀ in bf16
  const Ref s = virt(f32, scores, scores_strides), s_scaled = virt(f32, scores, scores_strides);
  const Ref s_masked = virt(f32, scores, scores_strides);
  const Ref shifted = virt(f32, scores, scores_strides), p = virt(f32, scores, scores_strides);
  const Ref p_t = virt(bf16, scores, scores_t_strides);
  // dS = P∘(dP − Δ)·scale, dSᵀ in bf16; K seen through Kᵀ
  const Ref dp = virt(f32, scores, scores_strides), dp_centered = virt(f32, scores, scores_strides);
  const Ref ds_unscaled = virt(f32, scores, scores_strides);
  const Ref ds = virt(f32, scores, scores_strides), ds_t = virt(bf16, scores, scores_t_strides);
  const Ref k = virt(bf16, bhtd, bhtd_strides);

  std::vector<Ref> ops;
  ops.push_back(g.pointwise(CUDNN_POINTWISE_MUL, d_o, o, nullptr, do_o));
  ops.push_back(g.reduction(CUDNN_REDUCE_TENSOR_ADD, do_o, delta_sum));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_MUL, delta_sum, unit, nullptr, delta));

  ops.push_back(g.matmul(q, kt, s));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_MUL, s, scale, nullptr, s_scaled));
  g.causal_mask(ops, s_scaled, fill, s_masked, scores, scores_strides, next);
  ops.push_back(g.pointwise(CUDNN_POINTWISE_SUB, s_masked, stats, nullptr, shifted));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_EXP, shifted, nullptr, nullptr, p));
  ops.push_back(g.reshape(p, p_t));
  ops.push_back(g.matmul(p_t, d_o, dv));

  ops.push_back(g.matmul(d_o, vt, dp));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_SUB, dp, delta, nullptr, dp_centered));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_MUL, dp_centered, p, nullptr, ds_unscaled));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_MUL, ds_unscaled, scale, nullptr, ds));
  ops.push_back(g.reshape(ds, ds_t));
  ops.push_back(g.matmul(ds_t, q, dk));

  ops.push_back(g.reshape(kt, k));
  ops.push_back(g.matmul(ds, k, dq_accum));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, nullptr, dq));
  return make_plan(g, ops, device);
}

// The plan for one shape, built on first use. Never destroyed: descriptors outlive every call,
// and exit needs no cuDNN teardown order.
using PlanCache = std::map<std::tuple<i64, i64, i64, i64>, std::unique_ptr<Plan>>;
Plan& plan_for(PlanCache& plans, std::unique_ptr<Plan> (*build)(i64, i64, i64, i64, Ref),
               const kernels::AttentionDims& d) {
  const auto key = std::make_tuple(d.B, d.H, d.T, d.D);
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, build(d.B, d.H, d.T, d.D, nullptr)).first;
  return *it->second;
}

PlanCache& forward_plans() {
  static auto* plans = new PlanCache;
  return *plans;
}
PlanCache& backward_plans() {
  static auto* plans = new PlanCache;
  return *plans;
}

std::string cannot_build(const char* graph, const kernels::AttentionDims& d, const Plan& p) {
  return cat("cuDNN ", cudnn_version(), " cannot build the SDPA ", graph, " graph for B ", d.B, ", H ", d.H, ", T ", d.T,
             ", D ", d.D, ": ", p.why);
}

// Runs `plan` on the backend's stream with the tensors `uids` → `ptrs` (by-value tensors: the host
// address of the value; none may be null). Returns why it failed, or "".
template <std::size_t N>
std::string execute(const char* op, const Plan& plan, const std::array<i64, N>& uids, const std::array<void*, N>& ptrs) {
  const cudnnHandle_t h = handle();
  (void)op;
  const cudnnStatus_t ss = cudnnSetStream(h, stream());
  if (ss != CUDNN_STATUS_SUCCESS) return cat("cudnnSetStream: ", cudnnGetErrorString(ss));
  void* workspace = plan.workspace > 0 ? scratch(Scratch::cudnn_workspace, std::size_t(plan.workspace)) : nullptr;
  Builder g;
  const Ref pack = g.make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "variant pack");
  g.set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, i64(N), uids.data(), "variant pack ids");
  g.set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, i64(N), ptrs.data(), "variant pack pointers");
  g.set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace, "variant pack workspace");
  g.finalize(pack, "variant pack");
  if (g.ok()) g.check(cudnnBackendExecute(h, plan.plan, pack), "cudnnBackendExecute");
  return g.why();
}

}  // namespace

OfflinePlan cudnn_sdpa_plan_offline(const std::string& device_json, bool backward, std::int64_t B, std::int64_t H,
                                    std::int64_t T, std::int64_t D) {
  OfflinePlan r;
  if (cudnnGetVersion() < 90800) {
    r.why = cat("cuDNN ", cudnn_version(), " cannot plan without a GPU (needs 9.8 or newer)");
    return r;
  }
  Desc device(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR);
  cudnnStatus_t st = device.created();
  if (st == CUDNN_STATUS_SUCCESS)
    st = cudnnBackendSetAttribute(device.get(), CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                                  i64(device_json.size()), device_json.data());
  if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(device.get());
  if (st != CUDNN_STATUS_SUCCESS) {
    r.why = cat("cuDNN refused the device description: ", cudnnGetErrorString(st));
    return r;
  }
  const std::unique_ptr<Plan> p =
      backward ? build_backward(B, H, T, D, device.get()) : build_forward(B, H, T, D, device.get());
  r.finalized = p->why.empty();
  r.offered = p->offered;
  r.failures = p->failures;
  r.why = p->why;
  return r;
}

bool cudnn_sdpa_usable(bool backward, const kernels::AttentionDims& d, std::string& why) {
  const Plan& p = backward ? plan_for(backward_plans(), build_backward, d) : plan_for(forward_plans(), build_forward, d);
  if (p.why.empty()) return true;
  why = cannot_build(backward ? "backward" : "forward", d, p);
  return false;
}

bool cudnn_sdpa_forward(const kernels::AttentionDims& d, const std::uint16_t* q, const std::uint16_t* k,
                        const std::uint16_t* v, std::uint16_t* out, float* lse, std::string& why) {
  Plan& fp = plan_for(forward_plans(), build_forward, d);
  if (!fp.why.empty()) {
    why = cannot_build("forward", d, fp);
    return false;
  }
  const char* op = "attention_forward";
  float scale = d.scale, fill = mask_fill();
  const std::array<i64, 7> uids{kQ, kK, kV, kO, kStats, kScale, kFill};
  const std::array<void*, 7> ptrs{const_cast<std::uint16_t*>(q), const_cast<std::uint16_t*>(k),
                                  const_cast<std::uint16_t*>(v), out, lse, &scale, &fill};
  if (const std::string failed = execute(op, fp, uids, ptrs); !failed.empty()) {
    // Remember the failure: later calls go straight to the tiled kernel.
    (void)cudaGetLastError();  // an error cuDNN left behind must not be blamed on the next kernel
    fp.why = failed;
    why = cat("cuDNN ", cudnn_version(), " SDPA failed to run: ", fp.why);
    return false;
  }
  finish_op(op);
  return true;
}

bool cudnn_sdpa_backward(const kernels::AttentionDims& d, const std::uint16_t* dout, const std::uint16_t* q,
                         const std::uint16_t* k, const std::uint16_t* v, const std::uint16_t* out, const float* lse,
                         std::uint16_t* dq, std::uint16_t* dk, std::uint16_t* dv, std::string& why) {
  Plan& bp = plan_for(backward_plans(), build_backward, d);
  if (!bp.why.empty()) {
    why = cannot_build("backward", d, bp);
    return false;
  }
  const char* op = "attention_backward";
  const std::size_t accum_bytes = std::size_t(d.B * d.H * d.T * d.D) * sizeof(float);
  void* dq_accum = scratch(Scratch::cudnn_dq_accum, accum_bytes);
  void* softmax_sum = scratch(Scratch::cudnn_softmax_sum, std::size_t(d.B * d.H * d.T) * sizeof(float));
  LLMTK_CUDA_CHECK(op, cudaMemsetAsync(dq_accum, 0, accum_bytes, stream()));
  float scale = d.scale, fill = mask_fill(), unit = 1.0f;
  auto in = [](const void* p) { return const_cast<void*>(p); };
  const std::array<i64, 14> uids{kQ,  kK,  kV,       kO,          kDO,    kStats, kDQ,
                                 kDK, kDV, kDQAccum, kSoftmaxSum, kScale, kFill,  kOne};
  const std::array<void*, 14> ptrs{in(q), in(k),    in(v),       in(out), in(dout), in(lse), dq,
                                   dk,    dv,       dq_accum,    softmax_sum, &scale, &fill,   &unit};
  if (const std::string failed = execute(op, bp, uids, ptrs); !failed.empty()) {
    // As in the forward: remember it and let the tiled kernel (which writes dq, dk, dv whole) run.
    (void)cudaGetLastError();
    bp.why = failed;
    why = cat("cuDNN ", cudnn_version(), " SDPA backward failed to run: ", bp.why);
    return false;
  }
  finish_op(op);
  return true;
}

}  // namespace llmtk::cuda
