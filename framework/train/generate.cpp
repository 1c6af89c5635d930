#include "generate.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "../core/error.hpp"
#include "../core/memory.hpp"
#include "../core/rng.hpp"

namespace llmtk::train {

namespace {

// One token from the last position's logits: greedy at temperature 0, else sampled from the
// softmax at the temperature, restricted to the top-k and then the top-p most likely tokens.
data::TokenId sample_token(const float* logits, std::int64_t V, const GenerateOptions& o, Rng& rng, std::vector<float>& probs,
                           std::vector<int>& order) {
  if (o.temperature <= 0) return data::TokenId(std::max_element(logits, logits + V) - logits);
  const float mx = *std::max_element(logits, logits + V);
  for (std::int64_t v = 0; v < V; ++v) probs[std::size_t(v)] = float(std::exp((logits[v] - mx) / o.temperature));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return probs[std::size_t(a)] > probs[std::size_t(b)]; });
  std::size_t keep = o.top_k > 0 ? std::min<std::size_t>(std::size_t(o.top_k), order.size()) : order.size();
  double total = 0;
  for (std::size_t i = 0; i < keep; ++i) total += probs[std::size_t(order[i])];
  if (o.top_p < 1.0) {  // the smallest prefix whose mass reaches top_p
    double acc = 0;
    for (std::size_t i = 0; i < keep; ++i) {
      acc += probs[std::size_t(order[i])] / total;
      if (acc >= o.top_p) {
        keep = i + 1;
        break;
      }
    }
    total = 0;
    for (std::size_t i = 0; i < keep; ++i) total += probs[std::size_t(order[i])];
  }
  double u = rng.uniform() * total;
  for (std::size_t i = 0; i < keep; ++i) {
    u -= probs[std::size_t(order[i])];
    if (u <= 0) return order[i];
  }
  return order[keep - 1];
}

// Decoding one sequence: the KV cache in `model`, and the position the next token goes to.
struct Decoder {
  AnyModel& model;
  std::vector<data::TokenId> tokens;  // everything fed so far (the prompt, then the reply)
  std::int64_t max_seq, pos = 0;
  const float* logits = nullptr;

  // Feeds tokens[from, to) at cache positions from pos on; logits are the last one's.
  void feed(std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i, ++pos) {
      std::int32_t id = tokens[i];
      logits = model.decode(TensorRef(&id, DType::i32, {1, 1}), pos);
    }
  }
  void refill() {  // the context is full: restart the cache from the last half
    const std::size_t keep = std::size_t(max_seq / 2);
    pos = 0;
    feed(tokens.size() - keep, tokens.size());
  }
  void start() {
    if (tokens.size() > std::size_t(max_seq)) refill();
    else feed(0, tokens.size());
  }
  // Samples up to max_tokens after what was fed (until stop_token, which is not returned).
  std::vector<data::TokenId> reply(const GenerateOptions& o, const std::function<void(data::TokenId)>& on_token) {
    const std::int64_t V = o.vocab_limit > 0 ? std::min<std::int64_t>(o.vocab_limit, model.dims().vocab) : model.dims().vocab;
    Rng rng(o.seed);
    std::vector<float> probs(static_cast<std::size_t>(V));
    std::vector<int> order(static_cast<std::size_t>(V));
    std::vector<data::TokenId> out;
    for (int n = 0; n < o.max_tokens; ++n) {
      const data::TokenId next = sample_token(logits, V, o, rng, probs, order);
      if (next == o.stop_token) break;
      out.push_back(next);
      tokens.push_back(next);
      if (on_token) on_token(next);
      if (n + 1 == o.max_tokens) break;
      if (pos == max_seq) refill();
      else feed(tokens.size() - 1, tokens.size());
    }
    return out;
  }
};

}  // namespace

std::vector<data::TokenId> generate(AnyModel& model, std::vector<data::TokenId> prompt, const GenerateOptions& o,
                                    const std::function<void(data::TokenId)>& on_token) {
  LLMTK_CHECK(!prompt.empty(), "generate", "the prompt is empty; give at least one token (or start from end-of-text)");
  // The cache holds what this call can use: the prompt plus the new tokens, at most max_seq
  // (a model with a 128k context would otherwise reserve gigabytes for a short sample).
  const std::int64_t max_seq = std::min<std::int64_t>(model.context(), std::int64_t(prompt.size()) + o.max_tokens);
  model.plan_decode(max_seq);
  model.allocate();
  Decoder d{model, std::move(prompt), max_seq};
  d.start();
  return d.reply(o, on_token);
}

std::vector<data::TokenId> generate_seq2seq(AnyModel& model, const std::vector<data::TokenId>& source, data::TokenId start,
                                            const GenerateOptions& o, const std::function<void(data::TokenId)>& on_token) {
  LLMTK_CHECK(model.encoder_decoder(), "generate", model.name(), " is not an encoder-decoder; continue a prompt with generate()");
  LLMTK_CHECK(!source.empty(), "generate", "the source is empty; give the encoder at least one token");
  LLMTK_CHECK(std::int64_t(source.size()) <= model.dims().max_seq, "generate", "the source is ", source.size(),
              " tokens and the encoder reads at most model.max_seq = ", model.dims().max_seq, "; shorten it");
  const std::int64_t max_seq = std::min<std::int64_t>(model.context(), 1 + std::int64_t(o.max_tokens));
  model.plan_decode(max_seq, std::int64_t(source.size()));
  model.allocate();
  std::vector<std::int32_t> ids(source.begin(), source.end());
  model.encode(TensorRef(ids.data(), DType::i32, {1, std::int64_t(ids.size())}));
  Decoder d{model, {start}, max_seq};
  d.start();
  return d.reply(o, on_token);
}

std::vector<std::vector<data::TokenId>> generate_group(AnyModel& model, const std::vector<data::TokenId>& prompt,
                                                       const GenerateOptions& o, const std::vector<std::uint64_t>& seeds) {
  LLMTK_CHECK(!prompt.empty(), "generate", "the prompt is empty; give at least one token (or start from end-of-text)");
  const std::int64_t max_seq = std::min<std::int64_t>(model.context(), std::int64_t(prompt.size()) + o.max_tokens);
  model.plan_decode(max_seq);
  model.allocate();
  Decoder d{model, prompt, max_seq};
  d.start();
  // The state after the prompt: the cache and the last logits live in the activations, so a copy
  // of them is the prompt read once.
  Arena after_prompt = model.acts().like("after prompt");
  after_prompt.allocate(memory_of(model.acts().device()));
  after_prompt.copy_from(model.acts());
  const float* logits = d.logits;
  const std::vector<float> host_logits(logits, logits + model.dims().vocab);  // decode's may be a host buffer it reuses
  std::vector<std::vector<data::TokenId>> out;
  for (const std::uint64_t seed : seeds) {
    model.acts().copy_from(after_prompt);
    Decoder s{model, prompt, max_seq, d.pos, host_logits.data()};
    GenerateOptions so = o;
    so.seed = seed;
    out.push_back(s.reply(so, {}));
  }
  return out;
}

}  // namespace llmtk::train
