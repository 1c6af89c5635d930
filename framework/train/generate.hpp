// Sampling text from a model: temperature, top-k and top-p (nucleus) over the last position's
// logits, one token at a time. Decoding keeps every layer's keys and values in a KV cache, so a
// step runs the model on one token. When the context reaches max_seq, the last half is re-read
// into a fresh cache (a sliding window).
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
  std::int64_t vocab_limit = 0;  // > 0: sample only ids below it (a model whose vocabulary is
                                 // padded past its tokenizer's)
};

// Continues `prompt` with up to max_tokens tokens; on_token is called for each as it is sampled.
// `model` is re-planned for decoding (batch 1, a KV cache of min(max_seq, prompt + max_tokens)
// positions) and allocated.
std::vector<data::TokenId> generate(AnyModel& model, std::vector<data::TokenId> prompt, const GenerateOptions& o,
                                    const std::function<void(data::TokenId)>& on_token = {});

// An encoder-decoder: the encoder reads `source` once, then the decoder writes up to max_tokens
// tokens after `start` (its decoder start token), with its KV cache and each cross-attention
// layer's keys and values of the source kept.
std::vector<data::TokenId> generate_seq2seq(AnyModel& model, const std::vector<data::TokenId>& source, data::TokenId start,
                                            const GenerateOptions& o, const std::function<void(data::TokenId)>& on_token = {});

// Several replies to one prompt, one per seed (each as generate() with o.seed = that seed would
// sample it): the prompt is read once and the KV cache after it restored for every reply, which
// makes RL's groups of replies cheap.
std::vector<std::vector<data::TokenId>> generate_group(AnyModel& model, const std::vector<data::TokenId>& prompt,
                                                       const GenerateOptions& o, const std::vector<std::uint64_t>& seeds);

}  // namespace llmtk::train
