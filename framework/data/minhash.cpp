#include "minhash.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <unordered_map>

#include "../core/error.hpp"

namespace llmtk::data {

namespace {
std::uint64_t mix(std::uint64_t z) {  // SplitMix64's finalizer: a cheap, well-spread 64-bit hash
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
std::uint64_t hash_words(const std::vector<std::string_view>& w, std::size_t from, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = from; i < from + n; ++i) {
    for (unsigned char c : w[i]) h = (h ^ c) * 0x100000001b3ull;
    h = (h ^ 0x1f) * 0x100000001b3ull;  // word separator
  }
  return h;
}
}  // namespace

std::vector<std::uint64_t> minhash_signature(std::string_view text, const MinHashOptions& o) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    const std::size_t s = i;
    while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i > s) words.push_back(text.substr(s, i - s));
  }
  const std::size_t k = std::min<std::size_t>(std::size_t(o.shingle_words), std::max<std::size_t>(words.size(), 1));
  std::vector<std::uint64_t> sig(std::size_t(o.num_perm), std::numeric_limits<std::uint64_t>::max());
  if (words.empty()) return sig;
  for (std::size_t s = 0; s + k <= words.size(); ++s) {
    const std::uint64_t h = hash_words(words, s, k);
    // Permutation p is approximated by a differently seeded hash of the shingle's hash.
    for (int p = 0; p < o.num_perm; ++p) sig[p] = std::min(sig[p], mix(h ^ mix(o.seed + std::uint64_t(p))));
  }
  return sig;
}

double estimated_jaccard(const std::vector<std::uint64_t>& a, const std::vector<std::uint64_t>& b) {
  std::size_t same = 0;
  for (std::size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return a.empty() ? 0.0 : double(same) / double(a.size());
}

std::vector<std::size_t> near_duplicate_clusters(const std::vector<std::string_view>& texts, const MinHashOptions& o) {
  LLMTK_CHECK(o.num_perm > 0 && o.bands > 0 && o.num_perm % o.bands == 0, "dedup",
              "num_perm (", o.num_perm, ") must be a positive multiple of bands (", o.bands, ")");
  const std::size_t n = texts.size(), rows = std::size_t(o.num_perm / o.bands);
  std::vector<std::vector<std::uint64_t>> sig(n);
  for (std::size_t i = 0; i < n; ++i) sig[i] = minhash_signature(texts[i], o);
  // Union-find with the smaller index as root, so each cluster keeps its earliest document.
  std::vector<std::size_t> parent(n);
  std::iota(parent.begin(), parent.end(), 0);
  auto root = [&](std::size_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  for (int b = 0; b < o.bands; ++b) {
    std::unordered_map<std::uint64_t, std::vector<std::size_t>> bucket;  // band hash → documents
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t h = std::uint64_t(b) * 0x9e3779b97f4a7c15ull;
      for (std::size_t r = 0; r < rows; ++r) h = mix(h ^ sig[i][std::size_t(b) * rows + r]);
      auto& members = bucket[h];
      // Confirm against a few earlier members; a huge bucket is one cluster already.
      for (std::size_t m = 0; m < members.size() && m < 8; ++m) {
        const std::size_t j = members[m];
        if (root(i) == root(j) || estimated_jaccard(sig[i], sig[j]) < o.threshold) continue;
        const std::size_t ri = root(i), rj = root(j);
        parent[std::max(ri, rj)] = std::min(ri, rj);
      }
      members.push_back(i);
    }
  }
  std::vector<std::size_t> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = root(i);
  return out;
}

}  // namespace llmtk::data
