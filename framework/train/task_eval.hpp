// `llmtk eval RUN --task FILE.jsonl`: how well a chat model answers held-out instructions
// (docs/sft.md). Each record's last assistant message is the reference; what precedes it is the
// prompt. Three numbers, each with what it can and cannot say:
//   exact match     greedy decoding (up to max_tokens, until the end-of-turn marker) gives the
//                   reference exactly, after trimming surrounding spaces: all or nothing
//   token accuracy  with the reference fed in (teacher forcing), the share of its tokens (and the
//                   end-of-turn marker) that are the model's most likely next token: partial credit
//   answer loss     the mean cross-entropy over the same tokens: how surprised the model is by the
//                   right answer, meaningful even when nothing is generated right
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "../data/chat.hpp"
#include "../models/model.hpp"

namespace llmtk::train {

struct TaskEvalOptions {
  int max_tokens = 32;        // generated per answer
  std::int64_t batch = 8;     // rows per teacher-forced forward
};

struct TaskItem {
  std::string prompt, reference, output;  // the last user message, the reference, what was generated
  bool exact = false;
  std::int64_t tokens = 0, correct = 0;   // answer tokens (with the end marker), argmax hits
  double loss = 0;                        // summed over the answer tokens
};

struct TaskResult {
  std::vector<TaskItem> items;
  std::int64_t skipped = 0;  // longer than the model's max_seq
  double exact_match() const;
  double token_accuracy() const;
  double answer_loss() const;
};

// The model is re-planned (batch × max_seq for the teacher-forced pass, then for decoding). Every
// sequence starts with end-of-text, as examples do in instruction shards.
TaskResult evaluate_task(AnyModel& model, const data::Tokenizer& tok, const data::ChatTemplate& tmpl,
                         const std::vector<data::Conversation>& records, const TaskEvalOptions& o);

}  // namespace llmtk::train
