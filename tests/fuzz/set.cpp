// `--set KEY=VALUE` on the command line: each line of the input is one assignment, applied to a
// small valid recipe (tests/fuzz/README.md). Values are parsed as TOML, else taken as strings.
#include <vector>

#include "fuzz.hpp"
#include "train/recipe.hpp"

namespace {
constexpr std::string_view kBase = R"([model]
arch = "gpt2-tiny"
[data]
dir = "data/kjv"
[train]
batch = 4
seq = 64
steps = 10
[optim]
lr = 1e-3
)";
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  static const std::string file = fuzz::put("base.toml", kBase);
  std::vector<std::string> sets;
  const std::string_view in = fuzz::bytes(data, size);
  for (std::size_t pos = 0; pos <= in.size();) {
    const std::size_t nl = std::min(in.find('\n', pos), in.size());
    sets.emplace_back(in.substr(pos, nl - pos));
    pos = nl + 1;
  }
  fuzz::expect_clean({file, "--set"}, [&] { (void)train::read_recipe(file, sets); });
  return 0;
}
