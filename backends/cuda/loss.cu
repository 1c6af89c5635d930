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

// out[n · stride] = log Σ exp(logits[n, :]) and, with picked, out[n · stride + 1] = the target's
// logit where its column lies in this row's [v0, v0 + V) (0 where another rank's share holds it);
// 0 for an ignored row. The cross-entropy's backward reads the lse (stride 1); tensor parallel's
// cross-entropy gathers both from every rank's share of the columns (stride 2).
template <class E>
__global__ void row_logsumexp_kernel(float* out, int stride, bool picked, const E* logits, const std::int32_t* targets,
                                     i64 V, i64 v0, int ignore_index) {
  const i64 n = blockIdx.x;
  const std::int32_t t = targets[n];
  if (t == ignore_index) {
    if (threadIdx.x == 0) {
      out[n * stride] = 0.0f;
      if (picked) out[n * stride + 1] = 0.0f;
    }
    return;
  }
  const E* z = logits + n * V;
  const float l = row_logsumexp(z, V);
  if (threadIdx.x == 0) {
    out[n * stride] = l;
    if (picked) out[n * stride + 1] = t >= v0 && t < v0 + V ? ld(z, t - v0) : 0.0f;
  }
}

// dlogits = g · (softmax(z) − onehot(t)) = g · (exp(z − lse) − onehot(t)) element-wise once each
// row's lse is known, g = dloss · scale[n] (dloss without scales): rows along the grid's y, each
// row's columns spread over the blocks along x. One kernel for both ops: the plain cross-entropy
// (the whole row: v0 = 0, an ignored row's gradient 0, a target outside the row NaN) and tensor
// parallel's (a rank's share of the row's columns from v0: the target may lie in another share,
// and a row with scale 0 — ignored — is 0). May alias logits (each element is read, then written
// by the same thread).
template <class E>
__global__ void softmax_minus_onehot_kernel(E* dlogits, const E* logits, const float* lse, const std::int32_t* targets,
                                            const float* scale, float dloss, i64 N, i64 V, i64 v0, int ignore_index,
                                            bool share) {
  for (i64 n = blockIdx.y; n < N; n += gridDim.y) {
    const std::int32_t t = targets[n];
    const float g = scale ? dloss * scale[n] : dloss;
    const bool zero = share ? g == 0.0f : t == ignore_index, valid = share || (t >= 0 && t < V);
    const i64 hot = i64(t) - v0;  // the target's column in this row (may be outside it)
    const float l = lse[n];
    E* dz = dlogits + n * V;
    const E* z = logits + n * V;
    // kUnroll elements loaded before any is written: dz may alias z, so the compiler cannot move
    // a load above the store before it, and one at a time each thread would wait a memory
    // latency per element (seen on an H200: 1.5 TB/s).
    const i64 stride = i64(gridDim.x) * blockDim.x;
    for (i64 c0 = i64(blockIdx.x) * blockDim.x + threadIdx.x; c0 < V; c0 += kUnroll * stride) {
      float zs[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) zs[u] = c0 + u * stride < V ? ld(z, c0 + u * stride) : 0.0f;
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const i64 v = c0 + u * stride;
        if (v < V) st(dz, v, zero ? 0.0f : valid ? g * (expf(zs[u] - l) - (v == hot ? 1.0f : 0.0f)) : CUDART_NAN_F);
      }
    }
  }
}

template <class E>
void launch_softmax_minus_onehot(E* dlogits, const E* logits, const float* lse, const std::int32_t* targets,
                                 const float* scale, float dloss, i64 N, i64 V, i64 v0, int ignore_index, bool share,
                                 cudaStream_t s) {
  // About 8 elements per thread along a row; rows beyond 65535 loop.
  constexpr int kGradThreads = 256;
  const i64 gx = (V + 8 * kGradThreads - 1) / (8 * kGradThreads);
  const dim3 grid(static_cast<unsigned>(gx < 1 ? 1 : gx), static_cast<unsigned>(N < 65535 ? N : 65535));
  softmax_minus_onehot_kernel<E><<<grid, kGradThreads, 0, s>>>(dlogits, logits, lse, targets, scale, dloss, N, V, v0,
                                                               ignore_index, share);
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
  row_logsumexp_kernel<E><<<static_cast<unsigned>(N), kThreads, 0, s>>>(lse, 1, false, logits, targets, V, 0, ignore_index);
  LLMTK_CUDA_LAUNCHED("cross_entropy_backward");
  launch_softmax_minus_onehot(dlogits, logits, lse, targets, weights, dloss, N, V, 0, ignore_index, false, s);
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
  row_logsumexp_kernel<float><<<static_cast<unsigned>(N), kThreads, 0, s>>>(stats, 2, true, logits, targets, V, v0, ignore_index);
  LLMTK_CUDA_LAUNCHED("vocab_parallel_ce_forward");
}

void vocab_parallel_ce_backward(float* dlogits, const float* logits, const std::int32_t* targets, const float* lse,
                                const float* scale, i64 N, i64 V, i64 v0, cudaStream_t s) {
  if (N == 0) return;
  launch_softmax_minus_onehot(dlogits, logits, lse, targets, scale, 1.0f, N, V, v0, 0, true, s);
  LLMTK_CUDA_LAUNCHED("vocab_parallel_ce_backward");
}

}  // namespace llmtk::cuda::kernels
