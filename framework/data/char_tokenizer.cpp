#include "char_tokenizer.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "../core/error.hpp"

namespace llmtk::data {

CharTokenizer CharTokenizer::train(std::span<const std::string> texts, std::vector<std::string> special_tokens) {
  std::set<char32_t> seen;
  for (const auto& t : texts)
    for (std::size_t i = 0; i < t.size();) seen.insert(decode_utf8(t, i));
  CharTokenizer tok;
  tok.chars_.assign(seen.begin(), seen.end());
  for (std::size_t i = 0; i < tok.chars_.size(); ++i) tok.ids_[tok.chars_[i]] = TokenId(i);
  for (auto& s : special_tokens)
    tok.specials_.emplace_back(std::move(s), TokenId(tok.chars_.size() + tok.specials_.size()));
  return tok;
}

std::vector<TokenId> CharTokenizer::encode(std::string_view text, bool allow_special) const {
  std::vector<TokenId> out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    if (allow_special) {
      bool hit = false;
      for (const auto& [s, id] : specials_)
        if (text.substr(i).starts_with(s)) {
          out.push_back(id), i += s.size(), hit = true;
          break;
        }
      if (hit) continue;
    }
    auto it = ids_.find(decode_utf8(text, i));
    out.push_back(it == ids_.end() ? unknown() : it->second);
  }
  return out;
}

std::string CharTokenizer::token_bytes(TokenId id) const {
  LLMTK_CHECK(id >= 0 && id < vocab_size(), "decode", "token id ", id, " is outside [0, ", vocab_size(), ")");
  std::string s;
  if (id < TokenId(chars_.size())) append_utf8(s, chars_[id]);
  else if (id == unknown()) append_utf8(s, 0xFFFD);
  else s = specials_[std::size_t(id) - chars_.size()].first;
  return s;
}

std::string CharTokenizer::decode(std::span<const TokenId> ids) const {
  std::string out;
  for (TokenId id : ids) out += token_bytes(id);
  return out;
}

std::optional<TokenId> CharTokenizer::special(std::string_view text) const {
  for (const auto& [s, id] : specials_)
    if (s == text) return id;
  return std::nullopt;
}

TokenId CharTokenizer::add_special(const std::string& text) {
  if (auto id = special(text)) return *id;
  // The unknown token's id follows the specials, so a new special would renumber it and break
  // every shard and model made with this tokenizer.
  fail("tokenizer", "cannot add the special token '", text, "' to a character tokenizer (its unknown-character id ",
       "would move); prepare the data with a BPE tokenizer ([tokenizer] kind = \"bpe\")");
}

std::uint64_t CharTokenizer::hash() const {
  Fnv1a h;
  h.add("char;");
  for (char32_t c : chars_) h.add(std::to_string(std::uint32_t(c)) + ",");
  for (const auto& [s, id] : specials_) h.add_sized(s);
  return h.h;
}

void CharTokenizer::save(const std::string& path) const {
  nlohmann::ordered_json j;
  j["type"] = "llmtk-char";
  j["version"] = 1;
  std::vector<std::uint32_t> cps(chars_.begin(), chars_.end());
  j["code_points"] = cps;
  std::vector<std::string> specials;
  for (const auto& [s, id] : specials_) specials.push_back(s);
  j["special_tokens"] = specials;
  std::ofstream out(path + ".tmp");
  LLMTK_CHECK(out.good(), "tokenizer save", "cannot write '", path, ".tmp'");
  out << j.dump(1) << "\n";
  out.close();
  LLMTK_CHECK(std::rename((path + ".tmp").c_str(), path.c_str()) == 0, "tokenizer save", "cannot rename to '", path, "'");
}

CharTokenizer CharTokenizer::from_json(const std::string& path) {
  std::ifstream in(path);
  LLMTK_CHECK(in.good(), "tokenizer", "cannot open '", path, "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer", "'", path, "' is not valid JSON: ", e.what());
  }
  LLMTK_CHECK(j.value("type", "") == "llmtk-char", "tokenizer", "'", path, "' is not a character tokenizer");
  CharTokenizer tok;
  for (const auto& v : j.at("code_points")) {
    LLMTK_CHECK(v.is_number_unsigned() && v.get<std::uint64_t>() <= 0x10FFFF, "tokenizer", "'", path, "': code point ",
                v.dump(), " is not a Unicode code point (0 to 0x10FFFF)");
    const auto cp = v.get<std::uint32_t>();
    LLMTK_CHECK(!tok.ids_.count(cp), "tokenizer", "'", path, "': code point ", cp, " is listed twice");
    tok.ids_[cp] = TokenId(tok.chars_.size());
    tok.chars_.push_back(cp);
  }
  for (auto& s : j.at("special_tokens").get<std::vector<std::string>>())
    tok.specials_.emplace_back(s, TokenId(tok.chars_.size() + tok.specials_.size()));
  return tok;
}

}  // namespace llmtk::data
