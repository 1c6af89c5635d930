// The cuBLASLt calls the backend makes, on the host, for the emulated build. Descriptors keep
// what was set on them and are checked the way the library checks them (attribute sizes, leading
// dimensions, operand shapes that agree, the type combinations the backend may ask for), and
// cublasLtMatmul computes D = alpha·op(A)·op(B) + beta·C (+ bias) in column-major order, so the
// backend's row-major to column-major mapping is exercised, not assumed. To exercise the
// fallbacks, bf16 products whose leading dimensions are not multiples of 8 elements get no
// algorithm (a restriction the real library may or may not have for some shapes). The GELU
// epilogues follow the documentation and what the real library was seen to do: GELU_AUX(_BIAS)
// writes the GELU input to the aux matrix (its type D's, its leading dimension at least m and a
// multiple of 8) and D = gelu(input), DGELU writes
// D = product · gelu'(aux), both with GELU's tanh approximation. C and D are f32 or bf16 (the
// same type; D rounded to nearest even from the f32 result, the aux matrix too), and a bias has
// D's type (the documented default; the backend sets it explicitly).
#include <cublasLt.h>

#include "scheduler.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <vector>

std::size_t cuda_emu_bytes_after(const void* p);  // runtime.cpp

namespace {

struct Desc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  std::int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  std::uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  std::int32_t bias_type = -1;  // -1: D's type
  void* aux = nullptr;
  std::int64_t aux_ld = 0;
  std::int32_t aux_type = -1;  // -1: D's type
  bool gelu() const {
    return epilogue == CUBLASLT_EPILOGUE_GELU_AUX || epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS ||
           epilogue == CUBLASLT_EPILOGUE_DGELU;
  }
  bool has_bias() const { return epilogue == CUBLASLT_EPILOGUE_BIAS || epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
};
struct Layout {
  cudaDataType_t type;
  std::uint64_t rows, cols;
  std::int64_t ld;
};
struct Preference {
  std::uint64_t workspace = 0;
  std::uint32_t alignment[4] = {256, 256, 256, 256};  // A, B, C, D: what the chosen algorithm may assume
};

std::uint32_t alignment_of(const void* p) {
  std::uint32_t a = 256;
  while (a > 1 && reinterpret_cast<std::uintptr_t>(p) % a != 0) a /= 2;
  return a;
}

template <class T, class H>
T* get(H handle) {
  return reinterpret_cast<T*>(handle);
}

template <class V>
bool set(void* field, const void* buf, std::size_t size) {
  if (size != sizeof(V)) return false;
  std::memcpy(field, buf, sizeof(V));
  return true;
}

void from_float(void* p, cudaDataType_t t, std::size_t i, float v) {
  if (t == CUDA_R_32F) {
    static_cast<float*>(p)[i] = v;
    return;
  }
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x00400000u;  // NaN stays a (quiet) NaN
  else u += 0x7fffu + ((u >> 16) & 1u);                   // round to nearest even
  static_cast<std::uint16_t*>(p)[i] = static_cast<std::uint16_t>(u >> 16);
}
float to_float(const void* p, cudaDataType_t t, std::size_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  const std::uint32_t bits = std::uint32_t(static_cast<const std::uint16_t*>(p)[i]) << 16;  // bf16
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// TF32: 10 mantissa bits, round to nearest even.
float to_tf32(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
  std::memcpy(&x, &u, 4);
  return x;
}

}  // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  static int dummy;
  *handle = reinterpret_cast<cublasLtHandle_t>(&dummy);
  return CUBLAS_STATUS_SUCCESS;
}
size_t cublasLtGetVersion() { return CUBLAS_VERSION; }
const char* cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS (emulated)";
  }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = reinterpret_cast<cublasLtMatmulDesc_t>(new Desc{compute, scale});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t handle, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  Desc* d = get<Desc>(handle);
  bool ok = false;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: ok = set<std::int32_t>(&d->transa, buf, size); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: ok = set<std::int32_t>(&d->transb, buf, size); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: ok = set<std::uint32_t>(&d->epilogue, buf, size); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: ok = set<const void*>(&d->bias, buf, size); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: ok = set<std::int32_t>(&d->bias_type, buf, size); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: ok = set<void*>(&d->aux, buf, size); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: ok = set<std::int64_t>(&d->aux_ld, buf, size); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: ok = set<std::int32_t>(&d->aux_type, buf, size); break;
    default: break;
  }
  return ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (ld < std::int64_t(rows) || ld < 1) return CUBLAS_STATUS_INVALID_VALUE;
  *layout = reinterpret_cast<cublasLtMatrixLayout_t>(new Layout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(new Preference);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  Preference* p = get<Preference>(pref);
  auto alignment = [&](int i) {
    return set<std::uint32_t>(&p->alignment[i], buf, size) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
  };
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return set<std::uint64_t>(&p->workspace, buf, size) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return alignment(0);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return alignment(1);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return alignment(2);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return alignment(3);
    default: return CUBLAS_STATUS_INVALID_VALUE;
  }
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete get<Preference>(pref);
  return CUBLAS_STATUS_SUCCESS;
}

namespace {
// Shapes after the transposes: op(A) is m×k, op(B) k×n, C and D m×n.
bool shapes(const Desc& d, const Layout& a, const Layout& b, const Layout& c, std::uint64_t& m, std::uint64_t& n,
            std::uint64_t& k) {
  m = d.transa == CUBLAS_OP_N ? a.rows : a.cols;
  k = d.transa == CUBLAS_OP_N ? a.cols : a.rows;
  const std::uint64_t kb = d.transb == CUBLAS_OP_N ? b.rows : b.cols;
  n = d.transb == CUBLAS_OP_N ? b.cols : b.rows;
  return kb == k && c.rows == m && c.cols == n;
}

int gelu_epilogues = 0;  // matmuls run with a GELU epilogue (test_emulation.cpp checks they happen)
bool refuse_gelu = false;  // test_emulation.cpp: the heuristic refuses GELU epilogues (INVALID_VALUE)

// GELU's tanh approximation and its derivative, in float as a kernel computes them.
float gelu(float x) {
  const float u = 0.7978845608f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + std::tanh(u));
}
float gelu_grad(float x) {
  const float t = std::tanh(0.7978845608f * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * 0.7978845608f * (1.0f + 3.0f * 0.044715f * x * x);
}
}  // namespace

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t A,
                                              cublasLtMatrixLayout_t B, cublasLtMatrixLayout_t C,
                                              cublasLtMatrixLayout_t D, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t* results, int* returned) {
  if (requested <= 0) return CUBLAS_STATUS_INVALID_VALUE;
  const Desc& d = *get<Desc>(desc);
  const Layout &a = *get<Layout>(A), &b = *get<Layout>(B), &c = *get<Layout>(C), &dd = *get<Layout>(D);
  std::uint64_t m, n, k;
  *returned = 0;
  if (!shapes(d, a, b, c, m, n, k) || dd.rows != c.rows || dd.cols != c.cols) return CUBLAS_STATUS_INVALID_VALUE;
  // The combinations the backend asks for: A = B in f32 or bf16, C = D in f32 (or bf16 from bf16
  // inputs), f32 scale; TF32 compute only on f32 inputs; a bias epilogue with a bias of D's type.
  const bool inputs_ok = a.type == b.type && (a.type == CUDA_R_32F || a.type == CUDA_R_16BF);
  const bool output_ok = c.type == dd.type && (dd.type == CUDA_R_32F || (dd.type == CUDA_R_16BF && a.type == CUDA_R_16BF)) &&
                         d.scale == CUDA_R_32F;
  const bool compute_ok = d.compute == CUBLAS_COMPUTE_32F || a.type == CUDA_R_32F;
  if (refuse_gelu && d.gelu()) return CUBLAS_STATUS_INVALID_VALUE;
  const bool epilogue_ok = d.epilogue == CUBLASLT_EPILOGUE_DEFAULT || d.has_bias() || d.gelu();
  const bool bias_ok = !d.has_bias() || d.bias_type == -1 || d.bias_type == std::int32_t(dd.type);
  if (!inputs_ok || !output_ok || !compute_ok || !epilogue_ok || !bias_ok) return CUBLAS_STATUS_NOT_SUPPORTED;
  // The aux matrix: m×n in D's type with a leading dimension of at least m and divisible by 8
  // (the documented rule; the library answers INVALID_VALUE otherwise); a missing pointer fails
  // only in cublasLtMatmul.
  if (d.gelu() && (d.aux_ld < std::int64_t(m) || d.aux_ld % 8 != 0 || (d.aux_type != -1 && d.aux_type != dd.type)))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (a.type == CUDA_R_16BF && (a.ld % 8 != 0 || b.ld % 8 != 0)) return CUBLAS_STATUS_SUCCESS;  // no algorithm
  // Like a real algorithm, this one assumes its operands are as aligned as the preferences said,
  // and a bias epilogue's bias as aligned as the pointer on the descriptor at this time (the
  // backend sets it first); cublasLtMatmul checks the pointers it gets against that.
  if (d.has_bias() && d.bias == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  const Preference* p = get<Preference>(pref);
  for (int i = 0; i < 4; ++i) results[0].algo.data[i] = p->alignment[i];
  results[0].algo.data[4] = d.has_bias() ? alignment_of(d.bias) : 0;
  results[0].algo.data[5] = d.gelu() && d.aux ? alignment_of(d.aux) : 0;  // likewise the aux matrix
  results[0].state = CUBLAS_STATUS_SUCCESS;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void*, size_t,
                              cudaStream_t) {
  const Desc& d = *get<Desc>(desc);
  const Layout &a = *get<Layout>(Adesc), &b = *get<Layout>(Bdesc), &c = *get<Layout>(Cdesc), &dd = *get<Layout>(Ddesc);
  std::uint64_t m, n, k;
  if (!algo || !shapes(d, a, b, c, m, n, k) || dd.rows != m || dd.cols != n) return CUBLAS_STATUS_INVALID_VALUE;
  if (d.has_bias() && d.bias == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (d.gelu() && d.aux == nullptr)
    return d.epilogue == CUBLASLT_EPILOGUE_DGELU ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_NOT_SUPPORTED;
  if (d.gelu() && alignment_of(d.aux) < std::min<std::uint64_t>(algo->data[5], 16)) {
    std::fprintf(stderr, "cuda_emu cuBLASLt: the aux matrix is %u-byte aligned; its algorithm assumed %u\n",
                 alignment_of(d.aux), unsigned(algo->data[5]));
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  const void* operands[4] = {A, B, C, D};
  for (int i = 0; i < 4; ++i)
    if (alignment_of(operands[i]) < algo->data[i]) {
      std::fprintf(stderr, "cuda_emu cuBLASLt: operand %c is %u-byte aligned; its algorithm assumed %u\n", "ABCD"[i],
                   alignment_of(operands[i]), unsigned(algo->data[i]));
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  if (d.has_bias() && alignment_of(d.bias) < std::min<std::uint64_t>(algo->data[4], 16)) {
    std::fprintf(stderr, "cuda_emu cuBLASLt: the bias is %u-byte aligned; its algorithm assumed %u\n",
                 alignment_of(d.bias), unsigned(algo->data[4]));
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  // Every matrix and vector the product reads or writes lies inside its allocation.
  auto inside = [](const void* p, std::uint64_t rows, std::uint64_t cols, std::int64_t ld, cudaDataType_t t,
                   const char* what) {
    const std::uint64_t elements = cols == 0 || rows == 0 ? 0 : std::uint64_t(ld) * (cols - 1) + rows;
    const std::uint64_t bytes = elements * (t == CUDA_R_32F ? 4 : 2), have = cuda_emu_bytes_after(p);
    if (bytes <= have) return true;
    std::fprintf(stderr, "cuda_emu cuBLASLt: %s spans %llu bytes; its allocation has %llu from there\n", what,
                 static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(have));
    return false;
  };
  if (!inside(A, a.rows, a.cols, a.ld, a.type, "operand A") || !inside(B, b.rows, b.cols, b.ld, b.type, "operand B") ||
      (*static_cast<const float*>(beta) != 0.0f && !inside(C, c.rows, c.cols, c.ld, c.type, "operand C")) ||
      !inside(D, dd.rows, dd.cols, dd.ld, dd.type, "operand D") ||
      (d.has_bias() && !inside(d.bias, m, 1, std::int64_t(m), dd.type, "the bias")) ||
      (d.gelu() && !inside(d.aux, m, n, d.aux_ld, dd.type, "the aux matrix")))
    return CUBLAS_STATUS_INVALID_VALUE;
  cuda_emu::DeviceAccess access;
  if (d.gelu()) ++gelu_epilogues;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  const bool tf32 = d.compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  // op(A) as m rows of k and op(B) as n rows of k, so each output is one contiguous dot product.
  auto gather = [&](const void* p, const Layout& l, bool transposed, std::uint64_t rows, std::vector<float>& out) {
    out.resize(rows * k);
    for (std::uint64_t r = 0; r < rows; ++r)
      for (std::uint64_t x = 0; x < k; ++x) {
        const std::uint64_t at = transposed ? x + r * std::uint64_t(l.ld) : r + x * std::uint64_t(l.ld);
        const float v = to_float(p, l.type, at);
        out[r * k + x] = tf32 ? to_tf32(v) : v;
      }
  };
  std::vector<float> ra, rb;
  gather(A, a, d.transa != CUBLAS_OP_N, m, ra);  // op(A)(i, x) = A(i, x) or A(x, i)
  gather(B, b, d.transb == CUBLAS_OP_N, n, rb);  // op(B)(x, j) = B(x, j) or B(j, x)
  std::vector<float> out(m * n);
  for (std::uint64_t j = 0; j < n; ++j)
    for (std::uint64_t i = 0; i < m; ++i) {
      const float* pa = &ra[i * k];
      const float* pb = &rb[j * k];
      double acc = 0;
      for (std::uint64_t x = 0; x < k; ++x) acc += double(pa[x]) * double(pb[x]);
      double v = al * acc;
      if (be != 0.0f) v += double(be) * to_float(C, c.type, i + j * std::uint64_t(c.ld));
      if (d.has_bias()) v += to_float(d.bias, dd.type, i);
      float r = float(v);
      const std::uint64_t at_aux = i + j * std::uint64_t(d.aux_ld);
      if (d.epilogue == CUBLASLT_EPILOGUE_DGELU) {
        r *= gelu_grad(to_float(d.aux, dd.type, at_aux));
      } else if (d.gelu()) {
        from_float(d.aux, dd.type, at_aux, r);
        r = gelu(r);
      }
      out[i + j * m] = r;
    }
  for (std::uint64_t j = 0; j < n; ++j)
    for (std::uint64_t i = 0; i < m; ++i) from_float(D, dd.type, i + j * std::uint64_t(dd.ld), out[i + j * m]);
  return CUBLAS_STATUS_SUCCESS;
}

int cuda_emu_gelu_epilogues() { return gelu_epilogues; }
void cuda_emu_refuse_gelu(bool refuse) { refuse_gelu = refuse; }
