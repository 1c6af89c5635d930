// Perplexity with a sliding window and multiple-choice scoring (lm_eval.hpp, docs/evaluation.md).
#include "lm_eval.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../core/error.hpp"
#include "../data/utf8.hpp"
#include "objective.hpp"

namespace llmtk::train {

namespace {
using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
}  // namespace

void require_causal_lm(const AnyModel& model, const std::string& what, const char* command) {
  LLMTK_CHECK(!model.scorer(), command, what, " is a reward model (", model.name(), "): it scores replies and has no "
              "next-token probabilities; use llmtk reward ", what, " --data FILE");
  LLMTK_CHECK(!model.classifier(), command, what, " is a classifier (", model.name(), "); evaluate it with llmtk eval ", what,
              " --task FILE.jsonl of labelled texts");
  LLMTK_CHECK(!model.encoder_decoder(), command, what, " is an encoder-decoder (", model.name(), "), which scores a target "
              "given a source; evaluate its span loss with llmtk eval ", what, " --data SHARDS (docs/encoder-decoder.md)");
  LLMTK_CHECK(!model.has_tag("encoder"), command, what, " is an encoder (", model.name(), "), which has no next-token "
              "probabilities; evaluate its masked-token accuracy with llmtk eval ", what, " --data SHARDS (docs/encoders.md)");
}

double PerplexityResult::perplexity() const { return std::exp(loss()); }

PerplexityResult perplexity(AnyModel& model, const std::vector<data::TokenId>& ids, const PerplexityOptions& o) {
  const char* where = "eval --text";
  const auto N = std::int64_t(ids.size());
  LLMTK_CHECK(N >= 2, where, "the text is ", N == 0 ? "empty" : "one token", "; perplexity needs at least one token to predict");
  const std::int64_t context = model.context();
  const std::int64_t W = o.window > 0 ? o.window : context;
  LLMTK_CHECK(W >= 1 && W <= context, where, "a window of ", W, " tokens is longer than the model's context (", context,
              "); pass --seq ", context, " or less");
  const std::int64_t stride = o.stride > 0 ? o.stride : std::max<std::int64_t>(1, W / 2);
  LLMTK_CHECK(stride <= W, where, "--stride ", stride, " is longer than the window (", W, "): tokens between windows would "
              "never be scored; use a stride of 1 to ", W);
  LLMTK_CHECK(o.batch >= 1, where, "the batch must be at least 1, got ", o.batch);

  // Window k reads ids[begin, end) and predicts ids[begin + 1, end]; it scores ids[first, end],
  // the ones no earlier window scored.
  struct Window {
    std::int64_t begin, end, first;
  };
  std::vector<Window> windows;
  for (std::int64_t begin = 0, first = 1;; begin += stride) {
    const std::int64_t end = std::min(begin + W, N - 1);
    windows.push_back({begin, end, first});
    first = end + 1;
    if (end == N - 1) break;
  }

  PerplexityResult r;
  r.window = W, r.stride = stride, r.windows = std::int64_t(windows.size());
  const auto t0 = Clock::now();
  const std::int64_t B = std::min<std::int64_t>(o.batch, r.windows);
  model.plan(B, W);
  model.allocate();
  TokenLosses losses;
  std::vector<std::int32_t> x(std::size_t(B * W)), y(x.size());
  for (std::size_t s = 0; s < windows.size(); s += std::size_t(B)) {
    std::fill(x.begin(), x.end(), ids[0]);
    std::fill(y.begin(), y.end(), kIgnoreIndex);
    for (std::int64_t b = 0; b < B && s + std::size_t(b) < windows.size(); ++b) {
      const Window& w = windows[s + std::size_t(b)];
      for (std::int64_t t = 0; w.begin + t < w.end; ++t) {
        x[std::size_t(b * W + t)] = ids[std::size_t(w.begin + t)];
        if (w.begin + t + 1 >= w.first) y[std::size_t(b * W + t)] = ids[std::size_t(w.begin + t + 1)];
      }
    }
    const TensorRef xt(x.data(), DType::i32, {B, W}), yt(y.data(), DType::i32, {B, W});
    const auto& l = losses.forward(model.forward({xt, {}, {}}), yt, where);
    for (std::size_t n = 0; n < y.size(); ++n)
      if (y[n] != kIgnoreIndex) r.nll += double(l[n]), ++r.tokens;
  }
  r.seconds = since(t0);
  LLMTK_CHECK(r.tokens == N - 1, where, "scored ", r.tokens, " of ", N - 1, " tokens (a window bookkeeping error)");
  return r;
}

std::string read_text_file(const std::string& path, const char* command) {
  std::ifstream in(path, std::ios::binary);
  LLMTK_CHECK(in.good(), command, "cannot read '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  LLMTK_CHECK(!text.empty(), command, "'", path, "' is empty; give a text file to score");
  const auto nul = text.find('\0');
  LLMTK_CHECK(nul == std::string::npos, command, "'", path, "' is not a text file (a NUL byte at offset ", nul,
              "); --text takes UTF-8 text (token shards go to --data)");
  const std::string_view head(text.data(), std::min<std::size_t>(text.size(), 64 * 1024));
  for (std::size_t i = 0; i < head.size();) {
    const std::size_t at = i;
    // A sequence cut by the 64 KiB boundary is not an error.
    if (data::decode_utf8(head, i) == data::kReplacement && i == at + 1 && head.size() - at >= 4) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", unsigned(static_cast<unsigned char>(head[at])));
      fail(command, "'", path, "' is not UTF-8 text (an invalid byte ", hex, " at offset ", at,
           "); --text takes UTF-8 text (token shards go to --data)");
    }
  }
  return text;
}

// ---- multiple choice ---------------------------------------------------------------------------

bool is_choice_file(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r") != std::string::npos) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      return j.is_object() && j.contains("endings");
    }
  return false;
}

std::vector<ChoiceItem> read_choices(const std::string& path) {
  const char* command = "eval --task";
  std::ifstream in(path);
  LLMTK_CHECK(in.good(), command, "cannot read '", path, "'");
  std::vector<ChoiceItem> items;
  std::string line;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string at = path + ":" + std::to_string(n);
    const auto j = nlohmann::json::parse(line, nullptr, false);
    LLMTK_CHECK(!j.is_discarded() && j.is_object(), command, at, ": not a JSON object; each line is one "
                "{\"context\": \"...\", \"endings\": [\"...\", ...], \"label\": N}");
    for (const char* key : {"context", "endings", "label"})
      LLMTK_CHECK(j.contains(key), command, at, ": no \"", key, "\"; each line is one "
                  "{\"context\": \"...\", \"endings\": [\"...\", ...], \"label\": N}");
    ChoiceItem it;
    it.where = at;
    LLMTK_CHECK(j["context"].is_string(), command, at, ": \"context\" must be a string");
    it.context = j["context"].get<std::string>();
    LLMTK_CHECK(j["endings"].is_array() && j["endings"].size() >= 2, command, at, ": \"endings\" must be a list of at least "
                "two strings");
    for (const auto& e : j["endings"]) {
      LLMTK_CHECK(e.is_string() && !e.get<std::string>().empty(), command, at, ": every ending must be a non-empty string");
      it.endings.push_back(e.get<std::string>());
    }
    LLMTK_CHECK(j["label"].is_number_integer(), command, at, ": \"label\" must be the index of the right ending (an integer)");
    const auto label = j["label"].get<std::int64_t>();
    LLMTK_CHECK(label >= 0 && label < std::int64_t(it.endings.size()), command, at, ": \"label\" is ", label, ", but there are ",
                it.endings.size(), " endings (0 to ", it.endings.size() - 1, ")");
    it.label = int(label);
    items.push_back(std::move(it));
  }
  LLMTK_CHECK(!items.empty(), command, "'", path, "' holds no records");
  return items;
}

ChoiceResult evaluate_choices(AnyModel& model, const data::Tokenizer& tok, const std::vector<ChoiceItem>& items,
                              std::int64_t batch) {
  const char* where = "eval --task";
  LLMTK_CHECK(batch >= 1, where, "the batch must be at least 1, got ", batch);
  const std::int64_t context = model.context();
  // One row per (item, ending): [end of text] + context + ending, the context cut from the left when
  // the row is longer than the model's context; an ending that alone does not fit skips its item.
  struct Row {
    std::size_t item, ending;
    std::vector<data::TokenId> ids;
    std::int64_t scored;  // the last `scored` tokens are the ending's
  };
  std::vector<Row> rows;
  ChoiceResult res;
  res.items.resize(items.size());
  std::int64_t T = 1;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto ctx = tok.encode(items[i].context);
    std::vector<std::vector<data::TokenId>> endings;
    for (const auto& e : items[i].endings) endings.push_back(tok.encode(e));
    const bool fits = std::all_of(endings.begin(), endings.end(),
                                  [&](const auto& e) { return !e.empty() && std::int64_t(e.size()) < context; });
    if (!fits) {
      ++res.skipped;
      continue;
    }
    for (std::size_t k = 0; k < endings.size(); ++k) {
      Row r{i, k, {tok.eot()}, std::int64_t(endings[k].size())};
      r.ids.insert(r.ids.end(), ctx.begin(), ctx.end());
      r.ids.insert(r.ids.end(), endings[k].begin(), endings[k].end());
      if (std::int64_t(r.ids.size()) > context) r.ids.erase(r.ids.begin(), r.ids.end() - context);
      T = std::max(T, std::int64_t(r.ids.size()));
      rows.push_back(std::move(r));
    }
    res.items[i].logp.assign(endings.size(), 0.0);
    res.items[i].tokens.assign(endings.size(), 0);
  }
  if (rows.empty()) return res;
  const auto t0 = Clock::now();
  const std::int64_t B = std::min<std::int64_t>(batch, std::int64_t(rows.size()));
  model.plan(B, T);
  model.allocate();
  TokenLosses losses;
  std::vector<std::int32_t> x(std::size_t(B * T)), y(x.size());
  for (std::size_t s = 0; s < rows.size(); s += std::size_t(B)) {
    std::fill(x.begin(), x.end(), tok.eot());
    std::fill(y.begin(), y.end(), kIgnoreIndex);
    for (std::int64_t b = 0; b < B && s + std::size_t(b) < rows.size(); ++b) {
      const Row& r = rows[s + std::size_t(b)];
      const auto L = std::int64_t(r.ids.size());
      for (std::int64_t t = 0; t < L; ++t) x[std::size_t(b * T + t)] = r.ids[std::size_t(t)];
      for (std::int64_t t = L - r.scored - 1; t + 1 < L; ++t) y[std::size_t(b * T + t)] = r.ids[std::size_t(t + 1)];
    }
    const TensorRef xt(x.data(), DType::i32, {B, T}), yt(y.data(), DType::i32, {B, T});
    const auto& l = losses.forward(model.forward({xt, {}, {}}), yt, where);
    for (std::int64_t b = 0; b < B && s + std::size_t(b) < rows.size(); ++b) {
      const Row& r = rows[s + std::size_t(b)];
      double logp = 0;
      for (std::int64_t t = 0; t < T; ++t)
        if (y[std::size_t(b * T + t)] != kIgnoreIndex) logp -= double(l[std::size_t(b * T + t)]);
      res.items[r.item].logp[r.ending] = logp;
      res.items[r.item].tokens[r.ending] = r.scored;
    }
  }
  double chance = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    ChoiceScore& c = res.items[i];
    if (c.logp.empty()) continue;
    c.by_mean = c.by_total = 0;
    for (std::size_t k = 1; k < c.logp.size(); ++k) {
      if (c.logp[k] / double(c.tokens[k]) > c.logp[std::size_t(c.by_mean)] / double(c.tokens[std::size_t(c.by_mean)]))
        c.by_mean = int(k);
      if (c.logp[k] > c.logp[std::size_t(c.by_total)]) c.by_total = int(k);
    }
    ++res.scored;
    res.correct_mean += c.by_mean == items[i].label;
    res.correct_total += c.by_total == items[i].label;
    chance += 1.0 / double(c.logp.size());
  }
  res.chance = res.scored ? chance / double(res.scored) : 0;
  res.seconds = since(t0);
  return res;
}

Interval wilson_interval(std::int64_t k, std::int64_t n, double z) {
  if (n <= 0) return {0, 1};
  const double p = double(k) / double(n), nn = double(n), z2 = z * z;
  const double denom = 1 + z2 / nn, centre = (p + z2 / (2 * nn)) / denom;
  const double half = z * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / denom;
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

}  // namespace llmtk::train
