#include "loader.hpp"

#include <algorithm>

#include "../core/error.hpp"
#include "../core/rng.hpp"

namespace llmtk::data {

namespace {
constexpr std::string_view kOrderNames[] = {"shuffled", "sequential", "by_length", "random"};
}

DataOrder parse_order(std::string_view name) {
  for (int i = 0; i < 4; ++i)
    if (name == kOrderNames[i]) return static_cast<DataOrder>(i);
  fail("data.order", "unknown order '", name, "'; choose shuffled, sequential, by_length or random");
}
std::string_view name_of(DataOrder order) { return kOrderNames[static_cast<int>(order)]; }

DataLoader::DataLoader(const std::vector<std::string>& paths, std::uint64_t tokenizer_hash, LoaderOptions o)
    : opt_(o) {
  LLMTK_CHECK(!paths.empty(), "data loader", "no shards given");
  LLMTK_CHECK(o.batch > 0 && o.seq > 0, "data loader", "batch and seq must be positive");
  LLMTK_CHECK(o.world >= 1 && o.rank >= 0 && o.rank < o.world, "data loader", "rank ", o.rank,
              " is outside a world of ", o.world);
  for (const auto& p : paths) {
    shards_.emplace_back(p);
    shards_.back().expect_tokenizer(tokenizer_hash);
    LLMTK_CHECK(shards_.back().header().vocab_size == shards_[0].header().vocab_size, "data loader", "'", p, "' has a vocabulary of ",
                shards_.back().header().vocab_size, " and '", shards_[0].path(), "' one of ", shards_[0].header().vocab_size,
                ": shards of one tokenizer agree; re-run llmtk data prepare");
    shard_start_.push_back(total_);
    total_ += shards_.back().size();
  }
  const auto T = std::uint64_t(o.seq), B = std::uint64_t(o.batch), W = std::uint64_t(o.world);
  const bool masked = shards_[0].has_mask();
  for (const auto& sh : shards_)
    LLMTK_CHECK(sh.has_mask() == masked, "data loader", "'", sh.path(), "' and '", shards_[0].path(),
                "' mix instruction examples and plain documents; prepare them into separate directories");
  if (masked) {
    LLMTK_CHECK(o.order == DataOrder::shuffled || o.order == DataOrder::sequential, "data loader", "data.order = \"",
                name_of(o.order), "\" reads windows of plain text; instruction data is read by example: use shuffled or sequential");
    // Examples start at each EOT. Rows: packed greedily in file order (once, so an epoch always
    // has the same number of rows), or one example each; the rows are shuffled every epoch.
    const std::uint32_t eot = shards_[0].header().eot;
    std::uint64_t start = 0;
    for (std::uint64_t i = 1; i <= total_; ++i)
      if (i == total_ || std::uint32_t(raw(i)) == eot) examples_.emplace_back(start, i - start), start = i;
    std::uint64_t first = 0, used = 0, learnable = 0;
    for (std::uint64_t e = 0; e < examples_.size(); ++e) {
      const auto [at, len] = examples_[e];
      truncated_ += len > T;
      for (std::uint64_t k = 1; k < std::min(len, T); ++k)
        if (counts(at + k)) {
          ++learnable;
          break;
        }
      if (e > first && (!o.packing || used + len > T)) rows_.emplace_back(first, e), first = e, used = 0;
      used += len;
    }
    rows_.emplace_back(first, examples_.size());
    LLMTK_CHECK(learnable > 0, "data loader", "none of the ", examples_.size(), " examples has a token to learn within its first ",
                T, " tokens (the answers come later); raise train.seq, or shorten the prompts");
    windows_ = rows_.size();
    batches_per_epoch_ = windows_ / (B * W);
    LLMTK_CHECK(batches_per_epoch_ > 0, "data loader", "the shards hold ", examples_.size(), " examples in ", windows_,
                " rows of ", T, " tokens, fewer than one global batch of ", B * W, "; lower train.batch or add examples");
    start_epoch();
    return;
  }
  LLMTK_CHECK(total_ > T, "data loader", "the shards hold ", total_, " tokens, fewer than one window of ",
              T + 1, "; use a shorter train.seq or more data");
  windows_ = (total_ - 1) / T;
  batches_per_epoch_ = windows_ / (B * W);
  LLMTK_CHECK(batches_per_epoch_ > 0, "data loader", "the shards hold ", windows_, " windows of ", T,
              " tokens, fewer than one global batch of ", B * W, "; lower train.batch or add data");
  if (o.order == DataOrder::by_length) {
    // Documents start at each EOT; sort them by length (stable: ties keep file order).
    const std::uint32_t eot = shards_[0].header().eot;
    std::uint64_t start = 0;
    for (std::uint64_t i = 1; i <= total_; ++i)
      if (i == total_ || std::uint32_t(raw(i)) == eot) docs_.emplace_back(start, i - start), start = i;
    std::stable_sort(docs_.begin(), docs_.end(), [](auto& a, auto& b) { return a.second < b.second; });
    std::uint64_t acc = 0;
    for (auto& d : docs_) doc_start_.push_back(acc), acc += d.second;
  }
  start_epoch();
}

TokenId DataLoader::raw(std::uint64_t i) const {
  auto it = std::upper_bound(shard_start_.begin(), shard_start_.end(), i);
  const std::size_t s = std::size_t(it - shard_start_.begin()) - 1;
  const Shard& shard = shards_[s];
  const TokenId t = shard[i - shard_start_[s]];
  // A damaged shard must not hand the model an id past its embedding table.
  LLMTK_CHECK(std::uint32_t(t) < shard.header().vocab_size, "data loader", "'", shard.path(), "' holds token ", std::uint32_t(t),
              " at position ", i - shard_start_[s], ", outside its vocabulary of ", shard.header().vocab_size,
              ": corrupt; re-run llmtk data prepare");
  return t;
}

TokenId DataLoader::token(std::uint64_t i) const {
  if (opt_.order != DataOrder::by_length) return raw(i);
  auto it = std::upper_bound(doc_start_.begin(), doc_start_.end(), i);
  const std::size_t d = std::size_t(it - doc_start_.begin()) - 1;
  return raw(docs_[d].first + (i - doc_start_[d]));
}

void DataLoader::start_epoch() {
  perm_.clear();
  if (opt_.order != DataOrder::shuffled) return;
  perm_.resize(windows_);
  for (std::uint64_t i = 0; i < windows_; ++i) perm_[i] = i;
  Rng rng(opt_.seed * 0x9e3779b97f4a7c15ull + pos_.epoch + 1);
  for (std::uint64_t i = windows_ - 1; i > 0; --i) std::swap(perm_[i], perm_[rng.next() % (i + 1)]);
}

bool DataLoader::counts(std::uint64_t i) const {
  auto it = std::upper_bound(shard_start_.begin(), shard_start_.end(), i);
  const std::size_t s = std::size_t(it - shard_start_.begin()) - 1;
  return shards_[s].counts(i - shard_start_[s]);
}

void DataLoader::fill_row(std::uint64_t row, std::span<TokenId> ids, std::span<TokenId> targets,
                          std::span<TokenId> segments) const {
  const std::uint64_t T = ids.size();
  const auto eot = TokenId(shards_[0].header().eot);
  std::uint64_t t = 0;
  TokenId seg = 0;
  for (std::uint64_t e = rows_[row].first; e < rows_[row].second && t < T; ++e, ++seg) {
    const auto [start, len] = examples_[e];
    for (std::uint64_t k = 0; k < len && t < T; ++k, ++t) {
      ids[t] = raw(start + k);
      targets[t] = k + 1 < len && counts(start + k + 1) ? raw(start + k + 1) : kIgnoreTarget;
      if (!segments.empty()) segments[t] = seg;
    }
  }
  for (; t < T; ++t) {  // padding: end-of-text tokens that nothing reads, in a document of their own
    ids[t] = eot, targets[t] = kIgnoreTarget;
    if (!segments.empty()) segments[t] = seg;
  }
}

void DataLoader::next(std::span<TokenId> ids, std::span<TokenId> targets, std::span<TokenId> segments) {
  const auto B = std::uint64_t(opt_.batch), T = std::uint64_t(opt_.seq);
  LLMTK_CHECK(ids.size() == B * T && targets.size() == B * T && (segments.empty() || segments.size() == B * T),
              "data loader", "ids, targets (and segments) must hold ", B * T, " tokens (batch ", B, " x seq ", T, ")");
  for (std::uint64_t b = 0; b < B; ++b) {
    const std::uint64_t w = (pos_.step * std::uint64_t(opt_.world) + std::uint64_t(opt_.rank)) * B + b;
    if (examples()) {
      fill_row(opt_.order == DataOrder::shuffled ? perm_[w] : w, ids.subspan(b * T, T), targets.subspan(b * T, T),
               segments.empty() ? segments : segments.subspan(b * T, T));
      continue;
    }
    std::uint64_t start;
    if (opt_.order == DataOrder::random) {
      Rng rng(opt_.seed ^ (pos_.epoch * 0x9e3779b97f4a7c15ull) ^ (w * 0xbf58476d1ce4e5b9ull));
      start = rng.next() % (total_ - T);
    } else {
      start = (opt_.order == DataOrder::shuffled ? perm_[w] : w) * T;
    }
    for (std::uint64_t t = 0; t < T; ++t) {
      ids[b * T + t] = token(start + t);
      targets[b * T + t] = token(start + t + 1);
    }
  }
  if (++pos_.step == batches_per_epoch_) {
    ++pos_.epoch, pos_.step = 0;
    start_epoch();
  }
}

void DataLoader::seek(LoaderPosition p) {
  LLMTK_CHECK(p.step < batches_per_epoch_, "data loader", "position step ", p.step,
              " is past the ", batches_per_epoch_, " batches of an epoch; was the data or batch size changed?");
  const bool new_epoch = p.epoch != pos_.epoch;
  pos_ = p;
  if (new_epoch) start_epoch();
}

}  // namespace llmtk::data
