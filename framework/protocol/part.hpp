// What every part needs, primitive (layers/) or combinator (dsl/): the concepts, the planner and
// Ctx, and the ops. Both layers/ and dsl/ build on this directory and never on each other in a loop.
#pragma once
#include <cstdint>

#include "../core/axes.hpp"
#include "../ops/ops.hpp"
#include "concepts.hpp"
#include "plan.hpp"

namespace llmtk {

// Parts that have no influence on ArchTraits skip add_traits; combinators call this helper.
template <class P>
constexpr void add_traits(ArchTraits& t) {
  if constexpr (requires { P::add_traits(t); }) P::add_traits(t);
}

}  // namespace llmtk
