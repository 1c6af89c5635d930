// Element-wise kernels: activations, gated units, add, scale, position schemes, RoPE, embedding
// lookup, bf16 conversion. Grid-stride loops over 64-bit indices; every launch is checked.
#include <cuda_bf16.h>

#include <type_traits>

#include "../../framework/ops/dropout_mask.hpp"
#include "check.hpp"
#include "grid_stride.cuh"
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

namespace {

constexpr int kThreads = kGridThreads;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
__device__ float gelu(float x) { return 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x))); }
__device__ float gelu_grad(float x) {
  const float t = tanhf(kSqrt2OverPi * (x + 0.044715f * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kSqrt2OverPi * (1.0f + 3.0f * 0.044715f * x * x);
}
__device__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ float silu(float x) { return x * sigmoid(x); }
__device__ float silu_grad(float x) {
  const float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

template <Unary F>
__device__ float apply(float x) {
  if constexpr (F == Unary::gelu) return gelu(x);
  else if constexpr (F == Unary::relu) return x > 0.0f ? x : 0.0f;
  else if constexpr (F == Unary::tanh) return tanhf(x);
  else return silu(x);
}
template <Unary F>
__device__ float derivative(float x) {
  if constexpr (F == Unary::gelu) return gelu_grad(x);
  else if constexpr (F == Unary::relu) return x > 0.0f ? 1.0f : 0.0f;
  else if constexpr (F == Unary::tanh) {
    const float t = tanhf(x);
    return 1.0f - t * t;
  } else return silu_grad(x);
}

// E: the storage type of the activations (float, or std::uint16_t for bf16: grid_stride.cuh).
template <Unary F, class E>
__global__ void unary_forward_kernel(E* y, const E* x, i64 n) {
  GRID_STRIDE(i, n) st(y, i, apply<F>(ld(x, i)));
}
template <Unary F, class E>
__global__ void unary_backward_kernel(E* dx, const E* dy, const E* x, i64 n) {
  GRID_STRIDE(i, n) st(dx, i, ld(dy, i) * derivative<F>(ld(x, i)));
}

// The unfused GELU matmuls with a bf16 result (matmul.cpp): from the f32 product p, h = p and
// y = gelu(p), each rounded once; dx = p · gelu'(h).
__global__ void gelu_from_product_kernel(std::uint16_t* y, std::uint16_t* h, const float* p, i64 n) {
  GRID_STRIDE(i, n) {
    const float v = p[i];
    st(h, i, v);
    st(y, i, gelu(v));
  }
}
__global__ void gelu_backward_from_product_kernel(std::uint16_t* dx, const float* p, const std::uint16_t* h, i64 n) {
  GRID_STRIDE(i, n) st(dx, i, p[i] * gelu_grad(ld(h, i)));
}

template <Gate F>
__device__ float gate_value(float g) { return F == Gate::silu ? silu(g) : gelu(g); }
template <Gate F>
__device__ float gate_grad(float g) { return F == Gate::silu ? silu_grad(g) : gelu_grad(g); }

template <Gate F, class E>
__global__ void gated_forward_kernel(E* y, const E* gate, const E* up, i64 n) {
  GRID_STRIDE(i, n) st(y, i, gate_value<F>(ld(gate, i)) * ld(up, i));
}
// dgate may alias dy: everything is read before anything is written.
template <Gate F, class E>
__global__ void gated_backward_kernel(E* dgate, E* dup, const E* dy, const E* gate, const E* up, i64 n) {
  GRID_STRIDE(i, n) {
    const float g = ld(gate, i), u = ld(up, i), d = ld(dy, i);
    st(dgate, i, d * u * gate_grad<F>(g));
    st(dup, i, d * gate_value<F>(g));
  }
}

// The element after the n / 4 groups of four that a vectorised kernel's thread handles, if any
// (the first n % 4 threads of block 0 take the tail).
__device__ i64 tail_index(i64 n) { return n / 4 * 4 + i64(blockIdx.x) * blockDim.x + threadIdx.x; }

template <Unary F, class E>
__global__ void unary_forward4_kernel(E* y, const E* x, i64 n) {
  GRID_STRIDE(i, n / 4) {
    Vec<4> a = load<4>(x, i);
    for (float& e : a.v) e = apply<F>(e);
    store<4>(y, i, a);
  }
  if (const i64 t = tail_index(n); t < n) st(y, t, apply<F>(ld(x, t)));
}
// dx may alias dy: each group is read before it is written.
template <Unary F, class E>
__global__ void unary_backward4_kernel(E* dx, const E* dy, const E* x, i64 n) {
  GRID_STRIDE(i, n / 4) {
    Vec<4> d = load<4>(dy, i);
    const Vec<4> a = load<4>(x, i);
    for (int k = 0; k < 4; ++k) d.v[k] *= derivative<F>(a.v[k]);
    store<4>(dx, i, d);
  }
  if (const i64 t = tail_index(n); t < n) st(dx, t, ld(dy, t) * derivative<F>(ld(x, t)));
}
template <Gate F, class E>
__global__ void gated_forward4_kernel(E* y, const E* gate, const E* up, i64 n) {
  GRID_STRIDE(i, n / 4) {
    Vec<4> g = load<4>(gate, i);
    const Vec<4> u = load<4>(up, i);
    for (int k = 0; k < 4; ++k) g.v[k] = gate_value<F>(g.v[k]) * u.v[k];
    store<4>(y, i, g);
  }
  if (const i64 t = tail_index(n); t < n) st(y, t, gate_value<F>(ld(gate, t)) * ld(up, t));
}
template <Gate F, class E>
__global__ void gated_backward4_kernel(E* dgate, E* dup, const E* dy, const E* gate, const E* up, i64 n) {
  GRID_STRIDE(i, n / 4) {
    const Vec<4> g = load<4>(gate, i), u = load<4>(up, i), d = load<4>(dy, i);
    Vec<4> dg, du;
    for (int k = 0; k < 4; ++k) {
      dg.v[k] = d.v[k] * u.v[k] * gate_grad<F>(g.v[k]);
      du.v[k] = d.v[k] * gate_value<F>(g.v[k]);
    }
    store<4>(dgate, i, dg);
    store<4>(dup, i, du);
  }
  if (const i64 t = tail_index(n); t < n) {
    const float g = ld(gate, t), u = ld(up, t), d = ld(dy, t);
    st(dgate, t, d * u * gate_grad<F>(g));
    st(dup, t, d * gate_value<F>(g));
  }
}

// Vectorised forms of the memory-bound kernels: each thread moves 16 bytes per access (4 floats or
// 8 bf16) where every pointer is 16-byte aligned (arenas and scratch are; views may not be), with a
// scalar tail; otherwise the scalar loop.

template <class E>
__global__ void add_kernel(E* y, const E* a, const E* b, i64 n) {
  GRID_STRIDE(i, n) st(y, i, ld(a, i) + ld(b, i));
}
template <class E>
__global__ void add4_kernel(E* y, const E* a, const E* b, i64 n) {
  GRID_STRIDE(i, (n + 3) / 4) {
    const i64 j = 4 * i;
    if (j + 4 <= n) {
      Vec<4> u = load<4>(a, i);
      const Vec<4> v = load<4>(b, i);
      for (int k = 0; k < 4; ++k) u.v[k] += v.v[k];
      store<4>(y, i, u);
    } else {
      for (i64 k = j; k < n; ++k) st(y, k, ld(a, k) + ld(b, k));
    }
  }
}
template <class E>
__global__ void scale_kernel(E* y, const E* x, float k, i64 n) {
  GRID_STRIDE(i, n) st(y, i, k * ld(x, i));
}
// The mask is a function of (seed, i) (ops/dropout_mask.hpp): the same elements as on the host.
template <class E>
__global__ void dropout_kernel(E* y, const E* x, float p, float k, std::uint64_t seed, i64 n) {
  GRID_STRIDE(i, n) st(y, i, dropout::keep(seed, i, p) ? k * ld(x, i) : 0.0f);
}

template <class E>
__global__ void positions_forward_kernel(E* y, const E* x, const float* table, i64 B, i64 T, i64 C, i64 pos0) {
  GRID_STRIDE(i, B * T * C) {
    const i64 t = (i / C) % T, c = i % C;
    st(y, i, ld(x, i) + table[(pos0 + t) * C + c]);
  }
}
// One thread per (t, c): the batch is summed in order, no atomics.
template <class E>
__global__ void positions_backward_kernel(float* dtable, const E* dy, i64 B, i64 T, i64 C) {
  GRID_STRIDE(i, T * C) {
    float acc = 0.0f;
    for (i64 b = 0; b < B; ++b) acc += ld(dy, b * T * C + i);
    dtable[i] += acc;
  }
}
// Angles in double: positions reach 10^5 and the reference computes them exactly.
template <class E>
__global__ void sinusoidal_kernel(E* y, const E* x, i64 B, i64 T, i64 C, i64 pos0) {
  const i64 half = C / 2;
  GRID_STRIDE(i, B * T * half) {
    const i64 pair = i % half, row = i / half, t = row % T;
    const double a = double(pos0 + t) / pow(10000.0, 2.0 * double(pair) / double(C));
    double sn, cs;
    sincos(a, &sn, &cs);
    const i64 o = row * C + 2 * pair;
    st(y, o, float(double(ld(x, o)) + sn));
    st(y, o + 1, float(double(ld(x, o + 1)) + cs));
  }
}
// One thread per (b, t, h, pair i): rotates (x_i, x_{i + D/2}) by angle (pos0 + t)·base^(-2i/D).
// y may alias x: each thread reads its pair before writing it.
// The angle p · base^(−2i/D) in double, as the reference computes it, once per position and pair
// (row j of the table is position lo + j).
__global__ void rope_table_kernel(float* tab, i64 lo, i64 P, i64 D, float base) {
  const i64 half = D / 2;
  GRID_STRIDE(i, P * half) {
    const i64 pair = i % half, p = lo + i / half;
    const double a = double(p) * pow(double(base), -2.0 * double(pair) / double(D));
    double sn, cs;
    sincos(a, &sn, &cs);
    tab[2 * i] = float(cs), tab[2 * i + 1] = float(sn);
  }
}
template <class E>
__global__ void rope_kernel(E* y, const E* x, const float* tab, i64 lo, i64 B, i64 T, i64 H, i64 D, i64 pos0,
                            float sign) {
  const i64 half = D / 2;
  GRID_STRIDE(i, B * T * H * half) {
    const i64 pair = i % half, head_row = i / half, t = (head_row / H) % T;
    const float* cs = tab + 2 * ((pos0 + t - lo) * half + pair);
    const float c = cs[0], s = sign * cs[1];
    const i64 o = head_row * D + pair;
    const float x0 = ld(x, o), x1 = ld(x, o + half);
    st(y, o, x0 * c - x1 * s);
    st(y, o + half, x1 * c + x0 * s);
  }
}

template <class E>
__global__ void embedding_forward_kernel(E* y, const std::int32_t* ids, const float* table, i64 N, i64 C, i64 V) {
  GRID_STRIDE(i, N * C) {
    const std::int32_t id = ids[i / C];
    st(y, i, id >= 0 && id < V ? table[i64(id) * C + i % C] : 0.0f);
  }
}

__device__ unsigned bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
// Eight floats as eight bf16 in one 16-byte word (element 0 in the low half of .x).
__device__ uint4 pack_bf16(float4 a, float4 b) {
  return make_uint4(bf16_bits(a.x) | bf16_bits(a.y) << 16, bf16_bits(a.z) | bf16_bits(a.w) << 16,
                    bf16_bits(b.x) | bf16_bits(b.y) << 16, bf16_bits(b.z) | bf16_bits(b.w) << 16);
}
__device__ float low_bf16(unsigned w) { return __uint_as_float(w << 16); }
__device__ float high_bf16(unsigned w) { return __uint_as_float(w & 0xffff0000u); }

__global__ void to_bf16_kernel(std::uint16_t* out, const float* in, i64 n) {
  GRID_STRIDE(i, n) {
    out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(in[i]));
  }
}
__global__ void to_bf16_8_kernel(std::uint16_t* out, const float* in, i64 n) {
  GRID_STRIDE(i, (n + 7) / 8) {
    const i64 j = 8 * i;
    if (j + 8 <= n) {
      const float4* src = reinterpret_cast<const float4*>(in + j);
      reinterpret_cast<uint4*>(out)[i] = pack_bf16(src[0], src[1]);
    } else {
      for (i64 k = j; k < n; ++k) out[k] = static_cast<std::uint16_t>(bf16_bits(in[k]));
    }
  }
}
template <class In>
__global__ void to_bf16_padded_kernel(std::uint16_t* out, const In* in, i64 rows, i64 cols, i64 ld) {
  GRID_STRIDE(i, rows * ld) {
    const i64 r = i / ld, c = i % ld;
    if constexpr (sizeof(In) == 2) out[i] = c < cols ? in[r * cols + c] : std::uint16_t(0);  // bf16: copied
    else out[i] = c < cols ? __bfloat16_as_ushort(__float2bfloat16_rn(in[r * cols + c])) : std::uint16_t(0);
  }
}
// ld a multiple of 8 and out 16-byte aligned: one thread per 8 outputs of a row (one index
// division per 8 elements instead of per element); the loads are 16 bytes wide when every row of
// `in` starts 16-byte aligned (vec_in: cols a multiple of 4, in aligned).
template <bool vec_in>
__global__ void to_bf16_padded_8_kernel(std::uint16_t* out, const float* in, i64 rows, i64 cols, i64 ld) {
  const i64 per_row = ld / 8;
  GRID_STRIDE(i, rows * per_row) {
    const i64 r = i / per_row, c = (i - r * per_row) * 8;
    const float* src = in + r * cols + c;
    float4 a, b;
    if (vec_in && c + 8 <= cols) {
      a = reinterpret_cast<const float4*>(src)[0], b = reinterpret_cast<const float4*>(src)[1];
    } else {
      float v[8];
      for (int k = 0; k < 8; ++k) v[k] = c + k < cols ? src[k] : 0.0f;
      a = make_float4(v[0], v[1], v[2], v[3]), b = make_float4(v[4], v[5], v[6], v[7]);
    }
    reinterpret_cast<uint4*>(out)[i] = pack_bf16(a, b);  // out row r starts at r·ld, a multiple of 8
  }
}
__global__ void from_bf16_kernel(float* out, const std::uint16_t* in, i64 n) {
  GRID_STRIDE(i, n) out[i] = __uint_as_float(static_cast<unsigned>(in[i]) << 16);
}
__global__ void from_bf16_8_kernel(float* out, const std::uint16_t* in, i64 n) {
  GRID_STRIDE(i, (n + 7) / 8) {
    const i64 j = 8 * i;
    if (j + 8 <= n) {
      const uint4 w = reinterpret_cast<const uint4*>(in)[i];
      float4* dst = reinterpret_cast<float4*>(out + j);
      dst[0] = make_float4(low_bf16(w.x), high_bf16(w.x), low_bf16(w.y), high_bf16(w.y));
      dst[1] = make_float4(low_bf16(w.z), high_bf16(w.z), low_bf16(w.w), high_bf16(w.w));
    } else {
      for (i64 k = j; k < n; ++k) out[k] = __uint_as_float(static_cast<unsigned>(in[k]) << 16);
    }
  }
}
// dst[r·ld_dst + c] = src[r·ld_src + c] for rows × cols: one row per grid row, a grid-stride loop
// along it (no index division).
// The same into a dense destination (ld_dst = cols ≥ 4), 16-byte aligned: each thread gathers 4
// consecutive destination elements (they may run into the next row) and stores them at once.
__global__ void copy_rows_dense4_kernel(float* dst, const float* src, i64 ld_src, i64 rows, i64 cols) {
  const i64 n = rows * cols;
  GRID_STRIDE(i, n / 4) {
    const i64 j = 4 * i, r = j / cols, c = j - r * cols;
    float v[4];
    for (int k = 0; k < 4; ++k) v[k] = c + k < cols ? src[r * ld_src + c + k] : src[(r + 1) * ld_src + c + k - cols];
    reinterpret_cast<float4*>(dst)[i] = make_float4(v[0], v[1], v[2], v[3]);
  }
  if (const i64 t = tail_index(n); t < n) dst[t] = src[t / cols * ld_src + t % cols];
}
template <class T>
__global__ void copy_rows_kernel(T* dst, i64 ld_dst, const T* src, i64 ld_src, i64 rows, i64 cols) {
  for (i64 r = blockIdx.y; r < rows; r += gridDim.y)
    for (i64 c = i64(blockIdx.x) * blockDim.x + threadIdx.x; c < cols; c += i64(gridDim.x) * blockDim.x)
      dst[r * ld_dst + c] = src[r * ld_src + c];
}

__global__ void round_to_bf16_kernel(float* out, const float* in, i64 n) {
  GRID_STRIDE(i, n) out[i] = __bfloat162float(__float2bfloat16_rn(in[i]));
}
template <class In>
__global__ void to_bf16_heads_kernel(std::uint16_t* out, const In* in, i64 rows, i64 KV, i64 H, i64 D) {
  GRID_STRIDE(i, rows * H * D) {
    const i64 d = i % D, h = (i / D) % H, r = i / (D * H);
    st(out, i, ld(in, (r * KV + h / (H / KV)) * D + d));  // bf16 in: copied exactly
  }
}
template <class Out>
__global__ void from_bf16_sum_heads_kernel(Out* out, const std::uint16_t* in, i64 rows, i64 KV, i64 H, i64 D) {
  const i64 group = H / KV;
  GRID_STRIDE(i, rows * KV * D) {
    const i64 d = i % D, g = (i / D) % KV, r = i / (D * KV);
    const std::uint16_t* src = in + (r * H + g * group) * D + d;
    float sum = 0.0f;
    for (i64 j = 0; j < group; ++j) sum += __uint_as_float(static_cast<unsigned>(src[j * D]) << 16);
    st(out, i, sum);  // the f32 sum, rounded once for a bf16 gradient
  }
}

}  // namespace

// Each launcher takes the vectorised kernel when every pointer is 16-byte aligned.
namespace {

// The launchers of the element-wise kernels, for either storage type; the vectorised form where
// every pointer is 16-byte aligned.
template <Unary F, class E>
void launch_unary_forward(E* y, const E* x, i64 n, cudaStream_t s) {
  if (aligned16(y) && aligned16(x)) unary_forward4_kernel<F, E><<<grid_for(n / 4), kThreads, 0, s>>>(y, x, n);
  else unary_forward_kernel<F, E><<<grid_for(n), kThreads, 0, s>>>(y, x, n);
}
// fn(std::integral_constant<Unary, F>{}) for the F that f names (or Gate): the one place a run-time
// choice becomes the kernels' template parameter.
template <class Fn>
void with_unary(Unary f, Fn&& fn) {
  switch (f) {
    case Unary::gelu: return fn(std::integral_constant<Unary, Unary::gelu>{});
    case Unary::relu: return fn(std::integral_constant<Unary, Unary::relu>{});
    case Unary::tanh: return fn(std::integral_constant<Unary, Unary::tanh>{});
    case Unary::silu: return fn(std::integral_constant<Unary, Unary::silu>{});
  }
}
template <class Fn>
void with_gate(Gate f, Fn&& fn) {
  if (f == Gate::silu) fn(std::integral_constant<Gate, Gate::silu>{});
  else fn(std::integral_constant<Gate, Gate::gelu>{});
}
template <class E>
void unary_forward_any(Unary f, E* y, const E* x, i64 n, cudaStream_t s) {
  if (n == 0) return;
  with_unary(f, [&](auto F) { launch_unary_forward<decltype(F)::value>(y, x, n, s); });
  LLMTK_CUDA_LAUNCHED("unary_forward");
}
template <Unary F, class E>
void launch_unary_backward(E* dx, const E* dy, const E* x, i64 n, cudaStream_t s) {
  if (aligned16(dx) && aligned16(dy) && aligned16(x))
    unary_backward4_kernel<F, E><<<grid_for(n / 4), kThreads, 0, s>>>(dx, dy, x, n);
  else unary_backward_kernel<F, E><<<grid_for(n), kThreads, 0, s>>>(dx, dy, x, n);
}
template <class E>
void unary_backward_any(Unary f, E* dx, const E* dy, const E* x, i64 n, cudaStream_t s) {
  if (n == 0) return;
  with_unary(f, [&](auto F) { launch_unary_backward<decltype(F)::value>(dx, dy, x, n, s); });
  LLMTK_CUDA_LAUNCHED("unary_backward");
}
template <Gate F, class E>
void launch_gated_forward(E* y, const E* gate, const E* up, i64 n, cudaStream_t s) {
  if (aligned16(y) && aligned16(gate) && aligned16(up))
    gated_forward4_kernel<F, E><<<grid_for(n / 4), kThreads, 0, s>>>(y, gate, up, n);
  else gated_forward_kernel<F, E><<<grid_for(n), kThreads, 0, s>>>(y, gate, up, n);
}
template <class E>
void gated_forward_any(Gate f, E* y, const E* gate, const E* up, i64 n, cudaStream_t s) {
  if (n == 0) return;
  with_gate(f, [&](auto F) { launch_gated_forward<decltype(F)::value>(y, gate, up, n, s); });
  LLMTK_CUDA_LAUNCHED("gated_forward");
}
template <Gate F, class E>
void launch_gated_backward(E* dgate, E* dup, const E* dy, const E* gate, const E* up, i64 n, cudaStream_t s) {
  if (aligned16(dgate) && aligned16(dup) && aligned16(dy) && aligned16(gate) && aligned16(up))
    gated_backward4_kernel<F, E><<<grid_for(n / 4), kThreads, 0, s>>>(dgate, dup, dy, gate, up, n);
  else gated_backward_kernel<F, E><<<grid_for(n), kThreads, 0, s>>>(dgate, dup, dy, gate, up, n);
}
template <class E>
void gated_backward_any(Gate f, E* dgate, E* dup, const E* dy, const E* gate, const E* up, i64 n, cudaStream_t s) {
  if (n == 0) return;
  with_gate(f, [&](auto F) { launch_gated_backward<decltype(F)::value>(dgate, dup, dy, gate, up, n, s); });
  LLMTK_CUDA_LAUNCHED("gated_backward");
}
template <class E>
void add_any(E* y, const E* a, const E* b, i64 n, cudaStream_t s) {
  if (n == 0) return;
  if (aligned16(y) && aligned16(a) && aligned16(b)) add4_kernel<E><<<grid_for((n + 3) / 4), kThreads, 0, s>>>(y, a, b, n);
  else add_kernel<E><<<grid_for(n), kThreads, 0, s>>>(y, a, b, n);
  LLMTK_CUDA_LAUNCHED("add");
}
template <class E>
void scale_any(E* y, const E* x, float k, i64 n, cudaStream_t s) {
  if (n == 0) return;
  scale_kernel<E><<<grid_for(n), kThreads, 0, s>>>(y, x, k, n);
  LLMTK_CUDA_LAUNCHED("scale");
}
template <class E>
void dropout_any(E* y, const E* x, float p, std::uint64_t seed, i64 n, cudaStream_t s) {
  if (n == 0) return;
  dropout_kernel<E><<<grid_for(n), kThreads, 0, s>>>(y, x, p, llmtk::dropout::kept_scale(p), seed, n);
  LLMTK_CUDA_LAUNCHED("dropout");
}

}  // namespace

#define LLMTK_FOR_BOTH_STORAGE_TYPES(E)                                                                          \
  void unary_forward(Unary f, E* y, const E* x, i64 n, cudaStream_t s) { unary_forward_any(f, y, x, n, s); }      \
  void unary_backward(Unary f, E* dx, const E* dy, const E* x, i64 n, cudaStream_t s) {                          \
    unary_backward_any(f, dx, dy, x, n, s);                                                                      \
  }                                                                                                              \
  void gated_forward(Gate f, E* y, const E* gate, const E* up, i64 n, cudaStream_t s) {                          \
    gated_forward_any(f, y, gate, up, n, s);                                                                     \
  }                                                                                                              \
  void gated_backward(Gate f, E* dgate, E* dup, const E* dy, const E* gate, const E* up, i64 n, cudaStream_t s) { \
    gated_backward_any(f, dgate, dup, dy, gate, up, n, s);                                                       \
  }                                                                                                              \
  void add(E* y, const E* a, const E* b, i64 n, cudaStream_t s) { add_any(y, a, b, n, s); }                      \
  void scale(E* y, const E* x, float k, i64 n, cudaStream_t s) { scale_any(y, x, k, n, s); }                    \
  void dropout(E* y, const E* x, float p, std::uint64_t seed, i64 n, cudaStream_t s) { dropout_any(y, x, p, seed, n, s); }
LLMTK_FOR_BOTH_STORAGE_TYPES(float)
LLMTK_FOR_BOTH_STORAGE_TYPES(std::uint16_t)
#undef LLMTK_FOR_BOTH_STORAGE_TYPES

namespace {
template <class E>
void positions_forward_any(E* y, const E* x, const float* table, i64 B, i64 T, i64 C, i64 pos0, cudaStream_t s) {
  if (B * T * C == 0) return;
  positions_forward_kernel<E><<<grid_for(B * T * C), kThreads, 0, s>>>(y, x, table, B, T, C, pos0);
  LLMTK_CUDA_LAUNCHED("positions_forward");
}
template <class E>
void positions_backward_any(float* dtable, const E* dy, i64 B, i64 T, i64 C, cudaStream_t s) {
  if (T * C == 0) return;
  positions_backward_kernel<E><<<grid_for(T * C), kThreads, 0, s>>>(dtable, dy, B, T, C);
  LLMTK_CUDA_LAUNCHED("positions_backward");
}
template <class E>
void sinusoidal_forward_any(E* y, const E* x, i64 B, i64 T, i64 C, i64 pos0, cudaStream_t s) {
  if (B * T * C == 0) return;
  sinusoidal_kernel<E><<<grid_for(B * T * C / 2), kThreads, 0, s>>>(y, x, B, T, C, pos0);
  LLMTK_CUDA_LAUNCHED("sinusoidal_forward");
}
template <class E>
void rope_any(E* y, const E* x, const float* tab, i64 lo, i64 B, i64 T, i64 H, i64 D, i64 pos0, float sign,
              cudaStream_t s) {
  if (B * T * H * D == 0) return;
  rope_kernel<E><<<grid_for(B * T * H * D / 2), kThreads, 0, s>>>(y, x, tab, lo, B, T, H, D, pos0, sign);
  LLMTK_CUDA_LAUNCHED("rope");
}
template <class E>
void embedding_forward_any(E* y, const std::int32_t* ids, const float* table, i64 N, i64 C, i64 V, cudaStream_t s) {
  if (N * C == 0) return;
  embedding_forward_kernel<E><<<grid_for(N * C), kThreads, 0, s>>>(y, ids, table, N, C, V);
  LLMTK_CUDA_LAUNCHED("embedding_forward");
}
}  // namespace

#define LLMTK_FOR_BOTH_STORAGE_TYPES(E)                                                                           \
  void positions_forward(E* y, const E* x, const float* table, i64 B, i64 T, i64 C, i64 pos0, cudaStream_t s) {    \
    positions_forward_any(y, x, table, B, T, C, pos0, s);                                                         \
  }                                                                                                               \
  void positions_backward(float* dtable, const E* dy, i64 B, i64 T, i64 C, cudaStream_t s) {                      \
    positions_backward_any(dtable, dy, B, T, C, s);                                                               \
  }                                                                                                               \
  void sinusoidal_forward(E* y, const E* x, i64 B, i64 T, i64 C, i64 pos0, cudaStream_t s) {                      \
    sinusoidal_forward_any(y, x, B, T, C, pos0, s);                                                               \
  }                                                                                                               \
  void rope(E* y, const E* x, const float* tab, i64 lo, i64 B, i64 T, i64 H, i64 D, i64 pos0, float sign,          \
            cudaStream_t s) {                                                                                     \
    rope_any(y, x, tab, lo, B, T, H, D, pos0, sign, s);                                                           \
  }                                                                                                               \
  void embedding_forward(E* y, const std::int32_t* ids, const float* table, i64 N, i64 C, i64 V, cudaStream_t s) { \
    embedding_forward_any(y, ids, table, N, C, V, s);                                                             \
  }
LLMTK_FOR_BOTH_STORAGE_TYPES(float)
LLMTK_FOR_BOTH_STORAGE_TYPES(std::uint16_t)
#undef LLMTK_FOR_BOTH_STORAGE_TYPES

void gelu_from_product(std::uint16_t* y, std::uint16_t* h, const float* p, i64 n, cudaStream_t s) {
  if (n == 0) return;
  gelu_from_product_kernel<<<grid_for(n), kThreads, 0, s>>>(y, h, p, n);
  LLMTK_CUDA_LAUNCHED("gelu_from_product");
}
void gelu_backward_from_product(std::uint16_t* dx, const float* p, const std::uint16_t* h, i64 n, cudaStream_t s) {
  if (n == 0) return;
  gelu_backward_from_product_kernel<<<grid_for(n), kThreads, 0, s>>>(dx, p, h, n);
  LLMTK_CUDA_LAUNCHED("gelu_backward_from_product");
}

void rope_table(float* tab, i64 lo, i64 P, i64 D, float base, cudaStream_t s) {
  if (P * D == 0) return;
  rope_table_kernel<<<grid_for(P * D / 2), kThreads, 0, s>>>(tab, lo, P, D, base);
  LLMTK_CUDA_LAUNCHED("rope");
}
void to_bf16(std::uint16_t* out, const float* in, i64 n, cudaStream_t s) {
  if (n == 0) return;
  if (aligned16(out) && aligned16(in)) to_bf16_8_kernel<<<grid_for((n + 7) / 8), kThreads, 0, s>>>(out, in, n);
  else to_bf16_kernel<<<grid_for(n), kThreads, 0, s>>>(out, in, n);
  LLMTK_CUDA_LAUNCHED("to_bf16");
}
void to_bf16_padded(std::uint16_t* out, const std::uint16_t* in, i64 rows, i64 cols, i64 ld, cudaStream_t s) {
  if (rows * ld == 0) return;
  to_bf16_padded_kernel<std::uint16_t><<<grid_for(rows * ld), kThreads, 0, s>>>(out, in, rows, cols, ld);
  LLMTK_CUDA_LAUNCHED("to_bf16_padded");
}
void to_bf16_padded(std::uint16_t* out, const float* in, i64 rows, i64 cols, i64 ld, cudaStream_t s) {
  if (rows * ld == 0) return;
  if (ld % 8 != 0 || !aligned16(out))
    to_bf16_padded_kernel<float><<<grid_for(rows * ld), kThreads, 0, s>>>(out, in, rows, cols, ld);
  else if (cols % 4 == 0 && aligned16(in))
    to_bf16_padded_8_kernel<true><<<grid_for(rows * ld / 8), kThreads, 0, s>>>(out, in, rows, cols, ld);
  else
    to_bf16_padded_8_kernel<false><<<grid_for(rows * ld / 8), kThreads, 0, s>>>(out, in, rows, cols, ld);
  LLMTK_CUDA_LAUNCHED("to_bf16_padded");
}
void from_bf16(float* out, const std::uint16_t* in, i64 n, cudaStream_t s) {
  if (n == 0) return;
  if (aligned16(out) && aligned16(in)) from_bf16_8_kernel<<<grid_for((n + 7) / 8), kThreads, 0, s>>>(out, in, n);
  else from_bf16_kernel<<<grid_for(n), kThreads, 0, s>>>(out, in, n);
  LLMTK_CUDA_LAUNCHED("from_bf16");
}

namespace {
template <class T>
void copy_rows_any(T* dst, i64 ld_dst, const T* src, i64 ld_src, i64 rows, i64 cols, cudaStream_t s) {
  const i64 gx = (cols + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned>(gx < 64 ? gx : 64), static_cast<unsigned>(rows < 65535 ? rows : 65535));
  copy_rows_kernel<T><<<grid, kThreads, 0, s>>>(dst, ld_dst, src, ld_src, rows, cols);
  LLMTK_CUDA_LAUNCHED("copy_rows");
}
}  // namespace
void copy_rows(float* dst, i64 ld_dst, const float* src, i64 ld_src, i64 rows, i64 cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  if (ld_dst == cols && cols >= 4 && aligned16(dst)) {  // a dense destination: 16-byte stores
    copy_rows_dense4_kernel<<<grid_for(rows * cols / 4), kThreads, 0, s>>>(dst, src, ld_src, rows, cols);
    LLMTK_CUDA_LAUNCHED("copy_rows");
    return;
  }
  copy_rows_any(dst, ld_dst, src, ld_src, rows, cols, s);
}
void copy_rows(std::uint16_t* dst, i64 ld_dst, const std::uint16_t* src, i64 ld_src, i64 rows, i64 cols,
               cudaStream_t s) {
  if (rows * cols == 0) return;
  copy_rows_any(dst, ld_dst, src, ld_src, rows, cols, s);
}

void round_to_bf16(float* out, const float* in, i64 n, cudaStream_t s) {
  if (n == 0) return;
  round_to_bf16_kernel<<<grid_for(n), kThreads, 0, s>>>(out, in, n);
  LLMTK_CUDA_LAUNCHED("round_to_bf16");
}
#define LLMTK_FOR_BOTH_STORAGE_TYPES(E)                                                                         \
  void to_bf16_heads(std::uint16_t* out, const E* in, i64 rows, i64 KV, i64 H, i64 D, cudaStream_t s) {           \
    if (rows * H * D == 0) return;                                                                              \
    to_bf16_heads_kernel<E><<<grid_for(rows * H * D), kThreads, 0, s>>>(out, in, rows, KV, H, D);                \
    LLMTK_CUDA_LAUNCHED("to_bf16_heads");                                                                       \
  }                                                                                                             \
  void from_bf16_sum_heads(E* out, const std::uint16_t* in, i64 rows, i64 KV, i64 H, i64 D, cudaStream_t s) {     \
    if (rows * KV * D == 0) return;                                                                             \
    from_bf16_sum_heads_kernel<E><<<grid_for(rows * KV * D), kThreads, 0, s>>>(out, in, rows, KV, H, D);         \
    LLMTK_CUDA_LAUNCHED("from_bf16_sum_heads");                                                                 \
  }
LLMTK_FOR_BOTH_STORAGE_TYPES(float)
LLMTK_FOR_BOTH_STORAGE_TYPES(std::uint16_t)
#undef LLMTK_FOR_BOTH_STORAGE_TYPES

}  // namespace llmtk::cuda::kernels
