// layernorm_forward / layernorm_backward, one row per iteration of an OpenMP loop. The backward's
// dw and db sum over rows: each thread keeps its own partial sums, added in thread order after.
// Activations f32 or bf16 (widened on load, rounded once on store); statistics, w and b in f32.
#include <omp.h>

#include <algorithm>

#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void layernorm_forward(TensorRef y, TensorRef mean, TensorRef rstd, TensorRef x, TensorRef w, TensorRef b, float eps) {
  const std::int64_t N = x.rows(), C = x.size(-1);
  const float *W = w.f32(), *Bs = b ? b.f32() : nullptr;
  by_dtype(x.dtype, [&]<class T>() {
#pragma omp parallel for schedule(static)
    for (std::int64_t n = 0; n < N; ++n) {
      const T* X = as<T>(x) + n * C;
      T* Y = as<T>(y) + n * C;
      float m = 0;
#pragma omp simd reduction(+ : m)
      for (std::int64_t c = 0; c < C; ++c) m += ld(X, c);
      m /= float(C);
      float v = 0;
#pragma omp simd reduction(+ : v)
      for (std::int64_t c = 0; c < C; ++c) v += (ld(X, c) - m) * (ld(X, c) - m);
      const float r = 1.0f / std::sqrt(v / float(C) + eps);
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) st(Y, c, (ld(X, c) - m) * r * W[c] + (Bs ? Bs[c] : 0.0f));
      mean.f32()[n] = m, rstd.f32()[n] = r;
    }
  });
}

void layernorm_backward(TensorRef dx, TensorRef dw, TensorRef db, TensorRef dy, TensorRef x, TensorRef w,
                        TensorRef mean, TensorRef rstd, TensorRef dres) {
  const std::int64_t N = x.rows(), C = x.size(-1);
  const float* W = w.f32();
  const int threads = max_threads();
  float* parts = scratch(std::size_t(2 * threads) * std::size_t(C));  // dw then db partials per thread
  std::fill(parts, parts + 2 * threads * C, 0.0f);
  by_dtype(x.dtype, [&]<class T>() {
#pragma omp parallel num_threads(threads)
    {
      float* dw_part = parts + std::int64_t(omp_get_thread_num()) * C;
      float* db_part = parts + std::int64_t(threads + omp_get_thread_num()) * C;
#pragma omp for schedule(static)
      for (std::int64_t n = 0; n < N; ++n) {
        const T *X = as<T>(x) + n * C, *DY = as<T>(dy) + n * C, *RES = dres ? as<T>(dres) + n * C : nullptr;
        T* DX = as<T>(dx) + n * C;
        const float m = mean.f32()[n], r = rstd.f32()[n];
        float mg = 0, mgx = 0;
#pragma omp simd reduction(+ : mg, mgx)
        for (std::int64_t c = 0; c < C; ++c) {
          const float g = ld(DY, c) * W[c];
          mg += g, mgx += g * (ld(X, c) - m) * r;
        }
        mg /= float(C), mgx /= float(C);
        for (std::int64_t c = 0; c < C; ++c) {
          const float xh = (ld(X, c) - m) * r, d = ld(DY, c);
          st(DX, c, r * (d * W[c] - mg - xh * mgx) + (RES ? ld(RES, c) : 0.0f));  // RES may alias DX
          dw_part[c] += d * xh;
          db_part[c] += d;
        }
      }
    }
  });
  if (dw) reduce_partials(dw.f32(), parts, threads, C);
  if (db) reduce_partials(db.f32(), parts + std::int64_t(threads) * C, threads, C);
}

}  // namespace llmtk::cpu
