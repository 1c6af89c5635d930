// minGRU's gates (element-wise) and the diagonal linear recurrence as a chunked parallel scan:
// the sequence is cut into chunks of kChunk steps; (1) every (row, chunk, channel) scans its chunk
// from a zero state and records the product of its factors; (2) every (row, channel) walks the
// chunks in order to find the state entering each; (3) every (row, chunk, channel) adds that
// state times the running product of factors. The same kernels run backwards for the gradient.
// Work is O(T) per channel and the sequential part is T / kChunk long.
#include "check.hpp"
#include "grid_stride.cuh"
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

namespace {

constexpr int kThreads = kGridThreads;

__device__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void gates_forward_kernel(float* a, float* u, const float* z, const float* h, i64 n) {
  GRID_STRIDE(i, n) {
    const float s = sigmoid(z[i]);
    a[i] = 1.0f - s;
    u[i] = s * h[i];
  }
}
__global__ void gates_backward_kernel(float* dz, float* dh, const float* da, const float* du, const float* z,
                                      const float* h, i64 n) {
  GRID_STRIDE(i, n) {
    const float s = sigmoid(z[i]), g = du[i];
    dz[i] = (g * h[i] - da[i]) * s * (1.0f - s);
    dh[i] = g * s;
  }
}

struct Scan {
  i64 B, T, D, chunks;
  bool reverse;
  const float* a;            // [B, T, D]
  const std::int32_t* seg;   // [B, T] or null
  __device__ bool starts(i64 b, i64 t) const { return seg && t > 0 && seg[b * T + t] != seg[b * T + t - 1]; }
  // out[t] = factor(t) · out[previous] + in[t]; previous is t − 1 forwards, t + 1 backwards.
  __device__ float factor(i64 b, i64 t, i64 d) const {
    if (!reverse) return starts(b, t) ? 0.0f : a[(b * T + t) * D + d];
    return t + 1 < T && !starts(b, t + 1) ? a[(b * T + t + 1) * D + d] : 0.0f;
  }
  // The k-th step of chunk c in scan order, and how many it has.
  __device__ i64 step(i64 c, i64 k) const {
    const i64 t = c * kScanChunk + k;
    return reverse ? T - 1 - t : t;
  }
  __device__ i64 length(i64 c) const {
    const i64 rest = T - c * kScanChunk;
    return rest < kScanChunk ? rest : i64(kScanChunk);
  }
};

// (1) Each chunk from a zero state: out holds the local scan, prod the product of its factors.
__global__ void scan_local_kernel(float* out, float* prod, const float* in, Scan s) {
  GRID_STRIDE(i, s.B * s.chunks * s.D) {
    const i64 d = i % s.D, c = (i / s.D) % s.chunks, b = i / (s.D * s.chunks);
    float state = 0.0f, p = 1.0f;
    for (i64 k = 0, n = s.length(c); k < n; ++k) {
      const i64 t = s.step(c, k), e = (b * s.T + t) * s.D + d;
      const float f = s.factor(b, t, d);
      state = (k == 0 ? 0.0f : f * state) + in[e];
      p *= f;  // every step's factor, the first one's included, multiplies the incoming state
      out[e] = state;
    }
    prod[i] = p;
  }
}
// (2) The state entering each chunk, in chunk order, from h0 (forwards) or 0 (backwards).
__global__ void scan_carry_kernel(float* carry, const float* prod, const float* out, const float* h0, Scan s) {
  GRID_STRIDE(i, s.B * s.D) {
    const i64 d = i % s.D, b = i / s.D;
    float state = h0 && !s.reverse ? h0[b * s.D + d] : 0.0f;
    for (i64 c = 0; c < s.chunks; ++c) {
      const i64 j = (b * s.chunks + c) * s.D + d;
      carry[j] = state;
      const i64 last = s.step(c, s.length(c) - 1);
      state = prod[j] * state + out[(b * s.T + last) * s.D + d];
    }
  }
}
// (3) out[t] += (product of the chunk's factors up to t) · the state entering the chunk.
__global__ void scan_fix_kernel(float* out, const float* carry, Scan s) {
  GRID_STRIDE(i, s.B * s.chunks * s.D) {
    const i64 d = i % s.D, c = (i / s.D) % s.chunks, b = i / (s.D * s.chunks);
    const float in = carry[i];
    float p = 1.0f;
    for (i64 k = 0, n = s.length(c); k < n; ++k) {
      const i64 t = s.step(c, k);
      p *= s.factor(b, t, d);
      out[(b * s.T + t) * s.D + d] += p * in;
    }
  }
}
// da[t] = g[t] · y[t − 1], 0 where a document starts; y[−1] = h0 or 0.
__global__ void scan_da_kernel(float* da, const float* g, const float* y, const float* h0, Scan s) {
  GRID_STRIDE(i, s.B * s.T * s.D) {
    const i64 d = i % s.D, t = (i / s.D) % s.T, b = i / (s.D * s.T);
    const float prev = s.starts(b, t) ? 0.0f : t > 0 ? y[i - s.D] : h0 ? h0[b * s.D + d] : 0.0f;
    da[i] = s.starts(b, t) ? 0.0f : g[i] * prev;
  }
}

void scan(float* out, const float* in, const float* h0, const Scan& s, float* scratch, cudaStream_t st) {
  float* prod = scratch;
  float* carry = scratch + s.B * s.chunks * s.D;
  const i64 n = s.B * s.chunks * s.D;
  scan_local_kernel<<<grid_for(n), kThreads, 0, st>>>(out, prod, in, s);
  LLMTK_CUDA_LAUNCHED("linear_scan");
  scan_carry_kernel<<<grid_for(s.B * s.D), kThreads, 0, st>>>(carry, prod, out, h0, s);
  LLMTK_CUDA_LAUNCHED("linear_scan");
  scan_fix_kernel<<<grid_for(n), kThreads, 0, st>>>(out, carry, s);
  LLMTK_CUDA_LAUNCHED("linear_scan");
}

}  // namespace

i64 linear_scan_scratch(i64 B, i64 T, i64 D) { return 2 * B * ((T + kScanChunk - 1) / kScanChunk) * D; }

void mingru_gates_forward(float* a, float* u, const float* z, const float* h, i64 n, cudaStream_t s) {
  if (n == 0) return;
  gates_forward_kernel<<<grid_for(n), kThreads, 0, s>>>(a, u, z, h, n);
  LLMTK_CUDA_LAUNCHED("mingru_gates_forward");
}
void mingru_gates_backward(float* dz, float* dh, const float* da, const float* du, const float* z, const float* h, i64 n,
                           cudaStream_t s) {
  if (n == 0) return;
  gates_backward_kernel<<<grid_for(n), kThreads, 0, s>>>(dz, dh, da, du, z, h, n);
  LLMTK_CUDA_LAUNCHED("mingru_gates_backward");
}
void linear_scan_forward(float* y, const float* a, const float* x, const float* h0, const std::int32_t* segments, i64 B,
                         i64 T, i64 D, float* scratch, cudaStream_t s) {
  if (B * T * D == 0) return;
  scan(y, x, h0, Scan{B, T, D, (T + kScanChunk - 1) / kScanChunk, false, a, segments}, scratch, s);
}
void linear_scan_backward(float* da, float* dx, const float* dy, const float* a, const float* y, const float* h0,
                          const std::int32_t* segments, i64 B, i64 T, i64 D, float* scratch, cudaStream_t s) {
  if (B * T * D == 0) return;
  const Scan sc{B, T, D, (T + kScanChunk - 1) / kScanChunk, true, a, segments};
  scan(dx, dy, nullptr, sc, scratch, s);  // dx = g, the reverse scan of dy
  scan_da_kernel<<<grid_for(B * T * D), kThreads, 0, s>>>(da, dx, y, h0, sc);
  LLMTK_CUDA_LAUNCHED("linear_scan_backward");
}

}  // namespace llmtk::cuda::kernels
