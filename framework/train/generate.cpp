#include "generate.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "../core/error.hpp"
#include "../core/rng.hpp"

namespace llmtk::train {

std::vector<data::TokenId> generate(AnyModel& model, std::vector<data::TokenId> prompt, const GenerateOptions& o,
                                    const std::function<void(data::TokenId)>& on_token) {
  LLMTK_CHECK(!prompt.empty(), "generate", "the prompt is empty; give at least one token (or start from end-of-text)");
  // The cache holds what this call can use: the prompt plus the new tokens, at most max_seq
  // (a model with a 128k context would otherwise reserve gigabytes for a short sample).
  const std::int64_t V = model.dims().vocab;
  const std::int64_t max_seq = std::min<std::int64_t>(model.context(), std::int64_t(prompt.size()) + o.max_tokens);
  Rng rng(o.seed);
  std::vector<data::TokenId> out;
  std::vector<float> probs(static_cast<std::size_t>(V));
  std::vector<int> order(static_cast<std::size_t>(V));
  model.plan_decode(max_seq);
  model.allocate();
  // Feeds tokens [from, to) of `prompt` at cache positions from `pos` on; returns the last logits.
  std::int64_t pos = 0;
  const float* logits = nullptr;
  auto feed = [&](std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i, ++pos) {
      std::int32_t id = prompt[i];
      logits = model.decode(TensorRef(&id, DType::i32, {1, 1}), pos);
    }
  };
  auto refill = [&] {  // the context is full: restart the cache from the last half
    const std::size_t keep = std::size_t(max_seq / 2);
    pos = 0;
    feed(prompt.size() - keep, prompt.size());
  };
  if (prompt.size() > std::size_t(max_seq)) refill();
  else feed(0, prompt.size());
  for (int n = 0; n < o.max_tokens; ++n) {
    data::TokenId next;
    if (o.temperature <= 0) {
      next = data::TokenId(std::max_element(logits, logits + V) - logits);
    } else {
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
      next = order[keep - 1];
      for (std::size_t i = 0; i < keep; ++i) {
        u -= probs[std::size_t(order[i])];
        if (u <= 0) {
          next = order[i];
          break;
        }
      }
    }
    if (next == o.stop_token) break;
    out.push_back(next);
    prompt.push_back(next);
    if (on_token) on_token(next);
    if (n + 1 == o.max_tokens) break;
    if (pos == max_seq) refill();
    else feed(prompt.size() - 1, prompt.size());
  }
  return out;
}

}  // namespace llmtk::train
