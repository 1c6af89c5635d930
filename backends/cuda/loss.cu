// Cross-entropy with the softmax fused in: one block per row of logits. Each thread keeps an
// online (max, sum of exp) over its strided columns; the block merges them in a fixed order.
#include <math_constants.h>

#include "check.hpp"
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

namespace {

constexpr int kThreads = 512;

struct MaxSum {
  float m, s;  // running max and Σ exp(z − m)
};
__device__ MaxSum merge(MaxSum a, MaxSum b) {
  if (a.m == -CUDART_INF_F) return b;
  if (b.m == -CUDART_INF_F) return a;
  const float m = fmaxf(a.m, b.m);
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

// log Σ exp(z) of one row, by the whole block (every thread gets the result).
__device__ float row_logsumexp(const float* z, long long V) {
  __shared__ MaxSum parts[kThreads / 32];
  MaxSum t{-CUDART_INF_F, 0.0f};
  for (long long v = threadIdx.x; v < V; v += blockDim.x) {
    const float x = z[v];
    if (x == -CUDART_INF_F) continue;  // a masked logit adds exp(−inf) = 0 (and −inf − −inf would be NaN)
    if (x > t.m) {
      t.s = t.s * expf(t.m - x) + 1.0f;  // exp(−inf) = 0 on the first element
      t.m = x;
    } else {
      t.s += expf(x - t.m);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum other{__shfl_xor_sync(0xffffffffu, t.m, o), __shfl_xor_sync(0xffffffffu, t.s, o)};
    t = merge(t, other);
  }
  if (threadIdx.x % 32 == 0) parts[threadIdx.x / 32] = t;
  __syncthreads();
  MaxSum all{-CUDART_INF_F, 0.0f};
  for (int w = 0; w < kThreads / 32; ++w) all = merge(all, parts[w]);
  __syncthreads();  // parts may be reused by the caller's next row
  return all.m + logf(all.s);
}

__global__ void cross_entropy_forward_kernel(float* losses, const float* logits, const std::int32_t* targets, i64 V,
                                             int ignore_index) {
  const i64 n = blockIdx.x;
  const std::int32_t t = targets[n];
  if (t == ignore_index) {
    if (threadIdx.x == 0) losses[n] = 0.0f;
    return;
  }
  const float* z = logits + n * V;
  const float lse = row_logsumexp(z, V);
  if (threadIdx.x == 0) losses[n] = t >= 0 && t < V ? lse - z[t] : CUDART_NAN_F;
}

// dlogits = dloss · (softmax(z) − onehot(t)); may alias logits (each element is read, then written
// by the same thread).
__global__ void cross_entropy_backward_kernel(float* dlogits, const float* logits, const std::int32_t* targets, i64 V,
                                              float dloss, int ignore_index) {
  const i64 n = blockIdx.x;
  const std::int32_t t = targets[n];
  float* dz = dlogits + n * V;
  if (t == ignore_index) {
    for (i64 v = threadIdx.x; v < V; v += blockDim.x) dz[v] = 0.0f;
    return;
  }
  const float* z = logits + n * V;
  const float lse = row_logsumexp(z, V);
  const bool valid = t >= 0 && t < V;
  for (i64 v = threadIdx.x; v < V; v += blockDim.x)
    dz[v] = valid ? dloss * (expf(z[v] - lse) - (v == t ? 1.0f : 0.0f)) : CUDART_NAN_F;
}

}  // namespace

void cross_entropy_forward(float* losses, const float* logits, const std::int32_t* targets, i64 N, i64 V,
                           int ignore_index, cudaStream_t s) {
  if (N == 0) return;
  cross_entropy_forward_kernel<<<static_cast<unsigned>(N), kThreads, 0, s>>>(losses, logits, targets, V, ignore_index);
  LLMTK_CUDA_LAUNCHED("cross_entropy_forward");
}
void cross_entropy_backward(float* dlogits, const float* logits, const std::int32_t* targets, i64 N, i64 V,
                            float dloss, int ignore_index, cudaStream_t s) {
  if (N == 0) return;
  cross_entropy_backward_kernel<<<static_cast<unsigned>(N), kThreads, 0, s>>>(dlogits, logits, targets, V, dloss,
                                                                             ignore_index);
  LLMTK_CUDA_LAUNCHED("cross_entropy_backward");
}

}  // namespace llmtk::cuda::kernels
