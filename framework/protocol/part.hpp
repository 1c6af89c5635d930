// What every part needs, primitive (layers/) or combinator (dsl/): the concepts, the planner and
// Ctx, the visitor (children, rules, tags) and the ops. Both layers/ and dsl/ build on this directory and never on each other in a loop.
#pragma once
#include <cstdint>

#include "../core/axes.hpp"
#include "../core/dims.hpp"
#include "../ops/ops.hpp"
#include "concepts.hpp"
#include "plan.hpp"
#include "probe.hpp"
#include "visit.hpp"
