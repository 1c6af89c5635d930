// Optimizer updates (AdamW, SGD, Lion), element-wise over one parameter tensor, and sum_squares
// (the gradient norm) as a two-pass deterministic reduction.
#include "check.hpp"
#include "grid_stride.cuh"
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

namespace {

constexpr int kThreads = kGridThreads;

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, i64 n, float lr, float b1, float b2,
                             float eps, float wd, float bias1, float bias2) {
  GRID_STRIDE(i, n) {
    const float gi = g[i];
    const float mi = b1 * m[i] + (1.0f - b1) * gi;
    const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    const float pi = p[i];
    m[i] = mi, v[i] = vi;
    p[i] = pi - lr * ((mi / bias1) / (sqrtf(vi / bias2) + eps) + wd * pi);
  }
}

__global__ void sgd_kernel(float* p, const float* g, float* buf, i64 n, float lr, float mu, float wd, bool nesterov,
                           bool first) {
  GRID_STRIDE(i, n) {
    const float gi = g[i];
    const float b = first ? gi : mu * buf[i] + gi;
    const float dir = nesterov ? gi + mu * b : b;
    const float pi = p[i];
    buf[i] = b;
    p[i] = pi - lr * (dir + wd * pi);
  }
}

__global__ void lion_kernel(float* p, const float* g, float* m, i64 n, float lr, float b1, float b2, float wd) {
  GRID_STRIDE(i, n) {
    const float gi = g[i], mi = m[i], pi = p[i];
    const float c = b1 * mi + (1.0f - b1) * gi;
    const float sign = c > 0.0f ? 1.0f : (c < 0.0f ? -1.0f : 0.0f);
    p[i] = pi - lr * (sign + wd * pi);
    m[i] = b2 * mi + (1.0f - b2) * gi;
  }
}

// Pass 1: kSumPartials blocks, each a grid-stride sum of x² reduced in a fixed tree order.
__global__ void sum_squares_partial_kernel(float* partial, const float* x, i64 n) {
  __shared__ float acc[kThreads];
  float s = 0.0f;
  GRID_STRIDE(i, n) s += x[i] * x[i];
  acc[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) acc[threadIdx.x] += acc[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = acc[0];
}
// Pass 2: one block adds the partials, in the same fixed order, to out[0].
__global__ void sum_squares_finish_kernel(float* out, const float* partial, int parts) {
  __shared__ float acc[kThreads];
  float s = 0.0f;
  for (int i = threadIdx.x; i < parts; i += kThreads) s += partial[i];
  acc[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) acc[threadIdx.x] += acc[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] += acc[0];
}

}  // namespace

void adamw(float* p, const float* g, float* m, float* v, i64 n, float lr, float beta1, float beta2, float eps,
           float wd, float bias1, float bias2, cudaStream_t s) {
  if (n == 0) return;
  adamw_kernel<<<grid_for(n), kThreads, 0, s>>>(p, g, m, v, n, lr, beta1, beta2, eps, wd, bias1, bias2);
  LLMTK_CUDA_LAUNCHED("adamw_step");
}
void sgd(float* p, const float* g, float* buf, i64 n, float lr, float momentum, float wd, bool nesterov,
         bool first_step, cudaStream_t s) {
  if (n == 0) return;
  sgd_kernel<<<grid_for(n), kThreads, 0, s>>>(p, g, buf, n, lr, momentum, wd, nesterov, first_step);
  LLMTK_CUDA_LAUNCHED("sgd_step");
}
void lion(float* p, const float* g, float* m, i64 n, float lr, float beta1, float beta2, float wd, cudaStream_t s) {
  if (n == 0) return;
  lion_kernel<<<grid_for(n), kThreads, 0, s>>>(p, g, m, n, lr, beta1, beta2, wd);
  LLMTK_CUDA_LAUNCHED("lion_step");
}
void sum_squares(float* out, const float* x, i64 n, float* partial, cudaStream_t s) {
  const i64 blocks = (n + kThreads - 1) / kThreads;
  const int parts = static_cast<int>(blocks < 1 ? 1 : (blocks > kSumPartials ? kSumPartials : blocks));
  sum_squares_partial_kernel<<<static_cast<unsigned>(parts), kThreads, 0, s>>>(partial, x, n);
  LLMTK_CUDA_LAUNCHED("sum_squares");
  sum_squares_finish_kernel<<<1, kThreads, 0, s>>>(out, partial, parts);
  LLMTK_CUDA_LAUNCHED("sum_squares");
}

}  // namespace llmtk::cuda::kernels
