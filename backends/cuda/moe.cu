// The mixture-of-experts kernels: the router (one thread per row: E is small), the gather of
// tokens by expert and the weighted combine back (element-wise over rows × columns), and the
// gate gradient (one warp per token's slot, reducing its dot product in a fixed order).
#include <math_constants.h>

#include "check.hpp"
#include "grid_stride.cuh"
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

namespace {

constexpr int kThreads = kGridThreads;

__global__ void moe_route_forward_kernel(float* probs, float* lse, std::int32_t* index, float* gate,
                                         const float* logits, i64 N, i64 E, i64 K, int normalize) {
  GRID_STRIDE(n, N) {
    const float* l = logits + n * E;
    float* p = probs + n * E;
    float m = l[0];
    for (i64 e = 1; e < E; ++e) m = l[e] > m ? l[e] : m;
    float s = 0;
    for (i64 e = 0; e < E; ++e) s += (p[e] = expf(l[e] - m));
    lse[n] = m + logf(s);
    for (i64 e = 0; e < E; ++e) p[e] /= s;
    std::int32_t* idx = index + n * K;
    float sum = 0;
    for (i64 j = 0; j < K; ++j) {
      i64 best = -1;
      for (i64 e = 0; e < E; ++e) {
        bool taken = false;
        for (i64 i = 0; i < j; ++i) taken = taken || idx[i] == e;
        if (!taken && (best < 0 || p[e] > p[best])) best = e;
      }
      idx[j] = std::int32_t(best);
      sum += p[best];
    }
    for (i64 j = 0; j < K; ++j) gate[n * K + j] = normalize ? p[idx[j]] / sum : p[idx[j]];
  }
}

__global__ void moe_route_backward_kernel(float* dlogits, const float* dgate, const float* dprobs, const float* probs,
                                          const float* lse, const std::int32_t* index, const float* gate, i64 N, i64 E,
                                          i64 K, float z_scale, int normalize) {
  GRID_STRIDE(n, N) {
    const float* p = probs + n * E;
    const std::int32_t* idx = index + n * K;
    const float* dg = dgate + n * K;
    const float* g = gate + n * K;
    float* dl = dlogits + n * E;
    for (i64 e = 0; e < E; ++e) dl[e] = dprobs ? dprobs[e] : 0.0f;
    float sum = 0, dot = 0;
    for (i64 j = 0; j < K; ++j) sum += p[idx[j]], dot += dg[j] * g[j];
    for (i64 j = 0; j < K; ++j) dl[idx[j]] += normalize ? (dg[j] - dot) / sum : dg[j];
    float inner = 0;
    for (i64 e = 0; e < E; ++e) inner += dl[e] * p[e];
    const float z = z_scale * lse[n];
    for (i64 e = 0; e < E; ++e) dl[e] = p[e] * (dl[e] - inner + z);
  }
}

__global__ void moe_gather_kernel(float* xs, const float* x, const std::int32_t* token, i64 M, i64 C) {
  GRID_STRIDE(i, M * C) { xs[i] = x[i64(token[i / C]) * C + i % C]; }
}

__global__ void moe_combine_forward_kernel(float* y, const float* ys, const float* gate, const std::int32_t* slot, i64 N,
                                           i64 K, i64 C) {
  GRID_STRIDE(i, N * C) {
    const i64 n = i / C, c = i % C;
    float acc = 0;
    for (i64 j = 0; j < K; ++j) {
      const std::int32_t s = slot[n * K + j];
      if (s >= 0) acc += (gate ? gate[n * K + j] : 1.0f) * ys[i64(s) * C + c];
    }
    y[i] = acc;
  }
}

__global__ void moe_combine_dys_kernel(float* dys, const float* dy, const float* gate, const std::int32_t* slot, i64 N,
                                       i64 K, i64 C) {
  GRID_STRIDE(i, N * K * C) {
    const i64 nj = i / C, c = i % C;
    const std::int32_t s = slot[nj];
    if (s >= 0) dys[i64(s) * C + c] = (gate ? gate[nj] : 1.0f) * dy[(nj / K) * C + c];
  }
}

// One warp per (n, j): lanes take columns lane, lane + 32, ... and the warp sums them in a fixed tree.
__global__ void moe_combine_dgate_kernel(float* dgate, const float* dy, const float* ys, const std::int32_t* slot, i64 N,
                                         i64 K, i64 C) {
  const i64 nj = i64(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = int(threadIdx.x % 32);
  const bool live = nj < N * K;
  const std::int32_t s = live ? slot[nj] : -1;
  float dot = 0;
  if (s >= 0)
    for (i64 c = lane; c < C; c += 32) dot += dy[(nj / K) * C + c] * ys[i64(s) * C + c];
  for (int o = 16; o > 0; o /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, o);
  if (live && lane == 0) dgate[nj] = dot;
}

}  // namespace

void moe_route_forward(float* probs, float* lse, std::int32_t* index, float* gate, const float* logits, i64 N, i64 E,
                       i64 K, int normalize, cudaStream_t s) {
  if (N == 0) return;
  moe_route_forward_kernel<<<grid_for(N), kThreads, 0, s>>>(probs, lse, index, gate, logits, N, E, K, normalize);
  LLMTK_CUDA_LAUNCHED("moe_route_forward");
}
void moe_route_backward(float* dlogits, const float* dgate, const float* dprobs, const float* probs, const float* lse,
                        const std::int32_t* index, const float* gate, i64 N, i64 E, i64 K, float z_scale, int normalize,
                        cudaStream_t s) {
  if (N == 0) return;
  moe_route_backward_kernel<<<grid_for(N), kThreads, 0, s>>>(dlogits, dgate, dprobs, probs, lse, index, gate, N, E, K,
                                                             z_scale, normalize);
  LLMTK_CUDA_LAUNCHED("moe_route_backward");
}
void moe_gather(float* xs, const float* x, const std::int32_t* token, i64 M, i64 C, cudaStream_t s) {
  if (M * C == 0) return;
  moe_gather_kernel<<<grid_for(M * C), kThreads, 0, s>>>(xs, x, token, M, C);
  LLMTK_CUDA_LAUNCHED("moe_gather");
}
void moe_combine_forward(float* y, const float* ys, const float* gate, const std::int32_t* slot, i64 N, i64 K, i64 C,
                         cudaStream_t s) {
  if (N * C == 0) return;
  moe_combine_forward_kernel<<<grid_for(N * C), kThreads, 0, s>>>(y, ys, gate, slot, N, K, C);
  LLMTK_CUDA_LAUNCHED("moe_combine_forward");
}
void moe_combine_backward(float* dys, float* dgate, const float* dy, const float* ys, const float* gate,
                          const std::int32_t* slot, i64 N, i64 K, i64 C, cudaStream_t s) {
  if (N * K * C == 0) return;
  moe_combine_dys_kernel<<<grid_for(N * K * C), kThreads, 0, s>>>(dys, dy, gate, slot, N, K, C);
  LLMTK_CUDA_LAUNCHED("moe_combine_backward");
  if (!dgate) return;
  constexpr int kWarps = kThreads / 32;
  const i64 blocks = (N * K + kWarps - 1) / kWarps;
  moe_combine_dgate_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(dgate, dy, ys, slot, N, K, C);
  LLMTK_CUDA_LAUNCHED("moe_combine_backward");
}

}  // namespace llmtk::cuda::kernels
