// Tokenizers: text to token ids and back. Byte-level BPE (GPT-2 compatible; trains, loads the
// original GPT-2 files and Hugging Face tokenizer.json, saves tokenizer.json) and a
// character-level tokenizer for teaching. Both behind one small interface.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llmtk::data {

using TokenId = std::int32_t;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::string kind() const = 0;  // "bpe" or "char"
  virtual int vocab_size() const = 0;
  // Special tokens written in `text` ("<|endoftext|>") become their ids only with allow_special;
  // otherwise they are encoded as the plain text they are.
  virtual std::vector<TokenId> encode(std::string_view text, bool allow_special = false) const = 0;
  virtual std::string decode(std::span<const TokenId> ids) const = 0;
  // The bytes of one token (for inspection: "what did the tokenizer see?").
  virtual std::string token_bytes(TokenId id) const = 0;
  virtual std::optional<TokenId> special(std::string_view text) const = 0;
  virtual std::vector<std::pair<std::string, TokenId>> specials() const = 0;
  // Appends a special token (a chat template's markers) with the next free id, or returns the id
  // it already has. A model trained with the smaller vocabulary grows by one row per new token.
  virtual TokenId add_special(const std::string& text) = 0;
  // A fingerprint of everything that decides the ids: shards record it so that a shard is never
  // read with a tokenizer other than the one that wrote it.
  virtual std::uint64_t hash() const = 0;
  virtual void save(const std::string& path) const = 0;

  // The end-of-text token that separates documents in shards; fails naming the fix if absent.
  TokenId eot() const;
};

// PATH is a tokenizer.json (Hugging Face BPE, or llmtk's character tokenizer) or a directory that
// holds tokenizer.json or GPT-2's encoder.json + vocab.bpe.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

inline constexpr std::string_view kEndOfText = "<|endoftext|>";

// 64-bit FNV-1a, for fingerprints (not for security).
struct Fnv1a {
  std::uint64_t h = 0xcbf29ce484222325ull;
  void add(std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  }
  void add_sized(std::string_view s) {
    add(std::to_string(s.size()));
    add(":");
    add(s);
  }
};

}  // namespace llmtk::data
