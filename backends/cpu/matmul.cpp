// matmul_forward / matmul_backward on oneDNN. Three products, each a oneDNN matmul primitive
// cached by its shape:
//   forward   y[N, O]  = x[N, I] · w[O, I]ᵀ (+ b)   weights read K-major ("ba" layout)
//   dx        dx[N, I] = dy[N, O] · w[O, I]
//   dw        dw[O, I] += dy[N, O]ᵀ · x[N, I]       a sum post-op accumulates into dw
// In f32 the two backward products run on oneDNN's sgemm instead (see gemm()).
// db is a column sum of dy, an OpenMP loop. Products with a bf16 operand (bf16 activations, the
// bf16 working copy of the weights) or under ops::set_matmul_precision(bf16) take bf16 inputs and
// accumulate in f32; y and dx are stored in their own dtype (bf16 activations: rounded once by
// oneDNN), dw in f32.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>

#include "bf16.hpp"
#include "cpu.hpp"

namespace llmtk::cpu {

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  // key: (M, K, N, a is transposed, b is transposed, bias, accumulate, bf16 inputs, bf16 output)
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, bool, bool, bool, bool, bool, bool>, dnnl::matmul> cache;
  std::mutex mutex;
  // Converted copies of the inputs (grown, reused). Not guarded by the mutex: ops run one at a
  // time (each op is parallel inside); concurrent matmul calls would need per-call buffers.
  std::vector<std::uint16_t> a16, b16, dy16;
  std::vector<float> a32, b32, c32, t32;
};
Context& context() {
  static Context c;
  return c;
}

dnnl::matmul make_matmul(Context& ctx, std::int64_t M, std::int64_t K, std::int64_t N, bool a_t, bool b_t, bool bias,
                         bool accumulate, dt in_t, dt out_t = dt::f32) {
  dnnl::memory::desc a_md({M, K}, in_t, a_t ? tag::ba : tag::ab);
  dnnl::memory::desc b_md({K, N}, in_t, b_t ? tag::ba : tag::ab);
  dnnl::memory::desc c_md({M, N}, out_t, tag::ab);
  dnnl::primitive_attr attr;
  if (accumulate) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  auto desc = bias ? dnnl::matmul::desc(a_md, b_md, dnnl::memory::desc({1, N}, dt::f32, tag::ab), c_md)
                   : dnnl::matmul::desc(a_md, b_md, c_md);
  return dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, ctx.engine));
}

// Whether this CPU has oneDNN bf16 matmuls (they need AVX-512), found out once by creating a
// small bf16 primitive; where it has none, bf16 requests compute in f32 and say so once.
bool bf16_available(Context& ctx) {
  static const bool available = [&ctx] {
    try {
      make_matmul(ctx, 16, 16, 16, false, false, false, false, dt::bf16);
      return true;
    } catch (const dnnl::error&) {
      std::fprintf(stderr, "llmtk: oneDNN has no bf16 matmul for this CPU; computing in f32\n");
      return false;
    }
  }();
  return available;
}

// f32 → bf16 into a reused buffer (bf16.hpp: round to nearest even, NaN stays NaN).
const std::uint16_t* to_bf16(std::vector<std::uint16_t>& buf, const float* x, std::int64_t n) {
  if (buf.size() < std::size_t(n)) buf.resize(std::size_t(n));
  cpu::to_bf16(buf.data(), x, n);
  return buf.data();
}

// bf16 → f32 (exact), for a bf16 input on a CPU without bf16 matmuls.
const float* to_f32(std::vector<float>& buf, const std::uint16_t* x, std::int64_t n) {
  if (buf.size() < std::size_t(n)) buf.resize(std::size_t(n));
  from_bf16(buf.data(), x, n);
  return buf.data();
}

// An input of a product as the kernel wants it: in bf16 (converted unless it already is) or in
// f32 (widened if it is bf16).
const void* prepare(const TensorRef& t, bool bf16_in, std::vector<std::uint16_t>& b16, std::vector<float>& b32) {
  const bool is_bf16 = t.dtype == DType::bf16;
  if (bf16_in) return is_bf16 ? t.data : to_bf16(b16, t.f32(), t.numel());
  return is_bf16 ? to_f32(b32, static_cast<const std::uint16_t*>(t.data), t.numel()) : t.data;
}

// C[M, N] += T[N, M]ᵀ, in 64 × 64 blocks so that both sides stay in cache.
void add_transposed(float* C, const float* T, std::int64_t M, std::int64_t N) {
  constexpr std::int64_t kBlock = 64;
#pragma omp parallel for collapse(2) schedule(static)
  for (std::int64_t m0 = 0; m0 < M; m0 += kBlock)
    for (std::int64_t n0 = 0; n0 < N; n0 += kBlock)
      for (std::int64_t m = m0; m < std::min(M, m0 + kBlock); ++m)
        for (std::int64_t n = n0; n < std::min(N, n0 + kBlock); ++n) C[m * N + n] += T[n * M + m];
}

// C[M, N] (+)= op(A)[M, K] · op(B)[K, N] (+ bias[N]). A is [M, K] row-major, or [K, M] when
// a_t; B is [K, N] row-major, or [N, K] when b_t. All row-major in memory. The product runs
// with bf16 inputs and f32 accumulation when the matmul precision is bf16 or an input is
// already bf16 (and the CPU has bf16 kernels); otherwise in f32. C is f32 or bf16 (then written,
// never accumulated: only parameter gradients accumulate, and they are f32).
void gemm(const TensorRef& A, const TensorRef& B, const float* bias, const TensorRef& C, std::int64_t M,
          std::int64_t K, std::int64_t N, bool a_t, bool b_t, bool accumulate) {
  Context& ctx = context();
  const bool bf16_in =
      (ops::matmul_precision() == DType::bf16 || A.dtype == DType::bf16 || B.dtype == DType::bf16) && bf16_available(ctx);
  // A bf16 result: oneDNN rounds it on store when it computes in bf16; the f32 paths write f32
  // scratch, rounded here once.
  const bool c_bf16 = C.dtype == DType::bf16;
  LLMTK_CHECK(!(c_bf16 && accumulate), "matmul", "internal: a bf16 result is never accumulated");
  if (c_bf16 && !bf16_in) {
    if (ctx.c32.size() < std::size_t(M * N)) ctx.c32.resize(std::size_t(M * N));
    const TensorRef c32(ctx.c32.data(), DType::f32, {M, N});
    gemm(A, B, bias, c32, M, K, N, a_t, b_t, false);
    cpu::to_bf16(static_cast<std::uint16_t*>(C.data), ctx.c32.data(), M * N);
    return;
  }
  // dw += dyᵀ·x with many more rows than columns (the LM head's [V, C]): oneDNN's bf16 product
  // runs about 1.5x faster with the small operand as its source, so compute the transpose
  // x ᵀ·dy into scratch and add it transposed (benchmarks/results/ops.md, lm head backward).
  // The scratch stays allocated for the next step; above 512 MB (a 128k × 1024 head) the direct
  // product runs instead, so the scratch never grows past that.
  if (bf16_in && a_t && !b_t && accumulate && !c_bf16 && M >= 4 * N && M * N <= (std::int64_t(1) << 27)) {
    if (ctx.t32.size() < std::size_t(M * N)) ctx.t32.resize(std::size_t(M * N));
    const TensorRef t32(ctx.t32.data(), DType::f32, {N, M});
    gemm(B, A, nullptr, t32, N, K, M, true, false, false);
    add_transposed(C.f32(), ctx.t32.data(), M, N);
    return;
  }
  // The f32 backward products (dx = dy·w, dw += dyᵀ·x) go to oneDNN's packed sgemm: it takes a
  // transposed or non-K-major operand at full speed, where the matmul primitive reorders it on
  // every call (benchmarks/results/ops.md: the backward products run as fast as the plain forward).
  const bool backward_product = a_t || !b_t;
  // A product whose row count changes from call to call (an MoE expert's tokens: layers/moe.hpp)
  // creates a primitive for every count it meets; left alone the cache would grow for the whole
  // run (by 350 MB over moe-tiny's 1,000 steps). It is emptied when it holds kMaxCached
  // primitives (a dense model has a few dozen). A primitive made again for a shape computes what
  // the first one did, so results do not depend on when the cache was emptied.
  constexpr std::size_t kMaxCached = 256;
  dnnl::matmul prim;
  if (bf16_in || !backward_product) {
    std::lock_guard lock(ctx.mutex);
    const auto key = std::make_tuple(M, K, N, a_t, b_t, bias != nullptr, accumulate, bf16_in, c_bf16);
    auto it = ctx.cache.find(key);
    if (it == ctx.cache.end() && ctx.cache.size() >= kMaxCached) ctx.cache.clear();
    if (it == ctx.cache.end())
      it = ctx.cache
               .emplace(key, make_matmul(ctx, M, K, N, a_t, b_t, bias, accumulate, bf16_in ? dt::bf16 : dt::f32,
                                         c_bf16 ? dt::bf16 : dt::f32))
               .first;
    prim = it->second;
  }
  const dt in_t = bf16_in ? dt::bf16 : dt::f32;
  void* a_ptr = const_cast<void*>(prepare(A, bf16_in, ctx.a16, ctx.a32));
  void* b_ptr = const_cast<void*>(prepare(B, bf16_in, ctx.b16, ctx.b32));
  if (!bf16_in && backward_product) {
    LLMTK_CHECK(bias == nullptr, "matmul", "internal: a backward product has no bias");
    const dnnl_status_t st = dnnl_sgemm(a_t ? 'T' : 'N', b_t ? 'T' : 'N', M, N, K, 1.0f, static_cast<const float*>(a_ptr),
                                        a_t ? M : K, static_cast<const float*>(b_ptr), b_t ? K : N,
                                        accumulate ? 1.0f : 0.0f, C.f32(), N);
    LLMTK_CHECK(st == dnnl_success, "matmul", "oneDNN sgemm failed with status ", int(st), " for ", M, "x", K, "x", N);
    return;
  }
  dnnl::memory a({{M, K}, in_t, a_t ? tag::ba : tag::ab}, ctx.engine, a_ptr);
  dnnl::memory b({{K, N}, in_t, b_t ? tag::ba : tag::ab}, ctx.engine, b_ptr);
  dnnl::memory c({{M, N}, c_bf16 ? dt::bf16 : dt::f32, tag::ab}, ctx.engine, C.data);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
  if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory({{1, N}, dt::f32, tag::ab}, ctx.engine, const_cast<float*>(bias)));
  prim.execute(ctx.stream, args);
  ctx.stream.wait();
}

}  // namespace

void matmul_forward(TensorRef y, TensorRef x, TensorRef w, TensorRef b) {
  const std::int64_t N = x.rows(), I = x.size(-1), O = w.size(0);
  gemm(x, w, b ? b.f32() : nullptr, y, N, I, O, false, true, false);
}

void matmul_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x, TensorRef w) {
  const std::int64_t N = x.rows(), I = x.size(-1), O = w.size(0);
  // With bf16 matmuls, dy is rounded once for both products (for the LM head it is the largest
  // tensor of the step).
  TensorRef dy_in = dy;
  Context& ctx = context();
  if (ops::matmul_precision() == DType::bf16 && dy.dtype == DType::f32 && dx && dw && bf16_available(ctx)) {
    dy_in.data = const_cast<std::uint16_t*>(to_bf16(ctx.dy16, dy.f32(), dy.numel()));
    dy_in.dtype = DType::bf16;
  }
  if (dx) gemm(dy_in, w, nullptr, dx, N, O, I, false, false, false);
  if (dw) gemm(dy_in, x, nullptr, dw, O, N, I, true, false, true);
  if (db) {
    // Column sums of dy, read row by row (contiguous): each thread sums a block of rows into its
    // own partial vector; the partials are added in thread order (deterministic).
    const int threads = max_threads();
    float* parts = scratch(std::size_t(threads) * std::size_t(O));
    std::fill(parts, parts + std::int64_t(threads) * O, 0.0f);
#pragma omp parallel num_threads(threads)
    {
      float* part = parts + std::int64_t(omp_get_thread_num()) * O;
#pragma omp for schedule(static)
      for (std::int64_t n = 0; n < N; ++n) {
        if (dy.dtype == DType::bf16) {
          const auto* row = static_cast<const std::uint16_t*>(dy.data) + n * O;
#pragma omp simd
          for (std::int64_t o = 0; o < O; ++o) part[o] += bf16_value(row[o]);
        } else {
          const float* row = dy.f32() + n * O;
#pragma omp simd
          for (std::int64_t o = 0; o < O; ++o) part[o] += row[o];
        }
      }
    }
    reduce_partials(db.f32(), parts, threads, O);
  }
}

}  // namespace llmtk::cpu
