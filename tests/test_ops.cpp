// One check per op in the op list, on the active backend. Forward ops against values worked out
// by hand (closed forms); backward ops against central differences of their forward. The table
// is generated from the op list: an op without a check_<op> fails to link, naming it.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <vector>

#include "core/rng.hpp"
#include "gradcheck.hpp"
#include "ops/ops.hpp"

using namespace llmtk;

namespace {

// A host tensor that owns its storage, for op tests.
struct Buf {
  std::vector<float> v;
  std::vector<std::int64_t> shape;
  Buf(std::vector<std::int64_t> s, Rng* rng = nullptr, double scale = 1.0) : shape(std::move(s)) {
    std::int64_t n = 1;
    for (auto e : shape) n *= e;
    v.assign(std::size_t(n), 0.0f);
    if (rng) for (auto& x : v) x = float(scale * rng->normal());
  }
  Buf(std::vector<std::int64_t> s, std::vector<float> values) : v(std::move(values)), shape(std::move(s)) {}
  TensorRef t() {
    TensorRef r;
    r.data = v.data(), r.dtype = DType::f32, r.rank = int(shape.size());
    for (int i = 0; i < r.rank; ++i) r.ext[i] = shape[i];
    return r;
  }
  float& operator[](std::size_t i) { return v[i]; }
};
struct Ids {
  std::vector<std::int32_t> v;
  std::vector<std::int64_t> shape;
  TensorRef t() {
    TensorRef r;
    r.data = v.data(), r.dtype = DType::i32, r.rank = int(shape.size());
    for (int i = 0; i < r.rank; ++i) r.ext[i] = shape[i];
    return r;
  }
};

double dot(const Buf& a, const Buf& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.v.size(); ++i) s += double(a.v[i]) * b.v[i];
  return s;
}

// Central differences of f = Σ r·forward(inputs) against the analytic gradients.
void expect_gradient(const char* what, Buf& input, const Buf& analytic, const std::function<double()>& f,
                     const Buf* prefill = nullptr, double h = 1e-2) {
  test::GradTolerance tol;
  tol.h = h;
  Rng rng(99);
  test::GradReport rep;
  auto idx = test::probe_indices(std::int64_t(input.v.size()), 64, rng);
  test::check_entries(rep, what, input.v.data(), analytic.v.data(), idx, f, tol,
                      prefill ? prefill->v.data() : nullptr);
  INFO(what << ": checked " << rep.checked << ", worst error/bound " << rep.worst << "; "
            << rep.first_failure);
  CHECK(rep.failed == 0);
}

#define LLMTK_X(name, params, args) void check_##name();
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

// ---- matmul, add ----------------------------------------------------------------------------
void check_matmul_forward() {
  Buf x({2, 3}, {1, 2, 3, 4, 5, 6}), w({2, 3}, {1, 0, -1, 2, 1, 0}), b({2}, {0.5f, -1}), y({2, 2});
  ops::matmul_forward(y.t(), x.t(), w.t(), b.t());
  CHECK(y.v == std::vector<float>{1 - 3 + 0.5f, 2 + 2 - 1, 4 - 6 + 0.5f, 8 + 5 - 1});
  ops::matmul_forward(y.t(), x.t(), w.t(), TensorRef{});
  CHECK(y.v == std::vector<float>{-2, 4, -2, 13});
}
void check_matmul_backward() {
  Rng rng(1);
  Buf x({5, 7}, &rng), w({3, 7}, &rng), b({3}, &rng), r({5, 3}, &rng), y({5, 3});
  Buf dx({5, 7}), dw({3, 7}, &rng), db({3}, &rng);
  const Buf dw0 = dw, db0 = db;  // parameter gradients accumulate onto these
  auto f = [&] { ops::matmul_forward(y.t(), x.t(), w.t(), b.t()); return dot(y, r); };
  ops::matmul_backward(dx.t(), dw.t(), db.t(), r.t(), x.t(), w.t());
  expect_gradient("dx", x, dx, f);
  expect_gradient("dw", w, dw, f, &dw0);
  expect_gradient("db", b, db, f, &db0);
}
void check_matmul_gelu_forward() {
  Buf x({1, 2}, {1, 2}), w({2, 2}, {1, 0, 1, -1}), b({2}, {0.5f, -0.5f}), y({1, 2}), h({1, 2});
  ops::matmul_gelu_forward(y.t(), h.t(), x.t(), w.t(), b.t());
  CHECK(h.v == std::vector<float>{1.5f, -1.5f});
  CHECK(y[0] == Approx(1.3995715770));  // gelu(1.5) = 0.75·(1 + tanh(√(2/π)·(1.5 + 0.044715·3.375)))
  CHECK(y[1] == Approx(1.3995715770 - 1.5));  // gelu(x) − gelu(−x) = x
}
void check_gelu_matmul_backward() {
  // Against finite differences of f = r · (gelu(h)·wᵀ + b), with a = gelu(h) as the forward saves it.
  Rng rng(11);
  Buf h({5, 7}, &rng), a({5, 7}), w({3, 7}, &rng), b({3}, &rng), r({5, 3}, &rng), y({5, 3});
  Buf dh({5, 7}), dw({3, 7}, &rng), db({3}, &rng);
  const Buf dw0 = dw, db0 = db;
  auto f = [&] {
    ops::gelu_forward(a.t(), h.t());
    ops::matmul_forward(y.t(), a.t(), w.t(), b.t());
    return dot(y, r);
  };
  f();
  ops::gelu_matmul_backward(dh.t(), dw.t(), db.t(), r.t(), a.t(), w.t(), h.t());
  expect_gradient("dh", h, dh, f);
  expect_gradient("dw", w, dw, f, &dw0);
  expect_gradient("db", b, db, f, &db0);
}
void check_add_forward() {
  Buf a({3}, {1, 2, 3}), b({3}, {10, 20, 30}), y({3});
  ops::add_forward(y.t(), a.t(), b.t());
  CHECK(y.v == std::vector<float>{11, 22, 33});
  ops::add_forward(a.t(), a.t(), b.t());  // in place
  CHECK(a.v == y.v);
}

// ---- norms ----------------------------------------------------------------------------------
void check_layernorm_forward() {
  Buf x({1, 4}, {1, 2, 3, 4}), w({4}, {1, 1, 2, 1}), b({4}, {0, 0, 0, 1}), y({1, 4}), mean({1}), rstd({1});
  ops::layernorm_forward(y.t(), mean.t(), rstd.t(), x.t(), w.t(), b.t(), 0.0f);
  const double r = 1 / std::sqrt(1.25);  // mean 2.5, biased variance 1.25
  CHECK(mean[0] == Approx(2.5));
  CHECK(rstd[0] == Approx(r));
  CHECK(y[0] == Approx(-1.5 * r));
  CHECK(y[2] == Approx(2 * 0.5 * r));
  CHECK(y[3] == Approx(1.5 * r + 1));
}
void check_layernorm_backward() {
  Rng rng(2);
  Buf x({6, 9}, &rng), w({9}, &rng), b({9}, &rng), r({6, 9}, &rng), y({6, 9}), mean({6}), rstd({6});
  Buf dx({6, 9}), dw({9}, &rng), db({9}, &rng);
  const Buf dw0 = dw, db0 = db;
  auto f = [&] { ops::layernorm_forward(y.t(), mean.t(), rstd.t(), x.t(), w.t(), b.t(), 1e-5f); return dot(y, r); };
  f();
  ops::layernorm_backward(dx.t(), dw.t(), db.t(), r.t(), x.t(), w.t(), mean.t(), rstd.t(), TensorRef{});
  expect_gradient("dx", x, dx, f);
  expect_gradient("dw", w, dw, f, &dw0);
  expect_gradient("db", b, db, f, &db0);
  // The fused residual gradient: dx + dres, the composition of the backward and an add.
  Buf res({6, 9}, &rng), sum({6, 9});
  ops::layernorm_backward(sum.t(), TensorRef{}, TensorRef{}, r.t(), x.t(), w.t(), mean.t(), rstd.t(), res.t());
  Buf want({6, 9});
  ops::add_forward(want.t(), dx.t(), res.t());
  for (std::int64_t i = 0; i < 54; ++i) CHECK(sum[i] == Approx(want[i]).epsilon(1e-6).margin(1e-6));
}
void check_rmsnorm_forward() {
  Buf x({1, 2}, {3, 4}), w({2}, {1, 2}), y({1, 2}), rstd({1});
  ops::rmsnorm_forward(y.t(), rstd.t(), x.t(), w.t(), 0.0f);
  CHECK(rstd[0] == Approx(1 / std::sqrt(12.5)));
  CHECK(y[0] == Approx(3 / std::sqrt(12.5)));
  CHECK(y[1] == Approx(8 / std::sqrt(12.5)));
}
void check_rmsnorm_backward() {
  Rng rng(3);
  Buf x({5, 7}, &rng), w({7}, &rng), r({5, 7}, &rng), y({5, 7}), rstd({5}), dx({5, 7}), dw({7}, &rng);
  const Buf dw0 = dw;
  auto f = [&] { ops::rmsnorm_forward(y.t(), rstd.t(), x.t(), w.t(), 1e-5f); return dot(y, r); };
  f();
  ops::rmsnorm_backward(dx.t(), dw.t(), r.t(), x.t(), w.t(), rstd.t(), TensorRef{});
  expect_gradient("dx", x, dx, f);
  expect_gradient("dw", w, dw, f, &dw0);
  // The fused residual gradient: dx + dres, the composition of the backward and an add.
  Buf res({5, 7}, &rng), sum({5, 7});
  ops::rmsnorm_backward(sum.t(), TensorRef{}, r.t(), x.t(), w.t(), rstd.t(), res.t());
  Buf want({5, 7});
  ops::add_forward(want.t(), dx.t(), res.t());
  for (std::int64_t i = 0; i < 35; ++i) CHECK(sum[i] == Approx(want[i]).epsilon(1e-6).margin(1e-6));
}

// ---- positions ------------------------------------------------------------------------------
void check_rope_forward() {
  // [B=1, T=2, heads=1, D=4]; pair (0, 2) turns by t·1, pair (1, 3) by t·base^(-1/2) = t/100.
  Buf x({1, 2, 1, 4}, {1, 2, 3, 4, 1, 2, 3, 4}), y({1, 2, 1, 4});
  ops::rope_forward(y.t(), x.t(), 10000.0f, 0);
  for (int i = 0; i < 4; ++i) CHECK(y[i] == x[i]);  // t = 0: no rotation
  const double c1 = std::cos(1.0), s1 = std::sin(1.0), c2 = std::cos(0.01), s2 = std::sin(0.01);
  CHECK(y[4] == Approx(1 * c1 - 3 * s1));
  CHECK(y[6] == Approx(3 * c1 + 1 * s1));
  CHECK(y[5] == Approx(2 * c2 - 4 * s2));
  CHECK(y[7] == Approx(4 * c2 + 2 * s2));
  // pos0 shifts positions: row 0 at pos0 = 1 turns as row 1 did above (decoding with a cache).
  Buf one({1, 1, 1, 4}, {1, 2, 3, 4}), shifted({1, 1, 1, 4});
  ops::rope_forward(shifted.t(), one.t(), 10000.0f, 1);
  for (int i = 0; i < 4; ++i) CHECK(shifted[std::size_t(i)] == y[std::size_t(4 + i)]);
}
void check_rope_backward() {
  Rng rng(4);
  Buf x({2, 5, 3, 6}, &rng), r({2, 5, 3, 6}, &rng), y({2, 5, 3, 6}), dx({2, 5, 3, 6});
  auto f = [&] { ops::rope_forward(y.t(), x.t(), 100.0f, 0); return dot(y, r); };
  ops::rope_backward(dx.t(), r.t(), 100.0f, 0);
  expect_gradient("dx", x, dx, f);
  Buf inplace = r;  // dx may alias dy
  ops::rope_backward(inplace.t(), inplace.t(), 100.0f, 0);
  CHECK(inplace.v == dx.v);
}
void check_positions_forward() {
  Buf x({2, 2, 2}, {1, 1, 1, 1, 2, 2, 2, 2}), table({3, 2}, {10, 20, 30, 40, 50, 60}), y({2, 2, 2});
  ops::positions_forward(y.t(), x.t(), table.t(), 0);
  CHECK(y.v == std::vector<float>{11, 21, 31, 41, 12, 22, 32, 42});
}
void check_positions_backward() {
  Buf dy({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8}), dtable({3, 2}, {1, 1, 1, 1, 1, 1});
  ops::positions_backward(dtable.t(), dy.t());
  CHECK(dtable.v == std::vector<float>{7, 9, 11, 13, 1, 1});  // accumulated; row 2 unused
}
void check_sinusoidal_forward() {
  Buf x({1, 2, 4}), y({1, 2, 4});
  ops::sinusoidal_forward(y.t(), x.t(), 0);
  CHECK(y.v[0] == 0.0f);
  CHECK(y.v[1] == 1.0f);
  CHECK(y[4] == Approx(std::sin(1.0)));
  CHECK(y[5] == Approx(std::cos(1.0)));
  CHECK(y[6] == Approx(std::sin(0.01)));  // 10000^(2/4) = 100
  CHECK(y[7] == Approx(std::cos(0.01)));
}

// ---- attention ------------------------------------------------------------------------------
void check_attention_forward() {
  // B = 1, T = 2, one head, D = 1: the second query sees both keys.
  Buf q({1, 2, 1, 1}, {1, 2}), k({1, 2, 1, 1}, {0.5f, -1}), v({1, 2, 1, 1}, {3, 5}), o({1, 2, 1, 1}), lse({2});
  ops::attention_forward(o.t(), lse.t(), q.t(), k.t(), v.t(), AttentionMask{});
  CHECK(o[0] == Approx(3));  // causal: the first query sees only the first key
  const double s0 = 2 * 0.5, s1 = 2 * -1.0, p0 = std::exp(s0) / (std::exp(s0) + std::exp(s1));
  CHECK(o[1] == Approx(p0 * 3 + (1 - p0) * 5));
  CHECK(lse[1] == Approx(std::log(std::exp(s0) + std::exp(s1))));
  // ALiBi, one head: slope 2^-8 lowers the score of the key one step back.
  ops::attention_forward(o.t(), lse.t(), q.t(), k.t(), v.t(), AttentionMask{true, 0, true});
  const double a0 = s0 - std::pow(2.0, -8), pa = std::exp(a0) / (std::exp(a0) + std::exp(s1));
  CHECK(o[1] == Approx(pa * 3 + (1 - pa) * 5));
  // ALiBi slopes for H = 6 (not a power of two): 2^-2, 2^-4, 2^-6, 2^-8 from the 4-head set,
  // then 2^-1, 2^-3 from every other slope of the 8-head set (Press et al.). With q = 0 the second
  // query's scores are (−slope, 0), so out = σ(−slope)·v0 + (1 − σ(−slope))·v1 reveals each slope.
  {
    const int H = 6;
    Buf q6({1, 2, H, 1}), k6({1, 2, H, 1}), v6({1, 2, H, 1}), o6({1, 2, H, 1}), lse6({2 * H});
    for (int h = 0; h < H; ++h) v6[std::size_t(h)] = 1.0f;  // v0 = 1, v1 = 0
    ops::attention_forward(o6.t(), lse6.t(), q6.t(), k6.t(), v6.t(), AttentionMask{true, 0, true});
    const double want[H] = {0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
    for (int h = 0; h < H; ++h) {
      const double p_first = o6[std::size_t(H + h)];
      CHECK(-std::log(p_first / (1 - p_first)) == Approx(want[h]).epsilon(1e-5));
    }
  }
  // q_offset: the second query alone, against both keys, gives the second row of the full result.
  {
    Buf q1({1, 1, 1, 1}, {2}), o1({1, 1, 1, 1}), lse1({1});
    ops::attention_forward(o1.t(), lse1.t(), q1.t(), k.t(), v.t(), AttentionMask{true, 0, false, 1});
    CHECK(o1[0] == Approx(p0 * 3 + (1 - p0) * 5));
    CHECK_THROWS_WITH(ops::attention_forward(o1.t(), lse1.t(), q1.t(), k.t(), v.t(), AttentionMask{true, 0, false, 2}),
                      Catch::Contains("fewer than q_offset"));
  }
  // A window of 1: each query sees only itself.
  ops::attention_forward(o.t(), lse.t(), q.t(), k.t(), v.t(), AttentionMask{true, 1, false});
  CHECK(o[1] == Approx(5));
}
void check_attention_backward() {
  for (AttentionMask mask : {AttentionMask{}, AttentionMask{true, 3, false}, AttentionMask{true, 0, true}}) {
    INFO("window " << mask.window << ", alibi " << mask.alibi);
    Rng rng(5);
    Buf q({2, 6, 4, 3}, &rng), k({2, 6, 2, 3}, &rng), v({2, 6, 2, 3}, &rng), r({2, 6, 4, 3}, &rng);
    Buf o({2, 6, 4, 3}), lse({2 * 4 * 6}), dq({2, 6, 4, 3}), dk({2, 6, 2, 3}), dv({2, 6, 2, 3});
    auto f = [&] { ops::attention_forward(o.t(), lse.t(), q.t(), k.t(), v.t(), mask); return dot(o, r); };
    f();
    ops::attention_backward(dq.t(), dk.t(), dv.t(), r.t(), q.t(), k.t(), v.t(), o.t(), lse.t(), mask);
    expect_gradient("dq", q, dq, f);
    expect_gradient("dk", k, dk, f);
    expect_gradient("dv", v, dv, f);
  }
  // Keys before the queries (q_offset 4: a prefix): finite differences reach the prefix's keys too.
  for (AttentionMask mask : {AttentionMask{true, 0, false, 4}, AttentionMask{true, 3, true, 4}}) {
    INFO("prefix of 4, window " << mask.window << ", alibi " << mask.alibi);
    Rng rng(6);
    Buf q({2, 5, 4, 3}, &rng), k({2, 9, 2, 3}, &rng), v({2, 9, 2, 3}, &rng), r({2, 5, 4, 3}, &rng);
    Buf o({2, 5, 4, 3}), lse({2 * 4 * 5}), dq({2, 5, 4, 3}), dk({2, 9, 2, 3}), dv({2, 9, 2, 3});
    auto f = [&] { ops::attention_forward(o.t(), lse.t(), q.t(), k.t(), v.t(), mask); return dot(o, r); };
    f();
    ops::attention_backward(dq.t(), dk.t(), dv.t(), r.t(), q.t(), k.t(), v.t(), o.t(), lse.t(), mask);
    expect_gradient("dq", q, dq, f);
    expect_gradient("dk", k, dk, f);
    expect_gradient("dv", v, dv, f);
  }
}

// ---- element-wise ---------------------------------------------------------------------------
void check_gelu_forward() {
  Buf x({3}, {-1, 0, 1}), y({3});
  ops::gelu_forward(y.t(), x.t());
  CHECK(y[1] == 0.0f);
  CHECK(y[2] == Approx(0.8411919906082768));  // 0.5·(1 + tanh(√(2/π)·1.044715))
  CHECK(y[0] == Approx(0.8411919906082768 - 1));  // gelu(x) − gelu(−x) = x
}
template <class Fwd, class Bwd>
void unary_gradient(Fwd fwd, Bwd bwd, std::uint64_t seed) {
  Rng rng(seed);
  Buf x({4, 9}, &rng), r({4, 9}, &rng), y({4, 9}), dx({4, 9});
  auto f = [&] { fwd(y.t(), x.t()); return dot(y, r); };
  bwd(dx.t(), r.t(), x.t());
  expect_gradient("dx", x, dx, f, nullptr, 1e-3);
  Buf inplace = r;  // dx may alias dy
  bwd(inplace.t(), inplace.t(), x.t());
  CHECK(inplace.v == dx.v);
}
void check_gelu_backward() { unary_gradient(ops::gelu_forward, ops::gelu_backward, 6); }
void check_relu_forward() {
  Buf x({3}, {-2, 0.5f, 3}), y({3});
  ops::relu_forward(y.t(), x.t());
  CHECK(y.v == std::vector<float>{0, 0.5f, 3});
}
void check_relu_backward() { unary_gradient(ops::relu_forward, ops::relu_backward, 7); }
void check_silu_forward() {
  Buf x({2}, {1, -2}), y({2});
  ops::silu_forward(y.t(), x.t());
  CHECK(y[0] == Approx(1 / (1 + std::exp(-1.0))));
  CHECK(y[1] == Approx(-2 / (1 + std::exp(2.0))));
}
void check_silu_backward() { unary_gradient(ops::silu_forward, ops::silu_backward, 8); }
void check_tanh_forward() {
  Buf x({3}, {-1, 0, 0.5f}), y({3});
  ops::tanh_forward(y.t(), x.t());
  CHECK(y[0] == Approx(-0.7615941559557649));  // tanh(1) = (e² − 1) / (e² + 1)
  CHECK(y[1] == 0.0f);
  CHECK(y[2] == Approx(0.46211715726000974));
}
void check_tanh_backward() { unary_gradient(ops::tanh_forward, ops::tanh_backward, 9); }
template <class Fwd, class Bwd>
void gated_gradient(Fwd fwd, Bwd bwd, std::uint64_t seed) {
  Rng rng(seed);
  Buf g({3, 11}, &rng), u({3, 11}, &rng), r({3, 11}, &rng), y({3, 11}), dg({3, 11}), du({3, 11});
  auto f = [&] { fwd(y.t(), g.t(), u.t()); return dot(y, r); };
  bwd(dg.t(), du.t(), r.t(), g.t(), u.t());
  expect_gradient("dgate", g, dg, f, nullptr, 1e-3);
  expect_gradient("dup", u, du, f, nullptr, 1e-3);
  Buf inplace = r, du2({3, 11});  // dgate may alias dy
  bwd(inplace.t(), du2.t(), inplace.t(), g.t(), u.t());
  CHECK(inplace.v == dg.v);
  CHECK(du2.v == du.v);
}
void check_swiglu_forward() {
  Buf g({2}, {1, -2}), u({2}, {3, 0.5f}), y({2});
  ops::swiglu_forward(y.t(), g.t(), u.t());
  CHECK(y[0] == Approx(3 / (1 + std::exp(-1.0))));
  CHECK(y[1] == Approx(0.5 * -2 / (1 + std::exp(2.0))));
}
void check_swiglu_backward() { gated_gradient(ops::swiglu_forward, ops::swiglu_backward, 9); }
void check_geglu_forward() {
  Buf g({1}, {1}), u({1}, {2}), y({1});
  ops::geglu_forward(y.t(), g.t(), u.t());
  CHECK(y[0] == Approx(2 * 0.8411919906082768));
}
void check_geglu_backward() { gated_gradient(ops::geglu_forward, ops::geglu_backward, 10); }

// ---- embeddings and loss --------------------------------------------------------------------
void check_embedding_forward() {
  Buf table({3, 2}, {1, 2, 3, 4, 5, 6}), y({1, 3, 2});
  Ids ids{{2, 0, 2}, {1, 3}};
  ops::embedding_forward(y.t(), ids.t(), table.t());
  CHECK(y.v == std::vector<float>{5, 6, 1, 2, 5, 6});
  Ids bad{{0, 3, 1}, {1, 3}};
  CHECK_THROWS_WITH(ops::embedding_forward(y.t(), bad.t(), table.t()),
                    Catch::Contains("token id 3 at position 1 is outside the vocabulary"));
}
void check_embedding_backward() {
  Buf dtable({3, 2}, {1, 1, 1, 1, 1, 1}), dy({1, 3, 2}, {1, 2, 3, 4, 5, 6});
  Ids ids{{2, 0, 2}, {1, 3}};
  ops::embedding_backward(dtable.t(), dy.t(), ids.t());
  CHECK(dtable.v == std::vector<float>{4, 5, 1, 1, 7, 9});  // a repeated id sums its rows
}
void check_cross_entropy_forward() {
  Buf logits({3, 3}, {0, 0, 0, 1, 2, 3, 5, 5, 5}), losses({3});
  Ids targets{{1, 2, -100}, {3}};
  ops::cross_entropy_forward(losses.t(), logits.t(), targets.t(), -100);
  CHECK(losses[0] == Approx(std::log(3.0)));
  CHECK(losses[1] == Approx(std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3));
  CHECK(losses[2] == 0.0f);  // ignored
}
void check_cross_entropy_backward() {
  Rng rng(11);
  Buf logits({4, 7}, &rng), losses({4}), dlogits({4, 7});
  Ids targets{{3, -100, 0, 6}, {4}};
  auto f = [&] {
    ops::cross_entropy_forward(losses.t(), logits.t(), targets.t(), -100);
    return 0.5 * (losses[0] + losses[1] + losses[2] + losses[3]);
  };
  ops::cross_entropy_backward(dlogits.t(), logits.t(), targets.t(), TensorRef{}, 0.5f, -100);
  expect_gradient("dlogits", logits, dlogits, f);
  for (int v = 0; v < 7; ++v) CHECK(dlogits[7 + std::size_t(v)] == 0.0f);  // the ignored row
  Buf inplace = logits;  // dlogits may alias logits
  ops::cross_entropy_backward(inplace.t(), inplace.t(), targets.t(), TensorRef{}, 0.5f, -100);
  CHECK(inplace.v == dlogits.v);
  // Per-token weights: f = 0.5 · Σ w_n · loss_n; a zero weight leaves its row's gradient 0.
  Buf weights({4}, {2.0f, 1.0f, 0.0f, 0.25f});
  auto fw = [&] {
    ops::cross_entropy_forward(losses.t(), logits.t(), targets.t(), -100);
    double s = 0;
    for (std::size_t n = 0; n < 4; ++n) s += 0.5 * weights[n] * losses[n];
    return s;
  };
  ops::cross_entropy_backward(dlogits.t(), logits.t(), targets.t(), weights.t(), 0.5f, -100);
  expect_gradient("dlogits (weighted)", logits, dlogits, fw);
  for (int v = 0; v < 7; ++v) CHECK(dlogits[14 + std::size_t(v)] == 0.0f);  // weight 0
}
// Tensor parallel's cross-entropy: a vocabulary of 7 split into columns [0, 3) and [3, 7). The two
// ranks' statistics combine into cross_entropy_forward's loss, and their gradients, concatenated,
// are cross_entropy_backward's.
struct VocabSplit {
  Rng rng{12};
  Buf logits{{4, 7}, &rng, 2.0};
  Ids targets{{3, -100, 0, 6}, {4}};
  Buf part(int r) {  // rank r's columns
    const std::int64_t v0 = r ? 3 : 0, V = r ? 4 : 3;
    Buf p({4, V});
    for (std::int64_t n = 0; n < 4; ++n)
      for (std::int64_t j = 0; j < V; ++j) p[std::size_t(n * V + j)] = logits[std::size_t(n * 7 + v0 + j)];
    return p;
  }
};
void check_vocab_parallel_ce_forward() {
  VocabSplit s;
  Buf losses({4});
  ops::cross_entropy_forward(losses.t(), s.logits.t(), s.targets.t(), -100);
  Buf a = s.part(0), b = s.part(1), sa({4, 2}), sb({4, 2});
  ops::vocab_parallel_ce_forward(sa.t(), a.t(), s.targets.t(), 0, -100);
  ops::vocab_parallel_ce_forward(sb.t(), b.t(), s.targets.t(), 3, -100);
  for (std::size_t n = 0; n < 4; ++n) {
    if (n == 1) {  // ignored
      CHECK(sa[2] == 0.0f); CHECK(sa[3] == 0.0f); CHECK(sb[2] == 0.0f); CHECK(sb[3] == 0.0f);
      continue;
    }
    const double lse = std::log(std::exp(double(sa[2 * n])) + std::exp(double(sb[2 * n])));
    // The target's logit from the rank that holds it; 0 from the other.
    const int t = s.targets.v[n];
    CHECK((t < 3 ? sb[2 * n + 1] : sa[2 * n + 1]) == 0.0f);
    CHECK(sa[2 * n + 1] + sb[2 * n + 1] == s.logits[n * 7 + std::size_t(t)]);
    CHECK(lse - (sa[2 * n + 1] + sb[2 * n + 1]) == Approx(losses[n]).epsilon(1e-6));
  }
}
void check_vocab_parallel_ce_backward() {
  VocabSplit s;
  Buf weights({4}, {2.0f, 1.0f, 0.5f, 0.25f}), whole({4, 7});
  ops::cross_entropy_backward(whole.t(), s.logits.t(), s.targets.t(), weights.t(), 0.5f, -100);
  Buf lse({4}), scale({4});
  for (std::size_t n = 0; n < 4; ++n) {
    double m = -1e30, sum = 0;
    for (std::size_t j = 0; j < 7; ++j) m = std::max(m, double(s.logits[n * 7 + j]));
    for (std::size_t j = 0; j < 7; ++j) sum += std::exp(double(s.logits[n * 7 + j]) - m);
    lse[n] = float(m + std::log(sum));
    scale[n] = s.targets.v[n] == -100 ? 0.0f : 0.5f * weights[n];
  }
  for (int r = 0; r < 2; ++r) {
    const std::int64_t v0 = r ? 3 : 0, V = r ? 4 : 3;
    Buf p = s.part(r), dp({4, V});
    ops::vocab_parallel_ce_backward(dp.t(), p.t(), s.targets.t(), lse.t(), scale.t(), int(v0));
    for (std::int64_t n = 0; n < 4; ++n)
      for (std::int64_t j = 0; j < V; ++j) {
        INFO("rank " << r << ", row " << n << ", column " << v0 + j);
        CHECK(dp[std::size_t(n * V + j)] == Approx(whole[std::size_t(n * 7 + v0 + j)]).margin(1e-7));
      }
    ops::vocab_parallel_ce_backward(p.t(), p.t(), s.targets.t(), lse.t(), scale.t(), int(v0));  // in place
    CHECK(p.v == dp.v);
  }
}

// ---- mixture of experts ----------------------------------------------------------------------
void check_moe_route_forward() {
  // Row 0: probabilities 0.1 .. 0.4; row 1: a tie between experts 0 and 1 (the lower first).
  Buf logits({2, 4}, {0, float(std::log(2.0)), float(std::log(3.0)), float(std::log(4.0)), 1, 1, 0, 0});
  Buf probs({2, 4}), lse({2}), gate({2, 2});
  Ids index{{0, 0, 0, 0}, {2, 2}};
  ops::moe_route_forward(probs.t(), lse.t(), index.t(), gate.t(), logits.t(), 1);
  CHECK(probs[0] == Approx(0.1)); CHECK(probs[3] == Approx(0.4));
  CHECK(lse[0] == Approx(std::log(10.0)));
  CHECK(index.v == std::vector<std::int32_t>{3, 2, 0, 1});
  CHECK(gate[0] == Approx(4.0 / 7)); CHECK(gate[1] == Approx(3.0 / 7)); CHECK(gate[2] == Approx(0.5));
  ops::moe_route_forward(probs.t(), lse.t(), index.t(), gate.t(), logits.t(), 0);  // Switch: the probability itself
  CHECK(gate[0] == Approx(0.4)); CHECK(gate[1] == Approx(0.3));
  Ids too_many{{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {2, 5}};
  Buf gate5({2, 5});
  CHECK_THROWS_WITH(ops::moe_route_forward(probs.t(), lse.t(), too_many.t(), gate5.t(), logits.t(), 1),
                    Catch::Contains("k = 5 must be between 1 and the 4 experts"));
}
void check_moe_route_backward() {
  // f = Σ r·gate + Σ_n Σ_e dprobs[e]·probs[n, e] + z/2 · Σ lse², with logits far enough apart that
  // the differences never change the top-k choice.
  Rng rng(12);
  const std::int64_t N = 5, E = 6, K = 2;
  Buf logits({N, E}), probs({N, E}), lse({N}), gate({N, K}), r({N, K}, &rng), dprobs({E}, &rng), dlogits({N, E});
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t e = 0; e < E; ++e) logits[std::size_t(n * E + e)] = 0.5f * float((5 * e + n) % E) + 0.01f * float(rng.normal());
  Ids index{std::vector<std::int32_t>(N * K), {N, K}};
  for (int normalize : {1, 0}) {
    auto f = [&] {
      ops::moe_route_forward(probs.t(), lse.t(), index.t(), gate.t(), logits.t(), normalize);
      double s = dot(gate, r);
      for (std::int64_t n = 0; n < N; ++n) {
        s += 0.15 * double(lse[std::size_t(n)]) * lse[std::size_t(n)];
        for (std::int64_t e = 0; e < E; ++e) s += double(dprobs[std::size_t(e)]) * probs[std::size_t(n * E + e)];
      }
      return s;
    };
    f();
    ops::moe_route_backward(dlogits.t(), r.t(), dprobs.t(), probs.t(), lse.t(), index.t(), gate.t(), 0.3f, normalize);
    expect_gradient(normalize ? "dlogits (normalised top-2)" : "dlogits (raw probabilities)", logits, dlogits, f);
  }
}
void check_moe_gather() {
  Buf x({3, 2}, {1, 2, 3, 4, 5, 6}), xs({4, 2});
  Ids token{{2, 0, 2, 1}, {4}};
  ops::moe_gather(xs.t(), x.t(), token.t());
  CHECK(xs.v == std::vector<float>{5, 6, 1, 2, 5, 6, 3, 4});
  Ids bad{{2, 0, 3, 1}, {4}};
  CHECK_THROWS_WITH(ops::moe_gather(xs.t(), x.t(), bad.t()), Catch::Contains("token 3 at 2 is outside [0, 3)"));
}
void check_moe_combine_forward() {
  // Token 0 from rows 1 (0.75) and 0 (0.25); token 1 from row 2 only (its second slot dropped).
  Buf ys({3, 2}, {1, 2, 3, 4, 5, 6}), gate({2, 2}, {0.75f, 0.25f, 0.5f, 0.5f}), y({2, 2});
  Ids slot{{1, 0, 2, -1}, {2, 2}};
  ops::moe_combine_forward(y.t(), ys.t(), gate.t(), slot.t());
  CHECK(y.v == std::vector<float>{0.75f * 3 + 0.25f * 1, 0.75f * 4 + 0.25f * 2, 2.5f, 3});
  ops::moe_combine_forward(y.t(), ys.t(), TensorRef{}, slot.t());  // weights 1: moe_gather's backward
  CHECK(y.v == std::vector<float>{4, 6, 5, 6});
}
void check_moe_combine_backward() {
  Rng rng(13);
  Buf ys({5, 3}, &rng), gate({3, 2}, &rng), r({3, 3}, &rng), y({3, 3}), dys({5, 3}), dgate({3, 2});
  Ids slot{{4, 1, -1, 0, 2, 3}, {3, 2}};
  auto f = [&] {
    ops::moe_combine_forward(y.t(), ys.t(), gate.t(), slot.t());
    return dot(y, r);
  };
  ops::moe_combine_backward(dys.t(), dgate.t(), r.t(), ys.t(), gate.t(), slot.t());
  expect_gradient("dys", ys, dys, f);
  expect_gradient("dgate", gate, dgate, f);
  CHECK(dgate[2] == 0.0f);  // the dropped slot
}

// ---- linear recurrences ---------------------------------------------------------------------
void check_mingru_gates_forward() {
  Buf z({2}, {0, 2}), h({2}, {3, -1}), a({2}), u({2});
  ops::mingru_gates_forward(a.t(), u.t(), z.t(), h.t());
  const double s = 1 / (1 + std::exp(-2.0));
  CHECK(a[0] == Approx(0.5)); CHECK(u[0] == Approx(1.5));
  CHECK(a[1] == Approx(1 - s)); CHECK(u[1] == Approx(-s));
}
void check_mingru_gates_backward() {
  Rng rng(14);
  Buf z({3, 7}, &rng, 2.0), h({3, 7}, &rng), ra({3, 7}, &rng), ru({3, 7}, &rng), a({3, 7}), u({3, 7});
  Buf dz({3, 7}), dh({3, 7});
  auto f = [&] {
    ops::mingru_gates_forward(a.t(), u.t(), z.t(), h.t());
    return dot(a, ra) + dot(u, ru);
  };
  ops::mingru_gates_backward(dz.t(), dh.t(), ra.t(), ru.t(), z.t(), h.t());
  expect_gradient("dz", z, dz, f);
  expect_gradient("dh", h, dh, f);
}
void check_linear_scan_forward() {
  Buf a({1, 3, 1}, {0.5f, 0.5f, 0.5f}), x({1, 3, 1}, {1, 1, 1}), y({1, 3, 1}), h0({1, 1}, {2});
  ops::linear_scan_forward(y.t(), a.t(), x.t(), TensorRef{}, TensorRef{});
  CHECK(y.v == std::vector<float>{1, 1.5f, 1.75f});
  ops::linear_scan_forward(y.t(), a.t(), x.t(), h0.t(), TensorRef{});  // 0.5 · 2 + 1 = 2, and so on
  CHECK(y.v == std::vector<float>{2, 2, 2});
  Ids seg{{0, 0, 1}, {1, 3}};  // a document starts at step 2: the state restarts there
  ops::linear_scan_forward(y.t(), a.t(), x.t(), h0.t(), seg.t());
  CHECK(y.v == std::vector<float>{2, 2, 1});
  Buf y2({1, 2, 1});
  CHECK_THROWS_WITH(ops::linear_scan_forward(y2.t(), a.t(), x.t(), TensorRef{}, TensorRef{}),
                    Catch::Contains("must have the same shape"));
}
void check_linear_scan_backward() {
  // f = Σ r · scan(a, x) from a starting state, over two rows, the second with two documents.
  Rng rng(15);
  const std::int64_t B = 2, T = 6, D = 3;
  Buf a({B, T, D}, &rng, 0.3), x({B, T, D}, &rng), r({B, T, D}, &rng), h0({B, D}, &rng), y({B, T, D});
  for (auto& v : a.v) v += 0.5f;
  Buf da({B, T, D}), dx({B, T, D});
  Ids seg{{0, 0, 0, 0, 0, 0, 4, 4, 4, 7, 7, 7}, {B, T}};
  for (const bool with_state : {false, true}) {
    const TensorRef start = with_state ? h0.t() : TensorRef{}, docs = with_state ? seg.t() : TensorRef{};
    auto f = [&] {
      ops::linear_scan_forward(y.t(), a.t(), x.t(), start, docs);
      return dot(y, r);
    };
    f();
    ops::linear_scan_backward(da.t(), dx.t(), r.t(), a.t(), y.t(), start, docs);
    expect_gradient(with_state ? "da (h0, documents)" : "da", a, da, f);
    expect_gradient(with_state ? "dx (h0, documents)" : "dx", x, dx, f);
  }
}

// ---- optimizer ------------------------------------------------------------------------------
void check_adamw_step() {
  // Worked by hand: p = 1, g = 0.5, lr 0.1, betas (0.9, 0.999), wd 0.1.
  Buf p({1}, {1}), g({1}, {0.5f}), m({1}), v({1});
  AdamWArgs a{.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f, .step = 1};
  ops::adamw_step(p.t(), g.t(), m.t(), v.t(), a);
  CHECK(m[0] == Approx(0.05));     // 0.1 · 0.5
  CHECK(v[0] == Approx(0.00025).epsilon(1e-4));  // 0.001 · 0.25 (β2 = 0.999f is not exactly 0.999)
  CHECK(p[0] == Approx(1 - 0.1 * (1.0 + 0.1)));  // m̂/√v̂ = 0.5/0.5 = 1, plus wd·p = 0.1
  // Step 2 with g = -0.5: m = 0.045 − 0.05 = −0.005, v = 0.00024975 + 0.00025.
  g[0] = -0.5f, a.step = 2;
  const double p1 = p[0];
  ops::adamw_step(p.t(), g.t(), m.t(), v.t(), a);
  const double mh = -0.005 / (1 - 0.81), vh = (0.00024975 + 0.00025) / (1 - 0.998001);
  CHECK(p[0] == Approx(p1 - 0.1 * (mh / (std::sqrt(vh) + 1e-8) + 0.1 * p1)));
}

void check_sgd_step() {
  // lr 0.1, momentum 0.9, wd 0.01. Step 1: buf = g = 1; p = 1 − 0.1·(1 + 0.01) = 0.899.
  Buf p({1}, {1}), g({1}, {1}), buf({1}, {7});  // buf's old value is ignored at step 1
  SgdArgs a{.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f, .nesterov = false, .step = 1};
  ops::sgd_step(p.t(), g.t(), buf.t(), a);
  CHECK(buf[0] == Approx(1));
  CHECK(p[0] == Approx(0.899));
  // Step 2, g = 0.5: buf = 0.9 + 0.5 = 1.4; p = 0.899 − 0.1·(1.4 + 0.00899).
  g[0] = 0.5f, a.step = 2;
  ops::sgd_step(p.t(), g.t(), buf.t(), a);
  CHECK(buf[0] == Approx(1.4));
  CHECK(p[0] == Approx(0.899 - 0.1 * (1.4 + 0.01 * 0.899)));
  // Nesterov, step 2 from buf = 1: buf = 1.4, direction g + μ·buf = 0.5 + 1.26.
  Buf q({1}, {1}), b2({1}, {1});
  a.nesterov = true, a.weight_decay = 0;
  ops::sgd_step(q.t(), g.t(), b2.t(), a);
  CHECK(q[0] == Approx(1 - 0.1 * (0.5 + 0.9 * 1.4)));
}
void check_lion_step() {
  // β1 0.9, β2 0.99, lr 0.01, wd 0.1; m = 1, g = −20: c = 0.9 − 2 = −1.1 → sign −1.
  Buf p({2}, {1, 1}), g({2}, {-20, 0}), m({2}, {1, 0});
  ops::lion_step(p.t(), g.t(), m.t(), LionArgs{.lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.99f, .weight_decay = 0.1f});
  CHECK(p[0] == Approx(1 - 0.01 * (-1 + 0.1)));
  CHECK(m[0] == Approx(0.99 - 0.2));
  CHECK(p[1] == Approx(1 - 0.01 * 0.1));  // sign(0) = 0: only the decay
}
void check_sum_squares() {
  Buf x({2, 3}, {1, 2, 3, -4, 0, 1}), out({1}, {10});
  ops::sum_squares(out.t(), x.t());
  CHECK(out[0] == Approx(10 + 31));  // accumulates
}
void check_scale_forward() {
  Buf x({3}, {1, -2, 4}), y({3});
  ops::scale_forward(y.t(), x.t(), 0.5f);
  CHECK(y.v == std::vector<float>{0.5f, -1, 2});
  ops::scale_forward(x.t(), x.t(), 2.0f);  // in place
  CHECK(x.v == std::vector<float>{2, -4, 8});
}

// The mask is SplitMix64 of (seed, index): element 0 at seed 0 draws SplitMix64's first output
// from state 0, 0xE220A8397B1DCDAF (published with the generator), whose top 24 bits are
// 0xE220A8 / 2²⁴ = 0.88330; about p of the elements drop, the rest are scaled by 1 / (1 − p), and a
// seed gives the same mask every time (backward reuses it) and another seed another.
void check_dropout() {
  Buf one({1}, {2.0f}), out({1});
  ops::dropout(out.t(), one.t(), 0.8833f, 0);
  CHECK(out.v[0] == 2.0f * float(1.0 / (1.0 - double(0.8833f))));
  ops::dropout(out.t(), one.t(), 0.8834f, 0);
  CHECK(out.v[0] == 0.0f);
  const std::int64_t n = 100000;
  Buf x({n}, std::vector<float>(std::size_t(n), 1.0f)), y({n}), y2({n}), z({n});
  ops::dropout(y.t(), x.t(), 0.25f, 99);
  ops::dropout(y2.t(), x.t(), 0.25f, 99);
  ops::dropout(z.t(), x.t(), 0.25f, 100);
  CHECK(y.v == y2.v);
  std::int64_t dropped = 0, both = 0, runs = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const bool d = y.v[std::size_t(i)] == 0;
    dropped += d, both += d && z.v[std::size_t(i)] == 0;
    runs += i > 0 && d && y.v[std::size_t(i - 1)] == 0;
    if (!d) CHECK(y.v[std::size_t(i)] == float(1.0 / 0.75));
  }
  CHECK(std::abs(double(dropped) / double(n) - 0.25) < 0.006);  // 4.4 standard deviations
  CHECK(std::abs(double(both) / double(n) - 0.0625) < 0.004);   // independent seeds: p²
  CHECK(std::abs(double(runs) / double(n) - 0.0625) < 0.004);   // neighbours independent: p²
  ops::dropout(y.t(), x.t(), 0.0f, 5);
  CHECK(y.v == x.v);
  CHECK_THROWS_WITH(ops::dropout(y.t(), x.t(), 1.0f, 5), Catch::Contains("p = 1 is outside [0, 1)"));
}

// Rounding to nearest even at the halfway points, NaN kept, bf16 → f32 exact.
void check_convert() {
  const float halfway_down = 1.0f + 1.0f / 256, halfway_up = 1.0f + 3.0f / 256, nan = std::nanf("");
  Buf x({5}, {halfway_down, halfway_up, -2.5f, 1e-3f, nan});
  std::vector<bf16> h(5);
  ops::convert(TensorRef(h.data(), DType::bf16, {5}), x.t());
  CHECK(float(h[0]) == 1.0f);              // ties to the even neighbour below
  CHECK(float(h[1]) == 1.0f + 4.0f / 256);  // ties to the even neighbour above
  CHECK(float(h[2]) == -2.5f);
  CHECK(float(h[3]) == float(bf16(1e-3f)));
  CHECK(std::isnan(float(h[4])));
  Buf back({5});
  ops::convert(back.t(), TensorRef(h.data(), DType::bf16, {5}));
  for (int i = 0; i < 4; ++i) CHECK(back[i] == float(h[std::size_t(i)]));
}

struct OpCheck {
  std::string_view name;
  void (*run)();
};
constexpr OpCheck kChecks[] = {
#define LLMTK_X(name, params, args) {#name, &check_##name},
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};
static_assert(std::size(kChecks) == ops::kOpCount);

}  // namespace

TEST_CASE("every op in the op list passes its check", "[ops]") {
  for (const auto& c : kChecks) {
    SECTION(std::string(c.name)) { c.run(); }
  }
}

TEST_CASE("ops reject bad arguments with the op's name", "[ops]") {
  Buf x({2, 3}), w({4, 5}), y({2, 4});
  CHECK_THROWS_WITH(ops::matmul_forward(y.t(), x.t(), w.t(), TensorRef{}),
                    Catch::StartsWith("[matmul_forward] w [4, 5] must be [O, I] with I = 3"));
  Buf q({1, 2, 3, 4}), k({1, 2, 2, 4}), o({1, 2, 3, 4}), lse({6});
  CHECK_THROWS_WITH(ops::attention_forward(o.t(), lse.t(), q.t(), k.t(), k.t(), AttentionMask{}),
                    Catch::StartsWith("[attention_forward] KV = 2 kv heads must divide H = 3"));
  // The checks are the contract's, run before any backend's op: the same on every backend.
  Buf g({2, 3}), dg({2, 3}), du({2, 4});
  CHECK_THROWS_WITH(ops::swiglu_backward(dg.t(), du.t(), g.t(), g.t(), g.t()),
                    Catch::StartsWith("[swiglu_backward] dup [2, 4] and gate [2, 3] must have the same shape"));
  TensorRef elsewhere = g.t();
  elsewhere.device = Device::cuda;  // not the memory of a host backend
  CHECK_THROWS_WITH(ops::scale_forward(elsewhere, elsewhere, 2.0f),
                    Catch::StartsWith("[scale_forward] y is not in host memory"));
  CHECK_THROWS_WITH(ops::use_backend("tpu"), Catch::Contains("unknown backend 'tpu'"));
}

TEST_CASE("a build without CUDA names the op it cannot run", "[ops]") {
  ops::ScopedBackend backend("cuda");
  Buf x({1, 2}), y({1, 2});
  CHECK_THROWS_WITH(ops::gelu_forward(y.t(), x.t()), Catch::Contains("gelu_forward"));
}
