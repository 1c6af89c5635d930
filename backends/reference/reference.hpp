// The reference backend: every op in plain loops with fp64 accumulation. Obviously correct
// rather than fast; the oracle every other backend is tested against. One op (forward and
// backward) per file; contracts in framework/ops/ops.hpp.
#pragma once
#include <cmath>
#include <cstdint>

#include "ops/ops.hpp"

namespace llmtk::reference {

#define LLMTK_X(name, params, args) void name params;
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

extern const ops::OpTable op_table;

// Shared argument checks: every message starts with the op's name.
inline void expect_f32(const char* op, const char* what, const TensorRef& t) {
  LLMTK_CHECK(t.data != nullptr, op, what, " is null");
  LLMTK_CHECK(t.dtype == DType::f32, op, what, " is ", name_of(t.dtype),
              ", the reference backend computes in f32");
  LLMTK_CHECK(t.device == Device::host, op, what, " is not in host memory");
}
inline void expect_rank(const char* op, const char* what, const TensorRef& t, int rank,
                        const char* axes) {
  LLMTK_CHECK(t.rank == rank, op, what, " has ", t.rank, " axes ", t.shape_str(), ", expected ",
              axes);
}
inline void expect_same(const char* op, const char* a, const TensorRef& x, const char* b,
                        const TensorRef& y) {
  LLMTK_CHECK(x.numel() == y.numel() && x.size(-1) == y.size(-1), op, a, " ", x.shape_str(),
              " and ", b, " ", y.shape_str(), " must have the same shape");
}

}  // namespace llmtk::reference
