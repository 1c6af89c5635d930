// The CPU backend: matmuls on oneDNN (primitives created once per shape and cached), every other
// op as an OpenMP loop over rows that the compiler vectorises. fp32 throughout, float
// accumulation. Tested op by op against the reference backend (tests/test_backends.cpp).
#pragma once
#include <cmath>
#include <cstdint>

#include "ops/ops.hpp"

namespace llmtk::cpu {

#define LLMTK_X(name, params, args) void name params;
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

extern const ops::OpTable op_table;

// Argument checks shared by the ops; every message starts with the op's name.
inline void expect_f32(const char* op, const char* what, const TensorRef& t) {
  LLMTK_CHECK(t.data != nullptr, op, what, " is null");
  LLMTK_CHECK(t.dtype == DType::f32, op, what, " is ", name_of(t.dtype), ", the CPU backend computes in f32");
  LLMTK_CHECK(t.device == Device::host, op, what, " is not in host memory");
}
inline void expect_rank(const char* op, const char* what, const TensorRef& t, int rank, const char* axes) {
  LLMTK_CHECK(t.rank == rank, op, what, " has ", t.rank, " axes ", t.shape_str(), ", expected ", axes);
}
inline void expect_same(const char* op, const char* a, const TensorRef& x, const char* b, const TensorRef& y) {
  LLMTK_CHECK(x.numel() == y.numel() && x.size(-1) == y.size(-1), op, a, " ", x.shape_str(), " and ", b, " ",
              y.shape_str(), " must have the same shape");
}

// A buffer of at least n floats, reused across calls (grown, never shrunk): per-thread partial
// sums live here so that a step allocates nothing once shapes are known. Not for nested use.
float* scratch(std::size_t n);
int max_threads();

// Sums per-thread partials in thread order: the result is the same on every run with the same
// thread count (DESIGN.md: deterministic on the same machine and thread count).
inline void reduce_partials(float* out, const float* parts, int threads, std::int64_t n) {
  for (int t = 0; t < threads; ++t)
    for (std::int64_t c = 0; c < n; ++c) out[c] += parts[std::int64_t(t) * n + c];
}

}  // namespace llmtk::cpu
