// The CUDA backend's table in a build without it: every op fails with a message naming itself,
// so `device = "cuda"` on such a build stops at the first op instead of computing nothing.
#include "ops/ops.hpp"

#pragma GCC diagnostic ignored "-Wunused-parameter"  // the stubs take every op's arguments

namespace llmtk::cuda {

namespace {
[[noreturn]] void unavailable(const char* op) {
#ifdef LLMTK_CUDA_TOOLKIT_FOUND
  fail(op, "this llmtk has no CUDA backend yet (the CUDA toolkit was found, the backend is not "
           "written); use device = \"reference\"");
#else
  fail(op, "llmtk was built without CUDA: op ", op,
       "; install the CUDA toolkit and rebuild, or use device = \"reference\"");
#endif
}
}  // namespace

extern const ops::OpTable op_table;
const ops::OpTable op_table = {
    "cuda",
    [] { return std::string("not built (stub)"); },
#define LLMTK_X(name, params, args) [] params { unavailable(#name); },
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

}  // namespace llmtk::cuda
