// Byte-level BPE (Sennrich et al. 2016; byte-level as in GPT-2). Text is split by the
// pre-tokenizer's pattern, each piece's UTF-8 bytes start as one token each, and learned merges
// are applied in rank order. Any byte string encodes; nothing maps to "unknown".
#pragma once
#include <array>
#include <functional>
#include <unordered_map>

#include "pretokenize.hpp"
#include "tokenizer.hpp"

namespace llmtk::data {

struct BpeTrainOptions {
  int vocab_size = 8192;  // including the 256 byte tokens and the special tokens
  std::vector<std::string> special_tokens{std::string(kEndOfText)};
  std::string pattern = "gpt2";  // "gpt2", "cl100k" or a PCRE2 pattern
  std::int64_t min_frequency = 2;  // stop merging when the best pair is rarer than this
  // Called now and then with (merges done, merges wanted).
  std::function<void(int, int)> progress;
};

class BpeTokenizer final : public Tokenizer {
 public:
  // Learns merges from `texts` (each one a document or a file's contents). Occurrences of the
  // special tokens in the text act as separators and are not learned from.
  static BpeTokenizer train(std::span<const std::string> texts, const BpeTrainOptions& options);
  // The original GPT-2 release: encoder.json (token → id) and vocab.bpe (merges by rank).
  static BpeTokenizer from_gpt2_files(const std::string& encoder_json, const std::string& vocab_bpe);
  // A Hugging Face tokenizer.json with a BPE model and a ByteLevel pre-tokenizer.
  static BpeTokenizer from_hf_json(const std::string& path);
  // A vocabulary as GGUF's "gpt2" tokenizer model holds it (tokenizer.ggml.tokens in byte-level
  // form, "Ġthe"; special[i] for CONTROL and USER_DEFINED tokens; merges "Ġ t" by rank), with GPT-2's
  // pre-tokenizer. `where` names the source in errors.
  static BpeTokenizer from_vocab(const std::vector<std::string>& tokens, const std::vector<bool>& special,
                                 const std::vector<std::string>& merges, const std::string& where);

  std::string kind() const override { return "bpe"; }
  int vocab_size() const override { return static_cast<int>(tokens_.size()); }
  std::vector<TokenId> encode(std::string_view text, bool allow_special = false) const override;
  std::string decode(std::span<const TokenId> ids) const override;
  std::string token_bytes(TokenId id) const override;
  std::optional<TokenId> special(std::string_view text) const override;
  std::vector<std::pair<std::string, TokenId>> specials() const override { return specials_; }
  TokenId add_special(const std::string& text) override;
  std::uint64_t hash() const override;
  // Writes a Hugging Face tokenizer.json (loads with tokenizers.Tokenizer.from_file).
  void save(const std::string& path) const override;

  std::size_t merge_count() const { return merges_.size(); }
  // The two tokens merge `rank` joins, as bytes.
  std::pair<std::string, std::string> merge(std::size_t rank) const {
    return {tokens_[merges_[rank].first], tokens_[merges_[rank].second]};
  }
  const std::string& pattern() const { return pre_.pattern(); }
  // Appends the ids of one pre-tokenized piece (no special-token handling).
  void encode_piece(std::string_view piece, std::vector<TokenId>& out) const;

 private:
  BpeTokenizer() = default;
  // The tokens by id (byte-level form; special ones verbatim) and merges "left right" by rank.
  static BpeTokenizer build(std::string pattern, const std::vector<std::string>& tokens, const std::vector<bool>& special,
                            const std::vector<std::pair<std::string, std::string>>& merges, const char* what,
                            const std::string& where);
  static std::uint64_t key(TokenId a, TokenId b) {
    return (std::uint64_t(std::uint32_t(a)) << 32) | std::uint32_t(b);
  }
  void add_token(std::string bytes);
  void add_merge(TokenId a, TokenId b);  // rank = order of addition
  void finish();                         // fills byte_ids_, checks consistency
  void encode_plain(std::string_view text, std::vector<TokenId>& out) const;

  struct Merge {
    int rank;
    TokenId result;
  };
  std::vector<std::string> tokens_;                   // id → bytes
  std::unordered_map<std::string, TokenId> ids_;      // bytes → id (ordinary tokens)
  std::unordered_map<std::uint64_t, Merge> merge_of_;  // (left, right) → rank, merged id
  std::vector<std::pair<TokenId, TokenId>> merges_;    // in rank order
  std::vector<std::pair<std::string, TokenId>> specials_;
  std::array<TokenId, 256> byte_ids_{};
  Pretokenizer pre_;
};

// GPT-2's reversible map from bytes to printable characters, used in vocab files.
std::string byte_to_unicode(unsigned char b);
// The inverse over a whole token string; fails on characters outside the map.
std::string unicode_to_bytes(std::string_view s);

}  // namespace llmtk::data
