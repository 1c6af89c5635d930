// rmsnorm_forward / rmsnorm_backward, one row per iteration; dw summed per thread, then added.
// Activations f32 or bf16 (widened on load, rounded once on store); statistics and w in f32.
#include <omp.h>

#include <algorithm>

#include "elementwise.hpp"

namespace llmtk::cpu {

using namespace elementwise;

void rmsnorm_forward(TensorRef y, TensorRef rstd, TensorRef x, TensorRef w, float eps) {
  const std::int64_t N = x.rows(), C = x.size(-1);
  const float* W = w.f32();
  by_dtype(x.dtype, [&]<class T>() {
#pragma omp parallel for schedule(static)
    for (std::int64_t n = 0; n < N; ++n) {
      const T* X = as<T>(x) + n * C;
      T* Y = as<T>(y) + n * C;
      float ms = 0;
#pragma omp simd reduction(+ : ms)
      for (std::int64_t c = 0; c < C; ++c) ms += ld(X, c) * ld(X, c);
      const float r = 1.0f / std::sqrt(ms / float(C) + eps);
#pragma omp simd
      for (std::int64_t c = 0; c < C; ++c) st(Y, c, ld(X, c) * r * W[c]);
      rstd.f32()[n] = r;
    }
  });
}

void rmsnorm_backward(TensorRef dx, TensorRef dw, TensorRef dy, TensorRef x, TensorRef w, TensorRef rstd,
                      TensorRef dres) {
  const std::int64_t N = x.rows(), C = x.size(-1);
  const float* W = w.f32();
  const int threads = max_threads();
  float* parts = scratch(std::size_t(threads) * std::size_t(C));
  std::fill(parts, parts + threads * C, 0.0f);
  by_dtype(x.dtype, [&]<class T>() {
#pragma omp parallel num_threads(threads)
    {
      float* dw_part = parts + std::int64_t(omp_get_thread_num()) * C;
#pragma omp for schedule(static)
      for (std::int64_t n = 0; n < N; ++n) {
        const T *X = as<T>(x) + n * C, *DY = as<T>(dy) + n * C, *RES = dres ? as<T>(dres) + n * C : nullptr;
        T* DX = as<T>(dx) + n * C;
        const float r = rstd.f32()[n];
        float mgx = 0;
#pragma omp simd reduction(+ : mgx)
        for (std::int64_t c = 0; c < C; ++c) mgx += ld(DY, c) * W[c] * ld(X, c) * r;
        mgx /= float(C);
        for (std::int64_t c = 0; c < C; ++c) {
          const float xh = ld(X, c) * r, g = ld(DY, c);
          st(DX, c, r * (g * W[c] - xh * mgx) + (RES ? ld(RES, c) : 0.0f));  // RES may alias DX
          dw_part[c] += g * xh;
        }
      }
    }
  });
  if (dw) reduce_partials(dw.f32(), parts, threads, C);
}

}  // namespace llmtk::cpu
