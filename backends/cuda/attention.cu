// The tiled attention kernel: fp32, online softmax in FlashAttention-2 order, every mask of
// AttentionMask (causal or bidirectional, sliding window, ALiBi, q_offset, padding lengths,
// document segments, a learned bias) and grouped kv heads by index (query
// head h reads kv head h / (H / KV); nothing is copied). The fallback for cuDNN's fused SDPA and
// the reference it is tested against on the GPU.
//
// Thread layout (all three kernels): 128 threads own 32 "rows" (queries, or keys in the dk/dv
// kernel), four lanes per row. Lane `sub` of a row holds head dims d = sub + 4i in registers; a
// dot product over D is four partial sums joined with two shuffles. The other side (keys and
// values, or queries and output gradients) streams through shared memory in tiles of BK rows.
// No atomics: dk and dv are summed over the query heads of a group inside one block.
#include <math_constants.h>

#include "check.hpp"
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

namespace {

constexpr int kThreads = 128, kRows = 32;

__device__ __forceinline__ float row_sum4(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  v += __shfl_xor_sync(0xffffffffu, v, 2);
  return v;
}

__device__ __forceinline__ bool visible(const AttentionDims& d, i64 b, i64 qpos, i64 kj) {
  return kj < d.Tk && (!d.causal || kj <= qpos) &&
         (d.window <= 0 || (qpos - kj < d.window && kj - qpos < d.window)) && (!d.lengths || kj < d.lengths[b]) &&
         (!d.segments || d.segments[b * d.Tk + qpos] == d.segments[b * d.Tk + kj]);
}
// The learned bias of query row i, key kj, head h (0 without one); kj < Tk.
__device__ __forceinline__ float bias_at(const AttentionDims& d, i64 i, i64 kj, i64 h) {
  return d.bias ? d.bias[(i * d.Tk + kj) * d.H + h] : 0.0f;
}
// Keys past q_last + window are hidden from every query of a block when the mask is
// bidirectional with a window (causal: past q_last).
__device__ __forceinline__ i64 key_end(const AttentionDims& d, i64 q_last) {
  const i64 e = d.causal ? q_last + 1 : d.window > 0 ? q_last + d.window : d.Tk;
  return e < d.Tk ? e : d.Tk;
}

// Loads rows [r0, r0 + BK) of a [B, rows, heads, D] tensor at (b, head) into dst[BK][DMAX],
// zero-filling rows past `rows` and dims past D (zeros, never garbage: 0 · NaN would be NaN).
template <int DMAX, int BK>
__device__ void load_tile(float* dst, const float* src, i64 b, i64 rows, i64 heads, i64 head, i64 D, i64 r0) {
  for (int e = threadIdx.x; e < BK * DMAX; e += kThreads) {
    const int j = e / DMAX, dd = e % DMAX;
    const i64 r = r0 + j;
    dst[e] = r < rows && dd < D ? src[((b * rows + r) * heads + head) * D + dd] : 0.0f;
  }
}

template <int DMAX, int BK>
__global__ void __launch_bounds__(kThreads) forward_kernel(float* out, float* lse, const float* q, const float* k,
                                                           const float* v, const float* slopes, AttentionDims d) {
  constexpr int P = DMAX / 4;
  __shared__ float ks[BK * DMAX], vs[BK * DMAX];
  const int r = threadIdx.x / 4, sub = threadIdx.x % 4;
  const i64 b = blockIdx.y / d.H, h = blockIdx.y % d.H, kvh = h / (d.H / d.KV);
  const i64 i = i64(blockIdx.x) * kRows + r, qpos = d.q_offset + i;
  const bool row_ok = i < d.T;
  float qr[P], acc[P];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const i64 dd = sub + 4 * p;
    qr[p] = row_ok && dd < d.D ? q[((b * d.T + i) * d.H + h) * d.D + dd] * d.scale : 0.0f;
    acc[p] = 0.0f;
  }
  const float slope = slopes ? slopes[h] : 0.0f;
  float m = -CUDART_INF_F, l = 0.0f;
  const i64 q_first = d.q_offset + i64(blockIdx.x) * kRows;
  const i64 q_last = d.q_offset + (i64(blockIdx.x) * kRows + kRows < d.T ? i64(blockIdx.x) * kRows + kRows : d.T) - 1;
  const i64 k_end = key_end(d, q_last);
  i64 k_begin = d.window > 0 && q_first - d.window + 1 > 0 ? q_first - d.window + 1 : 0;
  k_begin = k_begin / BK * BK;
  for (i64 k0 = k_begin; k0 < k_end; k0 += BK) {
    __syncthreads();
    load_tile<DMAX, BK>(ks, k, b, d.Tk, d.KV, kvh, d.D, k0);
    load_tile<DMAX, BK>(vs, v, b, d.Tk, d.KV, kvh, d.D, k0);
    __syncthreads();
    float s[BK];
    float tile_max = -CUDART_INF_F;
#pragma unroll
    for (int j = 0; j < BK; ++j) {
      float part = 0.0f;
#pragma unroll
      for (int p = 0; p < P; ++p) part += qr[p] * ks[j * DMAX + sub + 4 * p];
      const float dot = row_sum4(part);
      const i64 kj = k0 + j;
      s[j] = row_ok && visible(d, b, qpos, kj) ? dot - slope * float(qpos - kj) + bias_at(d, i, kj, h) : -CUDART_INF_F;
      tile_max = fmaxf(tile_max, s[j]);
    }
    const float m_new = fmaxf(m, tile_max);
    if (m_new == -CUDART_INF_F) continue;  // nothing visible yet
    const float corr = expf(m - m_new);
    l *= corr;
#pragma unroll
    for (int p = 0; p < P; ++p) acc[p] *= corr;
#pragma unroll
    for (int j = 0; j < BK; ++j) {
      const float pj = expf(s[j] - m_new);
      l += pj;
#pragma unroll
      for (int p = 0; p < P; ++p) acc[p] += pj * vs[j * DMAX + sub + 4 * p];
    }
    m = m_new;
  }
  if (!row_ok) return;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const i64 dd = sub + 4 * p;
    if (dd < d.D) out[((b * d.T + i) * d.H + h) * d.D + dd] = acc[p] * inv;
  }
  if (sub == 0) lse[(b * d.H + h) * d.T + i] = l > 0.0f ? m + logf(l) : -CUDART_INF_F;
}

// delta[b, h, i] = Σ_d dout · out: one warp per query row.
__global__ void delta_kernel(float* delta, const float* dout, const float* out, AttentionDims d) {
  const i64 row = i64(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;  // (b, i, h)
  if (row >= d.B * d.T * d.H) return;
  const int lane = threadIdx.x % 32;
  float s = 0.0f;
  for (i64 dd = lane; dd < d.D; dd += 32) s += dout[row * d.D + dd] * out[row * d.D + dd];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  const i64 h = row % d.H, i = (row / d.H) % d.T, b = row / (d.H * d.T);
  if (lane == 0) delta[(b * d.H + h) * d.T + i] = s;
}

// dq_i = scale · Σ_j p_ij (dp_ij − delta_i) k_j with p recomputed from lse and dp_ij = dout_i · v_j.
template <int DMAX, int BK>
__global__ void __launch_bounds__(kThreads) dq_kernel(float* dq, const float* dout, const float* q, const float* k,
                                                      const float* v, const float* lse, const float* delta,
                                                      const float* slopes, AttentionDims d) {
  constexpr int P = DMAX / 4;
  __shared__ float ks[BK * DMAX], vs[BK * DMAX];
  const int r = threadIdx.x / 4, sub = threadIdx.x % 4;
  const i64 b = blockIdx.y / d.H, h = blockIdx.y % d.H, kvh = h / (d.H / d.KV);
  const i64 i = i64(blockIdx.x) * kRows + r, qpos = d.q_offset + i;
  const bool row_ok = i < d.T;
  float qr[P], dor[P], acc[P];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const i64 dd = sub + 4 * p, o = ((b * d.T + i) * d.H + h) * d.D + dd;
    qr[p] = row_ok && dd < d.D ? q[o] : 0.0f;
    dor[p] = row_ok && dd < d.D ? dout[o] : 0.0f;
    acc[p] = 0.0f;
  }
  const float slope = slopes ? slopes[h] : 0.0f;
  const float lse_i = row_ok ? lse[(b * d.H + h) * d.T + i] : 0.0f;
  const float delta_i = row_ok ? delta[(b * d.H + h) * d.T + i] : 0.0f;
  const i64 q_first = d.q_offset + i64(blockIdx.x) * kRows;
  const i64 q_last = d.q_offset + (i64(blockIdx.x) * kRows + kRows < d.T ? i64(blockIdx.x) * kRows + kRows : d.T) - 1;
  const i64 k_end = key_end(d, q_last);
  i64 k_begin = d.window > 0 && q_first - d.window + 1 > 0 ? q_first - d.window + 1 : 0;
  k_begin = k_begin / BK * BK;
  for (i64 k0 = k_begin; k0 < k_end; k0 += BK) {
    __syncthreads();
    load_tile<DMAX, BK>(ks, k, b, d.Tk, d.KV, kvh, d.D, k0);
    load_tile<DMAX, BK>(vs, v, b, d.Tk, d.KV, kvh, d.D, k0);
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < BK; ++j) {
      float ps = 0.0f, pd = 0.0f;
#pragma unroll
      for (int p = 0; p < P; ++p) {
        ps += qr[p] * ks[j * DMAX + sub + 4 * p];
        pd += dor[p] * vs[j * DMAX + sub + 4 * p];
      }
      const float dot = row_sum4(ps), dp = row_sum4(pd);
      const i64 kj = k0 + j;
      if (!row_ok || !visible(d, b, qpos, kj)) continue;
      const float pij = expf(dot * d.scale - slope * float(qpos - kj) + bias_at(d, i, kj, h) - lse_i);
      const float ds = pij * (dp - delta_i);
      if (d.dbias && sub == 0) d.dbias[((b * d.T + i) * d.Tk + kj) * d.H + h] = ds;  // one writer per (b, i, kj, h)
#pragma unroll
      for (int p = 0; p < P; ++p) acc[p] += ds * ks[j * DMAX + sub + 4 * p];
    }
  }
  if (!row_ok) return;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const i64 dd = sub + 4 * p;
    if (dd < d.D) dq[((b * d.T + i) * d.H + h) * d.D + dd] = acc[p] * d.scale;
  }
}

// dv_j = Σ_{h in group, i} p_ij dout_i;  dk_j = scale · Σ_{h in group, i} p_ij (dp_ij − delta_i) q_i.
// One block per (b, kv head, 32 keys); queries stream through shared memory.
template <int DMAX, int BK>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(float* dk, float* dv, const float* dout, const float* q,
                                                        const float* k, const float* v, const float* lse,
                                                        const float* delta, const float* slopes, AttentionDims d) {
  constexpr int P = DMAX / 4;
  __shared__ float qs[BK * DMAX], dos[BK * DMAX], lse_s[BK], delta_s[BK];
  const int r = threadIdx.x / 4, sub = threadIdx.x % 4;
  const i64 b = blockIdx.y / d.KV, kvh = blockIdx.y % d.KV, group = d.H / d.KV;
  const i64 kj = i64(blockIdx.x) * kRows + r;
  const bool row_ok = kj < d.Tk;
  float kr[P], vr[P], dk_acc[P], dv_acc[P];
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const i64 dd = sub + 4 * p, o = ((b * d.Tk + kj) * d.KV + kvh) * d.D + dd;
    kr[p] = row_ok && dd < d.D ? k[o] : 0.0f;
    vr[p] = row_ok && dd < d.D ? v[o] : 0.0f;
    dk_acc[p] = dv_acc[p] = 0.0f;
  }
  // Queries that can see some key of this block: causal needs qpos >= first key; a window
  // needs qpos < last key + window.
  const i64 k_first = i64(blockIdx.x) * kRows;
  const i64 k_last = (k_first + kRows < d.Tk ? k_first + kRows : d.Tk) - 1;
  i64 i_begin = d.causal && k_first - d.q_offset > 0 ? k_first - d.q_offset : 0;
  if (!d.causal && d.window > 0 && k_first - d.window + 1 - d.q_offset > 0) i_begin = k_first - d.window + 1 - d.q_offset;
  i_begin = i_begin / BK * BK;
  i64 i_end = d.T;
  if (d.window > 0 && k_last + d.window - d.q_offset < i_end) i_end = k_last + d.window - d.q_offset;
  for (i64 g = 0; g < group; ++g) {
    const i64 h = kvh * group + g;
    const float slope = slopes ? slopes[h] : 0.0f;
    for (i64 i0 = i_begin; i0 < i_end; i0 += BK) {
      __syncthreads();
      load_tile<DMAX, BK>(qs, q, b, d.T, d.H, h, d.D, i0);
      load_tile<DMAX, BK>(dos, dout, b, d.T, d.H, h, d.D, i0);
      for (int e = threadIdx.x; e < BK; e += kThreads) {
        const bool ok = i0 + e < d.T;
        lse_s[e] = ok ? lse[(b * d.H + h) * d.T + i0 + e] : 0.0f;
        delta_s[e] = ok ? delta[(b * d.H + h) * d.T + i0 + e] : 0.0f;
      }
      __syncthreads();
#pragma unroll 4
      for (int j = 0; j < BK; ++j) {
        float ps = 0.0f, pd = 0.0f;
#pragma unroll
        for (int p = 0; p < P; ++p) {
          ps += kr[p] * qs[j * DMAX + sub + 4 * p];
          pd += vr[p] * dos[j * DMAX + sub + 4 * p];
        }
        const float dot = row_sum4(ps), dp = row_sum4(pd);
        const i64 i = i0 + j, qpos = d.q_offset + i;
        if (!row_ok || i >= d.T || !visible(d, b, qpos, kj)) continue;
        const float pij = expf(dot * d.scale - slope * float(qpos - kj) + bias_at(d, i, kj, h) - lse_s[j]);
        const float ds = pij * (dp - delta_s[j]);
#pragma unroll
        for (int p = 0; p < P; ++p) {
          dv_acc[p] += pij * dos[j * DMAX + sub + 4 * p];
          dk_acc[p] += ds * qs[j * DMAX + sub + 4 * p];
        }
      }
    }
  }
  if (!row_ok) return;
#pragma unroll
  for (int p = 0; p < P; ++p) {
    const i64 dd = sub + 4 * p, o = ((b * d.Tk + kj) * d.KV + kvh) * d.D + dd;
    if (dd < d.D) dk[o] = dk_acc[p] * d.scale, dv[o] = dv_acc[p];
  }
}

template <int DMAX, int BK>
void forward_as(float* out, float* lse, const float* q, const float* k, const float* v, const float* slopes,
                const AttentionDims& d, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>((d.T + kRows - 1) / kRows), static_cast<unsigned>(d.B * d.H));
  forward_kernel<DMAX, BK><<<grid, kThreads, 0, s>>>(out, lse, q, k, v, slopes, d);
  LLMTK_CUDA_LAUNCHED("attention_forward");
}

template <int DMAX, int BK>
void backward_as(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                 const float* lse, const float* slopes, const float* delta, const AttentionDims& d, cudaStream_t s) {
  const dim3 qgrid(static_cast<unsigned>((d.T + kRows - 1) / kRows), static_cast<unsigned>(d.B * d.H));
  dq_kernel<DMAX, BK><<<qgrid, kThreads, 0, s>>>(dq, dout, q, k, v, lse, delta, slopes, d);
  LLMTK_CUDA_LAUNCHED("attention_backward");
  const dim3 kgrid(static_cast<unsigned>((d.Tk + kRows - 1) / kRows), static_cast<unsigned>(d.B * d.KV));
  dkdv_kernel<DMAX, BK><<<kgrid, kThreads, 0, s>>>(dk, dv, dout, q, k, v, lse, delta, slopes, d);
  LLMTK_CUDA_LAUNCHED("attention_backward");
}

}  // namespace

// Head dims are rounded up to 32, 64 or 128 (the register slices). A 256 variant spilled
// registers and took ptxas a quarter of an hour per architecture, so it is not built.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const float* slopes,
                       const AttentionDims& d, cudaStream_t s) {
  if (d.B * d.T * d.H == 0) return;
  if (d.D <= 32) forward_as<32, 32>(out, lse, q, k, v, slopes, d, s);
  else if (d.D <= 64) forward_as<64, 32>(out, lse, q, k, v, slopes, d, s);
  else forward_as<128, 32>(out, lse, q, k, v, slopes, d, s);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const float* slopes, float* delta,
                        const AttentionDims& d, cudaStream_t s) {
  if (d.B * d.T * d.H == 0) return;
  const i64 rows = d.B * d.T * d.H;
  delta_kernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, s>>>(delta, dout, out, d);
  LLMTK_CUDA_LAUNCHED("attention_backward");
  if (d.D <= 32) backward_as<32, 32>(dq, dk, dv, dout, q, k, v, lse, slopes, delta, d, s);
  else if (d.D <= 64) backward_as<64, 32>(dq, dk, dv, dout, q, k, v, lse, slopes, delta, d, s);
  else backward_as<128, 32>(dq, dk, dv, dout, q, k, v, lse, slopes, delta, d, s);
}

}  // namespace llmtk::cuda::kernels
