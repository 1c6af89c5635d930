// Near-duplicate detection: MinHash signatures over word shingles, grouped by locality-sensitive
// hashing (bands of rows), candidate pairs confirmed by the signatures' estimated Jaccard
// similarity. Broder (1997); Leskovec, Rajaraman and Ullman, "Mining of Massive Datasets", ch. 3.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

namespace llmtk::data {

struct MinHashOptions {
  int num_perm = 128;      // signature length
  int bands = 16;          // LSH bands; rows per band = num_perm / bands
  int shingle_words = 5;   // words per shingle (texts shorter than this use all their words)
  double threshold = 0.8;  // estimated Jaccard similarity that counts as a duplicate
  std::uint64_t seed = 42;
};

std::vector<std::uint64_t> minhash_signature(std::string_view text, const MinHashOptions& o);
double estimated_jaccard(const std::vector<std::uint64_t>& a, const std::vector<std::uint64_t>& b);

// For each text, the index of the cluster representative it duplicates (itself if unique).
// A cluster's representative is its first member, so the earliest document is kept.
std::vector<std::size_t> near_duplicate_clusters(const std::vector<std::string_view>& texts,
                                                 const MinHashOptions& o);

}  // namespace llmtk::data
