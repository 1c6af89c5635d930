// tokenizer.json (Hugging Face's BPE layout, or llmtk's character tokenizer): any bytes read as the
// file. A tokenizer that loads then encodes and decodes a fixed text (which must not crash either),
// and its saved form loads back as the same tokenizer (same hash, same ids).
#include <algorithm>
#include <filesystem>

#include "data/tokenizer.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  const std::string file = fuzz::put("tokenizer.json", fuzz::bytes(data, size));
  std::unique_ptr<data::Tokenizer> tok;
  fuzz::expect_clean(file, [&] { tok = data::load_tokenizer(file); });
  if (tok) {
    const std::string_view text = "In the beginning God created the heaven and the earth.\n\xc3\xa9 <|endoftext|>";
    std::vector<data::TokenId> ids;
    try {
      ids = tok->encode(text, true);
      (void)tok->decode(ids);
      for (int id = 0; id < std::min(tok->vocab_size(), 512); ++id) (void)tok->token_bytes(id);
    } catch (const Error&) {  // a tokenizer may lack what the text needs; it must say so, not crash
      ids.clear();
    }
    const std::string saved = fuzz::scratch() + "/saved/tokenizer.json";
    std::filesystem::create_directories(fuzz::scratch() + "/saved");
    std::unique_ptr<data::Tokenizer> back;
    try {
      tok->save(saved);
      back = data::load_tokenizer(saved);
    } catch (const Error& e) {
      fuzz::broken("a tokenizer that loaded does not save and load back", e.what());
    }
    if (back->hash() != tok->hash()) fuzz::broken("a saved tokenizer loads back with another hash", saved);
    if (!ids.empty() && back->encode(text, true) != ids) fuzz::broken("a saved tokenizer encodes differently", saved);
  }
  return 0;
}
