// The CPU backend's op table, generated from the op list: an op missing here is a compile error.
#include "cpu.hpp"

namespace llmtk::cpu {

std::string info();  // scratch.cpp

const ops::OpTable op_table = {
    "cpu",
    &info,
#define LLMTK_X(name, params, args) &cpu::name,
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

}  // namespace llmtk::cpu
