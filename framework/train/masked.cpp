#include "masked.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "../core/error.hpp"
#include "../core/rng.hpp"

namespace llmtk::train {

MlmTokens mlm_tokens(const data::Tokenizer& tok, const std::string& where) {
  MlmTokens t;
  std::string missing;
  std::int32_t* ids[] = {&t.pad, &t.cls, &t.sep, &t.mask};
  for (int i = 0; i < 4; ++i) {
    if (const auto id = tok.special(kMlmSpecials[i])) *ids[i] = std::int32_t(*id);
    else missing += (missing.empty() ? "" : ", ") + std::string(kMlmSpecials[i]);
  }
  LLMTK_CHECK(missing.empty(), where, "the tokenizer has no ", missing, ": a masked language model needs [PAD], [CLS], "
              "[SEP] and [MASK]; prepare the data with [tokenizer] special = [\"[PAD]\", \"[CLS]\", \"[SEP]\", \"[MASK]\"] "
              "(recipes/data/kjv-mlm.toml)");
  t.special.assign(std::size_t(tok.vocab_size()), false);
  for (const auto& [text, id] : tok.specials()) t.special[std::size_t(id)] = true;
  for (std::int32_t id = 0; id < tok.vocab_size(); ++id)
    if (!t.special[std::size_t(id)]) t.ordinary.push_back(id);
  LLMTK_CHECK(!t.ordinary.empty(), where, "the tokenizer has only special tokens");
  return t;
}

std::int64_t mask_row(std::span<std::int32_t> ids, std::span<std::int32_t> targets, const MlmTokens& tokens,
                      const MaskingOptions& o, std::uint64_t seed) {
  Rng rng(seed);
  std::int64_t selected = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int32_t id = ids[i];
    const bool special = id < 0 || std::size_t(id) >= tokens.special.size() || tokens.special[std::size_t(id)];
    // Two draws per position whatever happens, so one position's outcome never shifts another's.
    const double pick = rng.uniform(), how = rng.uniform();
    const std::uint64_t which = rng.next();
    if (special || pick >= o.rate) {
      targets[i] = kIgnoreIndex;
      continue;
    }
    ++selected;
    targets[i] = id;
    if (how < o.mask) ids[i] = tokens.mask;
    else if (how < o.mask + o.random) ids[i] = tokens.ordinary[std::size_t(which % tokens.ordinary.size())];
  }
  return selected;
}

MaskedBatches::MaskedBatches(data::DataLoader& loader, MlmTokens tokens, MaskingOptions options, std::uint64_t seed)
    : loader_(loader), tokens_(std::move(tokens)), options_(options), seed_(seed) {
  LLMTK_CHECK(!loader.examples(), "objective", "masked-language-model rows are windows of plain text; these shards hold "
              "instruction examples (data prepare kind = \"sft\")");
  const std::size_t B = std::size_t(loader.options().batch), S = std::size_t(loader.options().seq);
  raw_.resize(B * S), raw_targets_.resize(B * S);
  ids_.resize(B * (S + 2)), targets_.resize(B * (S + 2));
}

Batch MaskedBatches::next() {
  const data::LoaderPosition at = loader_.position();
  loader_.next(raw_, raw_targets_);
  const std::int64_t B = loader_.options().batch, S = loader_.options().seq, T = S + 2;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::span<std::int32_t> row(ids_.data() + b * T, std::size_t(T)), target(targets_.data() + b * T, std::size_t(T));
    row[0] = tokens_.cls;
    std::copy_n(raw_.begin() + b * S, S, row.begin() + 1);
    row[std::size_t(T - 1)] = tokens_.sep;
    // One stream of choices per row of each batch: (seed, epoch, batch, row) mixed, the row
    // counted in the global batch, so that data-parallel ranks mask their rows as one process would.
    std::uint64_t s = seed_ ^ 0x6d6c6d5f6d61736bull;  // "mlm_mask"
    const auto global_row = std::uint64_t(loader_.options().rank * B + b);
    for (const std::uint64_t v : {at.epoch, at.step, global_row}) s = Rng(s ^ (v * 0x9e3779b97f4a7c15ull)).next();
    mask_row(row, target, tokens_, options_, s);
  }
  return {{TensorRef(ids_.data(), DType::i32, {B, T}), {}, {}}, {TensorRef(targets_.data(), DType::i32, {B, T}), {}, {}}};
}

std::vector<std::int32_t> argmax_rows(TensorRef logits) {
  // On the host: the logits' rows are read once (on a device, or in bf16, copied back first).
  const std::int64_t N = logits.rows(), V = logits.size(-1);
  std::vector<float> copy;
  const float* x = nullptr;
  if (logits.device == Device::host && logits.dtype == DType::f32) x = logits.f32();
  else copy = outputs_on_host(logits), x = copy.data();
  std::vector<std::int32_t> best(static_cast<std::size_t>(N));
  for (std::int64_t n = 0; n < N; ++n) {
    const float* row = x + n * V;
    best[std::size_t(n)] = std::int32_t(std::max_element(row, row + V) - row);
  }
  return best;
}

float MaskedTokenLoss::forward(TensorRef logits, const Labels& labels) {
  LLMTK_CHECK(labels.targets.device == Device::host, "mlm", "targets must be in host memory");
  const float loss = loss_.forward(logits, labels);
  const std::vector<std::int32_t> best = argmax_rows(logits);
  const std::int32_t* target = labels.targets.i32();
  std::int64_t counted = 0, right = 0;
  for (std::size_t n = 0; n < best.size(); ++n) {
    if (target[n] == kIgnoreIndex) continue;
    ++counted;
    right += best[n] == target[n];
  }
  accuracy_ = counted ? double(right) / double(counted) : 0.0;
  return loss;
}

MaskFill fill_mask(AnyModel& model, const data::Tokenizer& tok, const std::string& text, int k) {
  const MlmTokens mlm = mlm_tokens(tok, "fill-mask");
  std::vector<std::int32_t> ids{mlm.cls};
  for (const data::TokenId id : tok.encode(text, true)) ids.push_back(std::int32_t(id));
  ids.push_back(mlm.sep);
  const std::int64_t T = std::int64_t(ids.size());
  LLMTK_CHECK(std::count(ids.begin(), ids.end(), mlm.mask) > 0, "fill-mask", "the text has no [MASK]: write [MASK] where "
              "the model should predict a token (\"And God [MASK] unto Moses\")");
  LLMTK_CHECK(T <= model.context(), "fill-mask", "the text is ", T - 2, " tokens and the model reads at most ",
              model.context() - 2, " between [CLS] and [SEP]; shorten it");
  model.plan(1, T);
  const std::vector<float> logits = outputs_on_host(model.forward(TensorRef(ids.data(), DType::i32, {1, T})));
  const std::int64_t V = model.dims().vocab;
  MaskFill out;
  std::vector<data::TokenId> filled;
  for (std::int64_t t = 1; t + 1 < T; ++t) {
    if (ids[std::size_t(t)] != mlm.mask) {
      filled.push_back(ids[std::size_t(t)]);
      continue;
    }
    const float* z = logits.data() + t * V;
    double zmax = -INFINITY, zsum = 0;  // the model's own distribution, every token
    for (std::int64_t v = 0; v < V; ++v) zmax = std::max(zmax, double(z[v]));
    for (std::int64_t v = 0; v < V; ++v) zsum += std::exp(double(z[v]) - zmax);
    std::vector<double> lp(static_cast<std::size_t>(V));
    for (std::int64_t v = 0; v < V; ++v) lp[std::size_t(v)] = double(z[v]) - zmax - std::log(zsum);
    out.positions.push_back(t);
    out.logprobs.push_back(std::move(lp));
    // Softmax over the ordinary tokens (the specials are not answers), the k largest first.
    double mx = -INFINITY, sum = 0;
    for (const std::int32_t v : mlm.ordinary) mx = std::max(mx, double(z[v]));
    for (const std::int32_t v : mlm.ordinary) sum += std::exp(double(z[v]) - mx);
    std::vector<std::int32_t> order = mlm.ordinary;
    const std::size_t top = std::min(order.size(), std::size_t(std::max(k, 1)));
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(top), order.end(),
                      [&](std::int32_t a, std::int32_t b) { return z[a] > z[b] || (z[a] == z[b] && a < b); });
    std::vector<MaskFill::Guess> guesses;
    for (std::size_t i = 0; i < top; ++i)
      guesses.push_back({tok.decode(std::vector<data::TokenId>{order[i]}), order[i], std::exp(double(z[order[i]]) - mx) / sum});
    out.guesses.push_back(std::move(guesses));
    filled.push_back(order[0]);
  }
  out.text = tok.decode(filled);
  out.ids = std::move(ids);
  return out;
}

std::string MaskFill::describe() const {
  std::string s = text;
  for (std::size_t m = 0; m < guesses.size(); ++m) {
    s += "\n  [MASK] " + std::to_string(m + 1) + ":";
    for (const auto& g : guesses[m]) {
      char p[32];
      std::snprintf(p, sizeof p, " %.3f", g.probability);
      std::string shown;  // control characters as escapes, so each guess stays on its line
      for (const char ch : g.token) shown += ch == '\n' ? std::string("\\n") : ch == '\t' ? std::string("\\t") : std::string(1, ch);
      s += " '" + shown + "'" + p;
    }
  }
  return s;
}

}  // namespace llmtk::train
