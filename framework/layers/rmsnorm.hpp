// RMSNorm: y = x·rstd·w, rstd = 1/sqrt(mean(x²) + eps). No bias, no mean subtraction.
#pragma once
#include "common.hpp"  // ops::rmsnorm_forward, ops::rmsnorm_backward

namespace llmtk {

struct RMSNorm {
  static constexpr Role role = Role::norm;
  static constexpr std::string_view tags[] = {"rmsnorm"};
  using In = Hidden;
  using Out = Hidden;

  ParamSlot w;   // [C]
  ActSlot rstd;  // saved: [B·T]

  void declare(Planner& p) {
    w = p.param("weight", {p.dims.d_model}, ParamKind::norm);
    rstd = p.stat("rstd", {p.B * p.T});
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    ops::rmsnorm_forward(y, c.a(rstd), x, c.p(w), float(c.dims.norm_eps));
  }
  // dx, dy, x: [B, T, C]; dw +=. dres: a residual path's gradient added to dx in the same pass
  // (a placement's fusion, dsl/placement.hpp; may alias dx).
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x, TensorRef dres = {}) {
    ops::rmsnorm_backward(dx, c.g(w), dy, x, c.p(w), c.a(rstd), dres);
  }
  static double flops_per_token(const Dims& d, std::int64_t) { return 5.0 * d.d_model; }
};

}  // namespace llmtk
