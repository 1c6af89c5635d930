#include "span.hpp"

#include <algorithm>
#include <cmath>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "generate.hpp"
#include "masked.hpp"  // argmax_rows

namespace llmtk::train {

std::string sentinel_name(int k) { return std::string(kSentinelPrefix) + std::to_string(k) + ">"; }

SpanTokens span_tokens(const data::Tokenizer& tok, const std::string& where) {
  SpanTokens t;
  const auto pad = tok.special("[PAD]");
  const auto eos = tok.special(data::kEndOfText);
  const auto first = tok.special(sentinel_name(0));
  LLMTK_CHECK(pad && eos && first, where, "the tokenizer has no ", !pad ? "[PAD]" : !eos ? "<|endoftext|>" : sentinel_name(0),
              ": span corruption needs [PAD] (the decoder's start token), end of text and the sentinels <extra_id_0>, "
              "<extra_id_1>...; prepare the data with [tokenizer] special = [\"[PAD]\"] and sentinels = 100 "
              "(recipes/data/kjv-t5.toml)");
  t.pad = std::int32_t(*pad), t.eos = std::int32_t(*eos);
  for (int k = 0;; ++k) {
    const auto id = tok.special(sentinel_name(k));
    if (!id) break;
    t.sentinels.push_back(std::int32_t(*id));
  }
  t.is_sentinel.assign(std::size_t(tok.vocab_size()), false);
  for (const std::int32_t id : t.sentinels) t.is_sentinel[std::size_t(id)] = true;
  return t;
}

SpanLengths span_lengths(std::int64_t raw, const SpanOptions& o) {
  SpanLengths l;
  l.raw = raw;
  // T5's random_spans_noise_mask: at least one token dropped and one kept, at least one span.
  l.noise = std::clamp<std::int64_t>(std::llround(double(raw) * o.noise_density), 1, std::max<std::int64_t>(raw - 1, 1));
  l.spans = std::max<std::int64_t>(1, std::llround(double(l.noise) / o.mean_span_length));
  l.spans = std::min(l.spans, std::min(l.noise, raw - l.noise));  // each run non-empty
  l.source = raw - l.noise + l.spans + 1;
  l.target = l.noise + l.spans + 1;
  return l;
}

SpanLengths span_lengths_for_source(std::int64_t source_len, const SpanOptions& o) {
  LLMTK_CHECK(source_len >= 4, "span corruption", "a source of ", source_len, " tokens is too short to corrupt; "
              "set train.seq to 4 or more");
  std::int64_t raw = 2;
  while (span_lengths(raw + 1, o).source <= source_len) ++raw;
  return span_lengths(raw, o);
}

namespace {
// n items cut into k non-empty runs at random: the run lengths (T5's _random_segmentation: k − 1
// of the n − 1 gaps between items chosen uniformly).
std::vector<std::int64_t> random_segmentation(std::int64_t n, std::int64_t k, Rng& rng) {
  std::vector<char> cut(std::size_t(n - 1), 0);
  std::fill_n(cut.begin(), k - 1, 1);
  for (std::size_t i = cut.size(); i > 1; --i) std::swap(cut[i - 1], cut[rng.next() % i]);  // Fisher–Yates
  std::vector<std::int64_t> runs;
  std::int64_t len = 1;
  for (const char c : cut) {
    if (c) runs.push_back(len), len = 0;
    ++len;
  }
  runs.push_back(len);
  return runs;
}
}  // namespace

void corrupt_row(std::span<const std::int32_t> raw, std::span<std::int32_t> source, std::span<std::int32_t> target,
                 const SpanTokens& tokens, const SpanOptions& o, std::uint64_t seed) {
  const SpanLengths l = span_lengths(std::int64_t(raw.size()), o);
  LLMTK_CHECK(std::int64_t(source.size()) == l.source && std::int64_t(target.size()) == l.target, "span corruption",
              "rows of ", raw.size(), " tokens make sources of ", l.source, " and targets of ", l.target, " tokens");
  LLMTK_CHECK(l.spans <= std::int64_t(tokens.sentinels.size()), "span corruption", "a row of ", raw.size(), " tokens has ",
              l.spans, " spans but the tokenizer has ", tokens.sentinels.size(), " sentinels; prepare the data with "
              "[tokenizer] sentinels = ", l.spans, " or more, or shorten train.seq");
  Rng rng(seed);
  const auto noise = random_segmentation(l.noise, l.spans, rng);
  const auto kept = random_segmentation(l.raw - l.noise, l.spans, rng);
  std::size_t at = 0, s = 0, t = 0;
  for (std::int64_t k = 0; k < l.spans; ++k) {
    for (std::int64_t i = 0; i < kept[std::size_t(k)]; ++i) source[s++] = raw[at++];
    const std::int32_t sentinel = tokens.sentinels[std::size_t(k)];
    source[s++] = sentinel, target[t++] = sentinel;
    for (std::int64_t i = 0; i < noise[std::size_t(k)]; ++i) target[t++] = raw[at++];
  }
  source[s] = tokens.eos, target[t] = tokens.eos;
}

SpanBatches::SpanBatches(data::DataLoader& loader, SpanTokens tokens, SpanOptions options, std::uint64_t seed)
    : loader_(loader), tokens_(std::move(tokens)), options_(options), seed_(seed) {
  LLMTK_CHECK(!loader.examples(), "objective", "span-corruption rows are windows of plain text; these shards hold "
              "instruction examples (data prepare kind = \"sft\")");
  const std::size_t B = std::size_t(loader.options().batch);
  lengths_ = span_lengths(loader.options().seq, options_);
  raw_.resize(B * std::size_t(lengths_.raw)), raw_targets_.resize(raw_.size());
  source_.resize(B * std::size_t(lengths_.source));
  decoder_.resize(B * std::size_t(lengths_.target)), targets_.resize(decoder_.size());
}

Batch SpanBatches::next() {
  const data::LoaderPosition at = loader_.position();
  loader_.next(raw_, raw_targets_);
  const std::int64_t B = loader_.options().batch, L = lengths_.raw, S = lengths_.source, T = lengths_.target;
  for (std::int64_t b = 0; b < B; ++b) {
    // "span_cor": (seed, epoch, batch, row in the global batch) mixed, as MaskedBatches does.
    std::uint64_t s = seed_ ^ 0x7370616e5f636f72ull;
    const auto global_row = std::uint64_t(loader_.options().rank * B + b);
    for (const std::uint64_t v : {at.epoch, at.step, global_row}) s = Rng(s ^ (v * 0x9e3779b97f4a7c15ull)).next();
    const std::span<std::int32_t> target(targets_.data() + b * T, std::size_t(T));
    corrupt_row(std::span<const std::int32_t>(raw_.data() + b * L, std::size_t(L)),
                std::span<std::int32_t>(source_.data() + b * S, std::size_t(S)), target, tokens_, options_, s);
    // The decoder reads the target shifted right after its start token.
    decoder_[std::size_t(b * T)] = tokens_.pad;
    std::copy_n(target.begin(), T - 1, decoder_.begin() + b * T + 1);
  }
  Batch batch{{TensorRef(decoder_.data(), DType::i32, {B, T}), {}, {}}, {TensorRef(targets_.data(), DType::i32, {B, T}), {}, {}}};
  batch.inputs.source = TensorRef(source_.data(), DType::i32, {B, S});
  return batch;
}

float SpanLoss::forward(TensorRef logits, const Labels& labels) {
  LLMTK_CHECK(labels.targets.device == Device::host, "span", "targets must be in host memory");
  const float loss = loss_.forward(logits, labels);
  const std::vector<std::int32_t> best = argmax_rows(logits);
  const std::int64_t N = std::int64_t(best.size());
  const std::int32_t* target = labels.targets.i32();
  const std::int64_t T = labels.targets.size(-1);
  std::int64_t counted = 0, right = 0, spans = 0, exact = 0;
  for (std::int64_t row = 0; row * T < N; ++row) {
    bool in_span = false, all_right = true;
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t n = row * T + t;
      const std::int32_t want = target[n];
      if (want == kIgnoreIndex) continue;
      const bool hit = best[std::size_t(n)] == want;
      ++counted, right += hit;
      // A span: the tokens after a sentinel, up to the next sentinel or the end.
      const bool boundary = (std::size_t(want) < is_sentinel_.size() && is_sentinel_[std::size_t(want)]) || t + 1 == T;
      if (boundary) {
        if (in_span) ++spans, exact += all_right;
        in_span = std::size_t(want) < is_sentinel_.size() && is_sentinel_[std::size_t(want)], all_right = true;
      } else if (in_span) {
        all_right = all_right && hit;
      }
    }
  }
  accuracy_ = counted ? double(right) / double(counted) : 0.0;
  span_exact_ = spans ? double(exact) / double(spans) : 0.0;
  return loss;
}

SpanFill fill_spans(AnyModel& model, const data::Tokenizer& tok, const std::string& text, const GenerateOptions& o) {
  const SpanTokens st = span_tokens(tok, "generate");
  SpanFill out;
  for (const data::TokenId id : tok.encode(text, true)) out.source.push_back(id);
  out.source.push_back(st.eos);
  GenerateOptions go = o;
  go.stop_token = st.eos;
  out.output = generate_seq2seq(model, out.source, st.pad, go);
  out.target = tok.decode(out.output);
  // The source again, each sentinel followed by what the model wrote after the same sentinel.
  std::vector<data::TokenId> filled;
  for (std::size_t i = 0; i + 1 < out.source.size(); ++i) {
    const data::TokenId id = out.source[i];
    if (std::size_t(id) >= st.is_sentinel.size() || !st.is_sentinel[std::size_t(id)]) {
      filled.push_back(id);
      continue;
    }
    auto it = std::find(out.output.begin(), out.output.end(), id);
    if (it == out.output.end()) {
      filled.push_back(id);  // the model wrote nothing for it: the sentinel stays
      continue;
    }
    for (++it; it != out.output.end() && !(std::size_t(*it) < st.is_sentinel.size() && st.is_sentinel[std::size_t(*it)]); ++it)
      filled.push_back(*it);
  }
  out.filled = tok.decode(filled);
  return out;
}

std::vector<std::vector<double>> seq2seq_logprobs(AnyModel& model, const std::vector<data::TokenId>& source,
                                                  const std::vector<data::TokenId>& decoder_ids) {
  const std::int64_t S = std::int64_t(source.size()), T = std::int64_t(decoder_ids.size()), V = model.outputs();
  model.plan(1, T, false, S);
  model.allocate();
  std::vector<std::int32_t> src(source.begin(), source.end()), ids(decoder_ids.begin(), decoder_ids.end());
  ModelInputs in{TensorRef(ids.data(), DType::i32, {1, T}), {}, {}};
  in.source = TensorRef(src.data(), DType::i32, {1, S});
  const std::vector<float> logits = outputs_on_host(model.forward(in));
  std::vector<std::vector<double>> out;
  for (std::int64_t t = 0; t < T; ++t) {
    const float* z = logits.data() + t * V;
    double mx = -INFINITY, sum = 0;
    for (std::int64_t v = 0; v < V; ++v) mx = std::max(mx, double(z[v]));
    for (std::int64_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) - mx);
    std::vector<double> row(static_cast<std::size_t>(V));
    for (std::int64_t v = 0; v < V; ++v) row[std::size_t(v)] = double(z[v]) - mx - std::log(sum);
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace llmtk::train
