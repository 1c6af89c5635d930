// How papers measure a language model, on any causal LM the registry builds (docs/evaluation.md):
//
//   perplexity        `llmtk eval RUN --text FILE`: the text tokenised on the fly and scored with a
//                     sliding window (Transformers' "perplexity of fixed-length models", llama.cpp's
//                     perplexity tool): windows of W tokens, each starting `stride` after the last,
//                     each scoring only the tokens no earlier window scored, so every token after
//                     the first window has at least W − stride tokens of context.
//   multiple choice   `llmtk eval RUN --task FILE.jsonl` with {"context", "endings", "label"}
//                     records (HellaSwag's layout): each ending's log-probability after the
//                     context; the model's choice is the ending with the lowest mean loss per
//                     token, and (reported beside it) the lowest total loss.
//
// Both run the model forward only, in batches of rows of the model's context, on the active backend.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../data/tokenizer.hpp"
#include "../models/model.hpp"

namespace llmtk::train {

// The command that needs next-token probabilities refuses an encoder, an encoder-decoder, a
// classifier or a reward model, naming what it is and what to use.
void require_causal_lm(const AnyModel& model, const std::string& what, const char* command);

struct PerplexityOptions {
  std::int64_t window = 0;  // tokens per window (0: the model's context)
  std::int64_t stride = 0;  // tokens between window starts, 1..window (0: window / 2)
  std::int64_t batch = 8;   // windows per forward
};

struct PerplexityResult {
  std::int64_t tokens = 0;   // tokens scored: every token of the sequence but the first
  std::int64_t windows = 0;
  std::int64_t window = 0, stride = 0;
  double nll = 0;            // Σ −log p(token | its context), natural log
  double seconds = 0;        // the forwards and the scoring
  double loss() const { return tokens ? nll / double(tokens) : 0; }
  double perplexity() const;
  double tokens_per_second() const { return seconds > 0 ? double(tokens) / seconds : 0; }
};

// `ids`: the whole text as tokens, starting with the token that precedes the text (end of text,
// as documents start in pre-training shards); every token after it is scored once.
PerplexityResult perplexity(AnyModel& model, const std::vector<data::TokenId>& ids, const PerplexityOptions& o);

// A text file for --text: read whole, refused when it is not UTF-8 text (a NUL byte, or invalid
// UTF-8 in its first 64 KiB) or empty, naming the file.
std::string read_text_file(const std::string& path, const char* command);

// ---- multiple choice ---------------------------------------------------------------------------

struct ChoiceItem {
  std::string context;
  std::vector<std::string> endings;
  int label = 0;
  std::string where;  // "FILE:LINE", for messages
};

// JSONL, one {"context": str, "endings": [str, ≥ 2], "label": int} per line (other keys such as
// "ref" kept out); an error names FILE:LINE and what is wrong.
std::vector<ChoiceItem> read_choices(const std::string& path);
// Whether a JSONL file's first record is a multiple-choice one (it has "endings").
bool is_choice_file(const std::string& path);

struct ChoiceScore {
  std::vector<double> logp;               // each ending's Σ log p(token | context, ending so far)
  std::vector<std::int64_t> tokens;       // each ending's token count
  int by_mean = -1, by_total = -1;        // the model's choices
};

struct ChoiceResult {
  std::vector<ChoiceScore> items;         // in the order of the items given (skipped ones left empty)
  std::int64_t scored = 0, skipped = 0;   // skipped: context + ending longer than the model's context
  std::int64_t correct_mean = 0, correct_total = 0;
  double chance = 0;                      // the mean of 1 / endings over the scored items
  double seconds = 0;
  double accuracy_mean() const { return scored ? double(correct_mean) / double(scored) : 0; }
  double accuracy_total() const { return scored ? double(correct_total) / double(scored) : 0; }
};

// Each row is [end of text] + context + ending; the ending's tokens are scored. Context and ending
// are tokenised apart, so the ending's tokens are the same for every context (an ending usually
// starts with a space, as in HellaSwag).
ChoiceResult evaluate_choices(AnyModel& model, const data::Tokenizer& tok, const std::vector<ChoiceItem>& items,
                              std::int64_t batch);

// The Wilson score interval of a binomial proportion k / n at ~95% (z = 1.96): [lo, hi].
struct Interval {
  double lo = 0, hi = 0;
};
Interval wilson_interval(std::int64_t k, std::int64_t n, double z = 1.959963984540054);

}  // namespace llmtk::train
