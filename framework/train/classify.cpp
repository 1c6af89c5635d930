#include "classify.hpp"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../data/chat.hpp"  // for_each_jsonl_line
#include "objective.hpp"

namespace llmtk::train {

std::vector<LabelledText> read_labelled(const std::string& path) {
  std::vector<LabelledText> out;
  data::for_each_jsonl_line(path, "classification data", "; llmtk data synth kjv-testament --out FILE writes an example set",
                            [&](std::string_view line, const std::string& where) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, "not valid JSON: ", e.what());
    }
    LLMTK_CHECK(j.is_object(), where, "expected an object {\"text\": ..., \"label\": ...}");
    LabelledText x;
    x.where = where;
    LLMTK_CHECK(j.contains("text") && j["text"].is_string(), where, "needs \"text\", a string");
    x.text = j["text"].get<std::string>();
    if (j.contains("text_pair")) {
      LLMTK_CHECK(j["text_pair"].is_string(), where, "\"text_pair\" must be a string (the second segment)");
      x.pair = j["text_pair"].get<std::string>();
    }
    LLMTK_CHECK(j.contains("label") && (j["label"].is_string() || j["label"].is_number_integer()), where,
                "needs \"label\", a string or an integer");
    x.label = j["label"].is_string() ? j["label"].get<std::string>() : std::to_string(j["label"].get<std::int64_t>());
    out.push_back(std::move(x));
  });
  LLMTK_CHECK(!out.empty(), "classification data", "'", path, "' holds no examples");
  return out;
}

std::vector<std::string> labels_in(const std::vector<LabelledText>& examples) {
  std::vector<std::string> out;
  for (const auto& x : examples)
    if (std::find(out.begin(), out.end(), x.label) == out.end()) out.push_back(x.label);
  return out;
}

EncodedExamples encode_examples(const data::Tokenizer& tok, const MlmTokens& mlm, const std::vector<LabelledText>& examples,
                                const std::vector<std::string>& labels, std::int64_t seq) {
  EncodedExamples out;
  const std::int64_t room = seq - 2;  // [CLS] and [SEP]
  for (const auto& x : examples) {
    const auto at = std::find(labels.begin(), labels.end(), x.label);
    if (at == labels.end()) {
      std::string known;
      for (const auto& l : labels) known += (known.empty() ? "\"" : ", \"") + l + "\"";
      fail(x.where, "label \"", x.label, "\" is not one of classify.labels = [", known, "]; add it there or fix the example");
    }
    // Special tokens in the text are text: an example cannot forge a [SEP] or [MASK].
    std::vector<data::TokenId> a = tok.encode(x.text), b = tok.encode(x.pair);
    const std::int64_t pair_room = x.pair.empty() ? room : room - 1;  // the second [SEP]
    LLMTK_CHECK(pair_room >= 2 || x.pair.empty(), x.where, "train.seq = ", seq, " leaves no room for a text and its pair");
    if (std::int64_t(a.size() + b.size()) > pair_room) {
      ++out.truncated;
      // longest_first as Transformers' tokenizers truncate: the longer segment loses its last
      // token; on a tie, the pair does.
      while (std::int64_t(a.size() + b.size()) > pair_room) (a.size() > b.size() ? a : b).pop_back();
    }
    EncodedExample e;
    e.label = std::int32_t(at - labels.begin());
    e.ids.push_back(mlm.cls);
    for (const auto id : a) e.ids.push_back(std::int32_t(id));
    e.ids.push_back(mlm.sep);
    e.types.assign(e.ids.size(), 0);
    if (!x.pair.empty()) {
      for (const auto id : b) e.ids.push_back(std::int32_t(id));
      e.ids.push_back(mlm.sep);
      e.types.resize(e.ids.size(), 1);
    }
    out.examples.push_back(std::move(e));
  }
  return out;
}

Batch classify_rows(const std::vector<const EncodedExample*>& examples, std::int64_t B, std::int64_t seq, std::int32_t pad,
                    std::vector<std::int32_t>& ids, std::vector<std::int32_t>& types, std::vector<std::int32_t>& targets,
                    std::vector<std::int32_t>& lengths) {
  ids.assign(std::size_t(B * seq), pad);
  types.assign(std::size_t(B * seq), 0);
  targets.assign(std::size_t(B * seq), kIgnoreIndex);
  lengths.assign(std::size_t(B), 1);
  for (std::int64_t b = 0; b < B; ++b) {
    if (std::size_t(b) >= examples.size()) {  // a short last batch: a lone [CLS], nothing counted
      ids[std::size_t(b * seq)] = examples.empty() ? pad : examples.front()->ids.front();
      continue;
    }
    const EncodedExample& e = *examples[std::size_t(b)];
    std::copy(e.ids.begin(), e.ids.end(), ids.begin() + b * seq);
    std::copy(e.types.begin(), e.types.end(), types.begin() + b * seq);
    targets[std::size_t(b * seq)] = e.label;  // read at [CLS]
    lengths[std::size_t(b)] = std::int32_t(e.ids.size());
  }
  Batch batch;
  batch.inputs.ids = TensorRef(ids.data(), DType::i32, {B, seq});
  batch.inputs.lengths = TensorRef(lengths.data(), DType::i32, {B});
  batch.inputs.token_types = TensorRef(types.data(), DType::i32, {B, seq});
  batch.labels.targets = TensorRef(targets.data(), DType::i32, {B, seq});
  return batch;
}

ClassifyBatches::ClassifyBatches(std::vector<EncodedExample> examples, std::int64_t batch, std::int64_t seq, bool shuffle,
                                 std::uint64_t seed, std::int32_t pad, const std::string& source)
    : examples_(std::move(examples)), batch_(batch), seq_(seq), shuffle_(shuffle), seed_(seed), pad_(pad) {
  LLMTK_CHECK(batches_per_epoch() > 0, source, "holds ", examples_.size(), " examples, fewer than one batch of ", batch,
              " (train.batch); lower train.batch or add examples");
}

Batch ClassifyBatches::next() {
  if (pos_.step >= batches_per_epoch()) pos_ = {pos_.epoch + 1, 0};
  if (ordered_epoch_ != pos_.epoch) {
    order_.resize(examples_.size());
    for (std::size_t i = 0; i < order_.size(); ++i) order_[i] = i;
    if (shuffle_) {  // Fisher–Yates from (seed, epoch): the same order on every machine and on resume
      Rng rng(seed_ * 0x9e3779b97f4a7c15ull + pos_.epoch);
      for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[std::size_t(rng.next() % i)]);
    }
    ordered_epoch_ = pos_.epoch;
  }
  std::vector<const EncodedExample*> chosen;
  const std::int64_t b = batch_ / world_, first = rank_ * b;  // this rank's examples of the batch
  for (std::int64_t j = 0; j < b; ++j)
    chosen.push_back(&examples_[order_[pos_.step * std::uint64_t(batch_) + std::uint64_t(first + j)]]);
  ++pos_.step;
  return classify_rows(chosen, b, seq_, pad_, ids_, types_, targets_, lengths_);
}

namespace {
// Log-softmax of one row of K logits, in double.
std::vector<double> log_softmax(const float* z, std::int64_t K) {
  double mx = -INFINITY, sum = 0;
  for (std::int64_t k = 0; k < K; ++k) mx = std::max(mx, double(z[k]));
  for (std::int64_t k = 0; k < K; ++k) sum += std::exp(double(z[k]) - mx);
  std::vector<double> out(static_cast<std::size_t>(K));
  for (std::int64_t k = 0; k < K; ++k) out[std::size_t(k)] = double(z[k]) - mx - std::log(sum);
  return out;
}

void check_classifier(const AnyModel& model, const std::vector<std::string>& labels, const char* who) {
  LLMTK_CHECK(model.classifier(), who, model.name(), " is not a classifier (NAME+classify, trained with [classify])");
  LLMTK_CHECK(std::int64_t(labels.size()) == model.outputs(), who, model.name(), " tells ", model.outputs(),
              " classes apart but ", labels.size(), " labels were given");
}
}  // namespace

ClassifyResult evaluate_classifier(AnyModel& model, const data::Tokenizer& tok, const std::vector<LabelledText>& examples,
                                   const std::vector<std::string>& labels, std::int64_t batch) {
  check_classifier(model, labels, "eval --task");
  const std::int64_t T = model.context(), K = model.outputs();
  const EncodedExamples enc = encode_examples(tok, mlm_tokens(tok, "eval --task"), examples, labels, T);
  const std::int32_t pad = mlm_tokens(tok, "eval --task").pad;
  model.plan(batch, T);
  model.allocate();
  ClassifyResult r;
  r.labels = labels;
  r.truncated = enc.truncated;
  r.confusion.assign(labels.size(), std::vector<std::int64_t>(labels.size(), 0));
  std::vector<std::int32_t> ids, types, targets, lengths;
  double loss = 0;
  std::int64_t right = 0;
  for (std::size_t s = 0; s < enc.examples.size(); s += std::size_t(batch)) {
    std::vector<const EncodedExample*> chunk;
    for (std::size_t j = s; j < std::min(enc.examples.size(), s + std::size_t(batch)); ++j) chunk.push_back(&enc.examples[j]);
    const Batch b = classify_rows(chunk, batch, T, pad, ids, types, targets, lengths);
    const std::vector<float> logits = outputs_on_host(model.forward(b.inputs));
    for (std::size_t j = 0; j < chunk.size(); ++j) {
      const auto lp = log_softmax(logits.data() + std::int64_t(j) * T * K, K);  // position 0: [CLS]
      const auto guess = std::size_t(std::max_element(lp.begin(), lp.end()) - lp.begin());
      const auto truth = std::size_t(chunk[j]->label);
      loss -= lp[truth];
      right += guess == truth;
      ++r.confusion[truth][guess];
    }
  }
  r.examples = std::int64_t(enc.examples.size());
  r.loss = loss / double(r.examples);
  r.accuracy = double(right) / double(r.examples);
  std::int64_t most = 0;
  for (const auto& row : r.confusion) {
    std::int64_t n = 0;
    for (const auto c : row) n += c;
    most = std::max(most, n);
  }
  r.majority = double(most) / double(r.examples);
  return r;
}

std::vector<std::pair<std::string, double>> classify_text(AnyModel& model, const data::Tokenizer& tok, const std::string& text,
                                                          const std::vector<std::string>& labels, std::vector<std::int32_t>* row) {
  check_classifier(model, labels, "generate");
  const MlmTokens mlm = mlm_tokens(tok, "generate");
  const EncodedExamples enc = encode_examples(tok, mlm, {{text, "", labels.front(), "--prompt"}}, labels, model.context());
  const std::int64_t T = std::int64_t(enc.examples.front().ids.size());
  model.plan(1, T);
  model.allocate();
  std::vector<std::int32_t> ids, types, targets, lengths;
  const Batch b = classify_rows({&enc.examples.front()}, 1, T, mlm.pad, ids, types, targets, lengths);
  const std::vector<float> logits = outputs_on_host(model.forward(b.inputs));
  const auto lp = log_softmax(logits.data(), model.outputs());
  if (row) *row = enc.examples.front().ids;
  std::vector<std::pair<std::string, double>> out;
  for (std::size_t k = 0; k < labels.size(); ++k) out.emplace_back(labels[k], std::exp(lp[k]));
  std::stable_sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.second > y.second; });
  return out;
}

}  // namespace llmtk::train
