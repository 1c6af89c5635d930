#include "task_eval.hpp"

#include <algorithm>
#include <cmath>

#include "../core/error.hpp"
#include "../core/memory.hpp"
#include "generate.hpp"

namespace llmtk::train {

namespace {

std::string trimmed(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return {};
  const auto b = s.find_last_not_of(" \t\r\n");
  return s.substr(a, b - a + 1);
}

// One record as the model sees it: EOT, the rendered conversation; answer tokens from `first`.
struct Rendered {
  std::vector<data::TokenId> ids;
  std::size_t first = 0;            // index in ids of the answer's first token
  std::vector<data::TokenId> prompt;  // EOT + the prompt + the assistant's header
};

}  // namespace

double TaskResult::exact_match() const {
  std::int64_t n = 0;
  for (const auto& i : items) n += i.exact;
  return items.empty() ? NAN : double(n) / double(items.size());
}

double TaskResult::token_accuracy() const {
  std::int64_t n = 0, hit = 0;
  for (const auto& i : items) n += i.tokens, hit += i.correct;
  return n ? double(hit) / double(n) : NAN;
}

double TaskResult::answer_loss() const {
  std::int64_t n = 0;
  double sum = 0;
  for (const auto& i : items) n += i.tokens, sum += i.loss;
  return n ? sum / double(n) : NAN;
}

TaskResult evaluate_task(AnyModel& model, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                         const std::vector<data::Conversation>& records, const TaskEvalOptions& o) {
  const std::int64_t T = model.context(), V = model.dims().vocab, B = o.batch;
  TaskResult res;
  std::vector<Rendered> seqs;
  for (std::size_t r = 0; r < records.size(); ++r) {
    const auto task = data::split_last_answer(records[r], "record " + std::to_string(r + 1));
    Rendered x;
    x.prompt = tmpl.prompt(tok, task.prompt);
    x.prompt.insert(x.prompt.begin(), tok.eot());
    data::Conversation full = task.prompt;
    full.push_back({"assistant", task.answer});
    const auto enc = tmpl.encode(tok, full);
    x.ids.push_back(tok.eot());
    x.ids.insert(x.ids.end(), enc.ids.begin(), enc.ids.end());
    x.first = x.prompt.size();
    // The answer: its tokens and the end-of-turn marker (what the loss mask marks in training).
    std::size_t end = x.first;
    while (end < x.ids.size() && x.ids[end] != tmpl.end_of_turn(tok)) ++end;
    if (std::int64_t(end) >= T || std::int64_t(x.prompt.size()) + o.max_tokens > T) {
      ++res.skipped;
      continue;
    }
    x.ids.resize(end + 1);
    TaskItem item;
    for (const auto& m : task.prompt)
      if (m.role == "user") item.prompt = m.content;
    item.reference = task.answer;
    res.items.push_back(std::move(item));
    seqs.push_back(std::move(x));
  }

  // Teacher forcing, B rows at a time, padded with end-of-text (causal: padding is never read).
  model.plan(B, T);
  model.allocate();
  std::vector<std::int32_t> ids(std::size_t(B * T));
  std::vector<float> logits(std::size_t(B * T * V));
  for (std::size_t s0 = 0; s0 < seqs.size(); s0 += std::size_t(B)) {
    std::fill(ids.begin(), ids.end(), tok.eot());
    const std::size_t n = std::min<std::size_t>(std::size_t(B), seqs.size() - s0);
    for (std::size_t b = 0; b < n; ++b) std::copy(seqs[s0 + b].ids.begin(), seqs[s0 + b].ids.end(), ids.begin() + std::ptrdiff_t(b * std::size_t(T)));
    const TensorRef out = model.forward(TensorRef(ids.data(), DType::i32, {B, T}));
    LLMTK_CHECK(out.dtype == DType::f32, "eval --task", "the model's logits are ", out.dtype == DType::bf16 ? "bf16" : "not f32",
                "; evaluate in fp32");
    copy_bytes(logits.data(), Device::host, out.data, out.device, logits.size() * sizeof(float));
    for (std::size_t b = 0; b < n; ++b) {
      const Rendered& x = seqs[s0 + b];
      TaskItem& item = res.items[s0 + b];
      for (std::size_t t = x.first; t < x.ids.size(); ++t) {  // position t - 1 predicts token t
        const float* z = logits.data() + (b * std::size_t(T) + t - 1) * std::size_t(V);
        const float mx = *std::max_element(z, z + V);
        double sum = 0;
        for (std::int64_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) - double(mx));
        item.loss += double(mx) + std::log(sum) - double(z[x.ids[t]]);
        item.correct += std::max_element(z, z + V) - z == x.ids[t];
        ++item.tokens;
      }
    }
  }

  // Greedy generation until the end-of-turn marker.
  GenerateOptions g;
  g.max_tokens = o.max_tokens, g.temperature = 0, g.stop_token = tmpl.end_of_turn(tok);
  for (std::size_t s = 0; s < seqs.size(); ++s) {
    const auto out = generate(model, seqs[s].prompt, g);
    TaskItem& item = res.items[s];
    item.output = tok.decode(out);
    item.exact = trimmed(item.output) == trimmed(item.reference);
  }
  return res;
}

}  // namespace llmtk::train
