// cuDNN fused SDPA through the backend (graph) C API (cudnn-frontend is not used). The forward
// graph is the flash-attention pattern cuDNN's runtime fusion engine recognises:
//   S = Q·Kᵀ (f32) → S·scale → causal mask (row index ≥ column index, else −inf)
//   → softmax with statistics: M = max_j S, E = exp(S − M), Z = Σ_j E, stats = M + log Z, P = E / Z
//   → O = P·V (bf16)
// q, out: [B, T, H, D] bf16; k, v are expanded to H heads by the caller. stats is the op's lse
// ([B, H, T] f32), so the tiled backward kernel can use it. Plans are built once per shape; a
// shape cuDNN cannot run is remembered and reported once, and the caller runs the tiled kernel.
//
// The backward pass is not expressed as a cuDNN graph yet: attention_backward runs the tiled
// kernel (attention.cu) with this forward's lse. See docs/cuda.md.
#include "cudnn_attention.hpp"

#include <cudnn.h>

#include <array>
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

// One backend descriptor, destroyed with its owner.
class Desc {
 public:
  Desc() = default;
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
  cudnnBackendDescriptor_t get() const { return d_; }
  cudnnStatus_t created() const { return status_; }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
  cudnnStatus_t status_ = CUDNN_STATUS_SUCCESS;
};

// Builds a graph; the first failing call is kept (with what it was doing) and the rest skipped,
// so a graph cuDNN cannot build ends in one readable reason instead of an exception.
class Builder {
 public:
  bool ok() const { return why_.empty(); }
  const std::string& why() const { return why_; }

  void check(cudnnStatus_t s, const char* what) {
    if (ok() && s != CUDNN_STATUS_SUCCESS) why_ = cat(what, ": ", cudnnGetErrorString(s));
  }
  Desc make(cudnnBackendDescriptorType_t type, const char* what) {
    Desc d(type);
    check(d.created(), what);
    return d;
  }
  template <class T>
  void set(const Desc& d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, i64 count, const T* values,
           const char* what) {
    if (ok()) check(cudnnBackendSetAttribute(d.get(), name, type, count, values), what);
  }
  void finalize(const Desc& d, const char* what) {
    if (ok()) check(cudnnBackendFinalize(d.get()), what);
  }

  // A tensor: 4 dims and strides, a unique id, virtual (inside the graph) or not.
  Desc tensor(i64 uid, cudnnDataType_t type, const std::array<i64, 4>& dims, const std::array<i64, 4>& strides,
              bool is_virtual, bool by_value = false, bool reordered = false) {
    Desc t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor");
    const i64 alignment = 16;
    set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor type");
    set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "tensor dims");
    set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "tensor strides");
    set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor id");
    set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor alignment");
    set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual, "tensor virtual");
    set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value, "tensor by value");
    if (reordered) {
      const cudnnBackendTensorReordering_t mode = CUDNN_TENSOR_REORDERING_F16x16;
      set(t, CUDNN_ATTR_TENSOR_REORDERING_MODE, CUDNN_TYPE_TENSOR_REORDERING_MODE, 1, &mode, "tensor reordering");
    }
    finalize(t, "tensor");
    return t;
  }

  // y = f(x [, b [, t]]) element-wise; `axis` for GEN_INDEX.
  Desc pointwise(cudnnPointwiseMode_t mode, const Desc& x, const Desc* b, const Desc* t, const Desc& y,
                 i64 axis = -1) {
    Desc pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise");
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
    set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "pointwise precision");
    if (axis >= 0) set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
    finalize(pw, "pointwise");
    Desc op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, "pointwise op");
    auto raw = [](const Desc& d) { return d.get(); };
    const cudnnBackendDescriptor_t pwd = pw.get(), xd = raw(x), yd = raw(y);
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pwd, "pointwise op");
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd, "pointwise x");
    if (b) {
      const cudnnBackendDescriptor_t bd = raw(*b);
      set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bd, "pointwise b");
    }
    if (t) {
      const cudnnBackendDescriptor_t td = raw(*t);
      set(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &td, "pointwise t");
    }
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd, "pointwise y");
    finalize(op, "pointwise op");
    return op;
  }

  Desc reduction(cudnnReduceTensorOp_t how, const Desc& x, const Desc& y) {
    Desc r = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction");
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    set(r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &how, "reduction operator");
    set(r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec, "reduction precision");
    finalize(r, "reduction");
    Desc op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction op");
    const cudnnBackendDescriptor_t rd = r.get(), xd = x.get(), yd = y.get();
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd, "reduction op");
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xd, "reduction x");
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yd, "reduction y");
    finalize(op, "reduction op");
    return op;
  }

  Desc matmul(const Desc& a, const Desc& b, const Desc& c) {
    Desc mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul");
    const cudnnDataType_t prec = CUDNN_DATA_FLOAT;
    set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &prec, "matmul precision");
    finalize(mm, "matmul");
    Desc op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul op");
    const cudnnBackendDescriptor_t md = mm.get(), ad = a.get(), bd = b.get(), cd = c.get();
    set(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &md, "matmul op");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &ad, "matmul a");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bd, "matmul b");
    set(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cd, "matmul c");
    finalize(op, "matmul op");
    return op;
  }

 private:
  std::string why_;
};

cudnnHandle_t handle() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t created = nullptr;
    const cudnnStatus_t s = cudnnCreate(&created);
    if (s != CUDNN_STATUS_SUCCESS) fail("attention", "cudnnCreate failed: ", cudnnGetErrorString(s));
    return created;
  }();
  return h;
}

// Tensor ids in the variant pack.
enum : i64 { kQ = 1, kK, kV, kO, kStats, kScale, kNegInf };

struct ForwardPlan {
  std::string why;  // empty: usable
  Desc plan;
  i64 workspace = 0;
};

// Builds the forward graph for (B, H, T, D) and picks the first engine configuration cuDNN's
// heuristics offer that finalizes into an execution plan.
std::unique_ptr<ForwardPlan> build_forward(i64 B, i64 H, i64 T, i64 D) {
  auto out = std::make_unique<ForwardPlan>();
  Builder g;
  const cudnnDataType_t bf16 = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT, boolean = CUDNN_DATA_BOOLEAN;
  // [B, H, T, D] over memory laid out [B, T, H, D]
  const std::array<i64, 4> bhtd{B, H, T, D}, bhtd_strides{T * H * D, D, H * D, 1};
  const std::array<i64, 4> bhdt{B, H, D, T}, bhdt_strides{T * H * D, D, 1, H * D};  // Kᵀ: the same memory as K
  const std::array<i64, 4> scores{B, H, T, T}, scores_strides{H * T * T, T * T, T, 1};
  const std::array<i64, 4> rows{B, H, T, 1}, rows_strides{H * T, T, 1, 1};
  const std::array<i64, 4> one{1, 1, 1, 1};

  const Desc q = g.tensor(kQ, bf16, bhtd, bhtd_strides, false);
  const Desc kt = g.tensor(kK, bf16, bhdt, bhdt_strides, false);
  const Desc v = g.tensor(kV, bf16, bhtd, bhtd_strides, false);
  const Desc o = g.tensor(kO, bf16, bhtd, bhtd_strides, false);
  const Desc stats = g.tensor(kStats, f32, rows, rows_strides, false);
  const Desc scale = g.tensor(kScale, f32, one, one, false, true);
  const Desc neg_inf = g.tensor(kNegInf, f32, one, one, false, true);
  i64 next = 100;
  auto virt = [&](cudnnDataType_t t, const std::array<i64, 4>& dims, const std::array<i64, 4>& strides,
                  bool reordered = false) { return g.tensor(next++, t, dims, strides, true, false, reordered); };
  const Desc s = virt(f32, scores, scores_strides), s_scaled = virt(f32, scores, scores_strides);
  const Desc row = virt(f32, scores, scores_strides), col = virt(f32, scores, scores_strides);
  const Desc keep = virt(boolean, scores, scores_strides), s_masked = virt(f32, scores, scores_strides);
  const Desc m = virt(f32, rows, rows_strides), shifted = virt(f32, scores, scores_strides);
  const Desc e = virt(f32, scores, scores_strides), z = virt(f32, rows, rows_strides);
  const Desc log_z = virt(f32, rows, rows_strides), p = virt(f32, scores, scores_strides, true);

  std::vector<Desc> ops;
  ops.push_back(g.matmul(q, kt, s));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_MUL, s, &scale, nullptr, s_scaled));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s_scaled, nullptr, nullptr, row, 2));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_GEN_INDEX, s_scaled, nullptr, nullptr, col, 3));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_CMP_GE, row, &col, nullptr, keep));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, s_scaled, &neg_inf, &keep, s_masked));
  ops.push_back(g.reduction(CUDNN_REDUCE_TENSOR_MAX, s_masked, m));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_SUB, s_masked, &m, nullptr, shifted));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_EXP, shifted, nullptr, nullptr, e));
  ops.push_back(g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, z));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_LOG, z, nullptr, nullptr, log_z));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_ADD, m, &log_z, nullptr, stats));
  ops.push_back(g.pointwise(CUDNN_POINTWISE_DIV, e, &z, nullptr, p));
  ops.push_back(g.matmul(p, v, o));

  const cudnnHandle_t h = handle();
  Desc graph = g.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
  std::vector<cudnnBackendDescriptor_t> raw;
  for (const Desc& d : ops) raw.push_back(d.get());
  g.set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, i64(raw.size()), raw.data(), "graph ops");
  g.set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h, "graph handle");
  g.finalize(graph, "operation graph");

  Desc heur = g.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "heuristics");
  const cudnnBackendDescriptor_t graph_raw = graph.get();
  const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
  g.set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph_raw, "heuristics graph");
  g.set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
  g.finalize(heur, "heuristics");
  i64 count = 0;
  if (g.ok())
    g.check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                     nullptr),
            "heuristics count");
  if (g.ok() && count == 0) g.check(CUDNN_STATUS_NOT_SUPPORTED, "no engine for this graph");
  std::vector<Desc> configs;
  std::vector<cudnnBackendDescriptor_t> config_raw;
  for (i64 i = 0; g.ok() && i < count; ++i) {
    configs.push_back(g.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config"));
    config_raw.push_back(configs.back().get());
  }
  i64 got = 0;
  if (g.ok())
    g.check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got,
                                     config_raw.data()),
            "heuristics results");
  std::string last;
  for (i64 i = 0; g.ok() && i < got; ++i) {
    Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    if (plan.created() != CUDNN_STATUS_SUCCESS) continue;
    const cudnnBackendDescriptor_t cfg = config_raw[std::size_t(i)];
    cudnnStatus_t st = cudnnBackendSetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
    if (st == CUDNN_STATUS_SUCCESS)
      st = cudnnBackendSetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                    &cfg);
    if (st == CUDNN_STATUS_SUCCESS) st = cudnnBackendFinalize(plan.get());
    if (st != CUDNN_STATUS_SUCCESS) {
      last = cudnnGetErrorString(st);
      continue;
    }
    i64 ws = 0, n = 0;
    if (cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws) !=
        CUDNN_STATUS_SUCCESS)
      continue;
    out->plan = std::move(plan);
    out->workspace = ws;
    return out;
  }
  out->why = g.ok() ? cat("no engine configuration finalizes (", count, " offered", last.empty() ? "" : "; last: ",
                          last, ")")
                    : g.why();
  return out;
}

}  // namespace

bool cudnn_sdpa_forward(const kernels::AttentionDims& d, const std::uint16_t* q, const std::uint16_t* k,
                        const std::uint16_t* v, std::uint16_t* out, float* lse, std::string& why) {
  // Never destroyed: descriptors outlive every call, and exit needs no cuDNN teardown order.
  static auto* plans = new std::map<std::tuple<i64, i64, i64, i64>, std::unique_ptr<ForwardPlan>>;
  const auto key = std::make_tuple(d.B, d.H, d.T, d.D);
  auto it = plans->find(key);
  if (it == plans->end()) it = plans->emplace(key, build_forward(d.B, d.H, d.T, d.D)).first;
  ForwardPlan& fp = *it->second;
  if (!fp.why.empty()) {
    why = cat("cuDNN ", cudnn_version(), " cannot build the SDPA graph for B ", d.B, ", H ", d.H, ", T ", d.T, ", D ",
              d.D, ": ", fp.why);
    return false;
  }
  const char* op = "attention_forward";
  const cudnnHandle_t h = handle();
  const cudnnStatus_t ss = cudnnSetStream(h, stream());
  if (ss != CUDNN_STATUS_SUCCESS) fail(op, "cudnnSetStream failed: ", cudnnGetErrorString(ss));
  void* workspace = fp.workspace > 0 ? scratch(Scratch::cudnn_workspace, std::size_t(fp.workspace)) : nullptr;
  float scale = d.scale, neg_inf = -INFINITY;
  // Must all be non-null: a by-value tensor's pointer is the host address of its value.
  i64 uids[] = {kQ, kK, kV, kO, kStats, kScale, kNegInf};
  void* ptrs[] = {const_cast<std::uint16_t*>(q), const_cast<std::uint16_t*>(k), const_cast<std::uint16_t*>(v), out, lse,
                  &scale, &neg_inf};
  Builder g;
  Desc pack = g.make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "variant pack");
  g.set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 7, uids, "variant pack ids");
  g.set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 7, ptrs, "variant pack pointers");
  g.set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace, "variant pack workspace");
  g.finalize(pack, "variant pack");
  if (g.ok()) g.check(cudnnBackendExecute(h, fp.plan.get(), pack.get()), "cudnnBackendExecute");
  if (!g.ok()) {
    // Remember the failure: later calls go straight to the tiled kernel.
    fp.why = g.why();
    why = cat("cuDNN ", cudnn_version(), " SDPA failed to run: ", fp.why);
    return false;
  }
  finish_op(op);
  return true;
}

}  // namespace llmtk::cuda
