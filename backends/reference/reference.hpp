// The reference backend: every op in plain loops with fp64 accumulation. Obviously correct
// rather than fast; the oracle every other backend is tested against. One op (forward and
// backward) per file; contracts in framework/ops/ops.hpp, checked before an op runs here
// (framework/ops/checks.cpp).
#pragma once
#include <cmath>
#include <cstdint>

#include "../common.hpp"
#include "ops/ops.hpp"

namespace llmtk::reference {

#define LLMTK_X(name, params, args) void name params;
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

extern const ops::OpTable op_table;
extern const ops::BackendInfo backend;  // table.cpp: its registration

}  // namespace llmtk::reference
