// Launch shape shared by the element-wise kernels (elementwise.cu, optimizer.cu): blocks of
// kGridThreads threads, at most 8 · 65535 blocks, and a grid-stride loop over 64-bit indices so
// any n is covered whatever the grid.
#pragma once
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

constexpr int kGridThreads = 256;
inline unsigned grid_for(i64 n) {
  const i64 blocks = (n + kGridThreads - 1) / kGridThreads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 8 ? 65535 * 8 : blocks));
}

}  // namespace llmtk::cuda::kernels

#define GRID_STRIDE(i, n) \
  for (i64 i = i64(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += i64(gridDim.x) * blockDim.x)
