// Data preparation configs (`llmtk data prepare CONFIG`, TOML): any bytes read as the config.
#include "config/config.hpp"
#include "data/prepare.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  const std::string file = fuzz::put("data.toml", fuzz::bytes(data, size));
  fuzz::expect_clean(file, [&] {
    ConfigFile config(file);
    (void)data::read_prepare_config(config);
  });
  return 0;
}
