// Conversations and the chat template that turns them into tokens (docs/sft.md).
//
// A conversation is a list of messages (system, user, assistant). Instruction data comes as JSONL
// in the two formats people have: Alpaca records {"instruction", "input", "output"} and chat
// records {"messages": [{"role", "content"}, ...]}. The template renders a conversation into
// token ids and a loss mask (1 on the tokens the model learns to write: the assistant's replies
// and the marker that ends each), and renders a prompt for generation.
//
// ChatML (the template of Qwen, SmolLM and many others):
//   <|im_start|>user\nContinue: In the beginning<|im_end|>\n<|im_start|>assistant\nGod created ...<|im_end|>\n
// Its markers are special tokens added to the tokenizer; text inside a message is always encoded
// as plain text, so a user who types "<|im_start|>" cannot forge a turn.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer.hpp"

namespace llmtk::data {

struct Message {
  std::string role;  // system, user or assistant
  std::string content;
};
using Conversation = std::vector<Message>;

// One JSONL line (Alpaca or chat messages) as a conversation; `where` ("FILE:LINE") starts every
// error: a missing or non-string field, an unknown role, no assistant turn.
Conversation parse_conversation(std::string_view line, const std::string& where);
// Every non-blank line of a JSONL file, in order.
std::vector<Conversation> read_conversations(const std::string& path);
// Calls `fn(line, "FILE:LINE")` for every non-blank line of `path`; a file that cannot be read
// fails as `who`, with `hint` after the reason.
void for_each_jsonl_line(const std::string& path, const char* who, std::string_view hint,
                         const std::function<void(std::string_view, const std::string&)>& fn);

// The reference answer of a task record: the last assistant message; the prompt is what precedes it.
struct TaskRecord {
  Conversation prompt;
  std::string answer;
};
TaskRecord split_last_answer(const Conversation& c, const std::string& where);

struct EncodedChat {
  std::vector<TokenId> ids;
  std::vector<std::uint8_t> mask;  // 1: counts in the loss
};

class ChatTemplate {
 public:
  // "chatml" (the only template so far); fails listing the names.
  static ChatTemplate named(std::string_view name);
  // The template saved beside a tokenizer (tokenizer_config.json's "llmtk_chat_template"), if any.
  static bool saved_beside(const std::string& tokenizer_path, ChatTemplate& out);

  const std::string& name() const { return name_; }
  std::vector<std::string> special_tokens() const;  // the markers, in the order they are added
  std::string jinja() const;                         // Transformers' chat_template for the same rendering
  // Writes DIR/tokenizer_config.json naming the template (Transformers reads chat_template from it).
  void save_beside(const std::string& dir) const;

  // The whole conversation; with train_on_prompt every token counts.
  EncodedChat encode(const Tokenizer& tok, const Conversation& c, bool train_on_prompt = false) const;
  // The conversation followed by the assistant's header: what generation continues.
  std::vector<TokenId> prompt(const Tokenizer& tok, const Conversation& c) const;
  // The token that ends a reply: generation stops there.
  TokenId end_of_turn(const Tokenizer& tok) const;

 private:
  std::string name_;
  TokenId marker(const Tokenizer& tok, const std::string& text) const;
  void append_header(const Tokenizer& tok, const std::string& role, EncodedChat& out, bool counts) const;
};

inline constexpr std::string_view kImStart = "<|im_start|>";
inline constexpr std::string_view kImEnd = "<|im_end|>";

}  // namespace llmtk::data
