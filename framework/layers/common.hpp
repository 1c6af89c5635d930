// What every part header needs: the concepts, the planner and the ops.
#pragma once
#include <cstdint>

#include "../core/axes.hpp"
#include "../dsl/concepts.hpp"
#include "../dsl/plan.hpp"
#include "../ops/ops.hpp"

namespace llmtk {

// Parts that have no influence on ArchTraits skip add_traits; combinators call this helper.
template <class P>
constexpr void add_traits(ArchTraits& t) {
  if constexpr (requires { P::add_traits(t); }) P::add_traits(t);
}

// Average number of keys a query sees: causal over T positions, limited to `window` if set.
constexpr double visible_keys(std::int64_t T, int window) {
  double sum = 0;
  for (std::int64_t i = 0; i < T; ++i) sum += double(window > 0 && i + 1 > window ? window : i + 1);
  return T > 0 ? sum / double(T) : 0.0;
}

}  // namespace llmtk
