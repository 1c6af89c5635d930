// Fault injection for the reliability tests (docs/reliability.md), from the environment variable
// LLMTK_FAULTS, read once: a comma-separated list of NAME@STEP (a fault at one training step) and
// NAME=VALUE (a setting), e.g. LLMTK_FAULTS=nan_grad@5,inf_act@7,nan_loss@9 or slow_write=20. A
// fault given k times at one step fires on k tries of that step in a row.
//   nan_grad@N    one gradient element is NaN after step N's backward
//   inf_act@N     step N's forward sees an activation overflow (one embedding row is +Inf for
//                 that forward and backward, then restored)
//   nan_loss@N    step N's loss is NaN
//   kill@N        the process kills itself (SIGKILL) as step N begins: a rank that dies
//   hang@N        the process sleeps for ever as step N begins: a rank that stalls
//   slow_write=MS every durable write (checkpoints, exports, run files) first waits MS
//                 milliseconds, so that a kill lands inside a write
// Unset, as in every real run, each query is one test of an empty list. Faults are a testing
// facility, not a feature: nothing else reads LLMTK_FAULTS.
#pragma once
#include <cstdint>
#include <string_view>

namespace llmtk::faults {

// Whether fault `name` is armed for training step `step` (1-based, as the logs count). Each fires
// once: a skipped step does not advance the count, and its retry (with the next batch) runs clean.
bool at(std::string_view name, std::int64_t step);
// The value of setting `name`, or `fallback` when it is not set.
double setting(std::string_view name, double fallback = 0);
// Whether any fault or setting is given (the trainer says so in its log).
bool any();

}  // namespace llmtk::faults
