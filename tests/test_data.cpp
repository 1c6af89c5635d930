// The data pipeline: cleaning and filters, near-duplicate detection, shards (and their rejection
// when corrupt or written by another tokenizer), the loader (determinism, exact resume, ranks,
// orders), config errors, and `prepare` end to end with bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>

#include "config/config.hpp"
#include "data/bpe.hpp"
#include "data/char_tokenizer.hpp"
#include "data/clean.hpp"
#include "data/loader.hpp"
#include "data/minhash.hpp"
#include "data/prepare.hpp"
#include "data/shard.hpp"

using namespace llmtk;
using namespace llmtk::data;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("llmtk-data-" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

const CharTokenizer& letters() {
  static const CharTokenizer t = [] {
    std::vector<std::string> texts = {"abcdefghijklmnopqrstuvwxyz ."};
    return CharTokenizer::train(texts);
  }();
  return t;
}

// A shard of `docs` documents of lengths 1..docs (tokens cycle through the alphabet).
std::string make_shard(const fs::path& dir, const std::string& name, int docs) {
  const auto path = (dir / name).string();
  ShardWriter w(path, letters());
  for (int d = 1; d <= docs; ++d) {
    std::vector<TokenId> ids;
    for (int i = 0; i < d; ++i) ids.push_back(TokenId((d + i) % 26));
    w.add_document(ids);
  }
  w.close();
  return path;
}

}  // namespace

TEST_CASE("cleaning repairs, normalizes and trims", "[data][clean]") {
  std::string s = "ok\xff\xfe then";
  CHECK(repair_utf8(s) == 2);
  CHECK(s == "ok\xEF\xBF\xBD\xEF\xBF\xBD then");
  std::string decomposed = "cafe\xCC\x81";  // e + combining acute
  CHECK(to_nfc(decomposed));
  CHECK(decomposed == "caf\xC3\xA9");
  std::string w = "  line one   \r\nline\x07 two\t\n\n\n\n\nend  \n";
  CHECK(normalize_whitespace(w) == 1);  // the bell
  CHECK(w == "line one\nline two\n\n\nend");
}

TEST_CASE("text statistics drive the filters", "[data][clean]") {
  const auto s = text_stats("Hello, мир! 123\nHello, мир! 123\n");
  CHECK(s.letters == 16);
  CHECK(s.latin == 10);
  CHECK(s.cyrillic == 6);
  CHECK(s.digits == 6);
  CHECK(s.lines == 2);
  CHECK(s.repeated_lines == 1);
  CHECK(script_fraction(s, {"latin"}) == Approx(10.0 / 16));
  CHECK_THROWS_WITH(script_fraction(s, {"klingon"}), Catch::Contains("unknown script 'klingon'"));
}

TEST_CASE("MinHash finds near duplicates and leaves different texts alone", "[data][dedup]") {
  std::string base;
  for (int i = 0; i < 80; ++i) base += "word" + std::to_string(i) + " ";
  std::string edited = base;
  edited.replace(edited.find("word40"), 6, "WORD40");  // one word of 80 changed
  std::string other;
  for (int i = 0; i < 80; ++i) other += "term" + std::to_string(i) + " ";
  MinHashOptions o;
  CHECK(estimated_jaccard(minhash_signature(base, o), minhash_signature(edited, o)) > 0.8);
  CHECK(estimated_jaccard(minhash_signature(base, o), minhash_signature(other, o)) < 0.1);
  const auto rep = near_duplicate_clusters({base, other, edited}, o);
  CHECK(rep == std::vector<std::size_t>{0, 1, 0});  // the edit joins the first, which is kept
}

TEST_CASE("shards round-trip and reject corruption and other tokenizers", "[data][shard]") {
  const auto dir = fresh_dir("shards");
  const auto path = make_shard(dir, "a.bin", 4);
  Shard s(path);
  CHECK(s.header().doc_count == 4);
  CHECK(s.size() == 4 + (1 + 2 + 3 + 4));  // an EOT before each document
  CHECK(s[0] == letters().eot());
  CHECK(s[1] == 1);
  CHECK_NOTHROW(s.expect_tokenizer(letters().hash()));
  CHECK_THROWS_WITH(s.expect_tokenizer(123), Catch::Contains("was written by another tokenizer"));
  // Truncated: the header promises more tokens than the file holds.
  const auto bytes = fs::file_size(path);
  fs::copy_file(path, dir / "cut.bin");
  fs::resize_file(dir / "cut.bin", bytes - 2);
  CHECK_THROWS_WITH(Shard((dir / "cut.bin").string()), Catch::Contains("truncated or corrupt"));
  write(dir / "text.bin", "this is not a shard at all, but it is long enough to hold a header. yes.");
  CHECK_THROWS_WITH(Shard((dir / "text.bin").string()), Catch::Contains("bad magic"));
  write(dir / "tiny.bin", "x");
  CHECK_THROWS_WITH(Shard((dir / "tiny.bin").string()), Catch::Contains("shorter than a shard header"));
  // A rejected file leaves nothing mapped or open (found by fuzzing: each rejection leaked a
  // mapping until the process ran out of them).
  auto maps = [] {
    std::ifstream in("/proc/self/maps");
    return std::count(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>(), '\n');
  };
  const auto before = maps();
  for (int i = 0; i < 200; ++i) {
    CHECK_THROWS(Shard((dir / "text.bin").string()));
    CHECK_THROWS(Shard((dir / "cut.bin").string()));
  }
  CHECK(maps() == before);
}

TEST_CASE("the loader is deterministic, resumes exactly and splits ranks", "[data][loader]") {
  const auto dir = fresh_dir("loader");
  const std::vector<std::string> shards = {make_shard(dir, "a.bin", 30), make_shard(dir, "b.bin", 20)};
  LoaderOptions o{.batch = 3, .seq = 8, .order = DataOrder::shuffled, .seed = 7};
  std::vector<TokenId> ids(24), tg(24), ids2(24), tg2(24);

  DataLoader a(shards, letters().hash(), o), b(shards, letters().hash(), o);
  for (int i = 0; i < 5; ++i) {
    a.next(ids, tg), b.next(ids2, tg2);
    REQUIRE(ids == ids2);
  }
  for (int i = 0; i < 24; ++i)
    if (i % 8 != 7) CHECK(tg[std::size_t(i)] == ids[std::size_t(i) + 1]);  // targets are the next tokens

  // Exact resume: a new loader sought to a saved position serves the same batches, across epochs.
  const auto saved = a.position();
  std::vector<std::vector<TokenId>> expect;
  for (std::uint64_t i = 0; i < a.batches_per_epoch() + 3; ++i) a.next(ids, tg), expect.push_back(ids);
  DataLoader c(shards, letters().hash(), o);
  c.seek(saved);
  for (const auto& want : expect) {
    c.next(ids, tg);
    REQUIRE(ids == want);
  }

  // Another seed, another order; each epoch another permutation.
  DataLoader d(shards, letters().hash(), LoaderOptions{.batch = 3, .seq = 8, .seed = 8});
  d.next(ids2, tg2);
  DataLoader e(shards, letters().hash(), o);
  e.next(ids, tg);
  CHECK(ids != ids2);

  // Ranks of one global batch read disjoint windows that together make the single-rank batch.
  LoaderOptions one{.batch = 4, .seq = 8, .order = DataOrder::sequential};
  DataLoader whole(shards, letters().hash(), one);
  std::vector<TokenId> all(32), all_t(32), half(16), half_t(16);
  whole.next(all, all_t);
  for (int r = 0; r < 2; ++r) {
    DataLoader part(shards, letters().hash(), LoaderOptions{.batch = 2, .seq = 8, .order = DataOrder::sequential, .rank = r, .world = 2});
    part.next(half, half_t);
    CHECK(std::equal(half.begin(), half.end(), all.begin() + 16 * r));
  }
}

TEST_CASE("loader orders: sequential reads the file, by_length starts with short documents", "[data][loader]") {
  const auto dir = fresh_dir("orders");
  const std::vector<std::string> shards = {make_shard(dir, "a.bin", 12)};
  std::vector<TokenId> ids(8), tg(8);
  DataLoader seq(shards, letters().hash(), LoaderOptions{.batch = 1, .seq = 8, .order = DataOrder::sequential});
  seq.next(ids, tg);
  Shard s(shards[0]);
  for (int i = 0; i < 8; ++i) CHECK(ids[std::size_t(i)] == s[std::uint64_t(i)]);
  // Documents are written 1..12 tokens long; by_length keeps that order here, and a shuffled
  // copy of the file would come back sorted. Check the first window holds the shortest ones.
  DataLoader bl(shards, letters().hash(), LoaderOptions{.batch = 1, .seq = 8, .order = DataOrder::by_length});
  bl.next(ids, tg);
  const TokenId eot = letters().eot();
  CHECK(std::count(ids.begin(), ids.end(), eot) >= 3);
  CHECK_THROWS_WITH(parse_order("alphabetical"), Catch::Contains("choose shuffled, sequential, by_length or random"));
  CHECK_THROWS_WITH(DataLoader(shards, letters().hash(), LoaderOptions{.batch = 64, .seq = 64}),
                    Catch::Contains("fewer than one"));
}

TEST_CASE("config files reject unknown keys and bad values with file and line", "[data][config]") {
  auto bad_key = ConfigFile::from_string("[filter]\nmin_char = 10\n", "c.toml");
  read_prepare_config(bad_key);
  CHECK_THROWS_WITH(bad_key.reject_unknown_keys(), Catch::Contains("c.toml:2") && Catch::Contains("did you mean filter.min_chars?"));
  auto bad_type = ConfigFile::from_string("[filter]\nmin_chars = \"ten\"\n", "c.toml");
  CHECK_THROWS_WITH(read_prepare_config(bad_type), Catch::Contains("c.toml:2") && Catch::Contains("filter.min_chars must be an integer"));
  auto bad_choice = ConfigFile::from_string("[clean]\ninvalid_utf8 = \"ignore\"\n", "c.toml");
  CHECK_THROWS_WITH(read_prepare_config(bad_choice), Catch::Contains("allowed: \"repair\", \"drop\", \"fail\""));
  CHECK_THROWS_WITH(ConfigFile::from_string("[filter\n", "c.toml"), Catch::Contains("c.toml:1"));
  auto set = ConfigFile::from_string("", "--set");
  set.set("filter.min_chars=7");
  set.set("output.dir=runs/x");
  auto c = read_prepare_config(set);
  CHECK(c.filter.min_chars == 7);
  CHECK(c.output.dir == "runs/x");
}

TEST_CASE("prepare: end to end, with a report that counts every drop", "[data][prepare]") {
  const auto dir = fresh_dir("prepare");
  std::string para = "The quick brown fox jumps over the lazy dog near the river bank today.";
  std::string corpus;
  for (int i = 0; i < 40; ++i) corpus += para + " Paragraph number " + std::to_string(i) + " is here.\n\n";
  corpus += para + " Paragraph number 3 is here.\n\n";  // an exact duplicate of paragraph 3
  corpus += "tiny\n\n";                                    // too short
  corpus += "%%%% $$$$ #### @@@@ !!!! ^^^^ &&&& **** (((( )))) ---- ++++ ==== ;;;; ::::\n\n";  // symbols
  corpus += "Привет, как дела? Это русский текст, который не проходит фильтр по письменности.\n\n";
  write(dir / "a.txt", corpus);
  write(dir / "b.jsonl", "{\"text\": \"" + para + " From JSONL, line one.\"}\n\n{\"text\": \"" + para + " From JSONL, line three.\"}\n");
  PrepareConfig c;
  c.input.paths = {(dir / "a.txt").string(), (dir / "b.jsonl").string()};
  c.filter.scripts = {"latin"};
  c.filter.max_symbol_ratio = 0.5;
  c.split.val_fraction = 0.1;
  c.tokenizer.vocab_size = 300;
  c.output.dir = (dir / "out").string();
  std::vector<std::string> log;
  auto sum = prepare(c, [&](const std::string& l) { log.push_back(l); });
  CHECK(sum.docs_in == 46);
  std::ifstream in(sum.report_json);
  auto r = nlohmann::json::parse(in);
  std::map<std::string, int> dropped;
  for (const auto& d : r["dropped"]) dropped[d["reason"]] = d["docs"];
  CHECK(dropped["exact_duplicate"] == 1);
  CHECK(dropped["too_short"] == 1);
  CHECK(dropped["symbol_ratio"] == 1);
  CHECK(dropped["script"] == 1);
  // Every document is either kept or counted under a reason.
  int total_dropped = 0;
  for (auto& [k, v] : dropped) total_dropped += v;
  CHECK(sum.docs_kept + total_dropped == sum.docs_in);
  CHECK(r["split"]["train"]["docs"].get<int>() + r["split"]["val"]["docs"].get<int>() == sum.docs_kept);
  // The shards load with the tokenizer prepare wrote, and decode back to the text.
  auto tok = load_tokenizer(sum.tokenizer_path);
  Shard s(sum.train_shards.at(0));
  CHECK_NOTHROW(s.expect_tokenizer(tok->hash()));
  CHECK(fs::exists(sum.report_html));
  std::ifstream html(sum.report_html);
  std::string page((std::istreambuf_iterator<char>(html)), {});
  CHECK(page.find("<svg") != std::string::npos);
  CHECK(page.find("exact_duplicate") != std::string::npos);

  // With a given tokenizer (GPT-2's, from encoder.json + vocab.bpe) the output is self-contained:
  // it holds tokenizer.json, which loads as the same tokenizer the shards were written with.
  c.tokenizer.path = LLMTK_TEST_DATA_DIR "/gpt2";
  c.output.dir = (dir / "out-gpt2").string();
  const auto given = prepare(c, [](const std::string&) {});
  CHECK(given.tokenizer_path == (dir / "out-gpt2" / "tokenizer.json").string());
  REQUIRE(fs::exists(dir / "out-gpt2" / "tokenizer.json"));
  const auto gpt2 = load_tokenizer(LLMTK_TEST_DATA_DIR "/gpt2");
  CHECK(load_tokenizer((dir / "out-gpt2" / "tokenizer.json").string())->hash() == gpt2->hash());
  CHECK_NOTHROW(Shard(given.train_shards.at(0)).expect_tokenizer(gpt2->hash()));
}

TEST_CASE("prepare: bad input stops with a clear message", "[data][prepare][errors]") {
  const auto dir = fresh_dir("bad");
  PrepareConfig c;
  c.output.dir = (dir / "out").string();
  c.input.paths = {(dir / "missing.txt").string()};
  CHECK_THROWS_WITH(prepare(c, [](auto&) {}), Catch::Contains("missing.txt' does not exist"));

  write(dir / "bad.jsonl", "{\"text\": \"fine\"}\n{\"body\": \"no text field\"}\n");
  c.input.paths = {(dir / "bad.jsonl").string()};
  CHECK_THROWS_WITH(prepare(c, [](auto&) {}), Catch::Contains("bad.jsonl:2") && Catch::Contains("no string field \"text\""));
  write(dir / "broken.jsonl", "{\"text\": \"fine\"}\n{not json\n");
  c.input.paths = {(dir / "broken.jsonl").string()};
  CHECK_THROWS_WITH(prepare(c, [](auto&) {}), Catch::Contains("broken.jsonl:2") && Catch::Contains("not valid JSON"));

  write(dir / "latin1.txt", std::string("caf\xe9 au lait, a long enough paragraph to pass the length filter.\n"));
  c.input.paths = {(dir / "latin1.txt").string()};
  c.clean.invalid_utf8 = "fail";
  CHECK_THROWS_WITH(prepare(c, [](auto&) {}), Catch::Contains("latin1.txt:1") && Catch::Contains("invalid UTF-8"));

  c.clean.invalid_utf8 = "repair";
  c.filter.min_chars = 10000;
  CHECK_THROWS_WITH(prepare(c, [](auto&) {}), Catch::Contains("no documents left") && Catch::Contains("too_short 1"));
  CHECK(fs::exists(dir / "out" / "report.json"));  // the report still says why
}
