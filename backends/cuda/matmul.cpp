// matmul_forward / matmul_backward on cuBLASLt. The row-major contract maps to column-major
// cuBLASLt as D(m×n) = op(A)·op(B): a row-major [R, C] matrix is a column-major C×R one.
//   y[N, O] = x·wᵀ + b   → D = yᵀ (O×N):  A = w (I×O, transposed), B = x (I×N);  bias epilogue
//   dx[N, I] = dy·w      → D = dxᵀ (I×N): A = w (I×O),             B = dy (O×N)
//   dw[O, I] += dyᵀ·x    → D = dwᵀ (I×O): A = x (I×N),             B = dy (O×N, transposed); beta 1
// fp32: CUBLAS_COMPUTE_32F (no TF32). bf16 precision: f32 inputs are rounded to bf16 in scratch
// (bf16 ones, the working copy of the weights and bf16 activations, are read as they are) and
// multiplied with f32 accumulation, as on the CPU backend. The output has the activations' dtype:
// f32, or bf16 rounded once from the f32 accumulator in cuBLASLt's epilogue (y, dx; with it the
// bias, whose type cuBLASLt takes to be D's, is rounded to bf16 into scratch, a vector per
// product, as PyTorch's autocast does with a bias). dw is f32 and accumulates. The
// bf16 copies get a leading dimension rounded up to 8 elements, so every column starts 16-byte
// aligned whatever the shape (GPT-2's vocabulary of 50257 makes the LM head's dy rows odd):
// cuBLASLt's tensor-core kernels want that, and llm.c pads its vocabulary to 50304 for it.
// (A scratch slot holds either bf16 or f32 copies; each product converts before it runs.)
// db is a deterministic column sum (cuBLASLt's BGRADB epilogue writes; the contract adds).
// matmul_gelu_forward and gelu_matmul_backward put GELU in the product's epilogue: GELU_AUX(_BIAS)
// writes D = gelu(product + bias) and the aux matrix h = product + bias; DGELU writes
// D = product ⊙ gelu'(aux) (both the tanh approximation). When fusion is off, or cuBLASLt has no
// algorithm, they run the plain product and a GELU kernel.
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>

#include "cuda.hpp"

namespace llmtk::cuda {

namespace {

using i64 = std::int64_t;

// Largest power of two (≤ 256) dividing the address: the alignment cuBLASLt may assume.
std::uint32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

// What cuBLASLt does after the product besides an optional bias.
enum class Act : std::uint8_t { none, gelu_aux, dgelu };
struct Epilogue {
  Act act = Act::none;
  void* aux = nullptr;  // h: written by gelu_aux, read by dgelu; m×n in D's type, ld m
};

struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool algo_found = false;
};
// m, n, k, transa, transb, bf16 inputs, TF32 tensor cores (f32 inputs holding bf16 values),
// bias, accumulate, alignments of A, B, C, bias, epilogue activation, alignment of aux, leading
// dimensions of A and B, bf16 output (C, D, bias and aux in bf16)
using PlanKey = std::tuple<i64, i64, i64, bool, bool, bool, bool, bool, bool, std::uint32_t, std::uint32_t,
                           std::uint32_t, std::uint32_t, Act, std::uint32_t, i64, i64, bool>;

// The plan for `key`, or null when cuBLASLt has no algorithm for it (remembered too). `bias` is
// set on the descriptor before the heuristic runs: the preferences carry no bias alignment, and
// cuBLASLt infers what it may assume from the pointer (callers pass only 16-byte aligned ones).
const Plan* plan_for(const char* op, const PlanKey& key, const void* bias_ptr, const void* aux_ptr) {
  static std::map<PlanKey, Plan> plans;  // one per shape: a training step reuses a few dozen
  if (auto it = plans.find(key); it != plans.end()) return it->second.algo_found ? &it->second : nullptr;
  const auto [m, n, k, ta, tb, bf16, tf32, bias, accumulate, al_a, al_b, al_c, al_bias, act, al_aux, lda, ldb,
              bf16_out] = key;
  (void)accumulate;
  const cudaDataType ab = bf16 ? CUDA_R_16BF : CUDA_R_32F, cd = bf16_out ? CUDA_R_16BF : CUDA_R_32F;
  Plan p;
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescCreate(&p.desc, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
                                                  CUDA_R_32F));
  const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  cublasLtEpilogue_t epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  if (act == Act::gelu_aux) epilogue = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
  if (act == Act::dgelu) epilogue = CUBLASLT_EPILOGUE_DGELU;  // callers pass no bias with it
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  if (act != Act::none) {  // aux: in D's type (cuBLASLt's default for GELU), m×n with leading dimension m
    const std::int64_t aux_ld = m;
    LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld,
                                                          sizeof aux_ld));
    LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux_ptr,
                                                          sizeof aux_ptr));
  }
  if (bias) {
    const cudaDataType bias_type = cd;  // D's type: the bf16 bias is a rounded copy (gemm)
    LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                          sizeof bias_type));
    LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr,
                                                          sizeof bias_ptr));
  }
  // Stored shapes (before op): A is m×k or k×m, B is k×n or n×k, C is m×n (leading dim m).
  const std::uint64_t ar = ta ? std::uint64_t(k) : std::uint64_t(m), ac = ta ? std::uint64_t(m) : std::uint64_t(k);
  const std::uint64_t br = tb ? std::uint64_t(n) : std::uint64_t(k), bc = tb ? std::uint64_t(k) : std::uint64_t(n);
  LLMTK_CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&p.a, ab, ar, ac, lda));
  LLMTK_CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&p.b, ab, br, bc, ldb));
  LLMTK_CUBLAS_CHECK(op, cublasLtMatrixLayoutCreate(&p.c, cd, std::uint64_t(m), std::uint64_t(n), m));

  cublasLtMatmulPreference_t pref = nullptr;
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulPreferenceCreate(&pref));
  const std::uint64_t ws = context().workspace_bytes;
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
  (void)al_bias, (void)al_aux;  // in the key: a plan is reused only with a bias and an aux as aligned as
                                // the ones it was chosen for
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  // NOT_SUPPORTED means "no algorithm for this shape" too: cache that, so the caller falls back.
  const cublasStatus_t heuristic =
      cublasLtMatmulAlgoGetHeuristic(context().lt, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmulPreferenceDestroy(pref));
  if (heuristic == CUBLAS_STATUS_NOT_SUPPORTED) {
    found = 0;
  } else if (heuristic != CUBLAS_STATUS_SUCCESS && act != Act::none) {
    // A GELU epilogue this cuBLASLt refuses outright: the product runs without it (and a GELU
    // kernel after it), said once. Without an epilogue, a refusal is a bug here and stops the op.
    found = 0;
    static std::set<std::tuple<i64, i64, i64, Act>> said;  // once per shape, whatever the input types
    if (said.emplace(m, n, k, act).second)
      std::fprintf(stderr, "[%s] cuBLASLt refused the GELU epilogue for m = %lld, n = %lld, k = %lld (%s); using a "
                           "separate GELU kernel for this shape\n",
                   op, static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                   cublasLtGetStatusName(heuristic));
  } else {
    LLMTK_CUBLAS_CHECK(op, heuristic);
  }
  p.algo = result.algo;
  p.algo_found = found > 0 && result.state == CUBLAS_STATUS_SUCCESS;  // the result's fields are valid only then
  Plan& kept = plans.emplace(key, p).first->second;
  return kept.algo_found ? &kept : nullptr;
}

void run(const char* op, const Plan& p, const void* A, const void* B, void* D, float beta, const void* bias,
         const Epilogue& e) {
  if (bias)
    LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  if (e.act != Act::none)
    LLMTK_CUBLAS_CHECK(op, cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &e.aux,
                                                          sizeof e.aux));
  const float alpha = 1.0f;
  const Context& c = context();
  LLMTK_CUBLAS_CHECK(op, cublasLtMatmul(c.lt, p.desc, &alpha, A, p.a, B, p.b, &beta, D, p.c, D, p.c, &p.algo,
                                        c.workspace, c.workspace_bytes, c.stream));
}

// A product's input: device memory holding f32 or bf16 values, and its leading dimension (the
// distance between the starts of its rows, in elements; 0: the rows are contiguous).
struct Operand {
  const void* p;
  bool half;
  i64 ld = 0;
  bool zero_pad = false;  // bf16 with the ld − extent elements after each row zero (to_bf16_padded)
};
Operand operand(const TensorRef& t) { return {t.data, t.dtype == DType::bf16}; }

// A product's output: dense device memory (leading dimension m) in f32 or bf16.
struct Result {
  void* p;
  bool half;
};
Result result(const TensorRef& t) { return {t.data, t.dtype == DType::bf16}; }

// The leading dimension of a bf16 copy made here: rows padded to a multiple of 16 bytes.
i64 padded(i64 row) { return (row + 7) / 8 * 8; }

// D(m×n, ld m) = op(A)·op(B) + beta·D (+ bias[m]), D in f32 or bf16 (then beta is 0: a bf16
// result is written, never accumulated). With bf16 precision, or when an input is
// already bf16, the product has bf16 inputs (f32 ones are rounded into scratch first) and f32
// accumulation; where cuBLASLt has no bf16 algorithm for the shape (a leading dimension such as
// GPT-2's vocabulary of 50257 may rule them out), the inputs are rounded to bf16 values kept in
// f32 and multiplied with TF32 tensor cores, else in f32 (the same products either way); a bf16
// D then gets the f32 result rounded once.
// With an epilogue activation, returns false (having written nothing) when fusion is off
// (gelu_epilogue()), cuBLASLt has no algorithm for it, m is not a multiple of 8, or the aux (or,
// for an f32 D, the bias) is not 16-byte aligned; the caller then runs the product without it and
// the activation on its own.
bool gemm(const char* op, bool ta, bool tb, i64 m, i64 n, i64 k, Operand A, Operand B, Result D, float beta,
          const float* bias, const Epilogue& e = {}) {
  if (m == 0 || n == 0) return true;
  LLMTK_CHECK(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX, op, "cuBLASLt takes matrix sizes up to 2^31 - 1; m = ",
              m, ", n = ", n, ", k = ", k);
  LLMTK_CHECK(!D.half || beta == 0.0f, op, "a bf16 product result is written, never accumulated into");
  // A bias that is not 16-byte aligned is added after the product instead of in the epilogue
  // (cuBLASLt kernels may assume 16 bytes for it; arenas give 64, views of them may not); a bf16
  // D's bias is a copy in scratch, aligned.
  // The aux matrix's leading dimension (m) must be a multiple of 8 (cuBLASLt's documentation of
  // CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD).
  const bool fused = e.act != Act::none;
  const bool bias_unaligned = bias && !D.half && alignment_of(bias) < 16;
  if (fused && (!gelu_epilogue() || bias_unaligned || alignment_of(e.aux) < 16 || m % 8 != 0)) return false;
  if (bias_unaligned) {
    gemm(op, ta, tb, m, n, k, A, B, D, beta, nullptr);
    auto* d = static_cast<float*>(D.p);
    kernels::positions_forward(d, d, bias, n, 1, m, 0, stream());  // bias[m] added to each of n rows
    return true;
  }
  // No algorithm with a bf16 D (and no epilogue to fuse): the f32 product in scratch, rounded once.
  auto via_f32 = [&]() {
    if (fused) return false;
    auto* d32 = scratch_as<float>(Scratch::matmul_out, std::size_t(m * n));
    gemm(op, ta, tb, m, n, k, A, B, {d32, false}, 0.0f, bias);
    kernels::to_bf16(static_cast<std::uint16_t*>(D.p), d32, m * n, stream());
    return true;
  };
  // Stored A: ac rows of ar contiguous elements (column-major ar×ac); B: bc rows of br.
  const i64 ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
  if (A.ld == 0) A.ld = ar;
  if (B.ld == 0) B.ld = br;
  auto key = [&](i64 km, i64 kn, i64 kk, bool bf16, bool tf32, const void* a, const void* b, const void* d,
                 const void* bias_p, i64 lda, i64 ldb) {
    return PlanKey{km, kn, kk, ta, tb, bf16, tf32, bias != nullptr, beta != 0.0f, alignment_of(a), alignment_of(b),
                   alignment_of(d), alignment_of(bias_p), e.act, fused ? alignment_of(e.aux) : 0u, lda, ldb, D.half};
  };
  bool tf32 = false;
  if (ops::matmul_precision() == DType::bf16 || A.half || B.half || D.half) {
    // m or k not a multiple of 8 (GPT-2's vocabulary of 50257 as the LM head's m forward, its k
    // for dx) leaves cuBLASLt only slow kernels that assume 1-element alignment (on an H200 they
    // took about 5 times the time of the aligned product). They are rounded up to m' and k' here
    // where that cannot change the result:
    //   k' > k: the extra products must be 0 · 0. An operand whose k is contiguous needs zeroed
    //     padding up to k' (copies made here have it, and dy's padded copy: zero_pad); one whose
    //     k counts its columns must be a copy made here, which gets k' − k zero columns.
    //   m' > m: D's extra rows are computed into a scratch D with leading dimension m' and
    //     dropped when it is copied into D; A needs m' rows (contiguous: its padding, or a copy
    //     made here with m' − m zero columns). Only for a plain product (beta 0, no bias or
    //     epilogue), where the copy is all that is needed.
    //   n' > n where n is B's contiguous extent (the LM head's dw): B's padding gives the extra
    //     rows; D's extra columns go to a scratch D whose first n columns are then copied or
    //     (beta 1) added into D (f32: dw).
    // f32 operands are always copies made here. A bf16 operand is used as it is when it already
    // has what the padding needs (dy's padded copy), else copied like an f32 one when it is dense
    // (its leading dimension its row length: the weights' working copy, so the LM head's
    // products keep their padding with bf16 weights), else the dimension is not padded.
    auto dense = [](const Operand& x, i64 row) { return x.half && x.ld == row; };
    const bool a_has_k = ta && A.zero_pad && A.ld >= padded(k), b_has_k = !tb && B.zero_pad && B.ld >= padded(k);
    const bool a_has_m = !ta && A.ld >= padded(m), b_has_n = B.ld >= padded(n);
    const bool pad_k = k % 8 != 0 && (!A.half || a_has_k || dense(A, ar)) && (!B.half || b_has_k || dense(B, br));
    const bool pad_m = m % 8 != 0 && beta == 0.0f && !bias && !fused && (!A.half || a_has_m || dense(A, ar));
    const bool pad_n = n % 8 != 0 && tb && !D.half && (beta == 0.0f || beta == 1.0f) && !bias && !fused &&
                       (!B.half || b_has_n || dense(B, br));
    const bool copy_a = !A.half || (pad_k && !a_has_k) || (pad_m && !a_has_m);
    const bool copy_b = !B.half || (pad_k && !b_has_k) || (pad_n && !b_has_n);
    const i64 mp = pad_m ? padded(m) : m, np = pad_n ? padded(n) : n, kp = pad_k ? padded(k) : k;
    const i64 acp = ta ? mp : kp, bcp = tb ? kp : n;  // columns of the copies, with the zero ones
    const i64 lda = copy_a ? padded(ar) : A.ld, ldb = copy_b ? padded(br) : B.ld;
    const auto* a16 = copy_a ? scratch_as<std::uint16_t>(Scratch::matmul_a, std::size_t(acp * lda))
                             : static_cast<const std::uint16_t*>(A.p);
    const auto* b16 = copy_b ? scratch_as<std::uint16_t>(Scratch::matmul_b, std::size_t(bcp * ldb))
                             : static_cast<const std::uint16_t*>(B.p);
    const std::size_t d_size = D.half ? 2 : 4;
    void* d = pad_m || pad_n ? scratch(Scratch::matmul_d, std::size_t(mp * np) * d_size) : D.p;
    const void* bias_p = bias;
    if (bias && D.half) bias_p = scratch_as<std::uint16_t>(Scratch::matmul_bias, std::size_t(m));
    if (const Plan* p = plan_for(op, key(mp, np, kp, true, false, a16, b16, d, bias_p, lda, ldb), bias_p, e.aux)) {
      // x's `cols` stored rows of `rows` elements into x16 with leading dimension ld (the rest of
      // each row zero), then zero columns up to cols_padded.
      auto convert = [](const Operand& x, const std::uint16_t* x16, i64 cols, i64 rows, i64 ld, i64 cols_padded) {
        auto* out = const_cast<std::uint16_t*>(x16);
        if (x.half) kernels::to_bf16_padded(out, static_cast<const std::uint16_t*>(x.p), cols, rows, ld, stream());
        else kernels::to_bf16_padded(out, static_cast<const float*>(x.p), cols, rows, ld, stream());
        if (cols_padded > cols)
          LLMTK_CUDA_CHECK("matmul", cudaMemsetAsync(out + cols * ld, 0, std::size_t((cols_padded - cols) * ld) * 2,
                                                     stream()));
      };
      if (copy_a) convert(A, a16, ac, ar, lda, acp);
      if (copy_b) convert(B, b16, bc, br, ldb, bcp);
      if (bias_p != bias) kernels::to_bf16(static_cast<std::uint16_t*>(const_cast<void*>(bias_p)), bias, m, stream());
      run(op, *p, a16, b16, d, d != D.p ? 0.0f : beta, bias_p, e);
      if (pad_m && D.half)  // beta is 0 here
        kernels::copy_rows(static_cast<std::uint16_t*>(D.p), m, static_cast<const std::uint16_t*>(d), mp, n, m, stream());
      else if (pad_m)
        kernels::copy_rows(static_cast<float*>(D.p), m, static_cast<const float*>(d), mp, n, m, stream());
      else if (pad_n && beta == 0.0f)
        LLMTK_CUDA_CHECK(op, cudaMemcpyAsync(D.p, d, std::size_t(m * n) * sizeof(float), cudaMemcpyDeviceToDevice,
                                             stream()));
      else if (pad_n)
        kernels::add(static_cast<float*>(D.p), static_cast<const float*>(D.p), static_cast<const float*>(d), m * n,
                     stream());
      return true;
    }
    if (D.half) return via_f32();
    // The f32 copies keep each operand's layout: a bf16 operand's leading dimension, or dense.
    auto* a32 = scratch_as<float>(Scratch::matmul_a, std::size_t(ac * A.ld));
    auto* b32 = scratch_as<float>(Scratch::matmul_b, std::size_t(bc * B.ld));
    if (A.half) kernels::from_bf16(a32, static_cast<const std::uint16_t*>(A.p), ac * A.ld, stream());
    else kernels::round_to_bf16(a32, static_cast<const float*>(A.p), ac * A.ld, stream());
    if (B.half) kernels::from_bf16(b32, static_cast<const std::uint16_t*>(B.p), bc * B.ld, stream());
    else kernels::round_to_bf16(b32, static_cast<const float*>(B.p), bc * B.ld, stream());
    A = {a32, false, A.ld}, B = {b32, false, B.ld};
    // bf16 values are exact in TF32 (10 mantissa bits against 7), so TF32 tensor cores give
    // the bf16 product with f32 accumulation; plain f32 if there is no TF32 algorithm either.
    tf32 = plan_for(op, key(m, n, k, false, true, A.p, B.p, D.p, bias, A.ld, B.ld), bias, e.aux) != nullptr;
  }
  const Plan* p = plan_for(op, key(m, n, k, false, tf32, A.p, B.p, D.p, bias, A.ld, B.ld), bias, e.aux);
  if (!p && fused) return false;
  LLMTK_CHECK(p != nullptr, op, "cuBLASLt has no f32 algorithm for m = ", m, ", n = ", n, ", k = ", k);
  run(op, *p, A.p, B.p, D.p, beta, bias, e);
  return true;
}

// y = x·wᵀ + b, with an epilogue activation when e asks for one; false when that could not be
// fused (nothing written then).
bool forward(const char* op, TensorRef y, TensorRef x, TensorRef w, TensorRef b, const Epilogue& e) {
  const i64 N = x.rows(), I = x.size(-1), O = w.size(0);
  if (I == 0) {  // an empty sum: y = b (or 0)
    if (e.act != Act::none) return false;
    LLMTK_CUDA_CHECK(op, cudaMemsetAsync(y.data, 0, y.bytes(), stream()));  // not 0·y: y may hold NaN
    if (b)  // b added to each of N rows
      by_storage(y.dtype, [&]<class E>(E) { kernels::positions_forward(data<E>(y), data<E>(y), b.f32(), N, 1, O, 0, stream()); });
    return true;
  }
  return gemm(op, true, false, O, N, I, operand(w), operand(x), result(y), 0.0f, b ? b.f32() : nullptr, e);
}

// matmul_backward; with e.act == dgelu, dx = (dy·w) ⊙ gelu'(e.aux) in the dx product's
// epilogue, or in a GELU kernel after it when cuBLASLt cannot fuse it.
void backward(const char* op, TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x, TensorRef w,
              const Epilogue& e) {
  const i64 N = x.rows(), I = x.size(-1), O = w.size(0);
  // dy as both products read it. With bf16 precision and both products, an f32 dy is rounded once
  // for both (for the LM head it is the largest tensor of the step); a bf16 dy is read as it is,
  // or copied with its rows padded to a multiple of 8 elements when they are not (the LM head's
  // 50257: cuBLASLt's fast bf16 kernels want 16-byte aligned columns).
  Operand g = operand(dy);
  const bool both = dx && dw && N > 0 && O > 0;
  if (N > 0 && O > 0 && (g.half ? O % 8 != 0 && (dx || dw) : ops::matmul_precision() == DType::bf16 && both)) {
    const i64 ld = padded(O);
    auto* dy16 = scratch_as<std::uint16_t>(Scratch::matmul_dy, std::size_t(N * ld));
    if (g.half) kernels::to_bf16_padded(dy16, static_cast<const std::uint16_t*>(dy.data), N, O, ld, stream());
    else kernels::to_bf16_padded(dy16, dy.f32(), N, O, ld, stream());
    g = {dy16, true, ld, true};
  }
  if (dx) {
    bool done = false;
    if (O > 0 && e.act == Act::dgelu) done = gemm(op, false, false, I, N, O, operand(w), g, result(dx), 0.0f, nullptr, e);
    if (!done && O > 0 && e.act == Act::dgelu && dx.dtype == DType::bf16) {
      // Unfused with a bf16 dx: the f32 product, then GELU's derivative, rounded once.
      auto* p = scratch_as<float>(Scratch::gelu_product, std::size_t(N * I));
      gemm(op, false, false, I, N, O, operand(w), g, {p, false}, 0.0f, nullptr);
      kernels::gelu_backward_from_product(static_cast<std::uint16_t*>(dx.data), p,
                                          static_cast<const std::uint16_t*>(e.aux), N * I, stream());
    } else if (!done) {
      if (O == 0) LLMTK_CUDA_CHECK(op, cudaMemsetAsync(dx.data, 0, dx.bytes(), stream()));
      else gemm(op, false, false, I, N, O, operand(w), g, result(dx), 0.0f, nullptr);
      if (e.act == Act::dgelu)
        kernels::unary_backward(kernels::Unary::gelu, dx.f32(), dx.f32(), static_cast<const float*>(e.aux), N * I,
                                stream());
    }
  }
  if (dw && N > 0) gemm(op, false, true, I, O, N, operand(x), g, result(dw), 1.0f, nullptr);
  if (db && N > 0) {
    auto* partial = scratch_as<float>(Scratch::partials, std::size_t(kernels::column_sum_scratch(N, O)));
    by_storage(dy.dtype, [&]<class E>(E) { kernels::column_sum(db.f32(), data<E>(dy), N, O, partial, stream()); });
  }
}

}  // namespace

void matmul_forward(TensorRef y, TensorRef x, TensorRef w, TensorRef b) {
  forward("matmul_forward", y, x, w, b, {});
  finish_op("matmul_forward");
}

void matmul_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x, TensorRef w) {
  backward("matmul_backward", dx, dw, db, dy, x, w, {});
  finish_op("matmul_backward");
}

void matmul_gelu_forward(TensorRef y, TensorRef h, TensorRef x, TensorRef w, TensorRef b) {
  const char* op = "matmul_gelu_forward";
  if (!forward(op, y, x, w, b, {Act::gelu_aux, h.data})) {  // unfused: the product, then GELU
    if (y.dtype == DType::bf16) {  // the f32 product, then h and gelu(h) from it, each rounded once
      TensorRef p = h;
      p.dtype = DType::f32;
      p.data = scratch_as<float>(Scratch::gelu_product, std::size_t(h.numel()));
      forward(op, p, x, w, b, {});
      kernels::gelu_from_product(static_cast<std::uint16_t*>(y.data), static_cast<std::uint16_t*>(h.data), p.f32(),
                                 y.numel(), stream());
    } else {
      forward(op, h, x, w, b, {});
      kernels::unary_forward(kernels::Unary::gelu, y.f32(), h.f32(), y.numel(), stream());
    }
  }
  finish_op(op);
}

void gelu_matmul_backward(TensorRef dh, TensorRef dw, TensorRef db, TensorRef dy, TensorRef a, TensorRef w,
                          TensorRef h) {
  const char* op = "gelu_matmul_backward";
  backward(op, dh, dw, db, dy, a, w, {Act::dgelu, h.data});
  finish_op(op);
}

}  // namespace llmtk::cuda
