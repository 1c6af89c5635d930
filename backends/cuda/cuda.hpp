// Host side of the CUDA backend (C++20): the context every op runs in (device, stream, cuBLASLt
// handle and workspace), grow-once scratch, and the op entry points the table points at (the
// dispatcher has checked their arguments against each op's contract). Kernels are in the .cu
// files, behind kernels.hpp.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <optional>
#include <string>

#include "check.hpp"
#include "../common.hpp"  // attention_shape, alibi_slope
#include "kernels.hpp"

namespace llmtk::cuda {

struct Context {
  int device = 0;
  cudaDeviceProp prop{};
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;  // cuBLASLt's
  std::size_t workspace_bytes = 0;
};
// The context, created on first use on device 0, or the device use_device() chose. Never
// destroyed: the driver releases it at exit.
Context& context();
// The GPU this process runs on (a distributed run's rank uses its local rank's: comm/nccl.cpp),
// chosen before the context is created; choosing another after that fails naming both.
void use_device(int device);
inline cudaStream_t stream() { return context().stream; }

// Calls f(E{}) with E the storage type of an activation op's tensors: float, or std::uint16_t (the
// raw bits) for bf16. The dispatcher has checked that they share one dtype (ops.hpp).
template <class F>
void by_storage(DType t, F&& f) {
  if (t == DType::bf16) f(std::uint16_t{});
  else f(float{});
}
template <class E>
E* data(TensorRef t) {
  return static_cast<E*>(t.data);
}

// Backend-owned device buffers that grow to the largest size asked for (during the first step)
// and are then reused, so a step allocates nothing.
enum class Scratch : int {
  matmul_a, matmul_b, matmul_dy, matmul_d, matmul_out, matmul_bias, gelu_product, partials, embedding, slopes,
  attn_q, attn_k, attn_v, attn_o, attn_delta, cudnn_workspace,
  attn_do, attn_dq, attn_dk, attn_dv, cudnn_dq_accum, cudnn_softmax_sum, rope_table, loss_lse, scan,
  count
};
void* scratch(Scratch slot, std::size_t bytes);
template <class T>
T* scratch_as(Scratch slot, std::size_t count) {
  return static_cast<T*>(scratch(slot, count * sizeof(T)));
}

// ALiBi slopes for H heads in device memory (computed once per H).
const float* alibi_slopes(std::int64_t H);

// cuBLASLt status check naming the op, the call, the file and the line.
void check_cublas(cublasStatus_t s, const char* op, const char* call, const char* file, int line);
#define LLMTK_CUBLAS_CHECK(op, call) ::llmtk::cuda::check_cublas((call), (op), #call, __FILE__, __LINE__)

// After every op: with LLMTK_CUDA_SYNC=1, wait for it and report a fault under its name.
void finish_op(const char* op);

// An on/off environment variable: unset (or empty) gives nullopt, "1" true, "0" false; any
// other value fails naming the variable, what 1 and 0 do, and the default. All of the backend's
// switches are read at start-up (unavailable()), so a bad value stops a run before any work.
std::optional<bool> env_switch(const char* name, const char* on, const char* off, const char* unset);
bool sync_after_ops();  // LLMTK_CUDA_SYNC
bool cudnn_enabled();   // LLMTK_CUDNN_ATTENTION (attention.cpp)

// Whether matmul_gelu_forward / gelu_matmul_backward use cuBLASLt's GELU_AUX and DGELU epilogues
// (else a matmul and a GELU kernel): LLMTK_CUBLASLT_GELU=0/1, by default off (measured slower).
bool gelu_epilogue();

// cudnn_attention.cpp: "9.19.0", or why cuDNN is not usable.
std::string cudnn_version();

#define LLMTK_X(name, params, args) void name params;
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

}  // namespace llmtk::cuda
