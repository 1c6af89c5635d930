// cuDNN's backend (graph) API for the emulated build, as an interpreter: descriptors store the
// attributes set on them; finalizing an operation graph checks that every operation's tensors
// agree (matmul shapes, broadcasts, reductions, reshapes of equal size); the heuristics offer one
// engine; executing runs the graph's operations in order on the host with the documented meaning
// of each: pointwise modes (with broadcasting over dimensions of size 1), ADD/MAX reductions over
// dimensions of size 1 in the output, batched matmuls, and reshapes that view the input's memory
// through the output's strides. Virtual tensors live in host buffers laid out by their strides,
// rounded to their data type (bf16 stays bf16). So the backend's SDPA graphs run here and are
// checked against the reference backend for what they compute; whether the real cuDNN accepts
// them is a question only a GPU answers. Anything the interpreter does not know fails loudly.
#include <cudnn.h>

#include "scheduler.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using i64 = std::int64_t;

struct Attribute {
  cudnnBackendAttributeType_t type;
  i64 count;
  std::vector<unsigned char> bytes;
};

struct Descriptor {
  cudnnBackendDescriptorType_t type;
  std::map<int, Attribute> attrs;
  Descriptor* graph = nullptr;  // engine configs and plans: the operation graph they run
  bool finalized = false;

  template <class T>
  T get(cudnnBackendAttributeName_t name, i64 i = 0, T fallback = T{}) const {
    auto it = attrs.find(int(name));
    if (it == attrs.end() || i >= it->second.count) return fallback;
    T v;
    std::memcpy(&v, it->second.bytes.data() + std::size_t(i) * sizeof(T), sizeof(T));
    return v;
  }
  i64 count(cudnnBackendAttributeName_t name) const {
    auto it = attrs.find(int(name));
    return it == attrs.end() ? 0 : it->second.count;
  }
  Descriptor* desc(cudnnBackendAttributeName_t name, i64 i = 0) const {
    return static_cast<Descriptor*>(get<void*>(name, i, nullptr));
  }
};

std::size_t size_of(cudnnBackendAttributeType_t t) {
  switch (t) {
    case CUDNN_TYPE_HANDLE:
    case CUDNN_TYPE_VOID_PTR:
    case CUDNN_TYPE_BACKEND_DESCRIPTOR:
    case CUDNN_TYPE_INT64:
    case CUDNN_TYPE_DOUBLE: return 8;
    case CUDNN_TYPE_BOOLEAN:
    case CUDNN_TYPE_CHAR: return 1;
    case CUDNN_TYPE_DATA_TYPE:
    case CUDNN_TYPE_FLOAT:
    case CUDNN_TYPE_HEUR_MODE:
    case CUDNN_TYPE_POINTWISE_MODE:
    case CUDNN_TYPE_REDUCTION_OPERATOR_TYPE:
    case CUDNN_TYPE_INT32: return 4;
    default: return 0;
  }
}

cudnnStatus_t complain(const std::string& what) {
  std::fprintf(stderr, "cuda_emu cuDNN: %s\n", what.c_str());
  return CUDNN_STATUS_BAD_PARAM;
}

// ---- tensors ---------------------------------------------------------------------------------

struct Tensor {
  const Descriptor* d;
  cudnnDataType_t type;
  i64 dims[4], strides[4], uid;
  bool is_virtual, by_value;
  i64 span() const {  // elements from the first to one past the last
    i64 s = 1;
    for (int a = 0; a < 4; ++a) s += (dims[a] - 1) * strides[a];
    return s;
  }
  i64 numel() const { return dims[0] * dims[1] * dims[2] * dims[3]; }
};

bool tensor_of(const Descriptor* d, Tensor& t) {
  if (!d || d->type != CUDNN_BACKEND_TENSOR_DESCRIPTOR || d->count(CUDNN_ATTR_TENSOR_DIMENSIONS) != 4 ||
      d->count(CUDNN_ATTR_TENSOR_STRIDES) != 4)
    return false;
  t.d = d;
  t.type = d->get<cudnnDataType_t>(CUDNN_ATTR_TENSOR_DATA_TYPE);
  for (int a = 0; a < 4; ++a)
    t.dims[a] = d->get<i64>(CUDNN_ATTR_TENSOR_DIMENSIONS, a), t.strides[a] = d->get<i64>(CUDNN_ATTR_TENSOR_STRIDES, a);
  t.uid = d->get<i64>(CUDNN_ATTR_TENSOR_UNIQUE_ID);
  t.is_virtual = d->get<bool>(CUDNN_ATTR_TENSOR_IS_VIRTUAL);
  t.by_value = d->get<bool>(CUDNN_ATTR_TENSOR_IS_BY_VALUE);
  return true;
}

float bf16_round(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

// The values of one execution: non-virtual tensors at the variant pack's pointers, virtual ones in
// host buffers indexed like memory (offset = Σ index · stride).
struct Values {
  std::map<i64, void*> pointers;
  std::map<const Descriptor*, std::vector<float>> buffers;

  float read(const Tensor& t, i64 off) {
    if (t.is_virtual) return buffers.at(t.d)[std::size_t(off)];
    void* p = pointers.at(t.uid);
    if (t.by_value) return *static_cast<const float*>(p);
    if (t.type == CUDNN_DATA_FLOAT) return static_cast<const float*>(p)[off];
    if (t.type == CUDNN_DATA_BFLOAT16) {
      const std::uint32_t bits = std::uint32_t(static_cast<const std::uint16_t*>(p)[off]) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    std::abort();  // checked at finalize
  }
  void write(const Tensor& t, i64 off, float v) {
    if (t.type == CUDNN_DATA_BFLOAT16) v = bf16_round(v);
    if (t.type == CUDNN_DATA_BOOLEAN) v = v != 0.0f ? 1.0f : 0.0f;
    if (t.type == CUDNN_DATA_INT32) v = std::nearbyint(v);
    if (t.is_virtual) {
      auto& b = buffers[t.d];
      if (b.empty()) b.assign(std::size_t(t.span()), 0.0f);
      b[std::size_t(off)] = v;
      return;
    }
    void* p = pointers.at(t.uid);
    if (t.type == CUDNN_DATA_FLOAT) {
      static_cast<float*>(p)[off] = v;
    } else {
      std::uint32_t bits;
      std::memcpy(&bits, &v, 4);
      static_cast<std::uint16_t*>(p)[off] = std::uint16_t(bits >> 16);
    }
  }
};

i64 offset(const Tensor& t, const i64 idx[4]) {
  i64 off = 0;
  for (int a = 0; a < 4; ++a) off += (t.dims[a] == 1 ? 0 : idx[a]) * t.strides[a];  // size-1 dims broadcast
  return off;
}

template <class F>
void for_each_index(const i64 dims[4], F f) {
  i64 idx[4];
  for (idx[0] = 0; idx[0] < dims[0]; ++idx[0])
    for (idx[1] = 0; idx[1] < dims[1]; ++idx[1])
      for (idx[2] = 0; idx[2] < dims[2]; ++idx[2])
        for (idx[3] = 0; idx[3] < dims[3]; ++idx[3]) f(idx);
}

// ---- operations ------------------------------------------------------------------------------

struct Op {
  cudnnBackendDescriptorType_t kind;
  Tensor x{}, b{}, t{}, y{};  // pointwise: x, b?, t?, y; reduction/reshape: x, y; matmul: x = A, b = B, y = C
  bool has_b = false, has_t = false;
  int mode = 0;  // pointwise mode or reduction operator
  i64 axis = 0;
};

bool broadcasts_to(const Tensor& in, const Tensor& out) {
  for (int a = 0; a < 4; ++a)
    if (in.dims[a] != out.dims[a] && in.dims[a] != 1) return false;
  return true;
}

cudnnStatus_t parse(const Descriptor* d, Op& op) {
  op.kind = d->type;
  switch (d->type) {
    case CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR: {
      const Descriptor* pw = d->desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR);
      if (!pw) return complain("pointwise operation without a pointwise descriptor");
      op.mode = pw->get<int>(CUDNN_ATTR_POINTWISE_MODE);
      op.axis = pw->get<i64>(CUDNN_ATTR_POINTWISE_AXIS, 0, -1);
      if (!tensor_of(d->desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC), op.x) ||
          !tensor_of(d->desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC), op.y))
        return complain("pointwise operation without x or y");
      op.has_b = tensor_of(d->desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC), op.b);
      op.has_t = tensor_of(d->desc(CUDNN_ATTR_OPERATION_POINTWISE_TDESC), op.t);
      const bool binary = op.mode == CUDNN_POINTWISE_ADD || op.mode == CUDNN_POINTWISE_SUB ||
                          op.mode == CUDNN_POINTWISE_MUL || op.mode == CUDNN_POINTWISE_DIV ||
                          op.mode == CUDNN_POINTWISE_CMP_GE;
      const bool unary = op.mode == CUDNN_POINTWISE_EXP || op.mode == CUDNN_POINTWISE_LOG ||
                         op.mode == CUDNN_POINTWISE_IDENTITY || op.mode == CUDNN_POINTWISE_GEN_INDEX;
      if (op.mode == CUDNN_POINTWISE_BINARY_SELECT) {
        if (!op.has_b || !op.has_t) return complain("BINARY_SELECT needs b and t");
      } else if (binary) {
        if (!op.has_b || op.has_t) return complain("a binary pointwise mode needs b (and no t)");
      } else if (unary) {
        if (op.has_b || op.has_t) return complain("a unary pointwise mode takes only x");
      } else {
        return complain("pointwise mode " + std::to_string(op.mode) + " is not emulated");
      }
      if (op.mode == CUDNN_POINTWISE_GEN_INDEX && (op.axis < 0 || op.axis > 3)) return complain("GEN_INDEX axis");
      if (!broadcasts_to(op.x, op.y) || (op.has_b && !broadcasts_to(op.b, op.y)) ||
          (op.has_t && !broadcasts_to(op.t, op.y)))
        return complain("pointwise operands do not broadcast to y (mode " + std::to_string(op.mode) + ")");
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR: {
      const Descriptor* r = d->desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC);
      if (!r || !tensor_of(d->desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC), op.x) ||
          !tensor_of(d->desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC), op.y))
        return complain("reduction without descriptor, x or y");
      op.mode = r->get<int>(CUDNN_ATTR_REDUCTION_OPERATOR);
      if (op.mode != CUDNN_REDUCE_TENSOR_ADD && op.mode != CUDNN_REDUCE_TENSOR_MAX)
        return complain("reduction operator " + std::to_string(op.mode) + " is not emulated");
      if (!broadcasts_to(op.y, op.x)) return complain("reduction output is not x with some dimensions reduced to 1");
      return CUDNN_STATUS_SUCCESS;
    }
    case CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR: {
      if (!d->desc(CUDNN_ATTR_OPERATION_MATMUL_DESC) || !tensor_of(d->desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC), op.x) ||
          !tensor_of(d->desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC), op.b) ||
          !tensor_of(d->desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC), op.y))
        return complain("matmul without descriptor, a, b or c");
      const bool ok = op.x.dims[0] == op.y.dims[0] && op.x.dims[1] == op.y.dims[1] && op.b.dims[0] == op.y.dims[0] &&
                      op.b.dims[1] == op.y.dims[1] && op.x.dims[2] == op.y.dims[2] && op.b.dims[3] == op.y.dims[3] &&
                      op.x.dims[3] == op.b.dims[2];
      return ok ? CUDNN_STATUS_SUCCESS : complain("matmul shapes do not agree");
    }
    case CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR:
      if (!tensor_of(d->desc(CUDNN_ATTR_OPERATION_RESHAPE_XDESC), op.x) ||
          !tensor_of(d->desc(CUDNN_ATTR_OPERATION_RESHAPE_YDESC), op.y))
        return complain("reshape without x or y");
      if (op.x.numel() != op.y.numel() || op.y.span() > op.x.span())
        return complain("reshape: y does not view the same elements as x");
      return CUDNN_STATUS_SUCCESS;
    default: return complain("operation type " + std::to_string(int(d->type)) + " is not emulated");
  }
}

bool readable(const Tensor& t, const std::map<const Descriptor*, bool>& produced) {
  return !t.is_virtual || produced.count(t.d);
}

cudnnStatus_t check_graph(const Descriptor& g) {
  std::map<const Descriptor*, bool> produced;
  for (i64 i = 0; i < g.count(CUDNN_ATTR_OPERATIONGRAPH_OPS); ++i) {
    Op op;
    if (const cudnnStatus_t s = parse(g.desc(CUDNN_ATTR_OPERATIONGRAPH_OPS, i), op); s != CUDNN_STATUS_SUCCESS) return s;
    if (op.mode != CUDNN_POINTWISE_GEN_INDEX || op.kind != CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR)
      if (!readable(op.x, produced)) return complain("an operation reads a virtual tensor before it is written");
    if ((op.has_b || op.kind == CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR) && !readable(op.b, produced))
      return complain("an operation reads a virtual tensor before it is written");
    if (op.has_t && !readable(op.t, produced)) return complain("an operation reads a virtual tensor before it is written");
    for (const Tensor* t : {&op.x, &op.b, &op.t, &op.y})
      if (t->d && !t->is_virtual && !t->by_value && t->type != CUDNN_DATA_FLOAT && t->type != CUDNN_DATA_BFLOAT16)
        return complain("a non-virtual tensor that is neither f32 nor bf16");
    produced[op.y.d] = true;
  }
  return CUDNN_STATUS_SUCCESS;
}

void run(const Op& op, Values& v) {
  switch (op.kind) {
    case CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR:
      for_each_index(op.y.dims, [&](const i64* idx) {
        float r = 0;
        if (op.mode == CUDNN_POINTWISE_GEN_INDEX) {
          r = float(idx[op.axis]);
        } else {
          const float x = v.read(op.x, offset(op.x, idx));
          const float b = op.has_b ? v.read(op.b, offset(op.b, idx)) : 0.0f;
          switch (op.mode) {
            case CUDNN_POINTWISE_ADD: r = x + b; break;
            case CUDNN_POINTWISE_SUB: r = x - b; break;
            case CUDNN_POINTWISE_MUL: r = x * b; break;
            case CUDNN_POINTWISE_DIV: r = x / b; break;
            case CUDNN_POINTWISE_CMP_GE: r = x >= b ? 1.0f : 0.0f; break;
            case CUDNN_POINTWISE_EXP: r = std::exp(x); break;
            case CUDNN_POINTWISE_LOG: r = std::log(x); break;
            case CUDNN_POINTWISE_IDENTITY: r = x; break;
            case CUDNN_POINTWISE_BINARY_SELECT: r = v.read(op.t, offset(op.t, idx)) != 0.0f ? x : b; break;
            default: std::abort();
          }
        }
        v.write(op.y, offset(op.y, idx), r);
      });
      break;
    case CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR: {
      const bool add = op.mode == CUDNN_REDUCE_TENSOR_ADD;
      std::vector<double> acc(std::size_t(op.y.span()), add ? 0.0 : -INFINITY);
      for_each_index(op.x.dims, [&](const i64* idx) {
        double& a = acc[std::size_t(offset(op.y, idx))];
        const double x = v.read(op.x, offset(op.x, idx));
        a = add ? a + x : std::max(a, x);
      });
      for_each_index(op.y.dims, [&](const i64* idx) {
        const i64 off = offset(op.y, idx);
        v.write(op.y, off, float(acc[std::size_t(off)]));
      });
      break;
    }
    case CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR:
      for_each_index(op.y.dims, [&](const i64* idx) {
        // A non-virtual f32 matmul output (the backward's dQ_accum) is accumulated into, as the
        // engine does; cudnn-frontend zeroes it before every execution, and so must the caller.
        const bool accumulates = !op.y.is_virtual && op.y.type == CUDNN_DATA_FLOAT;
        double acc = accumulates ? double(v.read(op.y, offset(op.y, idx))) : 0.0;
        for (i64 k = 0; k < op.x.dims[3]; ++k) {
          const i64 ia[4] = {idx[0], idx[1], idx[2], k}, ib[4] = {idx[0], idx[1], k, idx[3]};
          acc += double(v.read(op.x, offset(op.x, ia))) * double(v.read(op.b, offset(op.b, ib)));
        }
        v.write(op.y, offset(op.y, idx), float(acc));
      });
      break;
    case CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR:
      // y views x's memory through y's strides.
      for_each_index(op.y.dims, [&](const i64* idx) {
        const i64 off = offset(op.y, idx);
        v.write(op.y, off, v.read(op.x, off));
      });
      break;
    default: std::abort();
  }
}

int g_handle;
int executions = 0;

}  // namespace

// How many graphs cudnnBackendExecute has run (tests/cuda_emu/test_emulation.cpp).
int cuda_emu_cudnn_executions() { return executions; }

// A fixed version, whatever headers the build has: the backend gates some shapes and values on
// the version (before 9.15.1 the backward needs T a multiple of 128), and the tests must not
// change with the toolkit installed.
size_t cudnnGetVersion() { return 91900; }
const char* cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM (cuda_emu; the reason is on stderr)";
    default: return "CUDNN_STATUS_NOT_SUPPORTED (cuda_emu)";
  }
}
cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  *handle = reinterpret_cast<cudnnHandle_t>(&g_handle);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t, cudaStream_t) { return CUDNN_STATUS_SUCCESS; }

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t* d) {
  *d = reinterpret_cast<cudnnBackendDescriptor_t>(new Descriptor{type, {}});
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t d) {
  delete reinterpret_cast<Descriptor*>(d);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count, const void* values) {
  auto* desc = reinterpret_cast<Descriptor*>(d);
  const std::size_t size = size_of(type);
  if (!desc || desc->finalized || size == 0 || count < 0) return complain("bad SetAttribute " + std::to_string(name));
  Attribute a{type, count, std::vector<unsigned char>(size * std::size_t(count))};
  std::memcpy(a.bytes.data(), values, a.bytes.size());
  desc->attrs[int(name)] = std::move(a);
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const d, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t, int64_t requested, int64_t* count, void* values) {
  auto* desc = reinterpret_cast<Descriptor*>(d);
  if (name == CUDNN_ATTR_ENGINEHEUR_RESULTS) {  // one engine
    *count = 1;
    if (requested >= 1 && values) reinterpret_cast<Descriptor**>(values)[0]->graph = desc->graph;
    return CUDNN_STATUS_SUCCESS;
  }
  if (name == CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE) {
    *count = 1;
    *static_cast<i64*>(values) = 0;
    return CUDNN_STATUS_SUCCESS;
  }
  return complain("GetAttribute " + std::to_string(name) + " is not emulated");
}
cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t d) {
  auto* desc = reinterpret_cast<Descriptor*>(d);
  switch (desc->type) {
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR:
      if (const cudnnStatus_t s = check_graph(*desc); s != CUDNN_STATUS_SUCCESS) return s;
      break;
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR:
      desc->graph = desc->desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH);
      if (!desc->graph || !desc->graph->finalized) return complain("heuristics without a finalized graph");
      break;
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR: {
      const Descriptor* cfg = desc->desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG);
      if (!cfg || !cfg->graph) return complain("execution plan without an engine configuration from the heuristics");
      desc->graph = cfg->graph;
      break;
    }
    default: break;
  }
  desc->finalized = true;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnBackendExecute(cudnnHandle_t, cudnnBackendDescriptor_t plan, cudnnBackendDescriptor_t pack) {
  const auto* p = reinterpret_cast<const Descriptor*>(plan);
  const auto* vp = reinterpret_cast<const Descriptor*>(pack);
  if (!p || !p->finalized || !p->graph || !vp || !vp->finalized) return complain("execute without a finalized plan");
  cuda_emu::DeviceAccess access;
  Values v;
  for (i64 i = 0; i < vp->count(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS); ++i)
    v.pointers[vp->get<i64>(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, i)] = vp->get<void*>(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, i);
  const Descriptor& g = *p->graph;
  std::vector<Op> ops(std::size_t(g.count(CUDNN_ATTR_OPERATIONGRAPH_OPS)));
  for (std::size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    parse(g.desc(CUDNN_ATTR_OPERATIONGRAPH_OPS, i64(i)), op);
    for (const Tensor* t : {&op.x, &op.b, &op.t, &op.y})
      if (t->d && !t->is_virtual && !v.pointers.count(t->uid))
        return complain("the variant pack has no pointer for tensor " + std::to_string(t->uid));
    if (op.kind == CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR && !op.y.is_virtual && op.y.type == CUDNN_DATA_FLOAT) {
      bool zero = true;
      for_each_index(op.y.dims, [&](const i64* idx) { zero = zero && v.read(op.y, offset(op.y, idx)) == 0.0f; });
      if (!zero)
        return complain("matmul output tensor " + std::to_string(op.y.uid) +
                        " (f32, accumulated into) is not zero at execution: zero it before every run");
    }
  }
  for (const Op& op : ops) run(op, v);
  ++executions;
  return CUDNN_STATUS_SUCCESS;
}
