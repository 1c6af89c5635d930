// The CUDA execution model on one CPU thread, for the emulated build of the CUDA backend
// (tests/cuda_emu): each block of a launch runs on its own, its threads as fibers that switch at
// __syncthreads and warp shuffles. Enough to run the backend's kernels unchanged and check what
// they compute; nothing here says how fast they run on a GPU. Threads run one at a time, from a
// barrier to the next, in thread order or in reverse (CUDA_EMU_ORDER=reverse). Of two threads
// that write and read the same memory between two barriers, one order runs the reader first, so
// a missing barrier gives stale (or NaN-poisoned) values in at least one of the two orders.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>

#include <cuda_runtime.h>

namespace cuda_emu {

// What the running thread sees as threadIdx, blockIdx, blockDim and gridDim.
struct Position {
  uint3 thread{}, block{};
  dim3 block_dim, grid_dim;
};
const Position& position();

// Runs `thread` for every thread of every block of the grid; returns when all have finished.
// With may_wait, threads are fibers, and threads that wait at different barriers (a
// __syncthreads some threads never reach, a shuffle in divergent code) stop the program with a
// message. Without, each thread is a plain call, and a barrier stops the program.
void launch(dim3 grid, dim3 block, bool may_wait, const std::function<void()>& thread);

// The order threads and blocks run in: first to last, or last to first (the initial value comes
// from CUDA_EMU_ORDER=forward|reverse).
void set_reverse_order(bool reverse);
bool reverse_order();

// __syncthreads: waits until every thread of the block that has not exited arrives.
void sync_block();
// The warp-level exchange under __shfl_xor_sync: every lane of the warp publishes 8 bytes and
// reads lane (lane ^ mask)'s, after all have published.
std::uint64_t exchange_xor(std::uint64_t mine, int mask);

// Fills a __shared__ array with NaN bytes when the first thread of a block reaches its
// declaration (to_cpp.py puts the call there): shared memory read before it is written shows.
void poison_shared(void* p, std::size_t bytes);

// Emulated device memory (runtime.cpp) is inaccessible to the host except while a kernel, a copy,
// a memset, a library call or a sort runs; each of those holds a DeviceAccess. So the backend's
// host code reading or writing device memory directly dies with SIGSEGV, as it would fail on a GPU.
struct DeviceAccess {
  DeviceAccess();
  ~DeviceAccess();
  DeviceAccess(const DeviceAccess&) = delete;
  DeviceAccess& operator=(const DeviceAccess&) = delete;
};

}  // namespace cuda_emu
