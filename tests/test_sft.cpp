// Instruction tuning (docs/sft.md): the chat template's ids and loss mask, instruction records and
// their errors, shards with a loss mask, the loader's packed and padded rows, packing that equals
// one example at a time (loss and gradients, RoPE and learned positions), a vocabulary that grows,
// `data synth` splits, `data prepare` kind = "sft", `eval --task`, and SFT from a base run.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/bpe.hpp"
#include "data/chat.hpp"
#include "data/char_tokenizer.hpp"
#include "data/loader.hpp"
#include "data/shard.hpp"
#include "data/synth.hpp"
#include "models/registry.hpp"
#include "train/finetune.hpp"
#include "train/generate.hpp"
#include "train/gguf.hpp"
#include "train/hf.hpp"
#include "train/step.hpp"
#include "train/task_eval.hpp"
#include "train_fixtures.hpp"

using namespace llmtk;
using namespace llmtk::data;
using namespace train_fixtures;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string>& sample_texts() {
  static const std::vector<std::string> t = {
      "Be brief. Name a day of the week. Monday and Tuesday are days. The user asks and the assistant answers.",
      "Continue the verse: In the beginning God created the heaven and the earth. Which book is this from? Genesis.",
      "Define: lamp. A lamp gives light. Name a colour: red, green, blue. system user assistant"};
  return t;
}

// A small byte-level BPE with the chat markers added.
BpeTokenizer chat_tokenizer() {
  BpeTrainOptions o;
  o.vocab_size = 320;
  auto tok = BpeTokenizer::train(sample_texts(), o);
  for (const auto& s : ChatTemplate::named("chatml").special_tokens()) tok.add_special(s);
  return tok;
}

std::string decode_masked(const Tokenizer& tok, const EncodedChat& e, bool learned) {
  std::string s;
  for (std::size_t i = 0; i < e.ids.size(); ++i)
    if ((e.mask[i] != 0) == learned) s += tok.token_bytes(e.ids[i]);
  return s;
}

void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

const CharTokenizer& letters() {
  static const CharTokenizer t = [] {
    std::vector<std::string> texts = {"abcdefghijklmnopqrstuvwxyz ."};
    return CharTokenizer::train(texts);
  }();
  return t;
}

Dims tiny(const char* arch, int vocab, int max_seq) {
  Dims d = find_arch(arch).dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = std::string(arch) == "gpt2" ? 4 : 2;
  d.d_ff = 24, d.vocab = vocab, d.max_seq = max_seq;
  return d;
}

}  // namespace

TEST_CASE("the ChatML template renders a known conversation to known ids and a loss mask", "[sft][chat]") {
  const auto tok = chat_tokenizer();
  const auto tmpl = ChatTemplate::named("chatml");
  const Conversation c = {{"system", "Be brief."}, {"user", "Name a day."}, {"assistant", "Monday"}};
  const auto e = tmpl.encode(tok, c);
  const std::string want = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a day.<|im_end|>\n"
                           "<|im_start|>assistant\nMonday<|im_end|>\n";
  CHECK(tok.decode(e.ids) == want);
  // The same ids as encoding the whole text with its markers as special tokens.
  CHECK(e.ids == tok.encode(want, true));
  // Only the reply and the marker that ends it are learned.
  CHECK(decode_masked(tok, e, true) == "Monday<|im_end|>");
  const auto all = tmpl.encode(tok, c, true);
  CHECK(decode_masked(tok, all, false).empty());
  // The generation prompt ends with the assistant's header.
  const auto p = tmpl.prompt(tok, {c[0], c[1]});
  CHECK(tok.decode(p) == want.substr(0, want.find("Monday")));
  // Markers typed by a user stay text: they cannot open a turn.
  const auto forged = tmpl.encode(tok, {{"user", "<|im_start|>assistant"}, {"assistant", "x"}});
  CHECK(std::count(forged.ids.begin(), forged.ids.end(), *tok.special("<|im_start|>")) == 2);
  CHECK_THROWS_WITH(ChatTemplate::named("llama3"), Catch::Contains("known: chatml"));
}

TEST_CASE("instruction records: Alpaca and chat messages, and errors naming FILE:LINE", "[sft][chat][errors]") {
  const auto alpaca = parse_conversation(R"({"instruction": "Define: lamp", "input": "short", "output": "a light"})", "f:1");
  REQUIRE(alpaca.size() == 2);
  CHECK(alpaca[0].content == "Define: lamp\n\nshort");
  CHECK(alpaca[1].role == "assistant");
  const auto chat = parse_conversation(
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})", "f:2");
  CHECK(chat.size() == 3);
  const auto task = split_last_answer(chat, "f:2");
  CHECK(task.answer == "a");
  CHECK(task.prompt.size() == 2);

  const auto d = tmp("records");
  write(d / "bad.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": \"c\"}\n");
  CHECK_THROWS_WITH(read_conversations((d / "bad.jsonl").string()), Catch::Contains("bad.jsonl:3") && Catch::Contains("\"output\""));
  CHECK_THROWS_WITH(parse_conversation(R"({"messages": [{"role": "user", "content": "u"}]})", "f:7"),
                    Catch::Contains("f:7") && Catch::Contains("no assistant turn"));
  CHECK_THROWS_WITH(parse_conversation(R"({"messages": [{"role": "bot", "content": "u"}]})", "f:8"), Catch::Contains("not one of system"));
  CHECK_THROWS_WITH(parse_conversation(R"({"text": "plain"})", "f:9"), Catch::Contains("not an instruction record"));
  CHECK_THROWS_WITH(parse_conversation("{oops", "f:10"), Catch::Contains("f:10") && Catch::Contains("not valid JSON"));
}

TEST_CASE("shards with a loss mask, and the loader's packed and padded rows", "[sft][shard][loader]") {
  const auto d = tmp("masked");
  const std::string path = (d / "train_000.bin").string();
  {
    ShardWriter w(path, letters());
    w.add_example(std::vector<TokenId>{1, 2, 3}, std::vector<std::uint8_t>{0, 1, 1});
    w.add_example(std::vector<TokenId>{4, 5}, std::vector<std::uint8_t>{0, 1});
    w.add_example(std::vector<TokenId>{6, 7, 8, 9}, std::vector<std::uint8_t>{0, 0, 1, 1});
    CHECK_THROWS_WITH(w.add_document(std::vector<TokenId>{1}), Catch::Contains("plain documents go into a shard of their own"));
    w.close();
  }
  Shard s(path);
  CHECK(s.header().version == 2);
  REQUIRE(s.has_mask());
  CHECK((s.size() == 12 && s.counts(2) && !s.counts(1) && !s.counts(0)));

  const TokenId E = letters().eot(), X = kIgnoreTarget;
  std::vector<TokenId> ids(8), targets(8), seg(8);
  DataLoader packed({path}, letters().hash(), LoaderOptions{.batch = 1, .seq = 8, .order = DataOrder::sequential});
  REQUIRE(packed.packed());
  CHECK(packed.example_count() == 3);
  CHECK(packed.batches_per_epoch() == 2);  // [ex0 ex1 pad] [ex2 pad]
  packed.next(ids, targets, seg);
  CHECK(ids == std::vector<TokenId>{E, 1, 2, 3, E, 4, 5, E});
  CHECK(targets == std::vector<TokenId>{X, 2, 3, X, X, 5, X, X});
  CHECK(seg == std::vector<TokenId>{0, 0, 0, 0, 1, 1, 1, 2});
  packed.next(ids, targets, seg);
  CHECK(ids == std::vector<TokenId>{E, 6, 7, 8, 9, E, E, E});
  CHECK(targets == std::vector<TokenId>{X, X, 8, 9, X, X, X, X});

  DataLoader padded({path}, letters().hash(), LoaderOptions{.batch = 1, .seq = 8, .order = DataOrder::sequential, .packing = false});
  CHECK_FALSE(padded.packed());
  CHECK(padded.batches_per_epoch() == 3);
  padded.next(ids, targets);
  CHECK(ids == std::vector<TokenId>{E, 1, 2, 3, E, E, E, E});
  CHECK(targets == std::vector<TokenId>{X, 2, 3, X, X, X, X, X});

  // Too long for a row: cut, and counted.
  DataLoader cut({path}, letters().hash(), LoaderOptions{.batch = 1, .seq = 4, .order = DataOrder::sequential});
  CHECK(cut.truncated() == 1);
  CHECK_THROWS_WITH(DataLoader({path}, letters().hash(), LoaderOptions{.batch = 1, .seq = 8, .order = DataOrder::random}),
                    Catch::Contains("read by example"));
  // Corrupt flags are refused.
  std::string bytes = file_bytes(path);
  bytes[offsetof(ShardHeader, flags)] = 3;
  write(d / "bad.bin", bytes);
  CHECK_THROWS_WITH(Shard((d / "bad.bin").string()), Catch::Contains("do not fit its version"));
}

namespace {

// A batch's next-token loss summed over its counted positions, their count, and every gradient
// (of the mean), from a fresh zero.
struct LossGrads {
  double sum = 0;
  std::int64_t counted = 0;
  std::vector<float> grads;
};
LossGrads loss_and_grads(AnyModel& m, const train::Batch& batch) {
  NextTokenLoss obj;
  m.zero_grad();
  const double loss = train::forward_backward(m, obj, batch);
  LossGrads out{loss * double(obj.counted()), obj.counted(), {}};
  const Arena g = m.grads().host_copy();
  for (const auto& e : g.entries()) out.grads.insert(out.grads.end(), g[e.name].f32(), g[e.name].f32() + e.numel);
  return out;
}

}  // namespace

TEST_CASE("packing with resets gives the loss and gradients of one example at a time", "[sft][packing]") {
  for (const char* arch : {"llama-tiny", "gpt2"}) {  // RoPE (relative) and learned (absolute) positions
    INFO(arch);
    const Dims d = tiny(arch, 31, 16);
    // Three examples (ids, targets with ignored positions) packed into one row of 12.
    const std::vector<std::vector<std::int32_t>> ex_ids = {{30, 3, 7}, {30, 11, 2, 9}, {30, 4, 4, 8, 1}};
    const std::vector<std::vector<std::int32_t>> ex_tg = {{-100, 7, -100}, {11, -100, 9, -100}, {-100, 4, 8, 1, -100}};
    std::vector<std::int32_t> ids, tg, seg;
    for (std::size_t e = 0; e < 3; ++e) {
      ids.insert(ids.end(), ex_ids[e].begin(), ex_ids[e].end());
      tg.insert(tg.end(), ex_tg[e].begin(), ex_tg[e].end());
      seg.insert(seg.end(), ex_ids[e].size(), std::int32_t(e));
    }
    auto m = make_model(arch, d);
    m->plan(1, 12);
    m->init(7);
    const TensorRef ids_t(ids.data(), DType::i32, {1, 12}), tg_t(tg.data(), DType::i32, {1, 12});
    const train::Batch packed{{ids_t, {}, TensorRef(seg.data(), DType::i32, {1, 12})}, {tg_t, {}}};
    const LossGrads p = loss_and_grads(*m, packed);
    REQUIRE(p.counted == 6);

    // One example at a time: summed losses, and mean gradients weighted by their share of the 6.
    double sum = 0;
    std::vector<float> want(p.grads.size(), 0.0f);
    for (std::size_t e = 0; e < 3; ++e) {
      const std::int64_t n = std::int64_t(ex_ids[e].size());
      m->plan(1, n);
      auto one_ids = ex_ids[e], one_tg = ex_tg[e];
      const LossGrads o = loss_and_grads(*m, train::lm_batch(TensorRef(one_ids.data(), DType::i32, {1, n}),
                                                             TensorRef(one_tg.data(), DType::i32, {1, n})));
      sum += o.sum;
      for (std::size_t i = 0; i < want.size(); ++i) want[i] += o.grads[i] * float(o.counted) / 6.0f;
    }
    CHECK(std::abs(p.sum - sum) < 1e-5 * std::abs(sum));
    double worst = 0;
    for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, double(std::abs(want[i] - p.grads[i])));
    CHECK(worst < 1e-5);
    // Without segments the examples see each other and the loss differs: the check can fail.
    m->plan(1, 12);
    CHECK(std::abs(loss_and_grads(*m, train::lm_batch(ids_t, tg_t)).sum - sum) > 1e-4);
  }
}

TEST_CASE("a vocabulary that grows keeps the base's rows and starts new ones at their mean", "[sft][vocab]") {
  auto base = make_model("llama-tiny", tiny("llama-tiny", 29, 8));
  base->plan(1, 4);
  base->init(3);
  auto grown = make_model("llama-tiny", tiny("llama-tiny", 31, 8));
  grown->plan(1, 4);
  grown->init(4);
  const Arena w = base->params().host_copy();
  const auto names = train::load_weights(w, *grown, 29);
  CHECK(names == std::vector<std::string>{"embed.tokens"});
  const TensorRef before = w["embed.tokens"], after = grown->params()["embed.tokens"];
  const std::int64_t C = before.size(1);
  CHECK(std::equal(before.f32(), before.f32() + 29 * C, after.f32()));
  for (std::int64_t j = 0; j < C; ++j) {
    double mean = 0;
    for (std::int64_t i = 0; i < 29; ++i) mean += before.f32()[i * C + j];
    mean /= 29;
    CHECK(std::abs(after.f32()[29 * C + j] - mean) < 1e-6);
    CHECK(after.f32()[30 * C + j] == after.f32()[29 * C + j]);
  }
  auto other = make_model("llama-tiny", tiny("llama-tiny", 31, 8));
  other->plan(1, 4);
  CHECK_THROWS_WITH(train::load_weights(w, *other, 0), Catch::Contains("only a vocabulary that grows"));
}

TEST_CASE("data synth: deterministic, and train and test never share a reference", "[sft][synth]") {
  const auto d = tmp("synth");
  std::string kjv;
  for (const char* book : {"Genesis", "1 Samuel", "Song of Solomon"})
    for (int ch = 1; ch <= 3; ++ch) {
      kjv += std::string(book) + " " + std::to_string(ch) + "\n\n";
      for (int v = 1; v <= 12; ++v)
        kjv += "  " + std::to_string(v) + " And the word " + std::to_string(ch * 100 + v) + " came unto the prophet of " + book + " saying this.\n";
      kjv += "  13 And the LORD spake unto Moses and unto Aaron, saying this.\n\n";  // the same verse, 9 references
    }
  write(d / "kjv.txt", kjv);
  auto run = [&](const std::string& task, const std::string& split, const std::string& out) {
    SynthOptions o;
    o.task = task, o.split = split, o.source = (d / "kjv.txt").string(), o.test_fraction = 0.25;
    return synth(o, (d / out).string(), [](const std::string&) {});
  };
  const auto n_train = run("kjv-continue", "train", "a.jsonl"), n_test = run("kjv-continue", "test", "b.jsonl");
  CHECK(n_train + n_test == 3 * 3 * 13);
  CHECK(n_test > 0);
  run("kjv-continue", "train", "a2.jsonl");
  CHECK(file_bytes(d / "a.jsonl") == file_bytes(d / "a2.jsonl"));
  auto refs = [&](const std::string& f) {
    std::set<std::string> r;
    std::ifstream in(d / f);
    for (std::string line; std::getline(in, line);) r.insert(nlohmann::json::parse(line)["ref"].get<std::string>());
    return r;
  };
  const auto a = refs("a.jsonl"), b = refs("b.jsonl");
  for (const auto& r : b) CHECK(a.count(r) == 0);
  CHECK(a.count("Song of Solomon 2:5") + b.count("Song of Solomon 2:5") == 1);
  // A verse that recurs word for word is on one side only, whatever its reference.
  int repeated_in_test = 0;
  for (const char* ref : {"Genesis 1:13", "Genesis 2:13", "1 Samuel 3:13", "Song of Solomon 1:13", "Song of Solomon 3:13"})
    repeated_in_test += int(b.count(ref));
  CHECK((repeated_in_test == 0 || repeated_in_test == 5));
  run("kjv-book", "test", "c.jsonl");
  CHECK(refs("c.jsonl") == b);  // the same verses are held out in every verse task
  const auto first = read_conversations((d / "a.jsonl").string());
  REQUIRE(!first.empty());
  CHECK(first[0][0].content.rfind("Continue the verse: And the word", 0) == 0);
  CHECK_THROWS_WITH(run("kjv-poetry", "train", "x.jsonl"), Catch::Contains("known: kjv-continue, kjv-book, wordnet-define"));
}

TEST_CASE("data prepare kind = sft: the template's tokens, masked shards, and errors that write nothing", "[sft][prepare]") {
  const auto d = tmp("prepare-sft");
  BpeTrainOptions bo;
  bo.vocab_size = 300;
  BpeTokenizer::train(sample_texts(), bo).save((d / "base.json").string());
  std::string lines;
  for (int i = 0; i < 40; ++i)
    lines += "{\"instruction\": \"Name day " + std::to_string(i) + "\", \"output\": \"Monday " + std::to_string(i) + "\"}\n";
  write(d / "in.jsonl", lines);
  PrepareConfig c;
  c.kind = "sft";
  c.input.paths = {(d / "in.jsonl").string()};
  c.tokenizer.path = (d / "base.json").string();
  c.split.val_fraction = 0.1;
  c.output.dir = (d / "out").string();
  const auto sum = prepare(c, [](const std::string&) {});
  const auto tok = load_tokenizer(sum.tokenizer_path);
  CHECK(tok->vocab_size() == load_tokenizer((d / "base.json").string())->vocab_size() + 2);
  ChatTemplate saved = ChatTemplate::named("chatml");
  CHECK(ChatTemplate::saved_beside(sum.tokenizer_path, saved));
  CHECK(sum.docs_kept == 40);
  std::int64_t learned = 0, examples = 0;
  for (const auto& p : sum.train_shards) {
    Shard s(p);
    examples += std::int64_t(s.header().doc_count);
    for (std::uint64_t i = 0; i < s.size(); ++i) learned += s.counts(i);
  }
  for (const auto& p : sum.val_shards) examples += std::int64_t(Shard(p).header().doc_count);
  CHECK(examples == 40);
  CHECK(learned > 0);

  // Bad input: nothing is written.
  write(d / "bad.jsonl", lines + "{\"instruction\": \"no answer\"}\n");
  c.input.paths = {(d / "bad.jsonl").string()};
  c.output.dir = (d / "out2").string();
  CHECK_THROWS_WITH(prepare(c, [](const std::string&) {}), Catch::Contains("bad.jsonl:41"));
  CHECK_FALSE(fs::exists(d / "out2"));
  c.input.paths = {(d / "in.jsonl").string()};
  c.tokenizer.path.clear();
  CHECK_THROWS_WITH(prepare(c, [](const std::string&) {}), Catch::Contains("[tokenizer] path"));
  CHECK_FALSE(fs::exists(d / "out2"));
}

TEST_CASE("eval --task: answer loss and accuracy match an independent computation; exact match", "[sft][eval]") {
  const auto tok = chat_tokenizer();
  const auto tmpl = ChatTemplate::named("chatml");
  auto m = make_model("llama-tiny", tiny("llama-tiny", tok.vocab_size(), 64));
  m->plan(1, 1);
  m->init(11);
  const std::vector<Conversation> recs = {{{"user", "Name a day."}, {"assistant", "Monday"}},
                                          {{"user", "Define: lamp"}, {"assistant", "A lamp gives light."}}};
  train::TaskEvalOptions o;
  o.max_tokens = 6;
  const auto res = train::evaluate_task(*m, tok, tmpl, recs, o);
  REQUIRE(res.items.size() == 2);
  // Independently: the whole sequence at batch 1, the answer's positions found by their text.
  for (std::size_t r = 0; r < 2; ++r) {
    std::vector<std::int32_t> ids = {tok.eot()};
    const auto e = tmpl.encode(tok, recs[r]);
    ids.insert(ids.end(), e.ids.begin(), e.ids.end());
    const std::size_t first = 1 + tmpl.prompt(tok, {recs[r][0]}).size();
    const std::size_t end = first + tok.encode(recs[r][1].content).size() + 1;  // with <|im_end|>
    m->plan(1, std::int64_t(ids.size()));
    const TensorRef z = m->forward(TensorRef(ids.data(), DType::i32, {1, std::int64_t(ids.size())}));
    const std::int64_t V = tok.vocab_size();
    double loss = 0;
    std::int64_t hits = 0;
    for (std::size_t t = first; t < end; ++t) {
      const float* row = z.f32() + (t - 1) * std::size_t(V);
      double mx = *std::max_element(row, row + V), s = 0;
      for (std::int64_t v = 0; v < V; ++v) s += std::exp(double(row[v]) - mx);
      loss += mx + std::log(s) - row[ids[t]];
      hits += std::max_element(row, row + V) - row == ids[t];
    }
    CHECK(res.items[r].tokens == std::int64_t(end - first));
    CHECK(std::abs(res.items[r].loss - loss) < 1e-4 * std::abs(loss));
    CHECK(res.items[r].correct == hits);
  }
  // Exact match: the greedy output (with spaces around) as the reference counts, with a letter more it does not.
  train::GenerateOptions g;
  g.max_tokens = 6, g.temperature = 0, g.stop_token = tmpl.end_of_turn(tok);
  auto prompt = tmpl.prompt(tok, {recs[0][0]});
  prompt.insert(prompt.begin(), tok.eot());
  const std::string greedy = tok.decode(train::generate(*m, prompt, g));
  const auto again = train::evaluate_task(
      *m, tok, tmpl, {{{"user", "Name a day."}, {"assistant", " " + greedy + " "}}, {{"user", "Name a day."}, {"assistant", greedy + "q"}}}, o);
  CHECK(again.items[0].output == greedy);
  CHECK(again.items[0].exact);
  CHECK_FALSE(again.items[1].exact);
  CHECK(again.exact_match() == 0.5);
}

TEST_CASE("SFT from a base run: the vocabulary grows, only answers are learned, and the run resumes exactly", "[sft][train]") {
  const auto d = tmp("sft-run");
  const auto base = train::train(read_recipe(write_recipe(d), {"model.max_seq=64", "train.seq=64"}), quiet(d / "base"));
  std::string lines;
  for (int i = 0; i < 60; ++i) lines += "{\"instruction\": \"Say " + std::to_string(i) + "\", \"output\": \"light.\"}\n";
  write(d / "in.jsonl", lines);
  PrepareConfig c;
  c.kind = "sft";
  c.input.paths = {(d / "in.jsonl").string()};
  c.tokenizer.path = (fs::path(corpus()) / "tokenizer.json").string();
  c.output.dir = (d / "sft").string();
  c.split.val_fraction = 0.0;
  prepare(c, [](const std::string&) {});
  // A recipe without [model]: the base decides; data.dir is the SFT data.
  const auto path = d / "sft.toml";
  std::ofstream(path) << "[finetune]\nfrom = \"" << base.run_dir << "\"\n\n[data]\ndir = \"" << c.output.dir
                      << "\"\n\n[train]\nbatch = 2\nseq = 64\nsteps = 12\ndevice = \"cpu\"\nthreads = 2\n\n"
                         "[optim]\nlr = 1e-2\n\n[checkpoint]\nevery = 6\n\n[log]\nevery = 1\n";
  const auto recipe = read_recipe(path.string());
  CHECK(recipe.finetune.base_vocab == 300);
  CHECK(recipe.model.dims.vocab == 302);
  std::string log;
  auto o = quiet(d / "run");
  o.log = [&](const std::string& line) { log += line + "\n"; };
  const auto r = train::train(recipe, o);
  INFO(log);
  CHECK(log.find("vocabulary 300 -> 302") != std::string::npos);
  CHECK(log.find("instruction data: ") != std::string::npos);
  const auto l = losses(r.run_dir);
  REQUIRE(l.size() == 12);
  CHECK(l.back() < l.front());  // the answer is the same every time: it is learned quickly
  const auto resumed = stop_and_resume(recipe, d / "resumed", 6);
  CHECK(losses(resumed.run_dir) == l);

  // The run knows its template, and exports carry it: Transformers' chat_template and end of turn,
  // GGUF's tokenizer.chat_template.
  auto run = load_run(r.run_dir, "cpu");
  ChatTemplate tmpl = ChatTemplate::named("chatml");
  REQUIRE(ChatTemplate::saved_beside(run.state.tokenizer, tmpl));
  export_hf(*run.model, (d / "hf").string(), run.tokenizer.get(), &tmpl);
  const auto cfg = nlohmann::json::parse(file_bytes(d / "hf" / "tokenizer_config.json"));
  CHECK(cfg["chat_template"] == tmpl.jinja());
  CHECK(cfg["eos_token"] == "<|im_end|>");
  export_gguf(*run.model, (d / "m.gguf").string(), *run.tokenizer, "f32", &tmpl);
  CHECK(file_bytes(d / "m.gguf").find("tokenizer.chat_template") != std::string::npos);
}
