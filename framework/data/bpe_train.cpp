// BPE training with incremental pair counts. Each distinct pre-tokenized piece ("word") is stored
// once with its frequency. A merge touches only the words that contain the pair (an index from
// pair to words), updates the counts of the neighbouring pairs, and pushes changed counts to a
// heap whose stale entries are skipped when popped: no recount of the corpus per merge.
#include <algorithm>
#include <queue>
#include <unordered_set>

#include "../core/error.hpp"
#include "bpe.hpp"

namespace llmtk::data {

BpeTokenizer BpeTokenizer::train(std::span<const std::string> texts, const BpeTrainOptions& o) {
  const int n_special = static_cast<int>(o.special_tokens.size());
  LLMTK_CHECK(o.vocab_size >= 256 + n_special, "tokenizer train", "vocab size ", o.vocab_size,
              " is too small: the 256 byte tokens and ", n_special, " special tokens need ",
              256 + n_special);
  BpeTokenizer t;
  t.pre_ = Pretokenizer(pattern_by_name(o.pattern));
  for (int b = 0; b < 256; ++b) t.add_token(std::string(1, static_cast<char>(b)));

  // 1. Distinct pieces and their counts. Special tokens in the text split it and are dropped.
  std::unordered_map<std::string, std::int64_t> counts;
  for (const std::string& text : texts) {
    std::string_view rest = text;
    while (!rest.empty()) {
      std::size_t cut = rest.size(), len = 0;
      for (const auto& s : o.special_tokens)
        if (auto p = rest.find(s); p < cut) cut = p, len = s.size();
      t.pre_.split(rest.substr(0, cut), [&](std::string_view piece) { ++counts[std::string(piece)]; });
      rest.remove_prefix(std::min(rest.size(), cut + len));
    }
  }
  struct Word {
    std::vector<TokenId> sym;
    std::int64_t count;
  };
  std::vector<Word> words;
  words.reserve(counts.size());
  for (auto& [piece, c] : counts) {
    Word w{{}, c};
    for (unsigned char ch : piece) w.sym.push_back(ch);
    words.push_back(std::move(w));
  }
  // Sort so that training does not depend on the hash map's iteration order.
  std::sort(words.begin(), words.end(), [](const Word& a, const Word& b) { return a.sym < b.sym; });

  // 2. Pair counts and the pair → words index.
  std::unordered_map<std::uint64_t, std::int64_t> pair_count;
  std::unordered_map<std::uint64_t, std::vector<int>> where;
  for (int wi = 0; wi < int(words.size()); ++wi) {
    const auto& s = words[wi].sym;
    for (std::size_t i = 0; i + 1 < s.size(); ++i) {
      const auto k = key(s[i], s[i + 1]);
      pair_count[k] += words[wi].count;
      auto& v = where[k];
      if (v.empty() || v.back() != wi) v.push_back(wi);
    }
  }
  // Max-heap by count; ties go to the smaller pair key, so results are deterministic.
  using Entry = std::pair<std::int64_t, std::uint64_t>;
  auto cmp = [](const Entry& a, const Entry& b) { return a.first != b.first ? a.first < b.first : a.second > b.second; };
  std::priority_queue<Entry, std::vector<Entry>, decltype(cmp)> heap(cmp);
  for (const auto& [k, c] : pair_count) heap.emplace(c, k);

  // 3. Merge until the vocabulary is full.
  const int wanted = o.vocab_size - 256 - n_special;
  const std::size_t full = std::size_t(o.vocab_size - n_special);
  std::unordered_set<std::uint64_t> touched;
  while (t.tokens_.size() < full && !heap.empty()) {
    auto [c, k] = heap.top();
    heap.pop();
    auto it = pair_count.find(k);
    const std::int64_t current = it == pair_count.end() ? 0 : it->second;
    if (current != c) {  // stale: re-queue with the true count
      if (current > 0) heap.emplace(current, k);
      continue;
    }
    if (c < o.min_frequency) break;
    const TokenId a = TokenId(k >> 32), b = TokenId(k & 0xffffffffu);
    // Two merge paths can spell the same bytes ("aa"+"a", "a"+"aa"): they share one token.
    std::string merged = t.tokens_[a] + t.tokens_[b];
    auto existing = t.ids_.find(merged);
    const TokenId m = existing != t.ids_.end() ? existing->second : static_cast<TokenId>(t.tokens_.size());
    if (existing == t.ids_.end()) t.add_token(std::move(merged));
    t.merge_of_.emplace(k, Merge{static_cast<int>(t.merges_.size()), m});
    t.merges_.emplace_back(a, b);

    touched.clear();
    auto bump = [&](TokenId x, TokenId y, std::int64_t by, int wi) {
      const auto kk = key(x, y);
      pair_count[kk] += by;
      touched.insert(kk);
      if (by > 0) {
        auto& v = where[kk];
        if (v.empty() || v.back() != wi) v.push_back(wi);
      }
    };
    std::vector<int> ws = std::move(where[k]);
    where.erase(k);
    for (int wi : ws) {
      auto& s = words[wi].sym;
      const std::int64_t n = words[wi].count;
      for (std::size_t i = 0; i + 1 < s.size();) {
        if (s[i] != a || s[i + 1] != b) {
          ++i;
          continue;
        }
        if (i > 0) bump(s[i - 1], a, -n, wi), bump(s[i - 1], m, n, wi);
        if (i + 2 < s.size()) bump(b, s[i + 2], -n, wi), bump(m, s[i + 2], n, wi);
        pair_count[k] -= n;
        s[i] = m;
        s.erase(s.begin() + std::ptrdiff_t(i) + 1);
        ++i;
      }
    }
    pair_count.erase(k);
    for (auto kk : touched) {
      auto pc = pair_count.find(kk);
      if (pc == pair_count.end()) continue;
      if (pc->second <= 0) pair_count.erase(pc);
      else heap.emplace(pc->second, kk);
    }
    if (o.progress && (t.merges_.size() % 256 == 0)) o.progress(int(t.tokens_.size()) - 256, wanted);
  }
  for (const auto& s : o.special_tokens) {
    t.specials_.emplace_back(s, static_cast<TokenId>(t.tokens_.size()));
    t.tokens_.push_back(s);
  }
  t.finish();
  return t;
}

}  // namespace llmtk::data
