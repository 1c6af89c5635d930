// Shared by the element-wise kernels (elementwise.cu, optimizer.cu, norms.cu): the launch shape
// (blocks of kGridThreads threads, at most 8 · 65535 blocks, and a grid-stride loop over 64-bit
// indices so any n is covered whatever the grid), 16-byte accesses for the vectorised forms, and
// the storage types of activations (docs/bf16.md): f32 (float) or bf16 (std::uint16_t, the raw
// bits), loaded as f32 (exactly) and rounded once on store.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "kernels.hpp"

namespace llmtk::cuda::kernels {

constexpr int kGridThreads = 256;
inline unsigned grid_for(i64 n) {
  const i64 blocks = (n + kGridThreads - 1) / kGridThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

// Vec<W>: W consecutive floats; load<W>/store<W> move the W-wide group j (elements W·j …
// W·j + W − 1) in one 16-byte access when W = 4, which needs the pointer 16-byte aligned.
template <int W>
struct Vec {
  float v[W];
};
__device__ inline float bf16_word_value(unsigned w) { return __uint_as_float(w << 16); }
__device__ inline unsigned bf16_word(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }

// Element i of an activation in its storage type, as f32; and stored from f32 (bf16: rounded to
// nearest even, NaN stays NaN).
__device__ inline float ld(const float* p, i64 i) { return p[i]; }
__device__ inline float ld(const std::uint16_t* p, i64 i) { return bf16_word_value(p[i]); }
__device__ inline void st(float* p, i64 i, float v) { p[i] = v; }
__device__ inline void st(std::uint16_t* p, i64 i, float v) { p[i] = static_cast<std::uint16_t>(bf16_word(v)); }

// Group j of W = 4 bf16 (one 8-byte access, the pointer 8-byte aligned) or W = 1, widened; and
// stored rounded.
template <int W>
__device__ Vec<W> load(const std::uint16_t* p, i64 j) {
  static_assert(W == 4 || W == 1, "bf16 groups are four or one wide");
  if constexpr (W == 4) {
    const uint2 t = reinterpret_cast<const uint2*>(p)[j];
    return {{bf16_word_value(t.x & 0xffffu), bf16_word_value(t.x >> 16), bf16_word_value(t.y & 0xffffu),
             bf16_word_value(t.y >> 16)}};
  } else {
    return {{bf16_word_value(p[j])}};
  }
}
template <int W>
__device__ void store(std::uint16_t* p, i64 j, const Vec<W>& a) {
  static_assert(W == 4 || W == 1, "bf16 groups are four or one wide");
  if constexpr (W == 4)
    reinterpret_cast<uint2*>(p)[j] = make_uint2(bf16_word(a.v[0]) | bf16_word(a.v[1]) << 16,
                                                bf16_word(a.v[2]) | bf16_word(a.v[3]) << 16);
  else
    p[j] = static_cast<std::uint16_t>(bf16_word(a.v[0]));
}

template <int W>
__device__ Vec<W> load(const float* p, i64 j) {
  if constexpr (W == 4) {
    const float4 t = reinterpret_cast<const float4*>(p)[j];
    return {{t.x, t.y, t.z, t.w}};
  } else {
    return {{p[j]}};
  }
}
template <int W>
__device__ void store(float* p, i64 j, const Vec<W>& a) {
  if constexpr (W == 4) reinterpret_cast<float4*>(p)[j] = make_float4(a.v[0], a.v[1], a.v[2], a.v[3]);
  else p[j] = a.v[0];
}
inline bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace llmtk::cuda::kernels

#define GRID_STRIDE(i, n) \
  for (i64 i = i64(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += i64(gridDim.x) * blockDim.x)
