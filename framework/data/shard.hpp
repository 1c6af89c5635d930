// Token shards: a 64-byte versioned header, then the tokens (u16 when the vocabulary fits, else
// u32), little-endian. Every document is preceded by the end-of-text token, so documents are
// separated by it and a model learns that EOT starts a new one. Shards are memory-mapped to read.
// Version 2 (instruction data, docs/sft.md) adds a loss mask after the tokens: one byte per
// token, 1 where the token is one the model should learn to predict (an assistant's reply).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tokenizer.hpp"

namespace llmtk::data {

struct ShardHeader {
  char magic[8] = {'L', 'L', 'M', 'T', 'K', 'T', 'O', 'K'};
  std::uint32_t version = 1;
  std::uint32_t token_bytes = 2;      // 2 (u16) or 4 (u32)
  std::uint64_t token_count = 0;
  std::uint64_t tokenizer_hash = 0;   // Tokenizer::hash() of the tokenizer that wrote it
  std::uint32_t vocab_size = 0;
  std::uint32_t eot = 0;
  std::uint64_t doc_count = 0;
  std::uint32_t flags = 0;            // kHasLossMask: token_count mask bytes follow the tokens (version 2)
  std::uint8_t reserved[12] = {};
};
inline constexpr std::uint32_t kHasLossMask = 1;
static_assert(sizeof(ShardHeader) == 64);

// Appends documents; the file appears under its final name only after close() (written to a
// temporary name and renamed), so a crash never leaves a truncated shard that looks complete.
class ShardWriter {
 public:
  ShardWriter(std::string path, const Tokenizer& tokenizer);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void add_document(std::span<const TokenId> tokens);  // writes EOT, then the tokens
  // An instruction example: EOT, then the tokens, with mask[i] = 1 where tokens[i] counts in the
  // loss. A shard holds documents or examples, not both.
  void add_example(std::span<const TokenId> tokens, std::span<const std::uint8_t> mask);
  void close();
  std::uint64_t tokens() const { return header_.token_count; }
  std::uint64_t documents() const { return header_.doc_count; }
  const std::string& path() const { return path_; }

 private:
  void put(TokenId t);
  std::string path_, tmp_;
  ShardHeader header_;
  std::FILE* file_ = nullptr;
  std::vector<std::uint8_t> mask_;  // examples: written after the tokens at close()
};

// A read-only, memory-mapped shard. Opening validates the header and the file size.
class Shard {
 public:
  explicit Shard(const std::string& path);
  ~Shard();
  Shard(Shard&&) noexcept;
  Shard& operator=(Shard&&) = delete;
  Shard(const Shard&) = delete;

  const ShardHeader& header() const { return header_; }
  std::uint64_t size() const { return header_.token_count; }
  TokenId operator[](std::uint64_t i) const {
    return header_.token_bytes == 2 ? TokenId(static_cast<const std::uint16_t*>(tokens_)[i])
                                    : TokenId(static_cast<const std::uint32_t*>(tokens_)[i]);
  }
  // Instruction shards: whether token i counts in the loss (always true without a mask).
  bool has_mask() const { return mask_ != nullptr; }
  bool counts(std::uint64_t i) const { return !mask_ || mask_[i] != 0; }
  const std::string& path() const { return path_; }
  // Fails, naming both hashes and the fix, unless the shard was written by `tokenizer_hash`.
  void expect_tokenizer(std::uint64_t tokenizer_hash) const;

 private:
  std::string path_;
  ShardHeader header_;
  void* map_ = nullptr;
  std::size_t map_size_ = 0;
  const void* tokens_ = nullptr;
  const std::uint8_t* mask_ = nullptr;
};

}  // namespace llmtk::data
