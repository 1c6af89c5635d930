// The CPU backend's op table, generated from the op list: an op missing here is a compile error.
// And its registration: host memory, OpenMP's thread count.
#include <omp.h>

#include <string_view>

#include "../widen.hpp"
#include "cpu.hpp"

namespace llmtk::cpu {

std::string info();  // scratch.cpp

// The ops with bf16 code of their own; the others take bf16 through the fallback that widens
// their inputs and rounds their outputs (backends/widen.hpp, docs/bf16.md).
constexpr std::string_view kNativeBf16[] = {
    "matmul_forward", "matmul_backward", "convert",       "add_forward",     "scale_forward", "dropout",
    "gelu_forward",   "gelu_backward",   "relu_forward",  "relu_backward",   "silu_forward",
    "silu_backward",  "tanh_forward",    "tanh_backward", "swiglu_forward",  "swiglu_backward", "geglu_forward", "geglu_backward",
    "matmul_gelu_forward", "gelu_matmul_backward",  // compositions of the native matmul and GELU
    "rmsnorm_forward", "rmsnorm_backward", "layernorm_forward", "layernorm_backward",
    "rope_forward", "rope_backward", "embedding_forward", "embedding_backward",
    "cross_entropy_forward", "cross_entropy_backward", "attention_forward", "attention_backward",
};
static_assert(backend::all_ops(kNativeBf16), "table.cpp: a name in kNativeBf16 is not an op of op_list.hpp");
constexpr bool native_bf16(std::string_view op) {
  for (auto n : kNativeBf16)
    if (n == op) return true;
  return false;
}

const ops::OpTable op_table = {
    "cpu",
    &info,
#define LLMTK_X(name, params, args) native_bf16(#name) ? &cpu::name : LLMTK_WIDENED(cpu, name),
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

constinit const ops::BackendInfo backend = {
    &op_table, &host_memory, nullptr, [](int threads) { omp_set_num_threads(threads); },
    "runs matmuls on oneDNN and the other ops as OpenMP loops on this machine's cores"};

}  // namespace llmtk::cpu
