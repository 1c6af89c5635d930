// Error checks for every CUDA runtime call and kernel launch of the backend: a failure names the
// op, the call, the file and the line. C++17 and free of framework headers, so .cu files use it.
#pragma once
#include <cuda_runtime.h>

namespace llmtk::cuda {

// Throws llmtk::Error "[op] call failed: cudaErrorX: text (file:line)" (context.cpp).
[[noreturn]] void fail_call(const char* op, const char* call, const char* status, const char* file, int line);

inline void check_cuda(cudaError_t e, const char* op, const char* call, const char* file, int line) {
  if (e != cudaSuccess) fail_call(op, call, cudaGetErrorName(e), file, line);
}
// After a kernel launch: the launch error, and with LLMTK_CUDA_SYNC=1 in the environment also
// the error of running it (the stream is synchronised), so an asynchronous fault names its op.
void check_launch(const char* op, const char* file, int line);

}  // namespace llmtk::cuda

#define LLMTK_CUDA_CHECK(op, call) ::llmtk::cuda::check_cuda((call), (op), #call, __FILE__, __LINE__)
#define LLMTK_CUDA_LAUNCHED(op) ::llmtk::cuda::check_launch((op), __FILE__, __LINE__)
