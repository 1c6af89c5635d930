// LayerNorm: y = (x − mean)·rstd·w + b over d_model; the bias exists when dims.bias is set.
#pragma once
#include "common.hpp"  // ops::layernorm_forward, ops::layernorm_backward

namespace llmtk {

struct LayerNorm {
  static constexpr Role role = Role::norm;
  static constexpr std::string_view tags[] = {"layernorm"};
  using In = Hidden;
  using Out = Hidden;

  ParamSlot w, b;      // w, b: [C]
  ActSlot mean, rstd;  // saved: [B·T]

  void declare(Planner& p) {
    w = p.param("weight", {p.dims.d_model}, ParamKind::norm);
    if (p.dims.bias) b = p.param("bias", {p.dims.d_model}, ParamKind::bias);
    mean = p.stat("mean", {p.B * p.T});
    rstd = p.stat("rstd", {p.B * p.T});
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    ops::layernorm_forward(y, c.a(mean), c.a(rstd), x, c.p(w), c.p(b), float(c.dims.norm_eps));
  }
  // dx, dy, x: [B, T, C]; dw, db +=. dres: a residual path's gradient added to dx in the same
  // pass (a placement's fusion, dsl/placement.hpp; may alias dx).
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x, TensorRef dres = {}) {
    ops::layernorm_backward(dx, c.g(w), c.g(b), dy, x, c.p(w), c.a(mean), c.a(rstd), dres);
  }
  static double flops_per_token(const Dims& d, std::int64_t) { return 8.0 * d.d_model; }
};

}  // namespace llmtk
