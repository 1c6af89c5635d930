// The reference backend's op table, generated from the op list: an op missing here is a
// compile error naming it ("'foo_forward' is not a member of 'llmtk::reference'"). And its
// registration (backends/CMakeLists.txt lists it first).
#include "reference.hpp"
#include "../widen.hpp"

namespace llmtk::reference {

const ops::OpTable op_table = {
    "reference",
    [] { return std::string("plain loops, fp64 accumulation, one thread"); },
// Every op through the bf16 fallback (backends/widen.hpp): bf16 inputs widened exactly, the
// op's f32/fp64 loops, outputs rounded once. The oracle for bf16 as for f32.
#define LLMTK_X(name, params, args) LLMTK_WIDENED(reference, name),
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

// Host memory, anywhere, always one thread.
constinit const ops::BackendInfo backend = {
    &op_table, &host_memory, nullptr, nullptr,
    "runs every op as plain loops with fp64 accumulation on one thread: the oracle the others are tested against"};

}  // namespace llmtk::reference
