// Span corruption, the objective of T5 (Raffel et al. 2020, §3.1.4 and §3.3.4), for
// encoder-decoders (dsl/encoder_decoder_lm.hpp):
//   - each row starts as a window of L tokens of the stream (documents run on into each other,
//     separated by the corpus's end-of-text token);
//   - noise_density · L of them (15%) are dropped in spans of mean length mean_span_length (3):
//     the number of spans is round(noise / mean), and both the noise and the kept tokens are cut
//     into that many non-empty runs at random, kept and dropped runs alternating, a kept run first;
//   - the source is the kept runs with each dropped span replaced by one sentinel <extra_id_k>,
//     then end of text; the target is each sentinel followed by the span it stands for, then end
//     of text (Transformers' run_t5_mlm_flax.py writes the same rows);
//   - the decoder reads the target shifted right after the decoder start token ([PAD], as T5's).
// Every row of a batch has the same source and target length (the counts depend on L only), so
// nothing is padded. The choices are a function of (seed, epoch, batch, row), as BERT's masks
// are: a resumed run corrupts its batches as the stopped one would have.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../data/tokenizer.hpp"
#include "objective.hpp"
#include "step.hpp"

namespace llmtk::train {

// The tokens span corruption writes, by id.
struct SpanTokens {
  std::int32_t pad = -1;   // [PAD]: the decoder's start token
  std::int32_t eos = -1;   // <|endoftext|>: ends the source and the target
  std::vector<std::int32_t> sentinels;  // <extra_id_0>, <extra_id_1>, ...
  std::vector<bool> is_sentinel;        // [vocab]
};
inline constexpr const char* kSentinelPrefix = "<extra_id_";
std::string sentinel_name(int k);  // "<extra_id_k>"
// Fails naming what is missing and how to add it (data prepare's [tokenizer] special and sentinels).
SpanTokens span_tokens(const data::Tokenizer& tok, const std::string& where);

// The lengths of one row: L raw tokens become a source of `source` and a target of `target` tokens.
struct SpanLengths {
  std::int64_t raw = 0, noise = 0, spans = 0, source = 0, target = 0;
};
SpanLengths span_lengths(std::int64_t raw, const SpanOptions& o);
// The longest raw window whose source fits `source_len` tokens (T5's inputs_length → raw length).
SpanLengths span_lengths_for_source(std::int64_t source_len, const SpanOptions& o);

// Corrupts one row of raw tokens: source [lengths.source] and target [lengths.target] written.
// Fails when the spans need more sentinels than the tokenizer has.
void corrupt_row(std::span<const std::int32_t> raw, std::span<std::int32_t> source, std::span<std::int32_t> target,
                 const SpanTokens& tokens, const SpanOptions& o, std::uint64_t seed);

// Rows for an encoder-decoder from a loader of token shards whose rows are lengths.raw long.
class SpanBatches final : public BatchSource {
 public:
  SpanBatches(data::DataLoader& loader, SpanTokens tokens, SpanOptions options, std::uint64_t seed);
  Batch next() override;
  data::LoaderPosition position() const override { return loader_.position(); }
  void seek(data::LoaderPosition p) override { loader_.seek(p); }
  std::uint64_t batches_per_epoch() const override { return loader_.batches_per_epoch(); }
  std::uint64_t tokens() const override { return loader_.tokens(); }
  const SpanLengths& lengths() const { return lengths_; }

 private:
  data::DataLoader& loader_;
  SpanTokens tokens_;
  SpanOptions options_;
  std::uint64_t seed_;
  SpanLengths lengths_;
  std::vector<std::int32_t> raw_, raw_targets_, source_, decoder_, targets_;
};

// The seed validation rows are corrupted with: the same spans at every evaluation, whatever the
// training seed.
inline constexpr std::uint64_t kValidationSpanSeed = 0x76616c5f7370616eull;  // "val_span"

// The span-corruption loss: the cross-entropy of every target token (sentinels and end of text
// included, as T5 trains), with two measures of recovery read from the same logits: `accuracy`,
// the share of target tokens that are the most probable one, and `span_exact`, the share of spans
// whose every token is (each given the right ones before it: teacher forcing).
class SpanLoss final : public Objective {
 public:
  explicit SpanLoss(std::vector<bool> is_sentinel) : is_sentinel_(std::move(is_sentinel)) {}
  std::string name() const override { return "span"; }
  float forward(TensorRef logits, const Labels& labels) override;
  void backward(TensorRef dlogits) override { loss_.backward(dlogits); }
  double weight() const override { return loss_.weight(); }
  Metrics metrics() const override { return {{"accuracy", accuracy_}, {"span_exact", span_exact_}}; }

 private:
  std::vector<bool> is_sentinel_;
  NextTokenLoss loss_;
  double accuracy_ = 0, span_exact_ = 0;
};

// What an encoder-decoder writes for a source text: the target (sentinels and spans), and the
// source with each sentinel replaced by the span the model gave for it.
struct SpanFill {
  std::string target;  // as decoded: "<extra_id_0> span <extra_id_1> span ..."
  std::string filled;  // the source text with the spans in place of their sentinels
  std::vector<data::TokenId> source, output;
};
struct GenerateOptions;
SpanFill fill_spans(AnyModel& model, const data::Tokenizer& tok, const std::string& text, const GenerateOptions& o);
// The decoder's log-softmax at each position of `decoder_ids` [T] given `source` [S], by one
// teacher-forced forward (the model is planned for it): [T][vocab]. For comparing with other
// implementations (tests/golden/check_hf_export.py).
std::vector<std::vector<double>> seq2seq_logprobs(AnyModel& model, const std::vector<data::TokenId>& source,
                                                  const std::vector<data::TokenId>& decoder_ids);

}  // namespace llmtk::train
