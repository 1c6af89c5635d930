// Evaluation as papers measure it (train/lm_eval.hpp): perplexity with a sliding window against
// each token's log-probability computed one context at a time, multiple choice against each
// ending's log-probability summed by hand from the logits, the Wilson interval against R's
// prop.test, readers' errors, and the kjv-next-verse task's construction.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/rng.hpp"
#include "data/char_tokenizer.hpp"
#include "data/synth.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/lm_eval.hpp"
#include "train_fixtures.hpp"

using namespace llmtk;
using train_fixtures::tmp;

namespace {

std::unique_ptr<AnyModel> tiny_lm(int vocab, int max_seq) {
  Dims d = find_arch("llama-tiny").dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 2, d.n_kv_heads = 1, d.d_ff = 32, d.vocab = vocab, d.max_seq = max_seq;
  auto m = make_model("llama-tiny", d);
  m->plan(1, 1);
  m->init(11);
  // Weights of unit-ish scale, so that contexts of different lengths give clearly different
  // probabilities (0.02 would make every position nearly uniform and hide a context error).
  Rng rng(5);
  for (std::size_t i = 0; i < m->params().entries().size(); ++i) {
    std::vector<float> v(std::size_t(m->params()[int(i)].numel()));
    const bool norm = m->params().entries()[i].kind == ParamKind::norm;
    for (auto& x : v) x = float(norm ? 1 + 0.1 * rng.normal() : 0.4 * rng.normal());
    m->params().write(int(i), v.data());
  }
  return m;
}

// log p(next | context) straight from the logits: the model planned for exactly this context.
double logp_after(AnyModel& m, const std::vector<std::int32_t>& context, std::int32_t next) {
  const auto T = std::int64_t(context.size());
  m.plan(1, T);
  std::vector<std::int32_t> ids = context;
  const TensorRef out = m.forward({TensorRef(ids.data(), DType::i32, {1, T}), {}, {}});
  std::vector<float> logits(std::size_t(out.numel()));
  copy_bytes(logits.data(), Device::host, out.data, out.device, logits.size() * sizeof(float));
  const std::int64_t V = m.dims().vocab;
  const float* z = logits.data() + (T - 1) * V;
  double mx = z[0];
  for (std::int64_t v = 1; v < V; ++v) mx = std::max(mx, double(z[v]));
  double sum = 0;
  for (std::int64_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) - mx);
  return double(z[next]) - mx - std::log(sum);
}

}  // namespace

TEST_CASE("perplexity: one window equals the loss of the whole text, and a stride gives each token its stated context",
          "[eval][perplexity]") {
  auto m = tiny_lm(23, 12);
  Rng rng(7);
  std::vector<std::int32_t> ids(40);
  for (auto& v : ids) v = std::int32_t(rng.next() % 23);

  SECTION("a text that fits one window") {
    const std::vector<std::int32_t> text(ids.begin(), ids.begin() + 10);
    train::PerplexityOptions o;
    o.window = 12;
    const auto r = train::perplexity(*m, text, o);
    CHECK(r.windows == 1);
    CHECK(r.tokens == 9);
    double want = 0;
    for (std::size_t j = 1; j < text.size(); ++j)
      want -= logp_after(*m, std::vector<std::int32_t>(text.begin(), text.begin() + std::ptrdiff_t(j)), text[j]);
    CHECK(r.loss() == Approx(want / 9).epsilon(1e-5));
    CHECK(r.perplexity() == Approx(std::exp(want / 9)).epsilon(1e-5));
  }

  SECTION("windows of 8 with strides of 1, 3 and 8") {
    const std::int64_t W = 8, stride = GENERATE(1, 3, 8);
    INFO("stride " << stride);
    train::PerplexityOptions o;
    o.window = W, o.stride = stride, o.batch = 3;
    const auto r = train::perplexity(*m, ids, o);
    CHECK(r.tokens == 39);
    // Token j is scored by the first window that reaches it: window k reads ids[k·stride, k·stride + W)
    // and predicts up to ids[k·stride + W], so k = max(0, ceil((j − W) / stride)); its context is
    // ids[k·stride, j).
    double want = 0;
    for (std::int64_t j = 1; j < 40; ++j) {
      const std::int64_t k = j <= W ? 0 : (j - W + stride - 1) / stride;
      want -= logp_after(*m, std::vector<std::int32_t>(ids.begin() + k * stride, ids.begin() + j), ids[std::size_t(j)]);
    }
    CHECK(r.nll == Approx(want).epsilon(1e-5));
  }

  SECTION("a shorter context is a different number (the test can fail)") {
    train::PerplexityOptions a, b;
    a.window = 8, a.stride = 1, b.window = 8, b.stride = 8;
    CHECK(std::abs(train::perplexity(*m, ids, a).nll - train::perplexity(*m, ids, b).nll) > 1e-3);
  }

  SECTION("bad options name the fix") {
    train::PerplexityOptions o;
    o.window = 13;
    CHECK_THROWS_WITH(train::perplexity(*m, ids, o), Catch::Contains("longer than the model's context (12)"));
    o.window = 8, o.stride = 9;
    CHECK_THROWS_WITH(train::perplexity(*m, ids, o), Catch::Contains("--stride 9 is longer than the window (8)"));
    CHECK_THROWS_WITH(train::perplexity(*m, std::vector<std::int32_t>{3}, {}), Catch::Contains("at least one token to predict"));
  }
}

TEST_CASE("multiple choice: each ending's log-probability after its context, and the choice by mean and by total",
          "[eval][choice]") {
  const std::vector<std::string> texts = {"abcdefghijklmnopqrstuvwxyz .,"};
  const auto tok = data::CharTokenizer::train(texts);
  auto m = tiny_lm(tok.vocab_size(), 24);
  std::vector<train::ChoiceItem> items = {
      {"the cat sat on", {" the mat.", " a dog", " xq"}, 0, "hand:1"},
      {"abc", {" d", " def ghi jkl"}, 1, "hand:2"},
      {"one two three", {" four", " for", " fore.", " five six"}, 3, "hand:3"},
  };
  const auto r = train::evaluate_choices(*m, tok, items, 4);
  REQUIRE(r.scored == 3);
  CHECK(r.skipped == 0);
  std::int64_t by_mean = 0, by_total = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& c = r.items[i];
    REQUIRE(c.logp.size() == items[i].endings.size());
    int best_mean = 0, best_total = 0;
    for (std::size_t k = 0; k < c.logp.size(); ++k) {
      // By hand: [end of text] + context, then each ending token after what precedes it.
      std::vector<std::int32_t> row = {tok.eot()};
      for (auto t : tok.encode(items[i].context)) row.push_back(t);
      const auto ending = tok.encode(items[i].endings[k]);
      double want = 0;
      for (auto t : ending) {
        want += logp_after(*m, row, t);
        row.push_back(t);
      }
      INFO("item " << i << " ending " << k);
      CHECK(c.tokens[k] == std::int64_t(ending.size()));
      CHECK(c.logp[k] == Approx(want).epsilon(1e-5));
      if (want / double(ending.size()) > c.logp[std::size_t(best_mean)] / double(c.tokens[std::size_t(best_mean)])) best_mean = int(k);
      if (want > c.logp[std::size_t(best_total)]) best_total = int(k);
    }
    CHECK(c.by_mean == best_mean);
    CHECK(c.by_total == best_total);
    by_mean += best_mean == items[i].label, by_total += best_total == items[i].label;
  }
  CHECK(r.correct_mean == by_mean);
  CHECK(r.correct_total == by_total);
  CHECK(r.chance == Approx((1.0 / 3 + 1.0 / 2 + 1.0 / 4) / 3));
  // Endings of different lengths: the two rules disagree somewhere on these items.
  bool differ = false;
  for (const auto& c : r.items) differ |= c.by_mean != c.by_total;
  CHECK(differ);

  // A context longer than the model's is cut from the left; an ending that alone does not fit skips its item.
  std::vector<train::ChoiceItem> long_items = {{std::string(60, 'a'), {" b", " c"}, 0, "hand:4"},
                                               {"a", {" b", std::string(30, 'c')}, 0, "hand:5"}};
  const auto rl = train::evaluate_choices(*m, tok, long_items, 2);
  CHECK(rl.scored == 1);
  CHECK(rl.skipped == 1);
  CHECK(rl.items[1].logp.empty());
}

TEST_CASE("the Wilson interval agrees with R's prop.test(k, n, correct = FALSE)", "[eval][choice]") {
  const auto a = train::wilson_interval(81, 263);
  CHECK(a.lo == Approx(0.2552885).epsilon(1e-6));
  CHECK(a.hi == Approx(0.3662096).epsilon(1e-6));
  const auto b = train::wilson_interval(5, 10);
  CHECK(b.lo == Approx(0.2365931).epsilon(1e-6));
  CHECK(b.hi == Approx(0.7634069).epsilon(1e-6));
  const auto c = train::wilson_interval(0, 10);
  CHECK(c.lo == 0);
  CHECK(c.hi == Approx(0.2775328).epsilon(1e-6));
}

TEST_CASE("eval readers: a task line's error names FILE:LINE, and --text refuses what is not text", "[eval][errors]") {
  const auto d = tmp("lm-eval-errors");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(d / name, std::ios::binary) << text;
    return (d / name).string();
  };
  const std::string good = R"({"context": "a", "endings": [" b", " c"], "label": 1, "ref": "x"})";
  const auto ok = write("ok.jsonl", good + "\n\n" + good + "\n");
  CHECK(train::is_choice_file(ok));
  CHECK(train::read_choices(ok).size() == 2);
  CHECK(train::read_choices(ok)[1].where == ok + ":3");
  CHECK_THROWS_WITH(train::read_choices(write("a.jsonl", good + "\n" + R"({"context": "a", "endings": [" b", " c"]})" + "\n")),
                    Catch::Contains("a.jsonl:2: no \"label\""));
  CHECK_THROWS_WITH(train::read_choices(write("b.jsonl", R"({"context": "a", "endings": [" b", " c"], "label": 2})")),
                    Catch::Contains("b.jsonl:1: \"label\" is 2, but there are 2 endings (0 to 1)"));
  CHECK_THROWS_WITH(train::read_choices(write("c.jsonl", R"({"context": "a", "endings": [" b"], "label": 0})")),
                    Catch::Contains("at least two strings"));
  CHECK_THROWS_WITH(train::read_choices(write("d.jsonl", "{not json\n")), Catch::Contains("d.jsonl:1: not a JSON object"));
  CHECK_THROWS_WITH(train::read_choices(write("e.jsonl", "\n")), Catch::Contains("holds no records"));
  CHECK(!train::is_choice_file(write("f.jsonl", R"({"instruction": "a", "output": "b"})")));

  CHECK(train::read_text_file(write("t.txt", "In the beginning \xc3\xa9.\n"), "eval --text") == "In the beginning \xc3\xa9.\n");
  CHECK_THROWS_WITH(train::read_text_file(write("bin.bin", std::string("ab\0cd", 5)), "eval --text"),
                    Catch::Contains("is not a text file (a NUL byte at offset 2)"));
  CHECK_THROWS_WITH(train::read_text_file(write("latin1.txt", "caf\xe9 au lait"), "eval --text"),
                    Catch::Contains("is not UTF-8 text (an invalid byte 0xe9 at offset 3)"));
  CHECK_THROWS_WITH(train::read_text_file(write("empty.txt", ""), "eval --text"), Catch::Contains("is empty"));
}

TEST_CASE("data synth kjv-next-verse: the next verse among three of its book's, deterministic, split by verse", "[eval][synth]") {
  const auto d = tmp("synth-next-verse");
  std::string kjv;
  for (const char* book : {"Genesis", "Exodus"})
    for (int ch = 1; ch <= 2; ++ch) {
      kjv += std::string(book) + " " + std::to_string(ch) + "\n\n";
      for (int v = 1; v <= 15; ++v)
        kjv += "  " + std::to_string(v) + " And the word " + std::to_string(ch * 100 + v) + " of " + book + " came unto the prophet.\n";
      kjv += "\n";
    }
  std::ofstream(d / "kjv.txt") << kjv;
  auto run = [&](const std::string& split, const std::string& out) {
    data::SynthOptions o;
    o.task = "kjv-next-verse", o.split = split, o.source = (d / "kjv.txt").string(), o.test_fraction = 0.3;
    return data::synth(o, (d / out).string(), [](const std::string&) {});
  };
  const auto n_train = run("train", "a.jsonl"), n_test = run("test", "b.jsonl");
  // Every verse but each book's last has a next verse in its book (across chapters too).
  CHECK(n_train + n_test == 2 * 30 - 2);
  CHECK(n_test > 0);
  run("train", "a2.jsonl");
  CHECK(train_fixtures::file_bytes(d / "a.jsonl") == train_fixtures::file_bytes(d / "a2.jsonl"));
  std::set<std::string> train_refs;
  std::vector<int> labels(4, 0);
  for (const char* f : {"a.jsonl", "b.jsonl"}) {
    const auto items = train::read_choices((d / f).string());
    std::ifstream in(d / f);
    std::string line;
    for (const auto& it : items) {
      std::getline(in, line);
      const std::string ref = nlohmann::json::parse(line)["ref"];
      if (std::string(f) == "a.jsonl") train_refs.insert(ref);
      else CHECK(train_refs.count(ref) == 0);
      REQUIRE(it.endings.size() == 4);
      ++labels[std::size_t(it.label)];
      // The context is the verse as the corpus writes it; the right ending is the next verse, and
      // every ending carries the next verse's number.
      const std::string book = ref.substr(0, ref.find(' '));
      const int ch = std::stoi(ref.substr(ref.find(' ') + 1)), v = std::stoi(ref.substr(ref.find(':') + 1));
      CHECK(it.context == "  " + std::to_string(v) + " And the word " + std::to_string(ch * 100 + v) + " of " + book +
                              " came unto the prophet.");
      const int nch = v == 15 ? ch + 1 : ch, nv = v == 15 ? 1 : v + 1;
      CHECK(it.endings[std::size_t(it.label)] == "\n  " + std::to_string(nv) + " And the word " + std::to_string(nch * 100 + nv) +
                                                     " of " + book + " came unto the prophet.");
      std::set<std::string> distinct(it.endings.begin(), it.endings.end());
      CHECK(distinct.size() == 4);
      for (const auto& e : it.endings) {
        CHECK(e.rfind("\n  " + std::to_string(nv) + " And the word ", 0) == 0);
        CHECK(e.find(" of " + book + " ") != std::string::npos);  // the same book
      }
    }
  }
  for (int k = 0; k < 4; ++k) CHECK(labels[std::size_t(k)] > 0);  // the right ending's place varies
}
