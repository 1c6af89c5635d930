// The CUDA backend in a build without the CUDA toolkit: every op fails with a message naming
// itself, and use_backend("cuda") fails at start-up saying how to get a CUDA build. It registers
// under the same name as the real backend, so recipes and scripts that name it get that message.
#include "ops/ops.hpp"

#pragma GCC diagnostic ignored "-Wunused-parameter"  // the stubs take every op's arguments

namespace llmtk::cuda {

namespace {
constexpr const char* kWhy = "llmtk was built without CUDA (the CUDA toolkit was not found when it was configured); "
                             "install the toolkit and rebuild";
[[noreturn]] void unavailable_op(const char* op) {
  fail(op, "llmtk was built without CUDA: op ", op, "; install the CUDA toolkit and rebuild, or use device = \"cpu\"");
}
[[noreturn]] void* no_allocate(std::size_t, const char* what) { fail(what, kWhy); }
void no_release(void*) {}
[[noreturn]] void no_zero(void*, std::size_t) { fail("memory", kWhy); }
[[noreturn]] void no_copy(void*, Device, const void*, Device, std::size_t) { fail("memory", kWhy); }
void no_synchronize() {}
const DeviceMemory kMemory{Device::cuda, &no_allocate, &no_release, &no_zero, &no_copy, &no_synchronize};
const DeviceMemory& device_memory() { return kMemory; }
std::string unavailable() {
  return cat(kWhy, "; to run on the CPU instead use device = \"cpu\" (in a recipe, or --device cpu)");
}
}  // namespace

extern const ops::OpTable op_table;
const ops::OpTable op_table = {
    "cuda",
    [] { return std::string("not built (stub)"); },
#define LLMTK_X(name, params, args) [] params { unavailable_op(#name); },
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

extern const ops::BackendInfo backend;
constinit const ops::BackendInfo backend = {
    &op_table, &device_memory, &unavailable, nullptr,
    "runs on the first NVIDIA GPU, but is not in this build: the CUDA toolkit was not found when it was configured",
    false};  // as the real backend (cuda/table.cpp)

}  // namespace llmtk::cuda
