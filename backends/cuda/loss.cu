// Cross-entropy with the softmax fused in: one block per row of logits computes its log-sum-exp
// (each thread keeps an online (max, sum of exp) over its strided columns; the block merges them
// in a fixed order). The backward then writes the gradient element-wise from each row's value.
// E: the storage type of logits and dlogits (float, or std::uint16_t for bf16: grid_stride.cuh);
// the sums, losses and lse are f32.
#include <math_constants.h>

#include "check.hpp"
#include "grid_stride.cuh"
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

namespace {

constexpr int kThreads = 512;
constexpr int kUnroll = 4;

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
template <class E>
__device__ float row_logsumexp(const E* z, long long V) {
  __shared__ MaxSum parts[kThreads / 32];
  MaxSum t{-CUDART_INF_F, 0.0f};
  // kUnroll loads issued before they are used: the running max makes each element depend on the
  // one before, so with one load at a time a thread waits a memory latency per element.
  for (long long v0 = threadIdx.x; v0 < V; v0 += kUnroll * blockDim.x) {
    float xs[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const long long v = v0 + u * (long long)blockDim.x;
      xs[u] = v < V ? ld(z, v) : -CUDART_INF_F;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const float x = xs[u];
      if (x == -CUDART_INF_F) continue;  // a masked logit adds exp(−inf) = 0 (and −inf − −inf would be NaN)
      if (x > t.m) {
        t.s = t.s * expf(t.m - x) + 1.0f;  // exp(−inf) = 0 on the first element
        t.m = x;
      } else {
        t.s += expf(x - t.m);
      }
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

template <class E>
__global__ void cross_entropy_forward_kernel(float* losses, const E* logits, const std::int32_t* targets, i64 V,
                                             int ignore_index) {
  const i64 n = blockIdx.x;
  const std::int32_t t = targets[n];
  if (t == ignore_index) {
    if (threadIdx.x == 0) losses[n] = 0.0f;
    return;
  }
  const E* z = logits + n * V;
  const float lse = row_logsumexp(z, V);
  if (threadIdx.x == 0) losses[n] = t >= 0 && t < V ? lse - ld(z, t) : CUDART_NAN_F;
}

// lse[n] = log Σ exp(logits[n, :]) (0 for an ignored row).
template <class E>
__global__ void row_logsumexp_kernel(float* lse, const E* logits, const std::int32_t* targets, i64 V,
                                     int ignore_index) {
  const i64 n = blockIdx.x;
  if (targets[n] == ignore_index) {
    if (threadIdx.x == 0) lse[n] = 0.0f;
    return;
  }
  const float l = row_logsumexp(logits + n * V, V);
  if (threadIdx.x == 0) lse[n] = l;
}

// dlogits = g · (softmax(z) − onehot(t)) = g · (exp(z − lse) − onehot(t)), g = dloss · w[n] (w = 1
// without weights), element-wise
// once the row's lse is known: rows along the grid's y, each row's columns spread over the
// blocks along x. May alias logits (each element is read, then written by the same thread).
template <class E>
__global__ void cross_entropy_backward_kernel(E* dlogits, const E* logits, const float* lse,
                                              const std::int32_t* targets, const float* weights, i64 N, i64 V,
                                              float dloss, int ignore_index) {
  for (i64 n = blockIdx.y; n < N; n += gridDim.y) {
    const std::int32_t t = targets[n];
    const float g = weights ? dloss * weights[n] : dloss;
    const bool ignored = t == ignore_index, valid = t >= 0 && t < V;
    const float l = lse[n];
    E* dz = dlogits + n * V;
    const E* z = logits + n * V;
    // kUnroll elements loaded before any is written: dz may alias z, so the compiler cannot move
    // a load above the store before it, and one at a time each thread would wait a memory
    // latency per element (seen on an H200: 1.5 TB/s).
    const i64 stride = i64(gridDim.x) * blockDim.x;
    for (i64 v0 = i64(blockIdx.x) * blockDim.x + threadIdx.x; v0 < V; v0 += kUnroll * stride) {
      float zs[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) zs[u] = v0 + u * stride < V ? ld(z, v0 + u * stride) : 0.0f;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const i64 v = v0 + u * stride;
        if (v < V) st(dz, v, ignored ? 0.0f : valid ? g * (expf(zs[u] - l) - (v == t ? 1.0f : 0.0f)) : CUDART_NAN_F);
      }
    }
  }
}

// Tensor parallel's cross-entropy: one block per row of a rank's columns [v0, v0 + V).
__global__ void vocab_parallel_ce_forward_kernel(float* stats, const float* logits, const std::int32_t* targets, i64 V,
                                                 i64 v0, int ignore_index) {
  const i64 n = blockIdx.x;
  const std::int32_t t = targets[n];
  if (t == ignore_index) {
    if (threadIdx.x == 0) stats[2 * n] = stats[2 * n + 1] = 0.0f;
    return;
  }
  const float* z = logits + n * V;
  const float lse = row_logsumexp(z, V);
  if (threadIdx.x == 0) stats[2 * n] = lse, stats[2 * n + 1] = t >= v0 && t < v0 + V ? z[t - v0] : 0.0f;
}

// dlogits = scale[n] · (exp(z − lse[n]) − onehot(t − v0)), element-wise as cross_entropy_backward_kernel.
__global__ void vocab_parallel_ce_backward_kernel(float* dlogits, const float* logits, const std::int32_t* targets,
                                                  const float* lse, const float* scale, i64 N, i64 V, i64 v0) {
  for (i64 n = blockIdx.y; n < N; n += gridDim.y) {
    const i64 t = i64(targets[n]) - v0;
    const float g = scale[n], l = lse[n];
    float* dz = dlogits + n * V;
    const float* z = logits + n * V;
    const i64 stride = i64(gridDim.x) * blockDim.x;
    for (i64 c0 = i64(blockIdx.x) * blockDim.x + threadIdx.x; c0 < V; c0 += kUnroll * stride) {
      float zs[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) zs[u] = c0 + u * stride < V ? z[c0 + u * stride] : 0.0f;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const i64 v = c0 + u * stride;
        if (v < V) dz[v] = g == 0.0f ? 0.0f : g * (expf(zs[u] - l) - (v == t ? 1.0f : 0.0f));
      }
    }
  }
}

template <class E>
void cross_entropy_forward_any(float* losses, const E* logits, const std::int32_t* targets, i64 N, i64 V,
                               int ignore_index, cudaStream_t s) {
  if (N == 0) return;
  cross_entropy_forward_kernel<E><<<static_cast<unsigned>(N), kThreads, 0, s>>>(losses, logits, targets, V, ignore_index);
  LLMTK_CUDA_LAUNCHED("cross_entropy_forward");
}
template <class E>
void cross_entropy_backward_any(E* dlogits, const E* logits, const std::int32_t* targets, const float* weights, i64 N,
                                i64 V, float dloss, int ignore_index, float* lse, cudaStream_t s) {
  if (N == 0) return;
  row_logsumexp_kernel<E><<<static_cast<unsigned>(N), kThreads, 0, s>>>(lse, logits, targets, V, ignore_index);
  LLMTK_CUDA_LAUNCHED("cross_entropy_backward");
  // About 8 elements per thread along a row; rows beyond 65535 loop.
  constexpr int kGradThreads = 256;
  const i64 gx = (V + 8 * kGradThreads - 1) / (8 * kGradThreads);
  const dim3 grid(static_cast<unsigned>(gx < 1 ? 1 : gx), static_cast<unsigned>(N < 65535 ? N : 65535));
  cross_entropy_backward_kernel<E><<<grid, kGradThreads, 0, s>>>(dlogits, logits, lse, targets, weights, N, V, dloss,
                                                                 ignore_index);
  LLMTK_CUDA_LAUNCHED("cross_entropy_backward");
}

}  // namespace

#define LLMTK_FOR_BOTH_STORAGE_TYPES(E)                                                                            \
  void cross_entropy_forward(float* losses, const E* logits, const std::int32_t* targets, i64 N, i64 V,            \
                             int ignore_index, cudaStream_t s) {                                                   \
    cross_entropy_forward_any(losses, logits, targets, N, V, ignore_index, s);                                     \
  }                                                                                                                \
  void cross_entropy_backward(E* dlogits, const E* logits, const std::int32_t* targets, const float* weights, i64 N, \
                              i64 V, float dloss, int ignore_index, float* lse, cudaStream_t s) {                  \
    cross_entropy_backward_any(dlogits, logits, targets, weights, N, V, dloss, ignore_index, lse, s);              \
  }
LLMTK_FOR_BOTH_STORAGE_TYPES(float)
LLMTK_FOR_BOTH_STORAGE_TYPES(std::uint16_t)
#undef LLMTK_FOR_BOTH_STORAGE_TYPES

void vocab_parallel_ce_forward(float* stats, const float* logits, const std::int32_t* targets, i64 N, i64 V, i64 v0,
                               int ignore_index, cudaStream_t s) {
  if (N == 0) return;
  vocab_parallel_ce_forward_kernel<<<static_cast<unsigned>(N), kThreads, 0, s>>>(stats, logits, targets, V, v0, ignore_index);
  LLMTK_CUDA_LAUNCHED("vocab_parallel_ce_forward");
}

void vocab_parallel_ce_backward(float* dlogits, const float* logits, const std::int32_t* targets, const float* lse,
                                const float* scale, i64 N, i64 V, i64 v0, cudaStream_t s) {
  if (N == 0) return;
  constexpr int kGradThreads = 256;
  const i64 gx = (V + 8 * kGradThreads - 1) / (8 * kGradThreads);
  const dim3 grid(static_cast<unsigned>(gx < 1 ? 1 : gx), static_cast<unsigned>(N < 65535 ? N : 65535));
  vocab_parallel_ce_backward_kernel<<<grid, kGradThreads, 0, s>>>(dlogits, logits, targets, lse, scale, N, V, v0);
  LLMTK_CUDA_LAUNCHED("vocab_parallel_ce_backward");
}

}  // namespace llmtk::cuda::kernels
