// The generic gradient checker. For a part L: random parameters and input x, a random projection
// r of the output, f(x, θ) = Σ r·L(x, θ). backward(dy = r) must give ∂f/∂x and ∂f/∂θ, which are
// compared with central differences of f.
//   - parameter gradients are pre-filled with a random non-zero value, and the check reads
//     grad − prefill: a part that overwrites (=) instead of accumulating (+=) fails;
//   - dx is pre-filled with NaN: an entry backward never writes fails.
// Tolerances: the reference backend stores f32 between ops, so f carries ~1e-7 relative error;
// measured on these tests, h = 3e-3 balances rounding (which grows as h shrinks: 1e-3 fails)
// against curvature (which grows with h: 1e-2 fails on deep models).
#pragma once
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "dsl/combinators.hpp"
#include "models/model.hpp"
#include "train/step.hpp"

namespace llmtk::test {

struct GradTolerance {
  double h = 3e-3;     // finite-difference step: smaller loses to f32 rounding, larger to curvature
  double atol = 2e-3;  // absolute
  double rtol = 2e-2;  // relative to max(|numeric|, |analytic|)
  int max_per_tensor = 48;  // entries checked per tensor (all when the tensor is smaller)
};

inline void fill_normal(TensorRef t, Rng& rng, double scale, double offset = 0.0) {
  for (std::int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(offset + scale * rng.normal());
}

// Indices to probe in a tensor of n elements: all of them, or an even spread plus random ones.
inline std::vector<std::int64_t> probe_indices(std::int64_t n, int max, Rng& rng) {
  std::vector<std::int64_t> idx;
  if (n <= max) {
    for (std::int64_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  for (int i = 0; i < max / 2; ++i) idx.push_back(std::int64_t(i) * n / (max / 2));
  while (int(idx.size()) < max) idx.push_back(std::int64_t(rng.next() % std::uint64_t(n)));
  return idx;
}

struct GradReport {
  int checked = 0;
  int failed = 0;
  double worst = 0;  // worst |num − ana| / (atol + rtol·scale)
  std::string first_failure;
};

// Compares analytic[i] to the central difference of f() when *x is nudged by ±h.
template <class F>
void check_entries(GradReport& rep, const std::string& what, float* x, const float* analytic,
                   const std::vector<std::int64_t>& idx, F&& f, const GradTolerance& tol,
                   const float* prefill = nullptr) {
  for (auto i : idx) {
    const float saved = x[i];
    x[i] = float(saved + tol.h);
    const double fp = f();
    x[i] = float(saved - tol.h);
    const double fm = f();
    x[i] = saved;
    const double num = (fp - fm) / (2 * tol.h);
    const double ana = double(analytic[i]) - (prefill ? double(prefill[i]) : 0.0);
    const double err = std::abs(num - ana);
    const double bound = tol.atol + tol.rtol * std::max(std::abs(num), std::abs(ana));
    ++rep.checked;
    rep.worst = std::max(rep.worst, std::isfinite(err) ? err / bound : 1e30);
    if (!(err <= bound)) {
      if (std::getenv("LLMTK_GRADCHECK_VERBOSE"))  // every failure, to find the part that is wrong
        std::fprintf(stderr, "gradcheck: %s[%lld]: numeric %g, analytic %g\n", what.c_str(), static_cast<long long>(i),
                     num, ana);
      if (rep.failed++ == 0)
        rep.first_failure = what + "[" + std::to_string(i) + "]: numeric " + std::to_string(num) +
                            ", analytic " + std::to_string(ana);
    }
  }
}

// Checks every parameter and (for float inputs) the input gradient of one part.
template <Layer L>
GradReport gradcheck_part(L& part, const Dims& dims, std::int64_t B, std::int64_t T,
                          std::uint64_t seed, GradTolerance tol = {}) {
  Arena params("params"), acts("activations");
  Planner p(dims, B, T, params, acts);
  part.declare(p);
  const auto in_shape = shape_of(p, typename L::In{});
  const auto out_shape = shape_of(p, typename L::Out{});
  constexpr bool token_input = std::same_as<typename L::In, Tokens>;
  const int x_id = acts.add("test.x", in_shape, token_input ? DType::i32 : DType::f32);
  const int dx_id = acts.add("test.dx", in_shape);
  const int y_id = acts.add("test.y", out_shape);
  const int r_id = acts.add("test.r", out_shape);
  Arena grads = params.like("grads"), prefill = params.like("prefill");
  params.allocate(), grads.allocate(), prefill.allocate(), acts.allocate();

  Rng rng(seed);
  for (std::size_t i = 0; i < params.entries().size(); ++i) {
    const auto kind = params.entries()[i].kind;
    fill_normal(params[int(i)], rng, kind == ParamKind::norm ? 0.2 : 0.4,
                kind == ParamKind::norm ? 1.0 : 0.0);
    fill_normal(prefill[int(i)], rng, 1.0);
  }
  TensorRef x = acts[x_id], dx = acts[dx_id], y = acts[y_id], r = acts[r_id];
  if constexpr (token_input) {
    for (std::int64_t i = 0; i < x.numel(); ++i) x.i32()[i] = std::int32_t(rng.next() % std::uint64_t(dims.vocab));
  } else {
    fill_normal(x, rng, 1.0);
  }
  fill_normal(r, rng, 1.0);

  Ctx c{params, grads, acts, dims, B, T};
  auto f = [&] {
    part.forward(c, y, x);
    double s = 0;
    for (std::int64_t i = 0; i < y.numel(); ++i) s += double(y.f32()[i]) * r.f32()[i];
    return s;
  };

  // Analytic gradients.
  f();
  if (prefill.bytes()) std::memcpy(grads.data(), prefill.data(), prefill.bytes());
  for (std::int64_t i = 0; i < dx.numel(); ++i) dx.f32()[i] = std::numeric_limits<float>::quiet_NaN();
  part.backward(c, token_input ? TensorRef{} : dx, r, x);

  GradReport rep;
  for (std::size_t i = 0; i < params.entries().size(); ++i) {
    const auto& e = params.entries()[i];
    auto idx = probe_indices(e.numel, tol.max_per_tensor, rng);
    check_entries(rep, e.name, params[int(i)].f32(), grads[int(i)].f32(), idx, f, tol,
                  prefill[int(i)].f32());
  }
  if constexpr (!token_input) {
    std::vector<float> dx_copy(dx.f32(), dx.f32() + dx.numel());
    auto idx = probe_indices(x.numel(), tol.max_per_tensor * 2, rng);
    check_entries(rep, "dx", x.f32(), dx_copy.data(), idx, f, tol);
  }
  return rep;
}

// Checks d(loss)/dθ for every parameter of a whole model, planned for the batch, under any
// objective: random parameters from `rng`, then the batch `make_batch` draws from it.
template <class MakeBatch>
inline GradReport gradcheck_model(AnyModel& m, Objective& objective, MakeBatch&& make_batch, Rng& rng,
                                  GradTolerance tol = {}) {
  m.allocate();
  Arena& params = m.params();
  for (std::size_t i = 0; i < params.entries().size(); ++i) {
    const auto kind = params.entries()[i].kind;
    fill_normal(params[int(i)], rng, kind == ParamKind::norm ? 0.2 : 0.4,
                kind == ParamKind::norm ? 1.0 : 0.0);
  }
  const train::Batch batch = make_batch(rng);
  Arena prefill = params.like("prefill");
  prefill.allocate();
  for (std::size_t i = 0; i < params.entries().size(); ++i) fill_normal(prefill[int(i)], rng, 1.0);
  std::memcpy(m.grads().data(), prefill.data(), prefill.bytes());
  train::forward_backward(m, objective, batch);

  auto f = [&] { return double(train::forward_loss(m, objective, batch)); };
  GradReport rep;
  for (std::size_t i = 0; i < params.entries().size(); ++i) {
    const auto& e = params.entries()[i];
    auto idx = probe_indices(e.numel, tol.max_per_tensor, rng);
    check_entries(rep, e.name, params[int(i)].f32(), m.grads()[int(i)].f32(), idx, f, tol,
                  prefill[int(i)].f32());
  }
  return rep;
}

// Checks d(loss)/dθ for every parameter of a whole model under next-token cross-entropy.
inline GradReport gradcheck_model(AnyModel& m, std::int64_t B, std::int64_t T, std::uint64_t seed,
                                  GradTolerance tol = {}) {
  m.plan(B, T);
  Rng rng(seed);
  std::vector<std::int32_t> ids(std::size_t(B * T)), targets(ids.size());
  NextTokenLoss objective;
  return gradcheck_model(
      m, objective,
      [&](Rng& r) {
        for (auto& v : ids) v = std::int32_t(r.next() % std::uint64_t(m.dims().vocab));
        for (auto& v : targets) v = std::int32_t(r.next() % std::uint64_t(m.dims().vocab));
        targets[1] = kIgnoreIndex;  // the ignore index must drop out of loss and gradient
        return train::lm_batch(TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(targets.data(), DType::i32, {B, T}));
      },
      rng, tol);
}

}  // namespace llmtk::test

#define REQUIRE_GRADIENTS(report)                                            \
  do {                                                                       \
    const auto& rep_ = (report);                                             \
    INFO("checked " << rep_.checked << " entries, worst error/bound "       \
                    << rep_.worst << "; first failure: " << rep_.first_failure); \
    REQUIRE(rep_.checked > 0);                                               \
    REQUIRE(rep_.failed == 0);                                               \
  } while (0)
