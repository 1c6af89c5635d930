#include "chat.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../core/error.hpp"

namespace llmtk::data {

namespace fs = std::filesystem;

namespace {

std::string string_field(const nlohmann::json& j, const char* key, const std::string& where, bool required) {
  if (!j.contains(key) || j[key].is_null()) {
    LLMTK_CHECK(!required, where, "no field \"", key, "\"; an Alpaca record needs \"instruction\" and \"output\" ",
                "(and may have \"input\"), a chat record needs \"messages\"");
    return {};
  }
  LLMTK_CHECK(j[key].is_string(), where, "field \"", key, "\" must be a string, got ", j[key].type_name());
  return j[key].get<std::string>();
}

}  // namespace

Conversation parse_conversation(std::string_view line, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    fail(where, "not valid JSON: ", e.what());
  }
  LLMTK_CHECK(j.is_object(), where, "a record must be a JSON object, got ", j.type_name());
  Conversation c;
  if (j.contains("messages")) {
    const auto& m = j["messages"];
    LLMTK_CHECK(m.is_array(), where, "\"messages\" must be an array of {\"role\", \"content\"}");
    for (std::size_t i = 0; i < m.size(); ++i) {
      const std::string at = where + " messages[" + std::to_string(i) + "]";
      LLMTK_CHECK(m[i].is_object(), at, "a message must be an object with \"role\" and \"content\"");
      Message msg{string_field(m[i], "role", at, true), string_field(m[i], "content", at, true)};
      LLMTK_CHECK(msg.role == "system" || msg.role == "user" || msg.role == "assistant", at, "role \"", msg.role,
                  "\" is not one of system, user, assistant");
      c.push_back(std::move(msg));
    }
  } else {
    LLMTK_CHECK(j.contains("instruction") || j.contains("output"), where,
                "neither \"messages\" (chat) nor \"instruction\"/\"output\" (Alpaca): not an instruction record");
    std::string user = string_field(j, "instruction", where, true);
    const std::string input = string_field(j, "input", where, false);
    if (!input.empty()) user += "\n\n" + input;
    const std::string system = string_field(j, "system", where, false);
    if (!system.empty()) c.push_back({"system", system});
    c.push_back({"user", std::move(user)});
    c.push_back({"assistant", string_field(j, "output", where, true)});
  }
  bool assistant = false;
  for (const auto& msg : c) assistant |= msg.role == "assistant";
  LLMTK_CHECK(assistant, where, "the conversation has no assistant turn: training needs one to learn from, evaluation one to compare with");
  return c;
}

void for_each_jsonl_line(const std::string& path, const char* who, std::string_view hint,
                         const std::function<void(std::string_view, const std::string&)>& fn) {
  std::ifstream in(path, std::ios::binary);
  LLMTK_CHECK(in.good(), who, "cannot read '", path, "'", hint);
  std::string line;
  std::int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    fn(line, path + ":" + std::to_string(n));
  }
}

std::vector<Conversation> read_conversations(const std::string& path) {
  std::vector<Conversation> out;
  for_each_jsonl_line(path, "instruction data", "", [&](std::string_view line, const std::string& where) {
    out.push_back(parse_conversation(line, where));
  });
  return out;
}

TaskRecord split_last_answer(const Conversation& c, const std::string& where) {
  for (std::size_t i = c.size(); i-- > 0;)
    if (c[i].role == "assistant") return {Conversation(c.begin(), c.begin() + std::ptrdiff_t(i)), c[i].content};
  fail(where, "no assistant turn to compare with");
}

// ---- the template ---------------------------------------------------------------------------

ChatTemplate ChatTemplate::named(std::string_view name) {
  LLMTK_CHECK(name == "chatml", "chat template", "unknown template '", name, "'; known: chatml");
  ChatTemplate t;
  t.name_ = std::string(name);
  return t;
}

bool ChatTemplate::saved_beside(const std::string& tokenizer_path, ChatTemplate& out) {
  fs::path p(tokenizer_path);
  const fs::path cfg = (fs::is_directory(p) ? p : p.parent_path()) / "tokenizer_config.json";
  if (!fs::exists(cfg)) return false;
  std::ifstream in(cfg);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("chat template", "'", cfg.string(), "' is not valid JSON: ", e.what());
  }
  if (!j.is_object() || !j.contains("llmtk_chat_template")) return false;
  LLMTK_CHECK(j["llmtk_chat_template"].is_string(), "chat template", "'", cfg.string(),
              "': llmtk_chat_template must be a string");
  out = named(j["llmtk_chat_template"].get<std::string>());
  return true;
}

std::vector<std::string> ChatTemplate::special_tokens() const { return {std::string(kImStart), std::string(kImEnd)}; }

std::string ChatTemplate::jinja() const {
  return "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
         "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
}

void ChatTemplate::save_beside(const std::string& dir) const {
  const nlohmann::ordered_json j = {{"chat_template", jinja()},
                                    {"llmtk_chat_template", name_},
                                    {"eos_token", std::string(kImEnd)},
                                    {"additional_special_tokens", special_tokens()}};
  const std::string path = (fs::path(dir) / "tokenizer_config.json").string(), tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << j.dump(2) << "\n";
    LLMTK_CHECK(out.good(), "chat template", "writing '", tmp, "' failed (disk full?)");
  }
  fs::rename(tmp, path);
}

TokenId ChatTemplate::marker(const Tokenizer& tok, const std::string& text) const {
  const auto id = tok.special(text);
  LLMTK_CHECK(id.has_value(), "chat template", "the tokenizer has no ", text, " token; prepare the data with ",
              "kind = \"sft\" (llmtk data prepare adds the template's tokens)");
  return *id;
}

// Each piece is encoded on its own (markers as their ids, text as plain text), so training and
// generation see the same ids for the same prompt.
void ChatTemplate::append_header(const Tokenizer& tok, const std::string& role, EncodedChat& out, bool counts) const {
  out.ids.push_back(marker(tok, std::string(kImStart)));
  for (TokenId id : tok.encode(role + "\n")) out.ids.push_back(id);
  out.mask.resize(out.ids.size(), counts ? 1 : 0);
}

EncodedChat ChatTemplate::encode(const Tokenizer& tok, const Conversation& c, bool train_on_prompt) const {
  EncodedChat out;
  const TokenId end = marker(tok, std::string(kImEnd));
  for (const auto& m : c) {
    const bool learn = m.role == "assistant" || train_on_prompt;
    append_header(tok, m.role, out, train_on_prompt);
    for (TokenId id : tok.encode(m.content)) out.ids.push_back(id);
    out.ids.push_back(end);
    out.mask.resize(out.ids.size(), learn ? 1 : 0);
    for (TokenId id : tok.encode("\n")) out.ids.push_back(id);
    out.mask.resize(out.ids.size(), train_on_prompt ? 1 : 0);
  }
  return out;
}

std::vector<TokenId> ChatTemplate::prompt(const Tokenizer& tok, const Conversation& c) const {
  EncodedChat out = encode(tok, c);
  append_header(tok, "assistant", out, false);
  return out.ids;
}

TokenId ChatTemplate::end_of_turn(const Tokenizer& tok) const { return marker(tok, std::string(kImEnd)); }

}  // namespace llmtk::data
