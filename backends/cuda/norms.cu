// LayerNorm and RMSNorm, forward and backward, and the deterministic column sums that give
// their dw/db (and the matmul bias gradient). One warp per row; statistics in f32 with a
// two-pass variance. Parameter gradients accumulate (+=), dx is written. E: the storage type of
// the activations x, y, dy, dx (float, or std::uint16_t for bf16: grid_stride.cuh); w, b, the
// statistics and the parameter gradients are f32.
#include "check.hpp"
#include "grid_stride.cuh"
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

namespace {

constexpr int kRowsPerBlock = 8;  // warps per block, one row each

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
unsigned row_blocks(i64 N) { return static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock); }

// W = 4: rows read and written 16 bytes at a time (C a multiple of 4 and every pointer 16-byte
// aligned); W = 1 otherwise. Lane l of a row's warp takes the W-wide groups l, l + 32, ...
template <int W, class E>
__global__ void layernorm_forward_kernel(E* y, float* mean, float* rstd, const E* x, const float* w, const float* b,
                                         i64 N, i64 C, float eps) {
  const i64 row = i64(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= N) return;
  const int lane = threadIdx.x;
  const i64 G = C / W;
  const E* xr = x + row * C;
  float s = 0.0f;
  for (i64 c = lane; c < G; c += 32) {
    const Vec<W> a = load<W>(xr, c);
    for (int k = 0; k < W; ++k) s += a.v[k];
  }
  const float m = warp_sum(s) / float(C);
  float v = 0.0f;
  for (i64 c = lane; c < G; c += 32) {
    const Vec<W> a = load<W>(xr, c);
    for (int k = 0; k < W; ++k) v += (a.v[k] - m) * (a.v[k] - m);
  }
  const float r = rsqrtf(warp_sum(v) / float(C) + eps);
  E* yr = y + row * C;
  for (i64 c = lane; c < G; c += 32) {
    Vec<W> a = load<W>(xr, c);
    const Vec<W> wc = load<W>(w, c), bc = b ? load<W>(b, c) : Vec<W>{};
    for (int k = 0; k < W; ++k) a.v[k] = (a.v[k] - m) * r * wc.v[k] + bc.v[k];
    store<W>(yr, c, a);
  }
  if (lane == 0) mean[row] = m, rstd[row] = r;
}

// The fused residual gradient: group c of row `at` of res added to d (res may alias dx: each
// thread reads the elements it then writes).
template <int W, class E>
__device__ void add_residual(Vec<W>& d, const E* res, i64 at, i64 c) {
  if (!res) return;
  const Vec<W> rv = load<W>(res + at, c);
  for (int k = 0; k < W; ++k) d.v[k] += rv.v[k];
}

// dx = rstd · (g − mean(g) − x̂ · mean(g · x̂)), g = dy · w, x̂ = (x − mean) · rstd
template <int W, class E>
__global__ void layernorm_backward_dx_kernel(E* dx, const E* dy, const E* x, const float* w, const float* mean,
                                             const float* rstd, const E* res, i64 N, i64 C) {
  const i64 row = i64(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= N) return;
  const int lane = threadIdx.x;
  const i64 G = C / W;
  const E* xr = x + row * C;
  const E* dyr = dy + row * C;
  const float m = mean[row], r = rstd[row];
  float sg = 0.0f, sgx = 0.0f;
  for (i64 c = lane; c < G; c += 32) {
    const Vec<W> d = load<W>(dyr, c), xc = load<W>(xr, c), wc = load<W>(w, c);
    for (int k = 0; k < W; ++k) {
      const float g = d.v[k] * wc.v[k];
      sg += g, sgx += g * (xc.v[k] - m) * r;
    }
  }
  const float mg = warp_sum(sg) / float(C), mgx = warp_sum(sgx) / float(C);
  E* dxr = dx + row * C;
  for (i64 c = lane; c < G; c += 32) {
    Vec<W> d = load<W>(dyr, c);
    const Vec<W> xc = load<W>(xr, c), wc = load<W>(w, c);
    for (int k = 0; k < W; ++k) d.v[k] = r * (d.v[k] * wc.v[k] - mg - (xc.v[k] - m) * r * mgx);
    add_residual<W>(d, res, row * C, c);
    store<W>(dxr, c, d);
  }
}

template <int W, class E>
__global__ void rmsnorm_forward_kernel(E* y, float* rstd, const E* x, const float* w, i64 N, i64 C, float eps) {
  const i64 row = i64(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= N) return;
  const int lane = threadIdx.x;
  const i64 G = C / W;
  const E* xr = x + row * C;
  float s = 0.0f;
  for (i64 c = lane; c < G; c += 32) {
    const Vec<W> a = load<W>(xr, c);
    for (int k = 0; k < W; ++k) s += a.v[k] * a.v[k];
  }
  const float r = rsqrtf(warp_sum(s) / float(C) + eps);
  E* yr = y + row * C;
  for (i64 c = lane; c < G; c += 32) {
    Vec<W> a = load<W>(xr, c);
    const Vec<W> wc = load<W>(w, c);
    for (int k = 0; k < W; ++k) a.v[k] = a.v[k] * r * wc.v[k];
    store<W>(yr, c, a);
  }
  if (lane == 0) rstd[row] = r;
}

// dx = rstd · (g − x · rstd² · mean(g · x)), g = dy · w
template <int W, class E>
__global__ void rmsnorm_backward_dx_kernel(E* dx, const E* dy, const E* x, const float* w, const float* rstd,
                                           const E* res, i64 N, i64 C) {
  const i64 row = i64(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= N) return;
  const int lane = threadIdx.x;
  const i64 G = C / W;
  const E* xr = x + row * C;
  const E* dyr = dy + row * C;
  const float r = rstd[row];
  float sgx = 0.0f;
  for (i64 c = lane; c < G; c += 32) {
    const Vec<W> d = load<W>(dyr, c), xc = load<W>(xr, c), wc = load<W>(w, c);
    for (int k = 0; k < W; ++k) sgx += d.v[k] * wc.v[k] * xc.v[k];
  }
  const float q = r * r * warp_sum(sgx) / float(C);
  E* dxr = dx + row * C;
  for (i64 c = lane; c < G; c += 32) {
    Vec<W> d = load<W>(dyr, c);
    const Vec<W> xc = load<W>(xr, c), wc = load<W>(w, c);
    for (int k = 0; k < W; ++k) d.v[k] = r * (d.v[k] * wc.v[k] - xc.v[k] * q);
    add_residual<W>(d, res, row * C, c);
    store<W>(dxr, c, d);
  }
}

// W = 4 for rows of a multiple of 4 elements with every pointer (null ones too) 16-byte aligned.
template <class... P>
bool rows_of_4(i64 C, const P*... p) {
  return C % 4 == 0 && (aligned16(p) && ...);
}

// Column sums: block (column tile of 32, row group g) sums rows [g·R, (g+1)·R) of 32 columns
// with 8 row lanes, reduces the lanes in a fixed order and writes partial[g, c]; a second kernel
// adds the G partials of each column in order. No atomics: the result is the same every run.
constexpr int kColLanes = 8;
constexpr i64 kMaxGroups = 512;
i64 groups_for(i64 N) {
  const i64 g = (N + 63) / 64;
  return g < 1 ? 1 : (g > kMaxGroups ? kMaxGroups : g);
}

enum class ColTerm { plain, layernorm, rmsnorm };

template <ColTerm K, class E>
__global__ void column_partial_kernel(float* partial, const E* a, const E* x, const float* mean, const float* rstd,
                                      i64 N, i64 C, i64 rows_per_group) {
  __shared__ float acc[kColLanes][33];
  const i64 c = i64(blockIdx.x) * 32 + threadIdx.x;
  const i64 r0 = i64(blockIdx.y) * rows_per_group;
  const i64 r1 = r0 + rows_per_group < N ? r0 + rows_per_group : N;
  float s = 0.0f;
  if (c < C)
    for (i64 r = r0 + threadIdx.y; r < r1; r += kColLanes) {
      const i64 i = r * C + c;
      if constexpr (K == ColTerm::plain) s += ld(a, i);
      else if constexpr (K == ColTerm::layernorm) s += ld(a, i) * (ld(x, i) - mean[r]) * rstd[r];
      else s += ld(a, i) * ld(x, i) * rstd[r];
    }
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float t = 0.0f;
    for (int l = 0; l < kColLanes; ++l) t += acc[l][threadIdx.x];
    partial[i64(blockIdx.y) * C + c] = t;
  }
}

// out[c] += Σ_g partial[g, c]: 32 columns per block, kColLanes lanes each summing every
// kColLanes-th group, then the lanes in order (a fixed order, so the sum is deterministic). With
// one thread per column the groups were a serial chain of loads; this spreads them over the lanes.
__global__ void column_finish_kernel(float* out, const float* partial, i64 groups, i64 C) {
  __shared__ float acc[kColLanes][33];
  const i64 c = i64(blockIdx.x) * 32 + threadIdx.x;
  float t = 0.0f;
  if (c < C)
    for (i64 g = threadIdx.y; g < groups; g += kColLanes) t += partial[g * C + c];
  acc[threadIdx.y][threadIdx.x] = t;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float sum = 0.0f;
    for (int l = 0; l < kColLanes; ++l) sum += acc[l][threadIdx.x];
    out[c] += sum;
  }
}

template <ColTerm K, class E>
void column_sum_any(float* out, const E* a, const E* x, const float* mean, const float* rstd, i64 N, i64 C,
                    float* partial, cudaStream_t s) {
  if (N == 0 || C == 0) return;
  const i64 groups = groups_for(N), rows_per_group = (N + groups - 1) / groups;
  const dim3 grid(static_cast<unsigned>((C + 31) / 32), static_cast<unsigned>(groups));
  column_partial_kernel<K, E><<<grid, dim3(32, kColLanes), 0, s>>>(partial, a, x, mean, rstd, N, C, rows_per_group);
  LLMTK_CUDA_LAUNCHED("column_sum");
  column_finish_kernel<<<static_cast<unsigned>((C + 31) / 32), dim3(32, kColLanes), 0, s>>>(out, partial, groups, C);
  LLMTK_CUDA_LAUNCHED("column_sum");
}

template <class E>
void layernorm_forward_any(E* y, float* mean, float* rstd, const E* x, const float* w, const float* b, i64 N, i64 C,
                           float eps, cudaStream_t s) {
  if (N == 0) return;
  if (rows_of_4(C, y, x, w, b))
    layernorm_forward_kernel<4, E><<<row_blocks(N), dim3(32, kRowsPerBlock), 0, s>>>(y, mean, rstd, x, w, b, N, C, eps);
  else
    layernorm_forward_kernel<1, E><<<row_blocks(N), dim3(32, kRowsPerBlock), 0, s>>>(y, mean, rstd, x, w, b, N, C, eps);
  LLMTK_CUDA_LAUNCHED("layernorm_forward");
}
template <class E>
void layernorm_backward_dx_any(E* dx, const E* dy, const E* x, const float* w, const float* mean, const float* rstd,
                               const E* res, i64 N, i64 C, cudaStream_t s) {
  if (N == 0) return;
  if (rows_of_4(C, dx, dy, x, w, res))
    layernorm_backward_dx_kernel<4, E><<<row_blocks(N), dim3(32, kRowsPerBlock), 0, s>>>(dx, dy, x, w, mean, rstd, res,
                                                                                        N, C);
  else
    layernorm_backward_dx_kernel<1, E><<<row_blocks(N), dim3(32, kRowsPerBlock), 0, s>>>(dx, dy, x, w, mean, rstd, res,
                                                                                        N, C);
  LLMTK_CUDA_LAUNCHED("layernorm_backward");
}
template <class E>
void rmsnorm_forward_any(E* y, float* rstd, const E* x, const float* w, i64 N, i64 C, float eps, cudaStream_t s) {
  if (N == 0) return;
  if (rows_of_4(C, y, x, w))
    rmsnorm_forward_kernel<4, E><<<row_blocks(N), dim3(32, kRowsPerBlock), 0, s>>>(y, rstd, x, w, N, C, eps);
  else
    rmsnorm_forward_kernel<1, E><<<row_blocks(N), dim3(32, kRowsPerBlock), 0, s>>>(y, rstd, x, w, N, C, eps);
  LLMTK_CUDA_LAUNCHED("rmsnorm_forward");
}
template <class E>
void rmsnorm_backward_dx_any(E* dx, const E* dy, const E* x, const float* w, const float* rstd, const E* res, i64 N,
                             i64 C, cudaStream_t s) {
  if (N == 0) return;
  if (rows_of_4(C, dx, dy, x, w, res))
    rmsnorm_backward_dx_kernel<4, E><<<row_blocks(N), dim3(32, kRowsPerBlock), 0, s>>>(dx, dy, x, w, rstd, res, N, C);
  else
    rmsnorm_backward_dx_kernel<1, E><<<row_blocks(N), dim3(32, kRowsPerBlock), 0, s>>>(dx, dy, x, w, rstd, res, N, C);
  LLMTK_CUDA_LAUNCHED("rmsnorm_backward");
}

}  // namespace

#define LLMTK_FOR_BOTH_STORAGE_TYPES(E)                                                                          \
  void layernorm_forward(E* y, float* mean, float* rstd, const E* x, const float* w, const float* b, i64 N, i64 C, \
                         float eps, cudaStream_t s) {                                                            \
    layernorm_forward_any(y, mean, rstd, x, w, b, N, C, eps, s);                                                 \
  }                                                                                                              \
  void layernorm_backward_dx(E* dx, const E* dy, const E* x, const float* w, const float* mean, const float* rstd, \
                             const E* res, i64 N, i64 C, cudaStream_t s) {                                       \
    layernorm_backward_dx_any(dx, dy, x, w, mean, rstd, res, N, C, s);                                           \
  }                                                                                                              \
  void rmsnorm_forward(E* y, float* rstd, const E* x, const float* w, i64 N, i64 C, float eps, cudaStream_t s) {  \
    rmsnorm_forward_any(y, rstd, x, w, N, C, eps, s);                                                            \
  }                                                                                                              \
  void rmsnorm_backward_dx(E* dx, const E* dy, const E* x, const float* w, const float* rstd, const E* res, i64 N, \
                           i64 C, cudaStream_t s) {                                                              \
    rmsnorm_backward_dx_any(dx, dy, x, w, rstd, res, N, C, s);                                                   \
  }                                                                                                              \
  void column_sum(float* out, const E* a, i64 N, i64 C, float* partial, cudaStream_t s) {                        \
    column_sum_any<ColTerm::plain>(out, a, static_cast<const E*>(nullptr), nullptr, nullptr, N, C, partial, s);  \
  }                                                                                                              \
  void column_sum_normed(float* out, const E* dy, const E* x, const float* mean, const float* rstd, i64 N, i64 C,  \
                         float* partial, cudaStream_t s) {                                                       \
    if (mean) column_sum_any<ColTerm::layernorm>(out, dy, x, mean, rstd, N, C, partial, s);                      \
    else column_sum_any<ColTerm::rmsnorm>(out, dy, x, nullptr, rstd, N, C, partial, s);                          \
  }
LLMTK_FOR_BOTH_STORAGE_TYPES(float)
LLMTK_FOR_BOTH_STORAGE_TYPES(std::uint16_t)
#undef LLMTK_FOR_BOTH_STORAGE_TYPES

i64 column_sum_scratch(i64 N, i64 C) { return groups_for(N) * C; }

}  // namespace llmtk::cuda::kernels
