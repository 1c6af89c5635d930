// The CPU backend: matmuls on oneDNN (primitives created once per shape and cached), every other
// op as an OpenMP loop over rows that the compiler vectorises. fp32 throughout, float
// accumulation. Tested op by op against the reference backend (tests/test_backends.cpp).
#pragma once
#include <cmath>
#include <cstdint>

#include "../common.hpp"
#include "ops/ops.hpp"

namespace llmtk::cpu {

#define LLMTK_X(name, params, args) void name params;
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

extern const ops::OpTable op_table;
extern const ops::BackendInfo backend;  // table.cpp: its registration

// A buffer of at least n floats, reused across calls (grown, never shrunk): per-thread partial
// sums live here so that a step allocates nothing once shapes are known. Not for nested use.
float* scratch(std::size_t n);
int max_threads();

// Sums per-thread partials in thread order: the result is the same on every run with the same
// thread count (the project's rule: deterministic on the same machine and thread count).
inline void reduce_partials(float* out, const float* parts, int threads, std::int64_t n) {
  for (int t = 0; t < threads; ++t)
    for (std::int64_t c = 0; c < n; ++c) out[c] += parts[std::int64_t(t) * n + c];
}

}  // namespace llmtk::cpu
