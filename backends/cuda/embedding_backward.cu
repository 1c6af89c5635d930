// Deterministic embedding backward: positions are sorted by token id (CUB's stable radix sort),
// then each token's rows of dy are summed in position order and added to its row of dtable. No
// atomics, so repeated tokens give the same bits every run. dy in either storage type (f32, or bf16
// as raw bits: grid_stride.cuh); dtable f32.
#include <cub/device/device_radix_sort.cuh>

#include "check.hpp"
#include "grid_stride.cuh"
#include "kernels.hpp"

namespace llmtk::cuda::kernels {

namespace {

constexpr int kThreads = 256;

// Scratch layout: sorted ids, positions, sorted positions (N i32 each), then CUB's temp storage.
std::size_t align256(std::size_t n) { return (n + 255) / 256 * 256; }
std::size_t cub_bytes(i64 N) {
  std::size_t bytes = 0;
  LLMTK_CUDA_CHECK("embedding_backward",
                   cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const std::int32_t*>(nullptr),
                                                   static_cast<std::int32_t*>(nullptr),
                                                   static_cast<const std::int32_t*>(nullptr),
                                                   static_cast<std::int32_t*>(nullptr), static_cast<int>(N)));
  return bytes;
}

__global__ void iota_kernel(std::int32_t* out, i64 n) {
  const i64 i = i64(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<std::int32_t>(i);
}

// Block x: sorted position x; only the first position of each run of equal ids does work, summing
// the run in order. Threads (and blockIdx.y) cover the C columns.
template <class E>
__global__ void run_sum_kernel(float* dtable, const E* dy, const std::int32_t* ids_sorted,
                               const std::int32_t* pos_sorted, i64 N, i64 C, i64 V) {
  const i64 x = blockIdx.x;
  const std::int32_t id = ids_sorted[x];
  if ((x > 0 && ids_sorted[x - 1] == id) || id < 0 || id >= V) return;
  for (i64 c = i64(blockIdx.y) * blockDim.x + threadIdx.x; c < C; c += i64(gridDim.y) * blockDim.x) {
    float acc = 0.0f;
    for (i64 r = x; r < N && ids_sorted[r] == id; ++r) acc += ld(dy, i64(pos_sorted[r]) * C + c);
    dtable[i64(id) * C + c] += acc;
  }
}

template <class E>
void embedding_backward_any(float* dtable, const E* dy, const std::int32_t* ids, i64 N, i64 C, i64 V, void* scratch,
                            std::size_t scratch_bytes, cudaStream_t s) {
  if (N == 0 || C == 0) return;
  const std::size_t slot = align256(std::size_t(N) * sizeof(std::int32_t));
  auto* base = static_cast<char*>(scratch);
  auto* ids_sorted = reinterpret_cast<std::int32_t*>(base);
  auto* pos = reinterpret_cast<std::int32_t*>(base + slot);
  auto* pos_sorted = reinterpret_cast<std::int32_t*>(base + 2 * slot);
  void* temp = base + 3 * slot;
  std::size_t temp_bytes = scratch_bytes - 3 * slot;
  iota_kernel<<<static_cast<unsigned>((N + kThreads - 1) / kThreads), kThreads, 0, s>>>(pos, N);
  LLMTK_CUDA_LAUNCHED("embedding_backward");
  LLMTK_CUDA_CHECK("embedding_backward", cub::DeviceRadixSort::SortPairs(temp, temp_bytes, ids, ids_sorted, pos,
                                                                         pos_sorted, static_cast<int>(N), 0,
                                                                         int(sizeof(std::int32_t) * 8), s));
  const unsigned col_blocks = static_cast<unsigned>((C + kThreads - 1) / kThreads);
  run_sum_kernel<E><<<dim3(static_cast<unsigned>(N), col_blocks), kThreads, 0, s>>>(dtable, dy, ids_sorted, pos_sorted,
                                                                                  N, C, V);
  LLMTK_CUDA_LAUNCHED("embedding_backward");
}

}  // namespace

std::size_t embedding_backward_scratch(i64 N) {
  return 3 * align256(std::size_t(N) * sizeof(std::int32_t)) + align256(cub_bytes(N));
}
void embedding_backward(float* dtable, const float* dy, const std::int32_t* ids, i64 N, i64 C, i64 V, void* scratch,
                        std::size_t scratch_bytes, cudaStream_t s) {
  embedding_backward_any(dtable, dy, ids, N, C, V, scratch, scratch_bytes, s);
}
void embedding_backward(float* dtable, const std::uint16_t* dy, const std::int32_t* ids, i64 N, i64 C, i64 V,
                        void* scratch, std::size_t scratch_bytes, cudaStream_t s) {
  embedding_backward_any(dtable, dy, ids, N, C, V, scratch, scratch_bytes, s);
}

}  // namespace llmtk::cuda::kernels
