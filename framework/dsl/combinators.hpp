// Generic combinators: Residual<F> (y = x + F(x)) and Chain<A, B> (y = B(A(x))). Their backward
// comes from their parts. Placements and Block build on the same pattern.
#pragma once
#include "../protocol/part.hpp"

namespace llmtk {

// The extent of one named axis in this plan.
template <class Axis>
std::int64_t extent(const Planner& p) {
  if constexpr (std::same_as<Axis, Batch>) return p.B;
  else if constexpr (std::same_as<Axis, Seq>) return p.T;
  else if constexpr (std::same_as<Axis, Model>) return p.dims.d_model;
  else if constexpr (std::same_as<Axis, Heads>) return p.dims.n_heads;
  else if constexpr (std::same_as<Axis, KvHeads>) return p.dims.n_kv_heads;
  else if constexpr (std::same_as<Axis, HeadDim>) return p.dims.head_dim();
  else if constexpr (std::same_as<Axis, Ffn>) return p.dims.d_ff;
  else return p.dims.vocab;
}
template <class... A>
std::vector<std::int64_t> shape_of(const Planner& p, Axes<A...>) {
  return {extent<A>(p)...};
}

// Each combinator is defined for parts that are what it needs; any other parts get a Rejected
// stand-in whose static_assert names the rule (the pattern is explained at Block, block.hpp).

// y = x + F(x). F must return the axes it takes.
template <class F>
struct Residual;
template <class F>
  requires Layer<F> && KeepsAxes<F>
struct Residual<F> {
  static constexpr Role role = Role::other;
  using In = typename F::In;
  using Out = typename F::Out;
  using Parts = PartList<Child<"", F>>;

  F f;
  void declare(Planner& p) { f.declare(p); }
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    f.forward(c, y, x);
    ops::add_forward(y, y, x);
  }
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    f.backward(c, dx, dy, x);
    ops::add_forward(dx, dx, dy);  // the identity path
  }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return F::flops_per_token(d, T) + d.d_model;
  }
};
template <class F>
struct Residual : Rejected<Role::other> {
  static_assert(Layer<F> && KeepsAxes<F>,
                "residual_keeps_axes: Residual<F> adds F's output to its input, so F must be a layer "
                "that returns the axes it takes; the notes below name the type it got");
};

// y = B(A(x)); A's output axes must be B's input axes. Parts are named "0" and "1".
template <class A, class B>
struct Chain;
template <Layer A, Layer B>
struct Chain<A, B> {
  static_assert(AxesConnect<B, typename B::In, typename A::Out>::value);
  static constexpr Role role = Role::other;
  using In = typename A::In;
  using Out = typename B::Out;
  using Parts = PartList<Child<"0", A>, Child<"1", B>>;

  A a;
  B b;
  ActSlot mid, dmid;  // A's output (saved) and its gradient (scratch)
  std::vector<std::int64_t> mid_shape;

  void declare(Planner& p) {
    { auto s = p.scope("0"); a.declare(p); }
    { auto s = p.scope("1"); b.declare(p); }
    mid_shape = shape_of(p, typename A::Out{});
    mid = p.act("mid", mid_shape), dmid = p.act("dmid", mid_shape);
  }
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    a.forward(c, c.a(mid), x);
    b.forward(c, y, c.a(mid));
  }
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    b.backward(c, c.a(dmid), dy, c.a(mid));
    a.backward(c, dx, c.a(dmid), x);
  }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return A::flops_per_token(d, T) + B::flops_per_token(d, T);
  }
};
template <class A, class B>
struct Chain : Rejected<Role::other> {
  static_assert(Layer<A>, "Chain<A, B>: the first part must be a layer; the notes below name the type it got");
  static_assert(Layer<B>, "Chain<A, B>: the second part must be a layer; the notes below name the type it got");
};

}  // namespace llmtk
