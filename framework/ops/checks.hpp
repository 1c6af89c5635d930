// Each op's argument checks: what its contract in ops.hpp says about its arguments (null-ness,
// dtypes, ranks, shapes, aliasing, value ranges where the host can read them) and that every
// tensor is in the active backend's memory. The dispatcher runs an op's check before the active
// backend's function, so backends check only what they themselves cannot run.
#pragma once
#include "ops.hpp"

namespace llmtk::ops {

// One check per op, in op-list order. checks.cpp fills it from the op list with its
// check_<op> functions, so an op without a check is a compile error there.
struct OpChecks {
#define LLMTK_X(name, params, args) void(*name) params;
  LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};
extern const OpChecks op_checks;

}  // namespace llmtk::ops
