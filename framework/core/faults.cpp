#include "faults.hpp"

#include <cstdlib>
#include <string>
#include <vector>

#include "error.hpp"

namespace llmtk::faults {

namespace {

struct Fault {
  std::string name;
  bool is_step = false;  // NAME@STEP, else NAME=VALUE
  double value = 0;
  bool fired = false;    // a step fault fires once: the skipped step is tried again with the next batch
};

std::vector<Fault> parse(const char* env) {
  std::vector<Fault> out;
  if (!env) return out;
  const std::string s = env;
  std::size_t at = 0;
  while (at <= s.size()) {
    std::size_t end = s.find(',', at);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(at, end - at);
    at = end + 1;
    if (item.empty()) continue;
    const std::size_t k = item.find_first_of("@=");
    LLMTK_CHECK(k != std::string::npos && k > 0 && k + 1 < item.size(), "LLMTK_FAULTS",
                "'", item, "' is neither NAME@STEP nor NAME=VALUE");
    Fault f{item.substr(0, k), item[k] == '@', 0, false};
    char* stop = nullptr;
    f.value = std::strtod(item.c_str() + k + 1, &stop);
    LLMTK_CHECK(stop && *stop == '\0', "LLMTK_FAULTS", "'", item, "': '", item.substr(k + 1), "' is not a number");
    static constexpr std::string_view known[] = {"nan_grad", "inf_act", "nan_loss", "slow_write", "kill", "hang"};
    bool ok = false;
    for (auto n : known) ok = ok || n == f.name;
    LLMTK_CHECK(ok, "LLMTK_FAULTS", "unknown fault '", f.name, "'; known: nan_grad@STEP, inf_act@STEP, nan_loss@STEP, "
                "kill@STEP, hang@STEP, slow_write=MS");
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<Fault>& faults() {
  static std::vector<Fault> f = parse(std::getenv("LLMTK_FAULTS"));
  return f;
}

}  // namespace

bool at(std::string_view name, std::int64_t step) {
  for (auto& f : faults())
    if (f.is_step && !f.fired && f.name == name && std::int64_t(f.value) == step) return f.fired = true;
  return false;
}

double setting(std::string_view name, double fallback) {
  for (const auto& f : faults())
    if (!f.is_step && f.name == name) return f.value;
  return fallback;
}

bool any() { return !faults().empty(); }

}  // namespace llmtk::faults
