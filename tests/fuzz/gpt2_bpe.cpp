// GPT-2's original tokenizer files, encoder.json + vocab.bpe: the input holds both, split at the
// first line "=====" (tests/fuzz/README.md). A tokenizer that loads then encodes and decodes.
#include "data/tokenizer.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  const std::string_view in = fuzz::bytes(data, size);
  const std::size_t cut = in.find("\n=====\n");
  const std::string_view encoder = in.substr(0, cut);
  const std::string_view merges = cut == std::string_view::npos ? std::string_view() : in.substr(cut + 7);
  fuzz::put("gpt2/encoder.json", encoder);
  fuzz::put("gpt2/vocab.bpe", merges);
  const std::string dir = fuzz::scratch() + "/gpt2";
  std::unique_ptr<data::Tokenizer> tok;
  fuzz::expect_clean(dir, [&] { tok = data::load_tokenizer(dir); });
  if (tok) {
    try {
      (void)tok->decode(tok->encode("In the beginning God created the heaven and the earth."));
    } catch (const Error&) {
    }
  }
  return 0;
}
