// The first include of every kernel file in the emulated build (to_cpp.py puts it there): the
// CUDA toolkit's own host headers for types (dim3, uint3, __nv_bfloat16, cudaStream_t), then the
// device-side names the kernels use, mapped onto the scheduler. Compiled by the host compiler as
// C++17, like the .cu files themselves.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "scheduler.hpp"

#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
// Shared memory: one copy per kernel, which is one per block because blocks run one at a time.
#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)

#define threadIdx (::cuda_emu::position().thread)
#define blockIdx (::cuda_emu::position().block)
#define blockDim (::cuda_emu::position().block_dim)
#define gridDim (::cuda_emu::position().grid_dim)

inline void __syncthreads() { ::cuda_emu::sync_block(); }

template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32) {
  static_assert(sizeof(T) <= 8, "cuda_emu shuffles values of up to 8 bytes");
  std::uint64_t mine = 0;
  std::memcpy(&mine, &v, sizeof(T));
  const std::uint64_t theirs = ::cuda_emu::exchange_xor(mine, lane_mask);
  T other;
  std::memcpy(&other, &theirs, sizeof(T));
  return other;
}

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// CUDA's device code has min and max overloads for every arithmetic type.
using std::max;
using std::min;

namespace cuda_emu {
// kernel<<<grid, block, shared bytes, stream>>>(args) becomes
// cuda_emu::launch_kernel<may_wait>(grid, block, shared bytes, stream, [&] { kernel(args); }).
template <bool may_wait, class F>
void launch_kernel(dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t, F&& thread) {
  (void)shared_bytes;  // the backend's kernels use static shared memory only
  launch(grid, block, may_wait, std::function<void()>(std::forward<F>(thread)));
}
}  // namespace cuda_emu
