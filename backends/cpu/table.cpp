// The CPU backend's op table, generated from the op list: an op missing here is a compile error.
// And its registration: host memory, OpenMP's thread count.
#include <omp.h>

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

constinit const ops::BackendInfo backend = {
    &op_table, &host_memory, nullptr, [](int threads) { omp_set_num_threads(threads); },
    "runs matmuls on oneDNN and the other ops as OpenMP loops on this machine's cores"};

}  // namespace llmtk::cpu
