// The masked-language-model objective of BERT (Devlin et al. 2019, section 3.1), for encoders
// (dsl/encoder_lm.hpp):
//   - each row is [CLS] t_1 … t_{T−2} [SEP], the t's a window of the token stream (documents
//     run on into each other, separated by the corpus's end-of-text token, as RoBERTa's
//     "full-sentences" rows do);
//   - every position that is not a special token is selected with probability `rate` (15%);
//     a selected token becomes [MASK] with probability `mask` (80%), a random ordinary token with
//     probability `random` (10%), and stays as it was otherwise (10%);
//   - the loss is the cross-entropy of the original token at the selected positions only, its
//     accuracy the share of them whose most probable token is the original.
// The choices are a function of (seed, epoch, batch): a resumed run masks its batches exactly as
// the run that was stopped would have, and validation masks the same tokens at every evaluation.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../data/tokenizer.hpp"
#include "objective.hpp"
#include "step.hpp"

namespace llmtk::train {

// The special tokens an MLM needs, by id, and which ids are special (never selected, never drawn).
struct MlmTokens {
  std::int32_t pad = -1, cls = -1, sep = -1, mask = -1;
  std::vector<bool> special;          // [vocab]: the tokenizer's special tokens
  std::vector<std::int32_t> ordinary; // the ids a random replacement is drawn from
};
inline constexpr const char* kMlmSpecials[] = {"[PAD]", "[CLS]", "[SEP]", "[MASK]"};
// Fails naming the missing tokens and how to add them (data prepare's [tokenizer] special).
MlmTokens mlm_tokens(const data::Tokenizer& tok, const std::string& where);

// Masks one row in place: ids [T] become the model's input, targets [T] the original token at
// each selected position and kIgnoreIndex elsewhere. Returns how many positions were selected.
std::int64_t mask_row(std::span<std::int32_t> ids, std::span<std::int32_t> targets, const MlmTokens& tokens,
                      const MaskingOptions& o, std::uint64_t seed);

// Rows for an encoder from a loader of token shards whose rows are T − 2 tokens long (the model's
// T less [CLS] and [SEP]): mlm_loader_seq(T).
constexpr std::int64_t mlm_loader_seq(std::int64_t T) { return T - 2; }
class MaskedBatches final : public BatchSource {
 public:
  MaskedBatches(data::DataLoader& loader, MlmTokens tokens, MaskingOptions options, std::uint64_t seed);
  Batch next() override;
  data::LoaderPosition position() const override { return loader_.position(); }
  void seek(data::LoaderPosition p) override { loader_.seek(p); }
  std::uint64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }
  std::uint64_t tokens() const override { return loader_.tokens(); }

 private:
  data::DataLoader& loader_;
  MlmTokens tokens_;
  MaskingOptions options_;
  std::uint64_t seed_;
  std::vector<std::int32_t> raw_, raw_targets_, ids_, targets_;
};

// The seed validation rows are masked with: the same tokens at every evaluation, whatever the
// training seed, so runs with different seeds are compared on the same questions.
inline constexpr std::uint64_t kValidationMaskSeed = 0x76616c5f6d61736bull;  // "val_mask"

// What an encoder puts at each [MASK] of a text: `fill_mask` plans `model` for the one row
// [CLS] text [SEP] and runs it.
struct MaskFill {
  struct Guess {
    std::string token;
    std::int32_t id = 0;
    double probability = 0;  // among the ordinary tokens (specials are never answers)
  };
  std::string text;                        // the text with each [MASK] replaced by its most probable token
  std::vector<std::vector<Guess>> guesses; // per [MASK], the k most probable ordinary tokens
  std::vector<std::int32_t> ids;           // the row the model read: [CLS] text [SEP]
  std::vector<std::int64_t> positions;     // per [MASK], its position in ids
  std::vector<std::vector<double>> logprobs;  // per [MASK], log-softmax over the whole vocabulary
  std::string describe() const;            // the text, then one line of guesses per [MASK]
};
MaskFill fill_mask(AnyModel& model, const data::Tokenizer& tok, const std::string& text, int k = 5);

// The most probable output of each row of `logits` [N, V] (host or device memory): what the
// accuracy of MaskedTokenLoss and SpanLoss (span.hpp) counts.
std::vector<std::int32_t> argmax_rows(TensorRef logits);

// The MLM loss: the cross-entropy at the selected positions (NextTokenLoss reads targets as they
// are, so the unshifted targets of MaskedBatches make it the MLM loss), and its accuracy. A
// classifier's loss is the same computation with one selected position per row, [CLS], whose
// target is the label (train/classify.hpp): `name` says which.
class MaskedTokenLoss final : public Objective {
 public:
  explicit MaskedTokenLoss(std::string name = "mlm") : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  float forward(TensorRef logits, const Labels& labels) override;
  void backward(TensorRef dlogits) override { loss_.backward(dlogits); }
  double weight() const override { return loss_.weight(); }
  // accuracy: the share of selected positions whose most probable token is the original one.
  Metrics metrics() const override { return {{"accuracy", accuracy_}}; }

 private:
  std::string name_;
  NextTokenLoss loss_;
  double accuracy_ = 0;
};

}  // namespace llmtk::train
