// GGUF files (`llmtk eval FILE.gguf`, `generate`, `export`): any bytes read as a file, to a model
// and tokenizer, as those commands read it.
#include "fuzz.hpp"
#include "train/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  const std::string file = fuzz::put("model.gguf", fuzz::bytes(data, size));
  fuzz::expect_clean(file, [&] { (void)train::load_gguf(file); });
  return 0;
}
