#include "preference.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/rng.hpp"

namespace llmtk::train {

namespace {

using json = nlohmann::json;

constexpr const char* kFormat =
    "a preference record is {\"prompt\": TEXT or [messages ending with a user turn], \"chosen\": TEXT or "
    "[one assistant message], \"rejected\": the same}";

// A reply: a string, or a list holding one assistant message (TRL's conversational format).
std::string reply_field(const json& j, const char* key, const std::string& where) {
  LLMTK_CHECK(j.contains(key) && !j[key].is_null(), where, "no field \"", key, "\"; ", kFormat);
  const json& v = j[key];
  std::string text;
  if (v.is_string()) {
    text = v.get<std::string>();
  } else {
    LLMTK_CHECK(v.is_array() && v.size() == 1 && v[0].is_object() && v[0].value("role", "") == "assistant" &&
                    v[0].contains("content") && v[0]["content"].is_string(),
                where, "field \"", key, "\" must be a string or [{\"role\": \"assistant\", \"content\": TEXT}]; ", kFormat);
    text = v[0]["content"].get<std::string>();
  }
  LLMTK_CHECK(!text.empty(), where, "field \"", key, "\" is empty: a reply needs at least one token to compare");
  return text;
}

}  // namespace

PreferencePair parse_preference(std::string_view line, const std::string& where) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {
    fail(where, "not valid JSON: ", e.what());
  }
  LLMTK_CHECK(j.is_object(), where, "a record must be a JSON object, got ", j.type_name(), "; ", kFormat);
  PreferencePair p;
  LLMTK_CHECK(j.contains("prompt") && !j["prompt"].is_null(), where, "no field \"prompt\"; ", kFormat);
  const json& prompt = j["prompt"];
  if (prompt.is_string()) {
    if (j.contains("system") && j["system"].is_string() && !j["system"].get<std::string>().empty())
      p.prompt.push_back({"system", j["system"].get<std::string>()});
    p.prompt.push_back({"user", prompt.get<std::string>()});
  } else {
    LLMTK_CHECK(prompt.is_array(), where, "field \"prompt\" must be a string or a list of messages; ", kFormat);
    // The chat record's parser checks the messages (roles, fields); it wants an assistant turn,
    // so one is added for the check and removed.
    json c = {{"messages", prompt}};
    c["messages"].push_back({{"role", "assistant"}, {"content", ""}});
    p.prompt = data::parse_conversation(c.dump(), where + " prompt");
    p.prompt.pop_back();
  }
  LLMTK_CHECK(!p.prompt.empty() && p.prompt.back().role == "user", where,
              "the prompt must end with a user turn (the replies answer it)");
  p.chosen = reply_field(j, "chosen", where);
  p.rejected = reply_field(j, "rejected", where);
  return p;
}

PreferenceFile read_preferences(const std::string& path) {
  PreferenceFile f;
  data::for_each_jsonl_line(path, "preference data", "; llmtk data synth kjv-book-pref --out FILE writes an example set",
                            [&](std::string_view line, const std::string& where) {
                              PreferencePair p = parse_preference(line, where);
                              if (p.chosen != p.rejected) return f.pairs.push_back(std::move(p));
                              if (f.identical++ == 0) f.first_identical = where;
                            });
  LLMTK_CHECK(!f.pairs.empty(), "preference data", "'", path, "' holds no pairs with different replies",
              f.identical ? " (every record's chosen equals its rejected)" : "");
  return f;
}

namespace {
// EOT + prompt + reply through the template; targets on the reply and its end-of-turn marker
// (positions whose next token is at or after `first`, the reply's first token).
void encode_reply(const data::Tokenizer& tok, const data::ChatTemplate& tmpl, const data::Conversation& prompt,
                  const std::string& reply, std::size_t first, std::vector<std::int32_t>& ids, std::vector<std::int32_t>& tg) {
  data::Conversation c = prompt;
  c.push_back({"assistant", reply});
  const data::EncodedChat chat = tmpl.encode(tok, c);
  std::vector<std::uint8_t> mask = {0};
  ids.push_back(tok.eot());  // every sequence starts with end-of-text, as instruction examples do
  ids.insert(ids.end(), chat.ids.begin(), chat.ids.end());
  mask.insert(mask.end(), chat.mask.begin(), chat.mask.end());
  tg.assign(ids.size(), kIgnoreIndex);
  for (std::size_t t = 0; t + 1 < ids.size(); ++t)
    if (t + 1 >= first && mask[t + 1]) tg[t] = ids[t + 1];
}
// Where a prompt's reply starts: only the last reply counts, earlier assistant turns are context.
std::size_t reply_start(const data::Tokenizer& tok, const data::ChatTemplate& tmpl, const data::Conversation& prompt) {
  return tmpl.prompt(tok, prompt).size() + 1;  // + the leading end-of-text
}
}  // namespace

EncodedPair encode_pair(const data::Tokenizer& tok, const data::ChatTemplate& tmpl, const PreferencePair& pair) {
  EncodedPair e;
  const std::size_t first = reply_start(tok, tmpl, pair.prompt);
  encode_reply(tok, tmpl, pair.prompt, pair.chosen, first, e.ids[0], e.targets[0]);
  encode_reply(tok, tmpl, pair.prompt, pair.rejected, first, e.ids[1], e.targets[1]);
  return e;
}

EncodedPairs encode_pairs(const data::Tokenizer& tok, const data::ChatTemplate& tmpl, const std::vector<PreferencePair>& pairs,
                          std::int64_t seq) {
  EncodedPairs out;
  for (const auto& p : pairs) {
    EncodedPair e = encode_pair(tok, tmpl, p);
    if (std::int64_t(e.longest()) > seq) {
      ++out.too_long;
      continue;
    }
    out.pairs.push_back(std::move(e));
  }
  return out;
}

void fill_pair_rows(const std::vector<const EncodedPair*>& pairs, std::int64_t P, std::int64_t T, std::int32_t pad,
                    std::vector<std::int32_t>& ids, std::vector<std::int32_t>& targets) {
  ids.assign(std::size_t(2 * P * T), pad);
  targets.assign(ids.size(), kIgnoreIndex);
  for (std::size_t j = 0; j < pairs.size() && std::int64_t(j) < P; ++j)
    for (int side = 0; side < 2; ++side) {
      const std::size_t row = std::size_t(side) * std::size_t(P) + j, at = row * std::size_t(T);
      const auto& x = pairs[j]->ids[side];
      const auto& y = pairs[j]->targets[side];
      std::copy(x.begin(), x.end(), ids.begin() + std::ptrdiff_t(at));
      std::copy(y.begin(), y.end(), targets.begin() + std::ptrdiff_t(at));
    }
}

PreferenceBatches::PreferenceBatches(std::vector<EncodedPair> pairs, std::int64_t batch, std::int64_t seq, bool shuffle,
                                     std::uint64_t seed, std::int32_t pad, AnyModel* reference, const std::string& source)
    : pairs_(std::move(pairs)), batch_(batch), seq_(seq), shuffle_(shuffle), seed_(seed), pad_(pad), reference_(reference) {
  LLMTK_CHECK(batches_per_epoch() > 0, source, "only ", pairs_.size(), " pairs fit in rows of ", seq, " tokens, fewer than one batch of ",
              batch, " (train.batch); lower train.batch, add pairs, or raise train.seq if pairs were left out as too long");
}

void PreferenceBatches::seek(data::LoaderPosition p) { pos_ = p; }

void PreferenceBatches::order_epoch() {
  if (ordered_epoch_ == pos_.epoch) return;
  order_.resize(pairs_.size());
  for (std::size_t i = 0; i < order_.size(); ++i) order_[i] = i;
  if (shuffle_) {  // Fisher–Yates from (seed, epoch): the same order on every machine and on resume
    Rng rng(seed_ * 0x9e3779b97f4a7c15ull + pos_.epoch);
    for (std::size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[std::size_t(rng.next() % i)]);
  }
  ordered_epoch_ = pos_.epoch;
}

Batch PreferenceBatches::next() {
  if (pos_.step >= batches_per_epoch()) pos_ = {pos_.epoch + 1, 0};
  order_epoch();
  std::vector<const EncodedPair*> chosen;
  const std::int64_t b = batch_ / world_, first = rank_ * b;  // this rank's pairs of the batch
  for (std::int64_t j = 0; j < b; ++j)
    chosen.push_back(&pairs_[order_[pos_.step * std::uint64_t(batch_) + std::uint64_t(first + j)]]);
  ++pos_.step;
  fill_pair_rows(chosen, b, seq_, pad_, ids_, targets_);
  const std::int64_t R = 2 * b;
  const TensorRef ids(ids_.data(), DType::i32, {R, seq_}), targets(targets_.data(), DType::i32, {R, seq_});
  TensorRef reference;
  if (reference_) {
    // The frozen reference's log-probability of each row, from the same ids (no gradient).
    const auto& losses = reference_losses_.forward(reference_->forward({ids, {}, {}}), targets, "reference model");
    row_logps(losses, targets_.data(), R, seq_, logp_, length_);
    reference_logp_.assign(logp_.begin(), logp_.end());
    reference = TensorRef(reference_logp_.data(), DType::f32, {R});
  }
  return {{ids, {}, {}}, {targets, {}, reference}};
}

PairsResult evaluate_pairs(AnyModel& model, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                           const std::vector<PreferencePair>& pairs, std::int64_t batch) {
  const std::int64_t T = model.context();
  const EncodedPairs enc = encode_pairs(tok, tmpl, pairs, T);
  PairsResult res;
  res.skipped = enc.too_long;
  model.plan(2 * batch, T);
  model.allocate();
  TokenLosses losses;
  std::vector<std::int32_t> ids, targets;
  std::vector<double> logp;
  std::vector<std::int64_t> length;
  double hit = 0, hit_norm = 0, margin = 0, lc = 0, lr = 0;
  for (std::size_t s = 0; s < enc.pairs.size(); s += std::size_t(batch)) {
    std::vector<const EncodedPair*> chunk;
    for (std::size_t j = s; j < std::min(enc.pairs.size(), s + std::size_t(batch)); ++j) chunk.push_back(&enc.pairs[j]);
    fill_pair_rows(chunk, batch, T, tok.eot(), ids, targets);
    const TensorRef x(ids.data(), DType::i32, {2 * batch, T}), y(targets.data(), DType::i32, {2 * batch, T});
    row_logps(losses.forward(model.forward({x, {}, {}}), y, "eval --pairs"), targets.data(), 2 * batch, T, logp, length);
    for (std::size_t j = 0; j < chunk.size(); ++j) {
      const std::size_t c = j, r = std::size_t(batch) + j;
      hit += logp[c] > logp[r];
      hit_norm += logp[c] / double(length[c]) > logp[r] / double(length[r]);
      margin += logp[c] - logp[r], lc += logp[c], lr += logp[r];
    }
  }
  res.pairs = std::int64_t(enc.pairs.size());
  if (res.pairs == 0) return res;
  const double n = double(res.pairs);
  res.accuracy = hit / n, res.normalized_accuracy = hit_norm / n, res.margin = margin / n;
  res.logp_chosen = lc / n, res.logp_rejected = lr / n;
  return res;
}

std::vector<Reply> read_replies(const std::string& path) {
  std::vector<Reply> out;
  data::for_each_jsonl_line(path, "replies", "", [&](std::string_view line, const std::string& where) {
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      fail(where, "not valid JSON: ", e.what());
    }
    if (j.is_object() && j.contains("completion")) {
      // The prompt and the reply as a preference record checks them.
      const json pair = {{"prompt", j.value("prompt", json())}, {"chosen", j["completion"]}, {"rejected", j["completion"]}};
      PreferencePair p = parse_preference(pair.dump(), where);
      return out.push_back({std::move(p.prompt), std::move(p.chosen)});
    }
    LLMTK_CHECK(!(j.is_object() && j.contains("prompt") && !j.contains("chosen")), where, "no field \"completion\": a reply ",
                "to score is {\"prompt\", \"completion\"}, or an instruction record (its last assistant turn is scored)");
    LLMTK_CHECK(!(j.is_object() && j.contains("chosen")), where, "a preference pair; score pairs with --data on the whole file ",
                "of pairs (every line {prompt, chosen, rejected}), or replies as {\"prompt\", \"completion\"}");
    const data::TaskRecord t = data::split_last_answer(data::parse_conversation(line, where), where);
    out.push_back({t.prompt, t.answer});
  });
  LLMTK_CHECK(!out.empty(), "replies", "'", path, "' holds no replies");
  return out;
}

std::vector<double> score_replies(AnyModel& model, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                                  const std::vector<Reply>& replies, std::int64_t batch) {
  LLMTK_CHECK(model.scorer(), model.name(), "is a language model; scores come from a reward model (a score head, trained "
              "with [reward]: docs/alignment.md)");
  const std::int64_t T = model.context();
  model.plan(batch, T);
  model.allocate();
  std::vector<double> scores(replies.size(), NAN);
  std::vector<std::size_t> fits;
  std::vector<std::vector<std::int32_t>> enc_ids, enc_targets;
  for (std::size_t i = 0; i < replies.size(); ++i) {
    std::vector<std::int32_t> x, y;
    encode_reply(tok, tmpl, replies[i].prompt, replies[i].text, reply_start(tok, tmpl, replies[i].prompt), x, y);
    if (std::int64_t(x.size()) > T) continue;
    fits.push_back(i), enc_ids.push_back(std::move(x)), enc_targets.push_back(std::move(y));
  }
  std::vector<std::int32_t> ids, targets;
  for (std::size_t s = 0; s < enc_ids.size(); s += std::size_t(batch)) {
    ids.assign(std::size_t(batch * T), tok.eot());
    targets.assign(ids.size(), kIgnoreIndex);
    const std::size_t end = std::min(enc_ids.size(), s + std::size_t(batch));
    for (std::size_t j = s; j < end; ++j) {
      const std::size_t at = (j - s) * std::size_t(T);
      std::copy(enc_ids[j].begin(), enc_ids[j].end(), ids.begin() + std::ptrdiff_t(at));
      std::copy(enc_targets[j].begin(), enc_targets[j].end(), targets.begin() + std::ptrdiff_t(at));
    }
    const std::vector<float> out = outputs_on_host(model.forward(TensorRef(ids.data(), DType::i32, {batch, T})));
    const auto at = score_positions(targets.data(), batch, T);
    for (std::size_t j = s; j < end; ++j) {
      const std::size_t row = j - s;
      scores[fits[j]] = out[row * std::size_t(T) + std::size_t(at[row])];
    }
  }
  return scores;
}

RewardPairsResult evaluate_reward_pairs(AnyModel& model, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                                        const std::vector<PreferencePair>& pairs, std::int64_t batch) {
  std::vector<Reply> replies;  // the chosen replies, then the rejected ones: one pass of the model
  for (const auto& p : pairs) replies.push_back({p.prompt, p.chosen});
  for (const auto& p : pairs) replies.push_back({p.prompt, p.rejected});
  const std::vector<double> scores = score_replies(model, tok, tmpl, replies, batch);
  const double* rc = scores.data();
  const double* rr = scores.data() + pairs.size();
  RewardPairsResult res;
  double hit = 0, margin = 0, c = 0, r = 0;
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    if (std::isnan(rc[i]) || std::isnan(rr[i])) {
      ++res.skipped;
      continue;
    }
    ++res.pairs, hit += rc[i] > rr[i], margin += rc[i] - rr[i], c += rc[i], r += rr[i];
  }
  if (res.pairs == 0) return res;
  const double n = double(res.pairs);
  res.accuracy = hit / n, res.margin = margin / n, res.chosen = c / n, res.rejected = r / n;
  return res;
}

}  // namespace llmtk::train
