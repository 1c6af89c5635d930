// Placements: where a block's norms sit around a sublayer F (a mixer or a feed-forward).
//   PreNorm:      y = x + F(norm(x))                 (GPT-2, Llama)
//   PostNorm:     y = norm(x + F(x))                 (the original Transformer, BERT)
//   SandwichNorm: y = x + norm_out(F(norm_in(x)))    (CogView, Gemma 2)
// Each provides Wrap<Norm, F>, a part that maps [B, T, C] to [B, T, C].
#pragma once
#include "../protocol/part.hpp"

namespace llmtk {

template <class N, class F>
concept NormThenPart = Norm<N> && Layer<F> && AxesConnect<F, typename F::In, typename N::Out>::value &&
                       KeepsAxes<F>;

// dx = the norm's gradient + dres. A norm whose backward takes the residual gradient (LayerNorm,
// RMSNorm: the norm backward ops' dres) adds it in the same pass; any other norm is followed by an add.
template <Norm N>
void norm_backward_plus(Ctx& c, N& norm, TensorRef dx, TensorRef dy, TensorRef x, TensorRef dres) {
  if constexpr (requires { norm.backward(c, dx, dy, x, dres); }) {
    norm.backward(c, dx, dy, x, dres);
  } else {
    norm.backward(c, dx, dy, x);
    ops::add_forward(dx, dx, dres);
  }
}

struct PreNorm {
  static constexpr bool is_placement = true;
  template <Norm N, Layer F>
    requires NormThenPart<N, F>
  struct Wrap {
    static constexpr Role role = Role::other;
    static constexpr std::string_view tags[] = {"prenorm"};
    using In = Hidden;
    using Out = Hidden;
    using Parts = PartList<Child<"norm", N>, Child<"", F>>;

    N norm;
    F f;
    ActSlot normed, dnormed;  // norm(x) (saved) and its gradient (scratch): [B, T, C]

    void declare(Planner& p) {
      { auto s = p.scope("norm"); norm.declare(p); }
      f.declare(p);
      normed = p.act("normed", {p.B, p.T, p.dims.d_model});
      dnormed = p.act("dnormed", {p.B, p.T, p.dims.d_model});
    }
    void forward(Ctx& c, TensorRef y, TensorRef x) {
      norm.forward(c, c.a(normed), x);
      f.forward(c, y, c.a(normed));
      ops::add_forward(y, y, x);
    }
    void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
      f.backward(c, c.a(dnormed), dy, c.a(normed));
      norm_backward_plus(c, norm, dx, c.a(dnormed), x, dy);  // + dy: the residual path
    }
    static double flops_per_token(const Dims& d, std::int64_t T) {
      return N::flops_per_token(d, T) + F::flops_per_token(d, T) + d.d_model;
    }
  };
};

struct PostNorm {
  static constexpr bool is_placement = true;
  template <Norm N, Layer F>
    requires NormThenPart<N, F>
  struct Wrap {
    static constexpr Role role = Role::other;
    static constexpr std::string_view tags[] = {"postnorm"};
    using In = Hidden;
    using Out = Hidden;
    using Parts = PartList<Child<"norm", N>, Child<"", F>>;

    N norm;
    F f;
    ActSlot sum, dsum;  // x + F(x) (saved) and its gradient (scratch): [B, T, C]

    void declare(Planner& p) {
      { auto s = p.scope("norm"); norm.declare(p); }
      f.declare(p);
      sum = p.act("sum", {p.B, p.T, p.dims.d_model});
      dsum = p.act("dsum", {p.B, p.T, p.dims.d_model});
    }
    void forward(Ctx& c, TensorRef y, TensorRef x) {
      f.forward(c, c.a(sum), x);
      ops::add_forward(c.a(sum), c.a(sum), x);
      norm.forward(c, y, c.a(sum));
    }
    void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
      norm.backward(c, c.a(dsum), dy, c.a(sum));
      f.backward(c, dx, c.a(dsum), x);
      ops::add_forward(dx, dx, c.a(dsum));
    }
    static double flops_per_token(const Dims& d, std::int64_t T) {
      return N::flops_per_token(d, T) + F::flops_per_token(d, T) + d.d_model;
    }
  };
};

struct SandwichNorm {
  static constexpr bool is_placement = true;
  template <Norm N, Layer F>
    requires NormThenPart<N, F>
  struct Wrap {
    static constexpr Role role = Role::other;
    static constexpr std::string_view tags[] = {"sandwichnorm"};
    using In = Hidden;
    using Out = Hidden;
    using Parts = PartList<Child<"norm_in", N>, Child<"", F>, Child<"norm_out", N>>;

    N norm_in, norm_out;
    F f;
    ActSlot normed, f_out;     // saved: norm_in(x), F(norm_in(x)) [B, T, C]
    ActSlot dnormed, df_out;   // scratch

    void declare(Planner& p) {
      { auto s = p.scope("norm_in"); norm_in.declare(p); }
      f.declare(p);
      { auto s = p.scope("norm_out"); norm_out.declare(p); }
      const std::vector<std::int64_t> h{p.B, p.T, p.dims.d_model};
      normed = p.act("normed", h), f_out = p.act("f_out", h);
      dnormed = p.act("dnormed", h), df_out = p.act("df_out", h);
    }
    void forward(Ctx& c, TensorRef y, TensorRef x) {
      norm_in.forward(c, c.a(normed), x);
      f.forward(c, c.a(f_out), c.a(normed));
      norm_out.forward(c, y, c.a(f_out));
      ops::add_forward(y, y, x);
    }
    void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
      norm_out.backward(c, c.a(df_out), dy, c.a(f_out));
      f.backward(c, c.a(dnormed), c.a(df_out), c.a(normed));
      norm_backward_plus(c, norm_in, dx, c.a(dnormed), x, dy);  // + dy: the residual path
    }
    static double flops_per_token(const Dims& d, std::int64_t T) {
      return 2 * N::flops_per_token(d, T) + F::flops_per_token(d, T) + d.d_model;
    }
  };
};

}  // namespace llmtk
