// safetensors (model weights and optimizer state): any bytes read as a file. The header is read
// through SafetensorsFile, every tensor it lists is read (when its size is plausible), and the
// file is loaded into a small arena as a checkpoint would be, with and without extra tensors.
#include <vector>

#include "fuzz.hpp"
#include "train/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  const std::string file = fuzz::put("model.safetensors", fuzz::bytes(data, size));
  fuzz::expect_clean(file, [&] {
    train::SafetensorsFile f(file);
    for (const auto& name : f.names()) {
      const auto shape = f.shape(name);
      std::int64_t n = 1;
      for (auto e : shape) n = (e < 0 || e > (1 << 20) || n * e > (1 << 20)) ? -1 : n * e;
      if (n < 0) continue;
      std::vector<float> buf(std::size_t(n) + 1);
      try {
        f.read(name, buf.data(), shape);
      } catch (const Error& e) {  // wrong dtype or offsets: must name the file too
        if (std::string_view(e.what()).find(file) == std::string_view::npos) fuzz::broken("the error does not name the file", e.what());
      }
    }
  });
  for (bool extra : {false, true}) {
    Arena arena("params");
    arena.add("a", {2, 3});
    arena.add("b", {4});
    arena.allocate(host_memory());
    fuzz::expect_clean(file, [&] { (void)train::load_safetensors(file, arena, extra); });
  }
  return 0;
}
