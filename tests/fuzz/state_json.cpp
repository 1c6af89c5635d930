// A checkpoint's state.json (`--resume`, `finetune.from`, `llmtk eval RUN`): any bytes read as the
// file, as resuming reads it.
#include "fuzz.hpp"
#include "train/checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  fuzz::put("ckpt/state.json", fuzz::bytes(data, size));
  const std::string dir = fuzz::scratch() + "/ckpt";
  fuzz::expect_clean(dir, [&] { (void)train::read_checkpoint_state(dir); });
  fuzz::expect_clean(dir, [&] { (void)train::checkpoint_step(dir); });
  return 0;
}
