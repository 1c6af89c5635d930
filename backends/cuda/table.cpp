// The CUDA backend's op table, generated from the op list: an op missing here is a compile error
// naming it ("'foo_forward' is not a member of 'llmtk::cuda'"). And its registration: device
// memory, and the start-up check that names a missing GPU. Its host side has no threads to set.
#include <string_view>

#include "../widen.hpp"
#include "cuda.hpp"

namespace llmtk::cuda {

std::string info();                   // context.cpp
const DeviceMemory& device_memory();  // context.cpp
std::string unavailable();            // context.cpp

// The ops with bf16 code of their own (the storage type a template parameter: elementwise.cu,
// norms.cu, loss.cu, embedding_backward.cu; the matmuls read and write bf16 in cuBLASLt, attention
// in cuDNN: matmul.cpp, attention.cpp).
constexpr std::string_view kNativeBf16[] = {
    "convert",      "add_forward",   "scale_forward",  "dropout",        "gelu_forward",   "gelu_backward",
    "relu_forward", "relu_backward", "silu_forward",   "silu_backward",  "tanh_forward",   "tanh_backward",
    "swiglu_forward", "swiglu_backward", "geglu_forward", "geglu_backward",
    "layernorm_forward", "layernorm_backward", "rmsnorm_forward", "rmsnorm_backward",
    "cross_entropy_forward", "cross_entropy_backward", "embedding_forward", "embedding_backward",
    "positions_forward", "positions_backward", "sinusoidal_forward", "rope_forward", "rope_backward",
    "matmul_forward", "matmul_backward", "matmul_gelu_forward", "gelu_matmul_backward",
    "attention_forward", "attention_backward",
};
static_assert(backend::all_ops(kNativeBf16), "table.cpp: a name in kNativeBf16 is not an op of op_list.hpp");
constexpr bool native_bf16(std::string_view op) {
  for (auto n : kNativeBf16)
    if (n == op) return true;
  return false;
}

extern const ops::OpTable op_table;
const ops::OpTable op_table = {
    "cuda",
    &info,
// The ops of kNativeBf16 run on bf16 as it is; every other op takes bf16 through the fallback that
// widens its inputs and rounds its outputs (backends/widen.hpp, docs/bf16.md) until it has bf16
// kernels of its own.
#define LLMTK_X(name, params, args) native_bf16(#name) ? &cuda::name : LLMTK_WIDENED(cuda, name),
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

namespace {
std::string unavailable_here() {
  std::string why = unavailable();
  if (!why.empty()) why += "; to run on the CPU instead use device = \"cpu\" (in a recipe, or --device cpu)";
  return why;
}
}  // namespace

extern const ops::BackendInfo backend;
// bf16_activations false: every op of a GPT-2 or Llama step takes bf16 natively, but that path has
// not been measured on a GPU yet, so a bf16 run there keeps f32 activations and bf16 matmuls (the
// path measured in docs/cuda.md) until benchmarks/cuda/run.sh, which times both, says otherwise;
// LLMTK_BF16_ACTIVATIONS=1 runs the bf16 path (docs/bf16.md, tests/test_cuda.cpp).
constinit const ops::BackendInfo backend = {&op_table, &device_memory, &unavailable_here, nullptr,
                                            "runs on the first NVIDIA GPU; pick another with CUDA_VISIBLE_DEVICES",
                                            false};

}  // namespace llmtk::cuda
