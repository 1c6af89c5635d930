// sum_squares: out[0] += Σ x²; per-thread partial sums in double, added in thread order.
#include <omp.h>

#include <vector>

#include "cpu.hpp"

namespace llmtk::cpu {

void sum_squares(TensorRef out, TensorRef x) {
  const int threads = max_threads();
  std::vector<double> parts(std::size_t(threads), 0.0);
  const float* X = x.f32();
  const std::int64_t n = x.numel();
#pragma omp parallel num_threads(threads)
  {
    double s = 0;
#pragma omp for simd schedule(static)
    for (std::int64_t i = 0; i < n; ++i) s += double(X[i]) * double(X[i]);
    parts[std::size_t(omp_get_thread_num())] = s;
  }
  double total = 0;
  for (double p : parts) total += p;
  out.f32()[0] = float(double(out.f32()[0]) + total);
}

}  // namespace llmtk::cpu
