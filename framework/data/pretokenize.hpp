// Pre-tokenization: splits text into pieces by a regular expression with Unicode classes (PCRE2 in
// UCP mode, JIT-compiled) before BPE sees it, so merges never cross a word/number/space boundary.
// PCRE2 stays inside pretokenize.cpp; this header is light.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace llmtk::data {

// The pattern of GPT-2 (Radford et al. 2019, encoder.py).
inline constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// The pattern of GPT-3.5/GPT-4's cl100k_base (tiktoken).
inline constexpr std::string_view kCl100kPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// "gpt2" or "cl100k" to its pattern; any other text is taken as a pattern itself.
std::string_view pattern_by_name(std::string_view name_or_pattern);

class Pretokenizer {
 public:
  explicit Pretokenizer(std::string_view pattern = kGpt2Pattern);
  ~Pretokenizer();
  Pretokenizer(Pretokenizer&&) noexcept;
  Pretokenizer& operator=(Pretokenizer&&) noexcept;

  // Calls f(piece) for every piece of `text`, in order; the pieces tile the text exactly. Bytes
  // no alternative matches (invalid UTF-8, for one) become pieces of their own, so nothing is lost.
  // Safe to call from several threads at once: each call has its own match state.
  template <class F>
  void split(std::string_view text, F&& f) const {
    MatchState state = new_state();
    std::size_t pos = 0;
    while (pos < text.size()) {
      auto [start, end] = next_match(state.get(), text, pos);
      if (start > pos) f(text.substr(pos, start - pos));
      if (end > start) f(text.substr(start, end - start));
      pos = end > pos ? end : text.size();
    }
  }
  std::vector<std::string_view> split(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  // The first match at or after `pos`: [start, end); start = end = size when there is none.
  struct FreeState {
    void operator()(void* p) const;
  };
  using MatchState = std::unique_ptr<void, FreeState>;
  MatchState new_state() const;
  std::pair<std::size_t, std::size_t> next_match(void* state, std::string_view text, std::size_t pos) const;
  struct Impl;
  std::string pattern_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmtk::data
