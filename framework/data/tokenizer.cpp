// load_tokenizer: one entry point for every tokenizer file llmtk reads.
#include <filesystem>
#include <fstream>

#include "../core/error.hpp"
#include "bpe.hpp"
#include "char_tokenizer.hpp"

namespace llmtk::data {

TokenId Tokenizer::eot() const {
  auto id = special(kEndOfText);
  LLMTK_CHECK(id.has_value(), "tokenizer", "this tokenizer has no ", kEndOfText,
              " token, which separates documents; train it with --special '", kEndOfText, "'");
  return *id;
}

namespace {
std::unique_ptr<Tokenizer> load(const std::string& path) {
  namespace fs = std::filesystem;
  LLMTK_CHECK(fs::exists(path), "tokenizer", "'", path, "' does not exist; pass a tokenizer.json or a "
              "directory with tokenizer.json or encoder.json + vocab.bpe");
  if (fs::is_directory(path)) {
    const fs::path dir(path);
    if (fs::exists(dir / "tokenizer.json")) return load((dir / "tokenizer.json").string());
    if (fs::exists(dir / "encoder.json") && fs::exists(dir / "vocab.bpe"))
      return std::make_unique<BpeTokenizer>(
          BpeTokenizer::from_gpt2_files((dir / "encoder.json").string(), (dir / "vocab.bpe").string()));
    fail("tokenizer", "directory '", path, "' has neither tokenizer.json nor encoder.json + vocab.bpe");
  }
  // Peek at the type without parsing twice for the common (BPE) case.
  std::ifstream in(path);
  std::string head(256, '\0');
  in.read(head.data(), std::streamsize(head.size()));
  if (head.find("\"llmtk-char\"") != std::string::npos)
    return std::make_unique<CharTokenizer>(CharTokenizer::from_json(path));
  return std::make_unique<BpeTokenizer>(BpeTokenizer::from_hf_json(path));
}
}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  return reading_file("tokenizer", path, [&] { return load(path); });
}

}  // namespace llmtk::data
