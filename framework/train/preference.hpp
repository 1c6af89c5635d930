// Preference data for alignment (docs/alignment.md): pairs of replies to one prompt, the one
// people (or a verifier) preferred and the one they did not, read from JSONL in the convention
// of TRL and torchtune:
//   {"prompt": "Which book ...?", "chosen": "Genesis", "rejected": "Exodus"}
//   {"prompt": [{"role": "user", "content": "..."}], "chosen": [{"role": "assistant", "content": "..."}],
//    "rejected": [{"role": "assistant", "content": "..."}]}
// A pair becomes two rows through the chat template, each EOT + prompt + reply, with next-token
// targets on the reply and its end-of-turn marker only: log π(reply | prompt) is the sum of those
// targets' log-probabilities. A batch of P pairs is 2P rows: the P chosen, then the P rejected.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../data/chat.hpp"
#include "../models/model.hpp"
#include "step.hpp"

namespace llmtk::train {

struct PreferencePair {
  data::Conversation prompt;  // ends with the user's turn
  std::string chosen, rejected;
};

struct PreferenceFile {
  std::vector<PreferencePair> pairs;
  std::int64_t identical = 0;  // records whose chosen reply equals the rejected one: no signal, left out
  std::string first_identical;  // FILE:LINE of the first of them
};

// One JSONL line; `where` ("FILE:LINE") starts every error: not JSON, a missing or empty field,
// a prompt that is neither a string nor messages ending with a user turn, a reply that is
// neither a string nor one assistant message.
PreferencePair parse_preference(std::string_view line, const std::string& where);
PreferenceFile read_preferences(const std::string& path);

// A pair as the model reads it: [0] chosen, [1] rejected; targets are kIgnoreIndex except on the
// reply and its end-of-turn marker.
struct EncodedPair {
  std::vector<std::int32_t> ids[2], targets[2];
  std::size_t longest() const { return std::max(ids[0].size(), ids[1].size()); }
};
EncodedPair encode_pair(const data::Tokenizer& tok, const data::ChatTemplate& tmpl, const PreferencePair& pair);

struct EncodedPairs {
  std::vector<EncodedPair> pairs;
  std::int64_t too_long = 0;  // pairs with a side longer than the row, left out
};
EncodedPairs encode_pairs(const data::Tokenizer& tok, const data::ChatTemplate& tmpl, const std::vector<PreferencePair>& pairs,
                          std::int64_t seq);

// Rows [0, P) the chosen and [P, 2P) the rejected sides of `pairs` (P of them, at most `P`
// pairs; missing ones become padding rows with nothing counted), padded with `pad` to T.
void fill_pair_rows(const std::vector<const EncodedPair*>& pairs, std::int64_t P, std::int64_t T, std::int32_t pad,
                    std::vector<std::int32_t>& ids, std::vector<std::int32_t>& targets);

// Batches of `batch` pairs (2·batch rows of `seq` tokens), shuffled every epoch from `seed` or in
// file order; the last incomplete batch of an epoch is left out. With a reference model, every
// batch carries its log-probability of each row (labels.reference), computed as the batch is made.
class PreferenceBatches final : public BatchSource {
 public:
  // `source` names the pairs' file in errors.
  PreferenceBatches(std::vector<EncodedPair> pairs, std::int64_t batch, std::int64_t seq, bool shuffle, std::uint64_t seed,
                    std::int32_t pad, AnyModel* reference = nullptr, const std::string& source = "preference data");
  Batch next() override;
  data::LoaderPosition position() const override { return pos_; }
  void seek(data::LoaderPosition p) override;
  // Data parallel: this rank reads items [rank·batch/world, (rank+1)·batch/world) of every batch
  // (batch stays the global one, which train() has checked the ranks divide); the order and the
  // position are the same on every rank.
  void split(int rank, int world) { rank_ = rank, world_ = world; }
  std::uint64_t batches_per_epoch() const override { return pairs_.size() / std::uint64_t(batch_); }
  std::uint64_t tokens() const override { return batches_per_epoch() * std::uint64_t(2 * batch_ * seq_); }
  std::size_t size() const { return pairs_.size(); }

 private:
  void order_epoch();
  std::vector<EncodedPair> pairs_;
  std::int64_t batch_, seq_;
  bool shuffle_;
  std::uint64_t seed_;
  std::int32_t pad_;
  AnyModel* reference_;
  int rank_ = 0, world_ = 1;
  data::LoaderPosition pos_{};
  std::uint64_t ordered_epoch_ = ~std::uint64_t(0);
  std::vector<std::size_t> order_;
  std::vector<std::int32_t> ids_, targets_;
  std::vector<float> reference_logp_;
  TokenLosses reference_losses_;
  std::vector<double> logp_;
  std::vector<std::int64_t> length_;
};

// `llmtk eval RUN --pairs FILE`: how often the model itself prefers the chosen reply.
struct PairsResult {
  std::int64_t pairs = 0, skipped = 0;  // evaluated; longer than the model's context
  double accuracy = NAN;                // share with log π(chosen) > log π(rejected)
  double normalized_accuracy = NAN;     // the same per token: log π(y)/|y|
  double margin = NAN;                  // mean log π(chosen) − log π(rejected)
  double logp_chosen = NAN, logp_rejected = NAN;
};
PairsResult evaluate_pairs(AnyModel& model, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                           const std::vector<PreferencePair>& pairs, std::int64_t batch);

// A reply to score: the conversation before it (ending with the user's turn) and the reply.
struct Reply {
  data::Conversation prompt;
  std::string text;
};
// Replies from JSONL: {"prompt", "completion"} (TRL's prompt-completion format; the prompt as in
// a preference record) or an instruction record (Alpaca or chat messages: the last assistant turn
// is the reply). Errors name FILE:LINE.
std::vector<Reply> read_replies(const std::string& path);

// A reward model's score of each reply (layers/score_head.hpp): the row EOT + prompt + reply +
// end-of-turn through the template, the score read at the end-of-turn marker. A reply longer than
// the model's context gets NaN.
std::vector<double> score_replies(AnyModel& model, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                                  const std::vector<Reply>& replies, std::int64_t batch);

// `llmtk reward RUN --data PAIRS`: how often the reward model scores the chosen reply higher.
struct RewardPairsResult {
  std::int64_t pairs = 0, skipped = 0;  // evaluated; longer than the model's context
  double accuracy = NAN;                // share with r(chosen) > r(rejected)
  double margin = NAN, chosen = NAN, rejected = NAN;  // mean r(chosen) − r(rejected), r(chosen), r(rejected)
};
RewardPairsResult evaluate_reward_pairs(AnyModel& model, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                                        const std::vector<PreferencePair>& pairs, std::int64_t batch);

}  // namespace llmtk::train
