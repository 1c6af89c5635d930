// A character-level tokenizer for teaching: one token per Unicode code point seen in training,
// plus the special tokens and an unknown token (decoded as U+FFFD) for characters never seen.
#pragma once
#include <map>

#include "tokenizer.hpp"
#include "utf8.hpp"

namespace llmtk::data {

class CharTokenizer final : public Tokenizer {
 public:
  static CharTokenizer train(std::span<const std::string> texts,
                             std::vector<std::string> special_tokens = {std::string(kEndOfText)});
  static CharTokenizer from_json(const std::string& path);

  std::string kind() const override { return "char"; }
  int vocab_size() const override { return static_cast<int>(chars_.size() + specials_.size()) + 1; }
  std::vector<TokenId> encode(std::string_view text, bool allow_special = false) const override;
  std::string decode(std::span<const TokenId> ids) const override;
  std::string token_bytes(TokenId id) const override;
  std::optional<TokenId> special(std::string_view text) const override;
  std::vector<std::pair<std::string, TokenId>> specials() const override { return specials_; }
  TokenId add_special(const std::string& text) override;
  std::uint64_t hash() const override;
  void save(const std::string& path) const override;
  TokenId unknown() const { return static_cast<TokenId>(chars_.size() + specials_.size()); }

 private:
  std::vector<char32_t> chars_;            // id → code point, sorted
  std::map<char32_t, TokenId> ids_;
  std::vector<std::pair<std::string, TokenId>> specials_;
};

}  // namespace llmtk::data
