// Tokenizers: GPT-2 compatibility against reference encodings (tests/data/gpt2_encodings.json,
// made by the npm packages gpt-3-encoder and gpt-tokenizer, which agree on every case),
// tokenizer.json round trips, BPE training against a naive trainer that recounts every pair,
// special tokens, the character tokenizer and bad input.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "data/bpe.hpp"
#include "data/char_tokenizer.hpp"
#include "data/pretokenize.hpp"

using namespace llmtk::data;
namespace fs = std::filesystem;

namespace {

const std::string kData = LLMTK_TEST_DATA_DIR;

nlohmann::json reference_cases() {
  std::ifstream in(kData + "/gpt2_encodings.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in).at("cases");
}

const Tokenizer& gpt2() {
  static auto tok = load_tokenizer(kData + "/gpt2");
  return *tok;
}

fs::path temp_dir() {
  auto d = fs::temp_directory_path() / ("llmtk-test-" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST_CASE("GPT-2 files encode exactly as the reference GPT-2 tokenizer", "[tokenizer][gpt2]") {
  const auto cases = reference_cases();
  REQUIRE(cases.size() >= 200);
  REQUIRE(gpt2().vocab_size() == 50257);
  REQUIRE(gpt2().eot() == 50256);
  int mismatches = 0;
  for (const auto& c : cases) {
    const auto text = c.at("text").get<std::string>();
    const auto want = c.at("ids").get<std::vector<TokenId>>();
    const auto got = gpt2().encode(text);
    if (got != want && ++mismatches <= 5) {
      INFO("text: " << text);
      CHECK(got == want);
    }
    CHECK(gpt2().decode(got) == text);
  }
  CHECK(mismatches == 0);
}

TEST_CASE("long texts (which use the per-call piece cache) encode like their pieces", "[tokenizer][gpt2]") {
  std::string text;
  for (const auto& c : reference_cases()) text += c.at("text").get<std::string>() + "\n";
  REQUIRE(text.size() > 4096);
  const auto& bpe = dynamic_cast<const BpeTokenizer&>(gpt2());
  std::vector<TokenId> want;
  Pretokenizer("gpt2").split(text, [&](std::string_view piece) { bpe.encode_piece(piece, want); });
  CHECK(gpt2().encode(text) == want);
  CHECK(gpt2().decode(want) == text);
}

TEST_CASE("special tokens are text unless asked for", "[tokenizer]") {
  const std::string s = "a<|endoftext|>b";
  CHECK(gpt2().encode(s) == std::vector<TokenId>{64, 27, 91, 437, 1659, 5239, 91, 29, 65});
  CHECK(gpt2().encode(s, true) == std::vector<TokenId>{64, 50256, 65});
  CHECK(gpt2().decode(std::vector<TokenId>{64, 50256, 65}) == s);
}

TEST_CASE("tokenizer.json round trip keeps every id", "[tokenizer]") {
  const auto path = (temp_dir() / "gpt2-tokenizer.json").string();
  gpt2().save(path);
  auto back = load_tokenizer(path);
  CHECK(back->vocab_size() == 50257);
  CHECK(back->hash() == gpt2().hash());
  for (const auto& c : reference_cases())
    REQUIRE(back->encode(c.at("text").get<std::string>()) == c.at("ids").get<std::vector<TokenId>>());

  // tokenizers >= 0.20 writes merges as pairs; both forms load.
  std::ifstream in(path);
  auto j = nlohmann::json::parse(in);
  for (auto& m : j["model"]["merges"]) {
    const auto s = m.get<std::string>();
    m = nlohmann::json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
  }
  const auto pairs = (temp_dir() / "pairs.json").string();
  std::ofstream(pairs) << j.dump();
  CHECK(load_tokenizer(pairs)->hash() == gpt2().hash());
}

TEST_CASE("pre-tokenizer patterns split as GPT-2 and cl100k do", "[tokenizer]") {
  Pretokenizer g("gpt2"), c("cl100k");
  using V = std::vector<std::string_view>;
  CHECK(g.split("Hello world's 12345  x") == V{"Hello", " world", "'s", " 12345", " ", " x"});
  CHECK(c.split("Hello world'S 12345\n\nx") == V{"Hello", " world", "'S", " ", "123", "45", "\n\n", "x"});
  // Invalid UTF-8 is kept as pieces of its own: the pieces always tile the input.
  const std::string bad = "ab\xff\xfe cd";
  std::string joined;
  for (auto p : g.split(bad)) joined += p;
  CHECK(joined == bad);
}

namespace {
// An independent, obviously-correct trainer: recount every pair of every word before each merge.
std::vector<std::pair<std::string, std::string>> naive_merges(const std::vector<std::string>& texts, int merges) {
  Pretokenizer pre("gpt2");
  std::map<std::string, long> counts;
  for (const auto& t : texts)
    for (auto p : pre.split(t)) ++counts[std::string(p)];
  std::vector<std::pair<std::vector<std::string>, long>> words;
  for (auto& [w, n] : counts) {
    std::vector<std::string> sym;
    for (char ch : w) sym.emplace_back(1, ch);
    words.emplace_back(sym, n);
  }
  std::map<std::string, int> id;  // token bytes → id, to break ties the way the real trainer does
  for (int b = 0; b < 256; ++b) id[std::string(1, char(b))] = b;
  std::vector<std::pair<std::string, std::string>> out;
  while (int(out.size()) < merges) {
    std::map<std::pair<int, int>, long> pc;
    for (auto& [sym, n] : words)
      for (std::size_t i = 0; i + 1 < sym.size(); ++i) pc[{id[sym[i]], id[sym[i + 1]]}] += n;
    std::pair<int, int> best{-1, -1};
    long bc = 1;  // min_frequency 2
    for (auto& [p, n] : pc)
      if (n > bc) bc = n, best = p;  // map order: ties keep the smallest (left, right)
    if (best.first < 0) break;
    std::string a, b;
    for (auto& [s, i] : id) {
      if (i == best.first) a = s;
      if (i == best.second) b = s;
    }
    if (!id.count(a + b)) id[a + b] = int(id.size());  // a spelling reached twice keeps its id
    out.emplace_back(a, b);
    for (auto& [sym, n] : words) {
      std::vector<std::string> next;
      for (std::size_t i = 0; i < sym.size(); ++i) {
        if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) next.push_back(a + b), ++i;
        else next.push_back(sym[i]);
      }
      sym = next;
    }
  }
  return out;
}
}  // namespace

TEST_CASE("BPE training matches a naive trainer merge for merge", "[tokenizer][train]") {
  std::vector<std::string> texts = {
      "the cat sat on the mat; the cat ate the rat. aaaa aaa aa a banana bandana",
      "low lower lowest newer wider new news newest, 1234 12345 ---- ...",
      "Ünïcödé text: naïve café, naïve café; Привет мир, привет! 你好你好"};
  BpeTrainOptions o;
  o.vocab_size = 256 + 60 + 1;
  auto tok = BpeTokenizer::train(texts, o);
  const auto want = naive_merges(texts, int(tok.merge_count()));
  REQUIRE(tok.merge_count() >= 40);  // stops early: pairs seen once are not merged
  REQUIRE(tok.merge_count() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    INFO("merge " << i);
    CHECK(tok.merge(i) == want[i]);
  }
  CHECK(tok.eot() == tok.vocab_size() - 1);
  // Any bytes round-trip, including invalid UTF-8 and text unlike the training data.
  for (std::string s : {std::string("the cat"), std::string("\xff\x00\x80zz", 5), std::string("🙂 ∑ x")})
    CHECK(tok.decode(tok.encode(s)) == s);
  // Trained merges compress the training text.
  CHECK(tok.encode(texts[0]).size() <= texts[0].size() / 2);
}

TEST_CASE("a trained tokenizer saves and loads", "[tokenizer][train]") {
  std::vector<std::string> texts = {"In the beginning God created the heaven and the earth. "
                                    "And the earth was without form, and void."};
  BpeTrainOptions o;
  o.vocab_size = 300, o.pattern = "cl100k", o.special_tokens = {"<|endoftext|>", "<|pad|>"};
  auto tok = BpeTokenizer::train(texts, o);
  const auto path = (temp_dir() / "trained.json").string();
  tok.save(path);
  auto back = load_tokenizer(path);
  CHECK(back->hash() == tok.hash());
  CHECK(back->special("<|pad|>") == tok.special("<|pad|>"));
  CHECK(back->encode(texts[0]) == tok.encode(texts[0]));
}

TEST_CASE("character tokenizer", "[tokenizer][char]") {
  std::vector<std::string> texts = {"hello wörld"};
  auto tok = CharTokenizer::train(texts);
  CHECK(tok.vocab_size() == 9 + 1 + 1);  // 9 distinct characters, <|endoftext|>, unknown
  CHECK(tok.decode(tok.encode("hello")) == "hello");
  CHECK(tok.encode("ö").size() == 1);
  CHECK(tok.decode(tok.encode("hex")) == "he\xEF\xBF\xBD");  // x was never seen: U+FFFD
  const auto path = (temp_dir() / "char.json").string();
  tok.save(path);
  CHECK(load_tokenizer(path)->hash() == tok.hash());
}

TEST_CASE("bad tokenizer files are rejected with the file named", "[tokenizer][errors]") {
  CHECK_THROWS_WITH(load_tokenizer("/nonexistent/tok.json"), Catch::Contains("'/nonexistent/tok.json' does not exist"));
  const auto dir = temp_dir();
  std::ofstream(dir / "broken.json") << "{ not json";
  CHECK_THROWS_WITH(load_tokenizer((dir / "broken.json").string()), Catch::Contains("is not valid JSON"));
  std::ofstream(dir / "wordpiece.json") << R"({"model": {"type": "WordPiece", "vocab": {}}})";
  CHECK_THROWS_WITH(load_tokenizer((dir / "wordpiece.json").string()), Catch::Contains("has no BPE model"));
  fs::create_directories(dir / "empty");
  CHECK_THROWS_WITH(load_tokenizer((dir / "empty").string()), Catch::Contains("neither tokenizer.json nor encoder.json"));
  CHECK_THROWS_WITH(gpt2().decode(std::vector<TokenId>{50257}), Catch::Contains("token id 50257 is outside [0, 50257)"));
}
