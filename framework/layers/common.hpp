// What every part header in layers/ needs: the part protocol (concepts, planner, ops) and a few
// helpers the layers share.
#pragma once
#include <cstdint>

#include "../core/communicator.hpp"
#include "../protocol/part.hpp"

namespace llmtk {

// Average number of keys a query sees: causal over T positions, limited to `window` if set.
constexpr double visible_keys(std::int64_t T, int window) {
  double sum = 0;
  for (std::int64_t i = 0; i < T; ++i) sum += double(window > 0 && i + 1 > window ? window : i + 1);
  return T > 0 ? sum / double(T) : 0.0;
}

// Tensor parallel (Megatron-LM's column- then row-parallel pair, docs/distributed.md): a split
// part's output and its input gradient are each rank's partial sums; this adds them up over the
// ranks, in place, so that every rank holds the whole (the same bits on each). Nothing without
// tensor parallel.
inline void tp_sum(const Ctx& c, TensorRef t, const char* what) {
  if (c.tp && t) c.tp->all_reduce_sum(t, what);
}

}  // namespace llmtk
