// matmul_forward / matmul_backward on oneDNN. Three products, each a oneDNN matmul primitive
// cached by its shape:
//   forward   y[N, O]  = x[N, I] · w[O, I]ᵀ (+ b)   weights read K-major ("ba" layout)
//   dx        dx[N, I] = dy[N, O] · w[O, I]
//   dw        dw[O, I] += dy[N, O]ᵀ · x[N, I]       a sum post-op accumulates into dw
// db is a column sum of dy, an OpenMP loop.
#include <omp.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>

#include "cpu.hpp"

namespace llmtk::cpu {

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

struct Context {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  // key: (M, K, N, a is transposed, b is transposed, bias, accumulate)
  std::map<std::tuple<std::int64_t, std::int64_t, std::int64_t, bool, bool, bool, bool>, dnnl::matmul> cache;
  std::mutex mutex;
};
Context& context() {
  static Context c;
  return c;
}

// C[M, N] (+)= op(A)[M, K] · op(B)[K, N] (+ bias[N]). A is [M, K] row-major, or [K, M] when
// a_t; B is [K, N] row-major, or [N, K] when b_t. All row-major in memory.
void gemm(const float* A, const float* B, const float* bias, float* C, std::int64_t M, std::int64_t K,
          std::int64_t N, bool a_t, bool b_t, bool accumulate) {
  Context& ctx = context();
  const auto key = std::make_tuple(M, K, N, a_t, b_t, bias != nullptr, accumulate);
  dnnl::matmul prim;
  {
    std::lock_guard lock(ctx.mutex);
    auto it = ctx.cache.find(key);
    if (it == ctx.cache.end()) {
      dnnl::memory::desc a_md({M, K}, dt::f32, a_t ? tag::ba : tag::ab);
      dnnl::memory::desc b_md({K, N}, dt::f32, b_t ? tag::ba : tag::ab);
      dnnl::memory::desc c_md({M, N}, dt::f32, tag::ab);
      dnnl::primitive_attr attr;
      if (accumulate) {
        dnnl::post_ops po;
        po.append_sum(1.0f);
        attr.set_post_ops(po);
      }
      auto desc = bias ? dnnl::matmul::desc(a_md, b_md, dnnl::memory::desc({1, N}, dt::f32, tag::ab), c_md)
                       : dnnl::matmul::desc(a_md, b_md, c_md);
      it = ctx.cache.emplace(key, dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, ctx.engine))).first;
    }
    prim = it->second;
  }
  dnnl::memory a({{M, K}, dt::f32, a_t ? tag::ba : tag::ab}, ctx.engine, const_cast<float*>(A));
  dnnl::memory b({{K, N}, dt::f32, b_t ? tag::ba : tag::ab}, ctx.engine, const_cast<float*>(B));
  dnnl::memory c({{M, N}, dt::f32, tag::ab}, ctx.engine, C);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}};
  if (bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory({{1, N}, dt::f32, tag::ab}, ctx.engine, const_cast<float*>(bias)));
  prim.execute(ctx.stream, args);
  ctx.stream.wait();
}

}  // namespace

void matmul_forward(TensorRef y, TensorRef x, TensorRef w, TensorRef b) {
  const char* op = "matmul_forward";
  expect_f32(op, "y", y), expect_f32(op, "x", x), expect_f32(op, "w", w);
  const std::int64_t N = x.rows(), I = x.size(-1), O = w.size(0);
  LLMTK_CHECK(w.rank == 2 && w.size(1) == I, op, "w ", w.shape_str(), " must be [O, I] with I = ", I,
              " (x is ", x.shape_str(), ")");
  LLMTK_CHECK(y.rows() == N && y.size(-1) == O, op, "y ", y.shape_str(), " must be [", N, ", ", O, "]");
  if (b) LLMTK_CHECK(b.numel() == O, op, "b has ", b.numel(), " elements, expected ", O);
  gemm(x.f32(), w.f32(), b ? b.f32() : nullptr, y.f32(), N, I, O, false, true, false);
}

void matmul_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x, TensorRef w) {
  const char* op = "matmul_backward";
  expect_f32(op, "dy", dy), expect_f32(op, "x", x), expect_f32(op, "w", w);
  const std::int64_t N = x.rows(), I = x.size(-1), O = w.size(0);
  LLMTK_CHECK(dy.rows() == N && dy.size(-1) == O, op, "dy ", dy.shape_str(), " must be [", N, ", ", O, "]");
  if (dx) expect_f32(op, "dx", dx), gemm(dy.f32(), w.f32(), nullptr, dx.f32(), N, O, I, false, false, false);
  if (dw) expect_f32(op, "dw", dw), gemm(dy.f32(), x.f32(), nullptr, dw.f32(), O, N, I, true, false, true);
  if (db) {
    // Column sums of dy, read row by row (contiguous): each thread sums a block of rows into its
    // own partial vector; the partials are added in thread order (deterministic).
    expect_f32(op, "db", db);
    const float* DY = dy.f32();
    const int threads = max_threads();
    float* parts = scratch(std::size_t(threads) * std::size_t(O));
    std::fill(parts, parts + std::int64_t(threads) * O, 0.0f);
#pragma omp parallel num_threads(threads)
    {
      float* part = parts + std::int64_t(omp_get_thread_num()) * O;
#pragma omp for schedule(static)
      for (std::int64_t n = 0; n < N; ++n) {
        const float* row = DY + n * O;
#pragma omp simd
        for (std::int64_t o = 0; o < O; ++o) part[o] += row[o];
      }
    }
    reduce_partials(db.f32(), parts, threads, O);
  }
}

}  // namespace llmtk::cpu
