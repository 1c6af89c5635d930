// Small text helpers for error messages: the closest known name to a misspelt one.
#pragma once
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace llmtk {

// Levenshtein distance (insertions, deletions, substitutions).
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// The candidate closest to `name` if it is close enough to be a typo (a few edits, more for long
// names: "optim.lr_max" → "optim.lr"), else empty.
inline std::string closest(std::string_view name, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_d = std::string::npos;
  for (const auto& c : candidates)
    if (const auto d = edit_distance(name, c); d < best_d) best_d = d, best = c;
  return best_d <= std::max<std::size_t>(3, name.size() / 3) ? best : std::string();
}

}  // namespace llmtk
