// Sampling text from a model: temperature, top-k and top-p (nucleus) over the last position's
// logits, one token at a time. Each step runs the model on the context so far (up to max_seq
// tokens); there is no KV cache yet, so a step costs a forward pass over the whole context.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "../data/tokenizer.hpp"
#include "../models/model.hpp"

namespace llmtk::train {

struct GenerateOptions {
  int max_tokens = 64;
  double temperature = 0.8;  // 0: greedy
  int top_k = 40;            // 0: off
  double top_p = 0.95;       // 1: off
  std::uint64_t seed = 1;
  int stop_token = -1;       // stop when sampled (e.g. end of text)
};

// Continues `prompt` with up to max_tokens tokens; on_token is called for each as it is sampled.
// `model` must be allocated with batch 1; it is re-planned to the context length it needs.
std::vector<data::TokenId> generate(AnyModel& model, std::vector<data::TokenId> prompt, const GenerateOptions& o,
                                    const std::function<void(data::TokenId)>& on_token = {});

}  // namespace llmtk::train
