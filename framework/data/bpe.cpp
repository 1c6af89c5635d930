// Byte-level BPE: encoding, decoding, GPT-2 and Hugging Face files. Training is in bpe_train.cpp.
#include "bpe.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>

#include "../core/error.hpp"
#include "../core/json_number.hpp"
#include "utf8.hpp"

namespace llmtk::data {

namespace {

// GPT-2's byte ↔ character table: printable Latin-1 bytes map to themselves, the other 68 bytes
// to U+0100.. in order, so every token prints as visible text ("Ġ" is a leading space).
struct ByteTable {
  std::array<char32_t, 256> to_cp{};
  std::unordered_map<char32_t, unsigned char> from_cp;
  ByteTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      to_cp[b] = printable ? char32_t(b) : char32_t(256 + n++);
      from_cp[to_cp[b]] = static_cast<unsigned char>(b);
    }
  }
};
const ByteTable& byte_table() {
  static const ByteTable t;
  return t;
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  LLMTK_CHECK(in.good(), what, "cannot open '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

nlohmann::json parse_json(const std::string& path, const char* what) {
  std::string text = read_file(path, what);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(what, "'", path, "' is not valid JSON: ", e.what());
  }
}

// A token id from JSON: a whole number in [0, 2^31) (core/json_number.hpp).
TokenId json_id(const nlohmann::json& v, const char* what, const std::string& path, std::string_view token) {
  const auto id = whole<TokenId>(v, cat(what, ": '", path, "', the id of token '", token, "'"));
  LLMTK_CHECK(id >= 0, what, "'", path, "': the id of token '", token, "' is ", id, "; ids are whole numbers from 0");
  return id;
}

}  // namespace

std::string byte_to_unicode(unsigned char b) {
  std::string s;
  append_utf8(s, byte_table().to_cp[b]);
  return s;
}

std::string unicode_to_bytes(std::string_view s) {
  std::string out;
  const auto& t = byte_table();
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    char32_t cp;
    int len;
    if (c < 0x80) cp = c, len = 1;
    else if ((c >> 5) == 6) cp = c & 0x1F, len = 2;
    else if ((c >> 4) == 14) cp = c & 0x0F, len = 3;
    else cp = c & 0x07, len = 4;
    LLMTK_CHECK(i + len <= s.size(), "bpe vocab", "truncated UTF-8 in token '", s, "'");
    for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    auto it = t.from_cp.find(cp);
    LLMTK_CHECK(it != t.from_cp.end(), "bpe vocab", "token '", s,
                "' has a character outside GPT-2's byte table; is this a byte-level BPE vocabulary?");
    out += static_cast<char>(it->second);
    i += static_cast<std::size_t>(len);
  }
  return out;
}

void BpeTokenizer::add_token(std::string bytes) {
  const TokenId id = static_cast<TokenId>(tokens_.size());
  ids_.emplace(bytes, id);
  tokens_.push_back(std::move(bytes));
}

void BpeTokenizer::add_merge(TokenId a, TokenId b) {
  auto it = ids_.find(tokens_[a] + tokens_[b]);
  LLMTK_CHECK(it != ids_.end(), "bpe merges", "merge '", tokens_[a], "' + '", tokens_[b],
              "' makes a token that is not in the vocabulary");
  merge_of_.emplace(key(a, b), Merge{static_cast<int>(merges_.size()), it->second});
  merges_.emplace_back(a, b);
}

void BpeTokenizer::finish() {
  for (int b = 0; b < 256; ++b) {
    auto it = ids_.find(std::string(1, static_cast<char>(b)));
    LLMTK_CHECK(it != ids_.end(), "bpe vocab", "byte ", b,
                " has no token; a byte-level vocabulary needs all 256 bytes");
    byte_ids_[b] = it->second;
  }
}

// Merges inside one piece: a linked list of symbols and a heap of candidate pairs by (rank,
// position), so a long piece (a run of spaces) costs O(n log n), not O(n²). Popping the lowest
// rank, leftmost first, merges exactly as GPT-2's encoder.py does.
void BpeTokenizer::encode_piece(std::string_view piece, std::vector<TokenId>& out) const {
  const int n = static_cast<int>(piece.size());
  if (n == 0) return;
  if (n == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  std::vector<TokenId> sym(static_cast<std::size_t>(n));
  std::vector<int> prev(sym.size()), next(sym.size());
  for (int i = 0; i < n; ++i) {
    sym[i] = byte_ids_[static_cast<unsigned char>(piece[i])];
    prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
  }
  using Cand = std::pair<int, int>;  // (rank, left position)
  std::priority_queue<Cand, std::vector<Cand>, std::greater<>> heap;
  auto push = [&](int i) {
    if (i < 0 || next[i] < 0) return;
    auto it = merge_of_.find(key(sym[i], sym[next[i]]));
    if (it != merge_of_.end()) heap.emplace(it->second.rank, i);
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    auto [rank, i] = heap.top();
    heap.pop();
    if (sym[i] < 0 || next[i] < 0) continue;  // merged away since it was pushed
    auto it = merge_of_.find(key(sym[i], sym[next[i]]));
    if (it == merge_of_.end() || it->second.rank != rank) continue;  // a stale pair
    const int j = next[i];
    sym[i] = it->second.result;
    sym[j] = -1;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    push(prev[i]);
    push(i);
  }
  for (int i = 0; i >= 0; i = next[i]) out.push_back(sym[i]);
}

void BpeTokenizer::encode_plain(std::string_view text, std::vector<TokenId>& out) const {
  // Words repeat: remember each distinct piece's ids for this call (keys point into `text`, which
  // outlives the map). Small texts skip the map.
  if (text.size() < 4096) {
    pre_.split(text, [&](std::string_view piece) { encode_piece(piece, out); });
    return;
  }
  std::unordered_map<std::string_view, std::pair<std::size_t, std::size_t>> seen;  // piece → (start, count) in out
  pre_.split(text, [&](std::string_view piece) {
    auto [it, fresh] = seen.try_emplace(piece);
    if (!fresh) {
      const auto [start, count] = it->second;
      for (std::size_t i = 0; i < count; ++i) out.push_back(out[start + i]);
      return;
    }
    const std::size_t start = out.size();
    encode_piece(piece, out);
    it->second = {start, out.size() - start};
  });
}

std::vector<TokenId> BpeTokenizer::encode(std::string_view text, bool allow_special) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3);
  if (!allow_special || specials_.empty()) {
    encode_plain(text, out);
    return out;
  }
  while (!text.empty()) {
    std::size_t best = std::string_view::npos;
    const std::pair<std::string, TokenId>* which = nullptr;
    for (const auto& s : specials_) {
      auto p = text.find(s.first);
      if (p < best) best = p, which = &s;
    }
    if (!which) break;
    encode_plain(text.substr(0, best), out);
    out.push_back(which->second);
    text.remove_prefix(best + which->first.size());
  }
  encode_plain(text, out);
  return out;
}

std::string BpeTokenizer::decode(std::span<const TokenId> ids) const {
  std::string out;
  for (TokenId id : ids) out += token_bytes(id);
  return out;
}

std::string BpeTokenizer::token_bytes(TokenId id) const {
  LLMTK_CHECK(id >= 0 && id < vocab_size(), "decode", "token id ", id, " is outside [0, ",
              vocab_size(), ")");
  return tokens_[id];
}

std::optional<TokenId> BpeTokenizer::special(std::string_view text) const {
  for (const auto& s : specials_)
    if (s.first == text) return s.second;
  return std::nullopt;
}

TokenId BpeTokenizer::add_special(const std::string& text) {
  if (auto id = special(text)) return *id;
  LLMTK_CHECK(!text.empty(), "tokenizer", "a special token cannot be empty");
  const TokenId id = vocab_size();
  tokens_.push_back(text);  // like the end-of-text token: not reachable by merges, so not in ids_
  specials_.emplace_back(text, id);
  return id;
}

std::uint64_t BpeTokenizer::hash() const {
  Fnv1a h;
  h.add("bpe;");
  h.add_sized(pre_.pattern());
  for (const auto& t : tokens_) h.add_sized(t);
  for (auto [a, b] : merges_) h.add(std::to_string(a) + "," + std::to_string(b) + ";");
  for (const auto& [s, id] : specials_) h.add_sized(s + "=" + std::to_string(id));
  return h.h;
}

// ---- GPT-2 files ------------------------------------------------------------------------------

BpeTokenizer BpeTokenizer::from_gpt2_files(const std::string& encoder_json, const std::string& vocab_bpe) {
  const auto enc = parse_json(encoder_json, "gpt2 encoder.json");
  LLMTK_CHECK(enc.is_object(), "gpt2 encoder.json", "'", encoder_json, "' must map tokens to ids");
  BpeTokenizer t;
  std::vector<std::pair<TokenId, std::string>> by_id;
  for (auto it = enc.begin(); it != enc.end(); ++it)
    by_id.emplace_back(json_id(it.value(), "gpt2 encoder.json", encoder_json, it.key()), it.key());
  std::sort(by_id.begin(), by_id.end());
  for (std::size_t i = 0; i < by_id.size(); ++i) {
    LLMTK_CHECK(by_id[i].first == TokenId(i), "gpt2 encoder.json", "ids must be 0..", by_id.size() - 1,
                " without gaps; id ", i, " is missing");
    if (by_id[i].second == kEndOfText) {
      t.specials_.emplace_back(by_id[i].second, TokenId(i));
      t.tokens_.push_back(by_id[i].second);  // not reachable by merges, so not in ids_
    } else {
      t.add_token(unicode_to_bytes(by_id[i].second));
    }
  }
  std::istringstream merges(read_file(vocab_bpe, "gpt2 vocab.bpe"));
  std::string line;
  int lineno = 0;
  while (std::getline(merges, line)) {
    ++lineno;
    if (line.empty() || line.starts_with("#version")) continue;
    auto sp = line.find(' ');
    LLMTK_CHECK(sp != std::string::npos, "gpt2 vocab.bpe", vocab_bpe, ":", lineno, ": expected 'left right'");
    auto a = t.ids_.find(unicode_to_bytes(line.substr(0, sp)));
    auto b = t.ids_.find(unicode_to_bytes(line.substr(sp + 1)));
    LLMTK_CHECK(a != t.ids_.end() && b != t.ids_.end(), "gpt2 vocab.bpe", vocab_bpe, ":", lineno,
                ": '", line, "' names a token that encoder.json lacks");
    t.add_merge(a->second, b->second);
  }
  t.finish();
  return t;
}

// ---- Hugging Face tokenizer.json --------------------------------------------------------------

BpeTokenizer BpeTokenizer::from_hf_json(const std::string& path) {
  const auto j = parse_json(path, "tokenizer.json");
  const char* what = "tokenizer.json";
  LLMTK_CHECK(j.contains("model") && j["model"].value("type", "") == "BPE", what, "'", path,
              "' has no BPE model (model.type must be \"BPE\")");
  const auto& model = j["model"];
  // The pre-tokenizer: ByteLevel with its built-in GPT-2 regex, or Sequence[Split(regex), ByteLevel].
  std::string pattern(kGpt2Pattern);
  bool byte_level = false;
  auto visit = [&](const nlohmann::json& p) {
    const std::string type = p.value("type", "");
    if (type == "ByteLevel") byte_level = true;
    if (type == "Split" && p.contains("pattern") && p["pattern"].contains("Regex"))
      pattern = p["pattern"]["Regex"].get<std::string>();
  };
  if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
    const auto& pt = j["pre_tokenizer"];
    if (pt.value("type", "") == "Sequence")
      for (const auto& p : pt["pretokenizers"]) visit(p);
    else
      visit(pt);
  }
  LLMTK_CHECK(byte_level, what, "'", path, "' is not byte-level BPE (no ByteLevel pre-tokenizer); "
              "only GPT-2-style byte-level BPE tokenizers are supported");

  const auto& vocab = model.at("vocab");
  std::vector<std::pair<TokenId, std::string>> by_id;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) by_id.emplace_back(json_id(it.value(), what, path, it.key()), it.key());
  std::unordered_map<TokenId, std::string> added;
  if (j.contains("added_tokens"))
    for (const auto& a : j["added_tokens"]) {
      const auto content = a.at("content").get<std::string>();
      added[json_id(a.at("id"), what, path, content)] = content;
    }
  for (const auto& [id, s] : added)
    if (!vocab.contains(s)) by_id.emplace_back(id, s);
  std::sort(by_id.begin(), by_id.end());
  std::vector<std::string> tokens;
  std::vector<bool> special;
  for (std::size_t i = 0; i < by_id.size(); ++i) {
    LLMTK_CHECK(by_id[i].first == TokenId(i), what, "token ids must be 0..", by_id.size() - 1,
                " without gaps; id ", i, " is missing");
    tokens.push_back(by_id[i].second);
    special.push_back(added.count(TokenId(i)) > 0);
  }
  std::vector<std::pair<std::string, std::string>> merges;
  for (const auto& m : model.at("merges")) {
    if (m.is_string()) {  // "Ġ t"
      const auto s = m.get<std::string>();
      auto sp = s.find(' ');
      LLMTK_CHECK(sp != std::string::npos, what, "merge '", s, "' must be 'left right'");
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else {  // ["Ġ", "t"] (tokenizers >= 0.20)
      merges.emplace_back(m.at(0).get<std::string>(), m.at(1).get<std::string>());
    }
  }
  return build(pattern, tokens, special, merges, what, path);
}

BpeTokenizer BpeTokenizer::from_vocab(const std::vector<std::string>& tokens, const std::vector<bool>& special,
                                      const std::vector<std::string>& merges, const std::string& where) {
  const char* what = "tokenizer";
  LLMTK_CHECK(special.size() == tokens.size(), what, where, ": ", tokens.size(), " tokens but ", special.size(), " token types");
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& m : merges) {
    const auto sp = m.find(' ');
    LLMTK_CHECK(sp != std::string::npos, what, where, ": merge '", m, "' must be 'left right'");
    pairs.emplace_back(m.substr(0, sp), m.substr(sp + 1));
  }
  return build(std::string(kGpt2Pattern), tokens, special, pairs, what, where);
}

BpeTokenizer BpeTokenizer::build(std::string pattern, const std::vector<std::string>& tokens, const std::vector<bool>& special,
                                 const std::vector<std::pair<std::string, std::string>>& merges, const char* what,
                                 const std::string& where) {
  BpeTokenizer t;
  t.pre_ = Pretokenizer(pattern);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (special[i]) {
      t.specials_.emplace_back(tokens[i], TokenId(i));
      t.tokens_.push_back(tokens[i]);
    } else {
      t.add_token(unicode_to_bytes(tokens[i]));
    }
  }
  for (const auto& [left, right] : merges) {
    auto a = t.ids_.find(unicode_to_bytes(left)), b = t.ids_.find(unicode_to_bytes(right));
    LLMTK_CHECK(a != t.ids_.end() && b != t.ids_.end(), what, "'", where, "': merge '", left, " ", right,
                "' names a token that is not in the vocabulary");
    t.add_merge(a->second, b->second);
  }
  t.finish();
  return t;
}

void BpeTokenizer::save(const std::string& path) const {
  using ojson = nlohmann::ordered_json;
  auto to_vocab_string = [](const std::string& bytes) {
    std::string s;
    for (unsigned char c : bytes) s += byte_to_unicode(c);
    return s;
  };
  ojson added = ojson::array();
  for (const auto& [s, id] : specials_)
    added.push_back({{"id", id}, {"content", s}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  // Special tokens go into the vocab too, under their ids (as Hugging Face's GPT-2 file does):
  // the Rust loader ignores added_tokens' ids and would renumber specials missing from the vocab.
  ojson vocab = ojson::object();
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const bool is_special = special(tokens_[i]) && *special(tokens_[i]) == TokenId(i);
    vocab[is_special ? tokens_[i] : to_vocab_string(tokens_[i])] = i;
  }
  ojson merges = ojson::array();
  for (auto [a, b] : merges_) merges.push_back(to_vocab_string(tokens_[a]) + " " + to_vocab_string(tokens_[b]));
  ojson pre;
  const ojson byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                            {"use_regex", pattern() == kGpt2Pattern}};
  if (pattern() == kGpt2Pattern) {
    pre = byte_level;
  } else {
    pre = {{"type", "Sequence"},
           {"pretokenizers", ojson::array({ojson{{"type", "Split"}, {"pattern", {{"Regex", pattern()}}},
                                                 {"behavior", "Isolated"}, {"invert", false}},
                                           byte_level})}};
  }
  ojson j = {{"version", "1.0"},
             {"truncation", nullptr},
             {"padding", nullptr},
             {"added_tokens", added},
             {"normalizer", nullptr},
             {"pre_tokenizer", pre},
             {"post_processor", nullptr},
             {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
             {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                        {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                        {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab}, {"merges", merges}}}};
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    LLMTK_CHECK(out.good(), "tokenizer save", "cannot write '", tmp, "'");
    out << j.dump(2) << "\n";
    LLMTK_CHECK(out.good(), "tokenizer save", "writing '", tmp, "' failed (disk full?)");
  }
  LLMTK_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "tokenizer save", "cannot rename '", tmp,
              "' to '", path, "'");
}

}  // namespace llmtk::data
