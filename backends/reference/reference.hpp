// The reference backend: every op in plain loops with fp64 accumulation. Obviously correct
// rather than fast; the oracle every other backend is tested against. One op (forward and
// backward) per file; contracts in framework/ops/ops.hpp, checked before an op runs here
// (framework/ops/checks.cpp).
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "../common.hpp"
#include "ops/ops.hpp"

namespace llmtk::reference {

#define LLMTK_X(name, params, args) void name params;
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

// The norm backward ops' fused residual gradient (dres) as the composition it stands for: the
// backward writes dx, then add_forward adds dres. dres is copied before the backward runs (it may
// alias dx); an empty copy when there is none.
inline std::vector<float> residual_copy(TensorRef dres) {
  return dres ? std::vector<float>(dres.f32(), dres.f32() + dres.numel()) : std::vector<float>{};
}
inline void add_residual(TensorRef dx, std::vector<float>& res) {
  if (res.empty()) return;
  add_forward(dx, dx, TensorRef(res.data(), DType::f32, {dx.numel()}));
}

extern const ops::OpTable op_table;
extern const ops::BackendInfo backend;  // table.cpp: its registration

}  // namespace llmtk::reference
