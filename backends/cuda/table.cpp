// The CUDA backend's op table, generated from the op list: an op missing here is a compile error
// naming it ("'foo_forward' is not a member of 'llmtk::cuda'"). And its registration: device
// memory, and the start-up check that names a missing GPU. Its host side has no threads to set.
#include "cuda.hpp"

namespace llmtk::cuda {

std::string info();                   // context.cpp
const DeviceMemory& device_memory();  // context.cpp
std::string unavailable();            // context.cpp

extern const ops::OpTable op_table;
const ops::OpTable op_table = {
    "cuda",
    &info,
#define LLMTK_X(name, params, args) &cuda::name,
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
constinit const ops::BackendInfo backend = {&op_table, &device_memory, &unavailable_here, nullptr,
                                            "runs on the first NVIDIA GPU; pick another with CUDA_VISIBLE_DEVICES"};

}  // namespace llmtk::cuda
