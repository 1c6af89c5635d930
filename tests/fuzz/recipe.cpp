// Training recipes (TOML): any bytes read as recipe.toml. A recipe that reads must also survive
// its own round trip: to_toml() (what a run saves as RUN/recipe.toml) reads back to the same text.
#include <algorithm>

#include "fuzz.hpp"
#include "train/recipe.hpp"

namespace {
// The saved form without its comments ("# resolved from PATH" names the file it came from).
std::string uncommented(const std::string& toml) {
  std::string out;
  for (std::size_t pos = 0; pos < toml.size();) {
    const std::size_t nl = std::min(toml.find('\n', pos), toml.size());
    if (toml[pos] != '#') out.append(toml, pos, nl - pos).push_back('\n');
    pos = nl + 1;
  }
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  const std::string file = fuzz::put("recipe.toml", fuzz::bytes(data, size));
  fuzz::expect_clean(file, [&] {
    const std::string text = train::to_toml(train::read_recipe(file));
    const std::string again = fuzz::put("saved/recipe.toml", text);
    std::string back;
    try {
      back = train::to_toml(train::read_recipe(again));
    } catch (const Error& e) {
      fuzz::broken("a recipe's saved form does not read back", e.what());
    }
    if (uncommented(back) != uncommented(text)) fuzz::broken("a recipe's saved form reads back differently", text + "\n---\n" + back);
  });
  return 0;
}
