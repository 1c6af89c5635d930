// The CUDA backend's op table, generated from the op list: an op missing here is a compile error
// naming it ("'foo_forward' is not a member of 'llmtk::cuda'").
#include "cuda.hpp"

namespace llmtk::cuda {

std::string info();  // context.cpp

extern const ops::OpTable op_table;
const ops::OpTable op_table = {
    "cuda",
    &info,
#define LLMTK_X(name, params, args) &cuda::name,
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

}  // namespace llmtk::cuda
