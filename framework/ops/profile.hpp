// What LLMTK_PROFILE=1 measured so far, for a program that wants the table itself (llmtk train
// writes it into the run as profile.json, which llmtk doctor reads). ops.hpp has the switch.
#pragma once
#include <string>
#include <vector>

namespace llmtk::ops {

struct OpTime {
  std::string op;
  double seconds = 0;
  long calls = 0;
};
// True when LLMTK_PROFILE is set (ops are being timed).
bool profiling();
// Every op timed so far, slowest first.
std::vector<OpTime> profile_table();

}  // namespace llmtk::ops
