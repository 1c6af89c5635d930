// The data loader: batches of [B, T] token windows and their next-token targets from one or more
// memory-mapped shards. Deterministic given (seed, epoch, step): the position is two integers that
// checkpoints store, and seek() resumes exactly. Ranks of a data-parallel run read disjoint
// windows of the same global batch.
//
// Instruction shards (a loss mask: docs/sft.md) are read by example instead of by window: each
// row holds whole examples, packed several to a row (with the document of each position, so
// attention and positions restart at each example) or one per row padded with end-of-text.
// A target whose token the mask leaves out, the target after an example's last token and every
// padding target is kIgnoreTarget.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "shard.hpp"

namespace llmtk::data {

enum class DataOrder {
  shuffled,    // windows on a T-token grid, permuted afresh every epoch
  sequential,  // windows in file order
  by_length,   // documents sorted short to long, then windows in that order (a curriculum)
  random,      // windows that start anywhere, drawn independently per step
};
DataOrder parse_order(std::string_view name);  // fails listing the names
std::string_view name_of(DataOrder order);

inline constexpr TokenId kIgnoreTarget = -100;  // left out of the loss (the objective's ignore index)

struct LoaderOptions {
  std::int64_t batch = 8;  // per rank
  std::int64_t seq = 256;
  DataOrder order = DataOrder::shuffled;
  std::uint64_t seed = 0;
  int rank = 0, world = 1;
  bool packing = true;     // instruction data: several examples per row (else one, padded)
};

struct LoaderPosition {
  std::uint64_t epoch = 0;
  std::uint64_t step = 0;  // batches already served in this epoch
  bool operator==(const LoaderPosition&) const = default;
};

class DataLoader {
 public:
  DataLoader(const std::vector<std::string>& shard_paths, std::uint64_t tokenizer_hash, LoaderOptions options);

  // ids, targets: [B, T] row-major. targets[b, t] is the token after ids[b, t] (or kIgnoreTarget).
  // segments, when given and the data is packed instruction data: [B, T], the example of each
  // position within its row (padding is an example of its own).
  void next(std::span<TokenId> ids, std::span<TokenId> targets, std::span<TokenId> segments = {});
  LoaderPosition position() const { return pos_; }
  void seek(LoaderPosition p);
  std::uint64_t batches_per_epoch() const { return batches_per_epoch_; }
  std::uint64_t tokens() const { return total_; }
  const LoaderOptions& options() const { return opt_; }
  // Instruction data: read by example, with a loss mask; rows that hold several examples.
  bool examples() const { return !rows_.empty(); }
  bool packed() const { return examples() && opt_.packing; }
  std::uint64_t example_count() const { return examples_.size(); }
  std::uint64_t truncated() const { return truncated_; }  // examples longer than seq, cut to fit

 private:
  TokenId token(std::uint64_t i) const;  // position i of the stream in this loader's order
  TokenId raw(std::uint64_t i) const;    // position i across the shards, in file order
  void start_epoch();
  bool counts(std::uint64_t i) const;  // instruction data: token i is a target the loss reads
  void fill_row(std::uint64_t row, std::span<TokenId> ids, std::span<TokenId> targets, std::span<TokenId> segments) const;

  LoaderOptions opt_;
  std::vector<Shard> shards_;
  std::vector<std::uint64_t> shard_start_;  // prefix sums of shard sizes
  std::uint64_t total_ = 0, windows_ = 0, batches_per_epoch_ = 0;
  // by_length: documents (start in file order, length) sorted by length, with prefix sums.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> docs_;
  std::vector<std::uint64_t> doc_start_;
  std::vector<std::uint64_t> perm_;  // shuffled: this epoch's window (or row) order
  // Instruction data: examples (start, length) in file order, and rows as [first, last) examples.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> examples_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> rows_;
  std::uint64_t truncated_ = 0;
  LoaderPosition pos_;
};

}  // namespace llmtk::data
