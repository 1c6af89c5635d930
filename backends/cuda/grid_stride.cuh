// Shared by the element-wise kernels (elementwise.cu, optimizer.cu, norms.cu): the launch shape
// (blocks of kGridThreads threads, at most 8 · 65535 blocks, and a grid-stride loop over 64-bit
// indices so any n is covered whatever the grid), and 16-byte accesses for the vectorised forms.
#pragma once
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
