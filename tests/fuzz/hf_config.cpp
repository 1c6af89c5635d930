// A Transformers checkpoint's config.json (`finetune.from`, `--init`, `llmtk eval DIR`): any bytes
// read as the file, to the model's sizes and family as an import would.
#include "fuzz.hpp"
#include "train/hf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  fuzz::put("hf/config.json", fuzz::bytes(data, size));
  const std::string dir = fuzz::scratch() + "/hf";
  fuzz::expect_clean(dir, [&] {
    std::string family;
    (void)train::hf_dims(dir, family);
  });
  return 0;
}
