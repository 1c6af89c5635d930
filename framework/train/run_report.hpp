// llmtk report: one self-contained HTML page (inline SVG, no scripts) from one or more run
// directories' metrics.jsonl: loss and validation loss, learning rate, gradient norm, throughput,
// several runs overlaid, and a table of final numbers.
#pragma once
#include <string>
#include <vector>

namespace llmtk::train {

// Writes the page to `out` and returns a one-line summary.
std::string write_run_report(const std::vector<std::string>& run_dirs, const std::string& out);

}  // namespace llmtk::train
