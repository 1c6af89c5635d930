// Sequence classification with an encoder (BERT's fine-tuning, Devlin et al. 2019 §4.1): each
// example becomes the row [CLS] text [SEP] (or [CLS] text [SEP] pair [SEP], the pair's tokens of
// type 1), padded with [PAD] to the batch's length; the model is NAME+classify (a ClassHead in
// place of the MLM head, layers/class_head.hpp) and the loss is the cross-entropy of the label at
// [CLS], position 0 — the only position whose target is not ignored — with its accuracy.
//
// Data: JSONL, one example per line, {"text": ..., "label": ...} with an optional "text_pair"
// (the name Transformers' tokenizers give the second segment); a label is a string or an integer
// and must be one of the recipe's [classify] labels, whose order gives the class ids.
// `llmtk data synth kjv-testament` writes a set (docs/encoders.md).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../data/tokenizer.hpp"
#include "../models/model.hpp"
#include "masked.hpp"  // MlmTokens
#include "step.hpp"

namespace llmtk::train {

struct LabelledText {
  std::string text, pair, label;
  std::string where;  // "FILE:LINE", for errors
};
// Every example of a JSONL file, with FILE:LINE errors (bad JSON, a missing or non-string field).
std::vector<LabelledText> read_labelled(const std::string& path);
// The labels of `examples` in the order they first appear, for a message suggesting [classify] labels.
std::vector<std::string> labels_in(const std::vector<LabelledText>& examples);

struct EncodedExample {
  std::vector<std::int32_t> ids, types;  // [CLS] … [SEP] (… [SEP]); 0 for the first segment, 1 for the pair's
  std::int32_t label = 0;
};
struct EncodedExamples {
  std::vector<EncodedExample> examples;
  std::int64_t truncated = 0;  // longer than `seq`: cut, the longer segment first (Transformers' longest_first)
};
// Fails at the first example whose label is not in `labels`, naming its line and the labels.
EncodedExamples encode_examples(const data::Tokenizer& tok, const MlmTokens& mlm, const std::vector<LabelledText>& examples,
                                const std::vector<std::string>& labels, std::int64_t seq);

// Batches of B examples in rows of `seq` tokens (the model is planned for train.seq), [PAD]
// after each row's tokens and `lengths` saying where the padding starts, so no query attends to it; the targets hold the label at position
// 0 and kIgnoreIndex elsewhere. The order is shuffled per epoch from (seed, epoch) when `shuffle`.
class ClassifyBatches final : public BatchSource {
 public:
  ClassifyBatches(std::vector<EncodedExample> examples, std::int64_t batch, std::int64_t seq, bool shuffle, std::uint64_t seed,
                  std::int32_t pad, const std::string& source);
  Batch next() override;
  data::LoaderPosition position() const override { return pos_; }
  void seek(data::LoaderPosition p) override { pos_ = p; }
  // Data parallel: this rank reads items [rank·batch/world, (rank+1)·batch/world) of every batch
  // (batch stays the global one, which train() has checked the ranks divide); the order and the
  // position are the same on every rank.
  void split(int rank, int world) { rank_ = rank, world_ = world; }
  std::uint64_t batches_per_epoch() const override { return examples_.size() / std::uint64_t(batch_); }
  std::uint64_t tokens() const override { return batches_per_epoch() * std::uint64_t(batch_ * seq_); }

 private:
  std::vector<EncodedExample> examples_;
  std::int64_t batch_, seq_;
  bool shuffle_;
  std::uint64_t seed_;
  std::int32_t pad_;
  int rank_ = 0, world_ = 1;
  data::LoaderPosition pos_{};
  std::uint64_t ordered_epoch_ = ~std::uint64_t(0);
  std::vector<std::size_t> order_;
  std::vector<std::int32_t> ids_, types_, targets_, lengths_;
};

// The batch rows of `examples` (B rows; fewer examples at the end of an evaluation leave rows of
// one [CLS] whose target is ignored), padded to `seq`. Shared by the batches and evaluation.
Batch classify_rows(const std::vector<const EncodedExample*>& examples, std::int64_t B, std::int64_t seq, std::int32_t pad,
                    std::vector<std::int32_t>& ids, std::vector<std::int32_t>& types, std::vector<std::int32_t>& targets,
                    std::vector<std::int32_t>& lengths);

// `llmtk eval RUN --task FILE` on a classifier: every example, in batches of `batch`.
struct ClassifyResult {
  std::int64_t examples = 0, truncated = 0;
  double loss = NAN, accuracy = NAN;
  std::vector<std::string> labels;
  std::vector<std::vector<std::int64_t>> confusion;  // [true label][predicted label]
  double majority = NAN;  // the accuracy of always answering the most frequent label of the file
};
ClassifyResult evaluate_classifier(AnyModel& model, const data::Tokenizer& tok, const std::vector<LabelledText>& examples,
                                   const std::vector<std::string>& labels, std::int64_t batch);

// `llmtk generate RUN --prompt TEXT` on a classifier: each label's probability for one text, most
// probable first; `row`, when given, receives the ids the model read ([CLS] text [SEP]).
std::vector<std::pair<std::string, double>> classify_text(AnyModel& model, const data::Tokenizer& tok, const std::string& text,
                                                          const std::vector<std::string>& labels,
                                                          std::vector<std::int32_t>* row = nullptr);

}  // namespace llmtk::train
