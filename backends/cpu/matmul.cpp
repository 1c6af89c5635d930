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
#include <array>
#include <cstdio>
#include <map>
#include <vector>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>

#include "bf16.hpp"
#include "cpu.hpp"

namespace llmtk::cpu {

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

// One product as a oneDNN primitive sees it: C[M, N] (+)= op(A)[M, K] · op(B)[K, N] (+ bias[N]),
// each operand row-major with its own leading dimension (a chunk of a larger matrix has the
// whole matrix's), A stored [K, M] when a_t and B stored [N, K] when b_t.
struct Shape {
  std::int64_t M, K, N, lda, ldb, ldc;
  bool a_t, b_t, bias, accumulate, bf16_in, c_bf16;
  auto operator<=>(const Shape&) const = default;
};

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Shape, dnnl::matmul> cache;
  std::mutex mutex;
  // Converted copies of the inputs (grown, reused). Not guarded by the mutex: ops run one at a
  // time (each op is parallel inside); concurrent matmul calls would need per-call buffers.
  std::vector<std::uint16_t> a16, b16, dy16;
  std::vector<float> a32, b32, c32;
};
Context& context() {
  static Context c;
  return c;
}

// The memory layouts of A, B and C.
std::array<dnnl::memory::desc, 3> layouts(const Shape& s) {
  using dims = dnnl::memory::dims;
  const dt in_t = s.bf16_in ? dt::bf16 : dt::f32;
  return {dnnl::memory::desc({s.M, s.K}, in_t, s.a_t ? dims{1, s.lda} : dims{s.lda, 1}),
          dnnl::memory::desc({s.K, s.N}, in_t, s.b_t ? dims{1, s.ldb} : dims{s.ldb, 1}),
          dnnl::memory::desc({s.M, s.N}, s.c_bf16 ? dt::bf16 : dt::f32, dims{s.ldc, 1})};
}

dnnl::matmul make_matmul(Context& ctx, const Shape& s) {
  const auto [a_md, b_md, c_md] = layouts(s);
  dnnl::primitive_attr attr;
  if (s.accumulate) {
    dnnl::post_ops po;
    po.append_sum(1.0f);
    attr.set_post_ops(po);
  }
  auto desc = s.bias ? dnnl::matmul::desc(a_md, b_md, dnnl::memory::desc({1, s.N}, dt::f32, tag::ab), c_md)
                     : dnnl::matmul::desc(a_md, b_md, c_md);
  return dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, ctx.engine));
}

// Whether this CPU has oneDNN bf16 matmuls (they need AVX-512), found out once by creating a
// small bf16 primitive; where it has none, bf16 requests compute in f32 and say so once.
bool bf16_available(Context& ctx) {
  static const bool available = [&ctx] {
    try {
      make_matmul(ctx, Shape{16, 16, 16, 16, 16, 16, false, false, false, false, true, false});
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

// Runs one product on its cached primitive. A product whose row count changes from call to call
// (an MoE expert's tokens: layers/moe.hpp) creates a primitive for every count it meets; left
// alone the cache would grow for the whole run (by 350 MB over moe-tiny's 1,000 steps). It is
// emptied when it holds kMaxCached primitives (a dense model has a few dozen). A primitive made
// again for a shape computes what the first one did, so results do not depend on when the cache
// was emptied.
void execute(Context& ctx, const Shape& s, const void* a, const void* b, void* c, const float* bias) {
  constexpr std::size_t kMaxCached = 256;
  dnnl::matmul prim;
  {
    std::lock_guard lock(ctx.mutex);
    auto it = ctx.cache.find(s);
    if (it == ctx.cache.end() && ctx.cache.size() >= kMaxCached) ctx.cache.clear();
    if (it == ctx.cache.end()) it = ctx.cache.emplace(s, make_matmul(ctx, s)).first;
    prim = it->second;
  }
  const auto [a_md, b_md, c_md] = layouts(s);
  dnnl::memory am(a_md, ctx.engine, const_cast<void*>(a));
  dnnl::memory bm(b_md, ctx.engine, const_cast<void*>(b));
  dnnl::memory cm(c_md, ctx.engine, c);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
  if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory({{1, s.N}, dt::f32, tag::ab}, ctx.engine, const_cast<float*>(bias)));
  prim.execute(ctx.stream, args);
  ctx.stream.wait();
}

// A bf16 product whose rows or reduction are far longer than its other sizes (the LM head's
// vocabulary: 50,257 for GPT-2) runs in chunks of about kChunk along that dimension: oneDNN 2.6's
// bf16 kernel slows down on such a shape, most of all with a transposed source (the head's dw),
// and in chunks each piece of the operands stays in cache (benchmarks/results/ops.md, "lm head":
// its bf16 backward next to oneDNN's plain product of the same shape). dw runs in chunks of its
// rows, dx in chunks of the reduction (summed in f32, rounded once). A chunk of rows computes
// exactly what the whole product computes there; chunks of the reduction add partial sums in f32.
// A product with many columns (the head's forward) runs whole: in chunks of columns it was no
// faster in a step.
constexpr std::int64_t kSplitAbove = 8192, kChunk = 6144;

void product(Context& ctx, const Shape& s, const std::uint16_t* a, const std::uint16_t* b, void* c, const float* bias) {
  const std::int64_t big = std::max(s.M, s.K);
  if (big <= kSplitAbove || s.N >= big) return execute(ctx, s, a, b, c, bias);
  const std::int64_t parts = (big + kChunk - 1) / kChunk, step = (big + parts - 1) / parts;
  const std::size_t out_size = s.c_bf16 ? 2 : 4;
  for (std::int64_t i0 = 0; i0 < big; i0 += step) {
    const std::int64_t n = std::min(step, big - i0);
    Shape p = s;
    if (big == s.M) {  // rows of C and of op(A)
      p.M = n;
      execute(ctx, p, a + (s.a_t ? i0 : i0 * s.lda), b, static_cast<char*>(c) + i0 * s.ldc * out_size, bias);
    } else {  // the reduction: partial products summed into C, which is f32 here (see gemm())
      p.K = n, p.accumulate = s.accumulate || i0 > 0, p.bias = s.bias && i0 == 0;
      execute(ctx, p, a + (s.a_t ? i0 * s.lda : i0), b + (s.b_t ? i0 : i0 * s.ldb), c, i0 == 0 ? bias : nullptr);
    }
  }
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
  // scratch, rounded here once. So does a bf16 product split along its reduction (product()).
  const bool c_bf16 = C.dtype == DType::bf16;
  LLMTK_CHECK(!(c_bf16 && accumulate), "matmul", "internal: a bf16 result is never accumulated");
  const bool split_reduction = bf16_in && K > kSplitAbove && K > M && K > N;
  if (c_bf16 && (!bf16_in || split_reduction)) {
    if (ctx.c32.size() < std::size_t(M * N)) ctx.c32.resize(std::size_t(M * N));
    const TensorRef c32(ctx.c32.data(), DType::f32, {M, N});
    gemm(A, B, bias, c32, M, K, N, a_t, b_t, false);
    cpu::to_bf16(static_cast<std::uint16_t*>(C.data), ctx.c32.data(), M * N);
    return;
  }
  const void* a_ptr = prepare(A, bf16_in, ctx.a16, ctx.a32);
  const void* b_ptr = prepare(B, bf16_in, ctx.b16, ctx.b32);
  const Shape shape{M, K, N, a_t ? M : K, b_t ? K : N, N, a_t, b_t, bias != nullptr, accumulate, bf16_in, c_bf16};
  if (bf16_in)
    return product(ctx, shape, static_cast<const std::uint16_t*>(a_ptr), static_cast<const std::uint16_t*>(b_ptr), C.data,
                   bias);
  // The f32 backward products (dx = dy·w, dw += dyᵀ·x) go to oneDNN's packed sgemm: it takes a
  // transposed or non-K-major operand at full speed, where the matmul primitive reorders it on
  // every call (benchmarks/results/ops.md: the backward products run as fast as the plain forward).
  if (a_t || !b_t) {
    LLMTK_CHECK(bias == nullptr, "matmul", "internal: a backward product has no bias");
    const dnnl_status_t st = dnnl_sgemm(a_t ? 'T' : 'N', b_t ? 'T' : 'N', M, N, K, 1.0f, static_cast<const float*>(a_ptr),
                                        a_t ? M : K, static_cast<const float*>(b_ptr), b_t ? K : N,
                                        accumulate ? 1.0f : 0.0f, C.f32(), N);
    LLMTK_CHECK(st == dnnl_success, "matmul", "oneDNN sgemm failed with status ", int(st), " for ", M, "x", K, "x", N);
    return;
  }
  execute(ctx, shape, a_ptr, b_ptr, C.data, bias);
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
