// Alignment (docs/alignment.md): preference records and their errors, pairs through the chat
// template, the preference losses against values computed here by hand (and their gradients by
// finite differences of that computation), log 2 with the policy equal to its reference, DPO and
// SimPO through a whole model by the gradient checker, and preference training from a base run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/bpe.hpp"
#include "data/chat.hpp"
#include "data/prepare.hpp"
#include "gradcheck.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/generate.hpp"
#include "train/preference.hpp"
#include "train/rollout.hpp"
#include "train_fixtures.hpp"

using namespace llmtk;
using namespace llmtk::train;
using namespace train_fixtures;
namespace fs = std::filesystem;

namespace {

// The preference losses written out again, in double, from the logits (docs/alignment.md).
struct Direct {
  std::int64_t P, T, V;
  const std::vector<std::int32_t>& targets;
  const std::vector<float>& reference;

  // log π of row r and its counted targets.
  std::pair<double, double> logp(const std::vector<double>& z, std::int64_t r) const {
    double s = 0, n = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int32_t y = targets[std::size_t(r * T + t)];
      if (y == kIgnoreIndex) continue;
      const double* row = z.data() + (r * T + t) * V;
      double mx = row[0], sum = 0;
      for (std::int64_t v = 1; v < V; ++v) mx = std::max(mx, row[v]);
      for (std::int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - mx);
      s += row[y] - mx - std::log(sum), n += 1;
    }
    return {s, n};
  }
  double loss(const std::vector<double>& z, const PreferenceLossOptions& o) const {
    auto log_sigmoid = [](double x) { return -std::log(1 + std::exp(-x)); };
    const double b = o.beta, e = o.label_smoothing;
    double total = 0;
    for (std::int64_t j = 0; j < P; ++j) {
      const auto [lc, nc] = logp(z, j);
      const auto [lr, nr] = logp(z, P + j);
      const double ratio = (lc - reference[std::size_t(j)]) - (lr - reference[std::size_t(P + j)]);
      if (o.loss == "dpo") total += -(1 - e) * log_sigmoid(b * ratio) - e * log_sigmoid(-b * ratio);
      if (o.loss == "ipo") total += (ratio - 1 / (2 * b)) * (ratio - 1 / (2 * b));
      if (o.loss == "simpo") {
        const double h = b * (lc / nc - lr / nr) - o.simpo_gamma;
        total += -(1 - e) * log_sigmoid(h) - e * log_sigmoid(-h);
      }
    }
    return total / double(P);
  }
};

std::vector<PreferenceLossOptions> loss_cases() {
  PreferenceLossOptions dpo, cdpo, ipo, simpo;
  dpo.beta = 0.1;
  cdpo.beta = 0.5, cdpo.label_smoothing = 0.2;
  ipo.loss = "ipo", ipo.beta = 0.5;
  simpo.loss = "simpo", simpo.beta = 2.0, simpo.simpo_gamma = 0.3, simpo.label_smoothing = 0.1;
  return {dpo, cdpo, ipo, simpo};
}

// Logits and targets for P pairs of T positions over V tokens: the first position of every row
// and a few more are not counted, as a prompt's would not be.
struct PairBatch {
  std::int64_t P = 3, T = 5, V = 7;
  std::vector<float> logits, reference;
  std::vector<std::int32_t> targets;
  explicit PairBatch(std::uint64_t seed) {
    Rng rng(seed);
    logits.resize(std::size_t(2 * P * T * V));
    for (auto& x : logits) x = float(1.5 * rng.normal());
    targets.resize(std::size_t(2 * P * T));
    for (std::size_t n = 0; n < targets.size(); ++n)
      targets[n] = n % std::size_t(T) == 0 || n % 7 == 3 ? kIgnoreIndex : std::int32_t(rng.next() % std::uint64_t(V));
    for (std::int64_t r = 0; r < 2 * P; ++r) reference.push_back(float(-4.0 + rng.normal()));
  }
  Labels labels() { return {TensorRef(targets.data(), DType::i32, {2 * P, T}), {}, TensorRef(reference.data(), DType::f32, {2 * P})}; }
  TensorRef logits_ref() { return TensorRef(logits.data(), DType::f32, {2 * P, T, V}); }
};

void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// A tiny base run and the instruction data directory whose tokenizer carries the chat template,
// as instruction tuning leaves them: what alignment starts from.
struct AlignedBase {
  std::string run, data;
};
AlignedBase aligned_base(const fs::path& d) {
  const auto base = train::train(read_recipe(write_recipe(d), {"model.max_seq=48", "train.seq=48"}), quiet(d / "base"));
  write(d / "sft.jsonl", "{\"instruction\": \"Say it\", \"output\": \"light.\"}\n");
  data::PrepareConfig c;
  c.kind = "sft";
  c.input.paths = {(d / "sft.jsonl").string()};
  c.tokenizer.path = (fs::path(corpus()) / "tokenizer.json").string();
  c.output.dir = (d / "sft").string();
  c.split.val_fraction = 0.0;
  data::prepare(c, [](const std::string&) {});
  return {base.run_dir, c.output.dir};
}

std::vector<double> metric_values(const std::string& run, const std::string& key) {
  std::vector<double> out;
  std::ifstream in(fs::path(run) / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (auto j = nlohmann::json::parse(line); j.contains(key)) out.push_back(j[key]);
  return out;
}

double metric(const Metrics& m, const std::string& name) {
  for (const auto& [k, v] : m)
    if (k == name) return v;
  FAIL("no metric " << name);
  return NAN;
}

}  // namespace

TEST_CASE("preference losses: values and gradients against a direct computation", "[align][loss]") {
  ops::ScopedBackend on_reference("reference");
  for (const auto& o : loss_cases()) {
    INFO(o.loss << " beta " << o.beta << " label smoothing " << o.label_smoothing);
    PairBatch b(11);
    const Direct direct{b.P, b.T, b.V, b.targets, b.reference};
    std::vector<double> z(b.logits.begin(), b.logits.end());
    PreferenceLoss loss(o);
    const float value = loss.forward(b.logits_ref(), b.labels());
    CHECK(value == Approx(direct.loss(z, o)).epsilon(1e-6));
    for (std::int64_t r = 0; r < 2 * b.P; ++r) CHECK(loss.logps()[std::size_t(r)] == Approx(direct.logp(z, r).first).epsilon(1e-6));

    // d loss / d logits by central differences of the direct computation.
    std::vector<float> grad = b.logits;
    loss.backward(TensorRef(grad.data(), DType::f32, {2 * b.P, b.T, b.V}));
    double worst = 0;
    for (std::size_t i = 0; i < z.size(); ++i) {
      const double h = 1e-4, x = z[i];
      z[i] = x + h;
      const double up = direct.loss(z, o);
      z[i] = x - h;
      const double down = direct.loss(z, o);
      z[i] = x;
      const double numeric = (up - down) / (2 * h);
      worst = std::max(worst, std::abs(numeric - grad[i]) / (1e-6 + 1e-3 * std::abs(numeric)));
    }
    CHECK(worst < 1);
  }
}

TEST_CASE("a policy equal to its reference: DPO's loss is log 2 exactly, IPO's 1/(4 beta^2)", "[align][loss]") {
  ops::ScopedBackend on_reference("reference");
  PairBatch b(5);
  PreferenceLossOptions o;
  PreferenceLoss probe(o);
  probe.forward(b.logits_ref(), b.labels());
  for (std::size_t r = 0; r < b.reference.size(); ++r) b.reference[r] = float(probe.logps()[r]);  // the reference is the policy
  PreferenceLoss dpo(o);
  CHECK(dpo.forward(b.logits_ref(), b.labels()) == float(std::log(2.0)));
  CHECK(metric(dpo.metrics(), "reward_margin") == 0.0);
  CHECK(metric(dpo.metrics(), "reward_accuracy") == 0.0);
  o.loss = "ipo", o.beta = 0.25;
  PreferenceLoss ipo(o);
  CHECK(ipo.forward(b.logits_ref(), b.labels()) == float(1 / (4 * 0.25 * 0.25)));
}

TEST_CASE("DPO and SimPO through a whole model: gradients by the generic checker", "[align][loss]") {
  ops::ScopedBackend on_reference("reference");
  Dims d = find_arch("llama-tiny").dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 2, d.d_ff = 24, d.vocab = 23, d.max_seq = 8;
  for (const auto& o : {loss_cases()[1], loss_cases()[3]}) {
    INFO(o.loss);
    auto m = make_model("llama-tiny", d);
    const std::int64_t P = 2, T = 6;
    m->plan(2 * P, T);
    PreferenceLoss loss(o);
    std::vector<std::int32_t> ids(std::size_t(2 * P * T)), targets(ids.size());
    std::vector<float> reference(std::size_t(2 * P));
    Rng rng(3);
    const auto rep = test::gradcheck_model(
        *m, loss,
        [&](Rng& r) {
          for (auto& v : ids) v = std::int32_t(r.next() % 23);
          for (std::size_t n = 0; n < targets.size(); ++n)  // the first 2 positions are the prompt
            targets[n] = n % std::size_t(T) < 2 ? kIgnoreIndex : std::int32_t(r.next() % 23);
          for (auto& v : reference) v = float(-12 + r.normal());
          return train::Batch{{TensorRef(ids.data(), DType::i32, {2 * P, T}), {}, {}},
                       {TensorRef(targets.data(), DType::i32, {2 * P, T}), {}, TensorRef(reference.data(), DType::f32, {2 * P})}};
        },
        rng);
    REQUIRE_GRADIENTS(rep);
  }
}

TEST_CASE("preference records: both formats, and errors naming FILE:LINE", "[align][data][errors]") {
  const auto p = parse_preference(R"({"prompt": "Name a day.", "chosen": "Monday", "rejected": "Red", "system": "Be brief."})", "f:1");
  REQUIRE(p.prompt.size() == 2);
  CHECK(p.prompt[0].role == "system");
  CHECK(p.prompt[1].content == "Name a day.");
  CHECK(p.chosen == "Monday");
  CHECK(p.rejected == "Red");
  const auto c = parse_preference(
      R"({"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Day?"}],
          "chosen": [{"role": "assistant", "content": "Monday"}], "rejected": [{"role": "assistant", "content": "Blue"}]})",
      "f:2");
  REQUIRE(c.prompt.size() == 3);
  CHECK(c.chosen == "Monday");
  CHECK(c.rejected == "Blue");

  auto fails = [](const std::string& line, const std::string& what) {
    INFO(line);
    CHECK_THROWS_WITH(parse_preference(line, "pairs.jsonl:7"), Catch::Contains("pairs.jsonl:7") && Catch::Contains(what));
  };
  fails(R"({"prompt": "x", "chosen": "a"})", "no field \"rejected\"");
  fails(R"({"chosen": "a", "rejected": "b"})", "no field \"prompt\"");
  fails(R"({"prompt": "x", "chosen": "", "rejected": "b"})", "\"chosen\" is empty");
  fails(R"({"prompt": "x", "chosen": 3, "rejected": "b"})", "must be a string or");
  fails(R"({"prompt": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "chosen": "a", "rejected": "b"})",
        "must end with a user turn");
  fails(R"({"prompt": [{"role": "robot", "content": "x"}], "chosen": "a", "rejected": "b"})", "role \"robot\"");
  fails("not json", "not valid JSON");

  const auto d = tmp("pref-records");
  write(d / "p.jsonl", "{\"prompt\": \"a\", \"chosen\": \"x\", \"rejected\": \"y\"}\n\n"
                       "{\"prompt\": \"b\", \"chosen\": \"same\", \"rejected\": \"same\"}\n"
                       "{\"prompt\": \"c\", \"chosen\": \"x\", \"rejected\": \"z\"}\n");
  const auto f = read_preferences((d / "p.jsonl").string());
  CHECK(f.pairs.size() == 2);
  CHECK(f.identical == 1);
  CHECK(f.first_identical == (d / "p.jsonl").string() + ":3");
  write(d / "bad.jsonl", "{\"prompt\": \"a\", \"chosen\": \"x\", \"rejected\": \"y\"}\n{\"prompt\": \"a\", \"chosen\": \"x\"}\n");
  CHECK_THROWS_WITH(read_preferences((d / "bad.jsonl").string()), Catch::Contains("bad.jsonl:2") && Catch::Contains("rejected"));
}

TEST_CASE("a pair through the chat template: only the last reply and its end marker count", "[align][data]") {
  std::vector<std::string> texts = {"Hi Hello Day? Monday Blue user assistant system. Name a day of the week."};
  data::BpeTrainOptions bo;
  bo.vocab_size = 300;
  auto tok = data::BpeTokenizer::train(texts, bo);
  const auto tmpl = data::ChatTemplate::named("chatml");
  for (const auto& s : tmpl.special_tokens()) tok.add_special(s);
  PreferencePair p{{{"user", "Hi"}, {"assistant", "Hello"}, {"user", "Day?"}}, "Monday", "Blue"};
  const auto e = encode_pair(tok, tmpl, p);
  for (int side = 0; side < 2; ++side) {
    std::string counted;
    for (std::size_t t = 0; t < e.ids[side].size(); ++t)
      if (e.targets[side][t] != kIgnoreIndex) {
        CHECK(e.targets[side][t] == e.ids[side][t + 1]);  // next-token targets
        counted += tok.token_bytes(e.targets[side][t]);
      }
    CHECK(counted == std::string(side == 0 ? "Monday" : "Blue") + "<|im_end|>");  // not "Hello", the earlier reply
    CHECK(e.ids[side][0] == tok.eot());
  }
}

TEST_CASE("preference training from a base run: log 2 at the start, nothing moves at lr 0, DPO learns, "
          "resume is exact, another tokenizer is refused",
          "[align][train]") {
  const auto d = tmp("align-run");
  const AlignedBase base = aligned_base(d);
  std::string pairs;
  for (int i = 0; i < 40; ++i)
    pairs += "{\"prompt\": \"Which came first, " + std::to_string(i) + "?\", \"chosen\": \"light.\", \"rejected\": \"darkness.\"}\n";
  pairs += "{\"prompt\": \"Same?\", \"chosen\": \"light.\", \"rejected\": \"light.\"}\n";
  write(d / "pairs.jsonl", pairs);
  const auto path = d / "dpo.toml";
  std::ofstream(path) << "[finetune]\nfrom = \"" << base.run << "\"\n\n[data]\ndir = \"" << base.data
                      << "\"\n\n[preference]\ntrain = \"" << (d / "pairs.jsonl").string() << "\"\ntest = \""
                      << (d / "pairs.jsonl").string() << "\"\nbeta = 0.5\n\n"
                         "[train]\nbatch = 4\nseq = 48\nsteps = 8\ndevice = \"cpu\"\nthreads = 2\n\n"
                         "[optim]\nlr = 1e-2\nweight_decay = 0\n\n[eval]\nevery = 4\nbatches = 2\n\n[checkpoint]\nevery = 4\n\n[log]\nevery = 1\n";
  const auto recipe = read_recipe(path.string());
  CHECK(recipe.rows() == 8);  // two rows per pair
  CHECK_THROWS_WITH(read_recipe(path.string(), {"data.order=by_length"}), Catch::Contains("\"shuffled\"") && Catch::Contains("\"sequential\""));
  CHECK_THROWS_WITH(read_recipe(path.string(), {"preference.test=" + (d / "missing.jsonl").string()}), Catch::Contains("does not exist"));
  std::string log;
  auto o = quiet(d / "run");
  o.log = [&](const std::string& line) { log += line + "\n"; };
  const auto r = train::train(recipe, o);
  INFO(log);
  CHECK(log.find("warning: 1 training records have chosen equal to rejected") != std::string::npos);
  CHECK(log.find("reference model: ") != std::string::npos);
  const auto l = losses(r.run_dir);
  REQUIRE(l.size() == 8);
  CHECK(float(l[0]) == float(std::log(2.0)));  // the policy starts as its reference
  CHECK(l.back() < 0.5);                       // and learns to prefer "light."
  std::ifstream metrics(fs::path(r.run_dir) / "metrics.jsonl");
  std::string line, last_eval;
  while (std::getline(metrics, line))
    if (line.find("val_reward_accuracy") != std::string::npos) last_eval = line;
  REQUIRE(!last_eval.empty());
  CHECK(nlohmann::json::parse(last_eval)["val_reward_accuracy"] == 1.0);

  // Resuming from the middle gives the same losses: the pair order and the reference come back.
  const auto resumed = stop_and_resume(recipe, d / "resumed", 4);
  CHECK(losses(resumed.run_dir) == l);

  // At lr 0 nothing moves: every step's loss is log 2 and the weights are the base's.
  const auto still = train::train(read_recipe(path.string(), {"optim.lr=0", "train.steps=3", "eval.every=0"}), quiet(d / "lr0"));
  for (double x : losses(still.run_dir)) CHECK(float(x) == float(std::log(2.0)));
  auto a = load_run(still.run_dir, "cpu"), b = load_run(base.run, "cpu");
  const auto& pa = a.model->params();
  for (std::size_t i = 0; i < pa.entries().size(); ++i) {
    const auto& e = pa.entries()[i];
    if (e.name == "embed.tokens" || e.name == "head.w") continue;  // two rows longer: the template's tokens
    const int j = b.model->params().find(e.name);
    REQUIRE(j >= 0);
    CHECK(std::memcmp(pa[int(i)].data, b.model->params()[j].data, pa[int(i)].bytes()) == 0);
  }

  // A reference trained with another tokenizer is refused, naming both tokenizers' hashes.
  const auto other_corpus = d / "other";
  fs::create_directories(other_corpus);
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Another text about the sea and ships number " + std::to_string(i) + ".\n\n";
  write(other_corpus / "t.txt", text);
  data::PrepareConfig oc;
  oc.input.paths = {(other_corpus / "t.txt").string()};
  oc.dedup.near = false;
  oc.split.val_fraction = 0.2;
  oc.tokenizer.vocab_size = 300;
  oc.output.dir = (other_corpus / "out").string();
  data::prepare(oc, [](const std::string&) {});
  const auto other = train::train(read_recipe(write_recipe(d), {"model.max_seq=48", "train.seq=48", "data.dir=" + oc.output.dir}),
                                  quiet(d / "other-base"));
  CHECK_THROWS_WITH(train::train(read_recipe(path.string(), {"preference.reference=" + other.run_dir}), quiet(d / "bad-ref")),
                    Catch::Contains("tokenizer") && Catch::Contains("hash"));
  CHECK(!fs::exists(d / "bad-ref" / "checkpoints"));
}

TEST_CASE("GRPO's pieces on hand-made numbers: rewards, group advantages, the clipped loss and its gradient", "[align][grpo]") {
  CHECK(verifiable_reward("exact_match", " Genesis ", "Genesis") == 1.0);
  CHECK(verifiable_reward("exact_match", "Genesis 1", "Genesis") == 0.0);
  CHECK(verifiable_reward("contains", "It is Genesis.", "Genesis") == 1.0);
  CHECK(verifiable_reward("contains", "Exodus", "Genesis") == 0.0);
  CHECK_THROWS_WITH(verifiable_reward("f1", "a", "b"), Catch::Contains("exact_match, contains"));

  const auto a = group_advantages({1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 3}, 4);
  const double sd = std::sqrt(4 * 0.25 / 3);  // the sample standard deviation of {1, 0, 0, 1}
  CHECK(a[0] == Approx(0.5 / (sd + 1e-4)));
  CHECK(a[1] == Approx(-0.5 / (sd + 1e-4)));
  for (int i = 4; i < 8; ++i) CHECK(a[std::size_t(i)] == 0.0f);  // all equal: nothing to learn
  CHECK(a[11] == Approx((3 - 0.75) / (1.5 + 1e-4)));             // {0, 0, 0, 3}: mean 0.75, sd 1.5
  CHECK(a[8] + a[9] + a[10] + a[11] == Approx(0).margin(1e-6));

  // The loss against a direct computation, with a behaviour policy far enough from the current one
  // that some ratios are clipped, and its gradient by central differences of that computation.
  ops::ScopedBackend on_reference("reference");
  const std::int64_t R = 4, T = 4, V = 5;
  Rng rng(9);
  std::vector<float> logits(std::size_t(R * T * V)), behaviour(std::size_t(R * T)), reference(std::size_t(R * T));
  std::vector<std::int32_t> targets(std::size_t(R * T));
  for (auto& x : logits) x = float(rng.normal());
  for (std::size_t n = 0; n < targets.size(); ++n) targets[n] = n % 4 == 0 ? kIgnoreIndex : std::int32_t(rng.next() % 5);
  for (auto& x : behaviour) x = float(-1.6 + 0.8 * rng.normal());
  for (auto& x : reference) x = float(-1.6 + 0.5 * rng.normal());
  std::vector<float> adv = {1.2f, -0.7f, 0.4f, -1.5f};
  GrpoLossOptions o;
  o.beta = 0.3, o.clip = 0.2;
  auto direct = [&](const std::vector<double>& z, int* clipped = nullptr) {
    double total = 0;
    for (std::int64_t i = 0; i < R; ++i) {
      double sum = 0, n = 0;
      for (std::int64_t t = 0; t < T; ++t) {
        const std::size_t k = std::size_t(i * T + t);
        if (targets[k] == kIgnoreIndex) continue;
        const double* row = z.data() + k * std::size_t(V);
        double mx = row[0], e = 0;
        for (std::int64_t v = 1; v < V; ++v) mx = std::max(mx, row[v]);
        for (std::int64_t v = 0; v < V; ++v) e += std::exp(row[v] - mx);
        const double lp = row[targets[k]] - mx - std::log(e), rho = std::exp(lp - behaviour[k]), A = adv[std::size_t(i)];
        const double clipped_rho = std::clamp(rho, 1 - o.clip, 1 + o.clip);
        if (clipped) *clipped += rho * A > clipped_rho * A;
        const double d = reference[k] - lp;
        sum += -std::min(rho * A, clipped_rho * A) + o.beta * (std::exp(d) - d - 1), n += 1;
      }
      total += sum / n;
    }
    return total / double(R);
  };
  Labels labels(TensorRef(targets.data(), DType::i32, {R, T}), {}, TensorRef(reference.data(), DType::f32, {R, T}));
  labels.advantages = TensorRef(adv.data(), DType::f32, {R});
  labels.behaviour = TensorRef(behaviour.data(), DType::f32, {R, T});
  GrpoLoss loss(o);
  std::vector<double> z(logits.begin(), logits.end());
  int clipped = 0;
  CHECK(loss.forward(TensorRef(logits.data(), DType::f32, {R, T, V}), labels) == Approx(direct(z, &clipped)).epsilon(1e-6));
  REQUIRE(clipped > 0);  // the case exercises the clip
  CHECK(metric(loss.metrics(), "clip_fraction") == Approx(clipped / 12.0));
  std::vector<float> grad = logits;
  loss.backward(TensorRef(grad.data(), DType::f32, {R, T, V}));
  double worst = 0;
  for (std::size_t i = 0; i < z.size(); ++i) {
    const double h = 1e-5, x = z[i];
    z[i] = x + h;
    const double up = direct(z);
    z[i] = x - h;
    const double down = direct(z);
    z[i] = x;
    worst = std::max(worst, std::abs((up - down) / (2 * h) - grad[i]) / (1e-6 + 1e-3 * std::abs(grad[i])));
  }
  CHECK(worst < 1);
}

TEST_CASE("replies to one prompt read once: generate_group samples what generate samples", "[align][grpo]") {
  Dims d = find_arch("llama-tiny").dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 2, d.d_ff = 24, d.vocab = 30, d.max_seq = 24;
  auto m = make_model("llama-tiny", d);
  m->plan(1, 1);
  m->init(4);
  GenerateOptions o;
  o.max_tokens = 6, o.temperature = 1.5, o.top_k = 0, o.stop_token = 3;
  const std::vector<data::TokenId> prompt = {1, 5, 7, 2, 9, 11};
  const std::vector<std::uint64_t> seeds = {1, 2, 3, 4, 5, 6};
  const auto group = generate_group(*m, prompt, o, seeds);
  REQUIRE(group.size() == seeds.size());
  std::set<std::vector<data::TokenId>> distinct;
  for (std::size_t i = 0; i < seeds.size(); ++i) {
    o.seed = seeds[i];
    CHECK(group[i] == generate(*m, prompt, o));
    distinct.insert(group[i]);
  }
  CHECK(distinct.size() > 1);  // different seeds, different replies: the cache was restored, not reused
  // A vocabulary padded past the tokenizer's: only ids below the limit are sampled.
  o.vocab_limit = 8, o.stop_token = -1, o.temperature = 3.0;
  for (const auto& reply : generate_group(*m, prompt, o, seeds))
    for (const auto id : reply) CHECK(id < 8);
}

TEST_CASE("GRPO from a base run: reproducible, resumes exactly, and nothing moves at lr 0", "[align][grpo][train]") {
  const auto d = tmp("grpo-run");
  const AlignedBase base = aligned_base(d);
  std::string tasks;
  // Rewarded when the reply contains an "e": the tiny base's samples earn it about half the time,
  // so groups differ and there is something to learn.
  for (int i = 0; i < 24; ++i) tasks += "{\"instruction\": \"Say e " + std::to_string(i) + "\", \"output\": \"e\"}\n";
  write(d / "tasks.jsonl", tasks);
  const auto path = d / "grpo.toml";
  std::ofstream(path) << "[finetune]\nfrom = \"" << base.run << "\"\n\n[data]\ndir = \"" << base.data
                      << "\"\n\n[rl]\ntask = \"" << (d / "tasks.jsonl").string() << "\"\ntest = \"" << (d / "tasks.jsonl").string()
                      << "\"\nreward = \"contains\"\ngroup = 4\nmax_tokens = 4\ntemperature = 1.5\nbeta = 0.1\nsample_every = 2\n\n"
                         "[train]\nbatch = 2\nseq = 32\nsteps = 6\ndevice = \"cpu\"\nthreads = 2\n\n"
                         "[optim]\nlr = 1e-2\nweight_decay = 0\n\n[eval]\nevery = 3\nbatches = 2\n\n[checkpoint]\nevery = 3\n\n[log]\nevery = 1\n";
  const auto recipe = read_recipe(path.string());
  CHECK(recipe.rows() == 8);  // rl.group rows per prompt
  CHECK(!recipe.checkpoint.keep_best);  // RL measures no validation loss to rank checkpoints by
  CHECK_THROWS_WITH(read_recipe(path.string(), {"checkpoint.keep_best=true"}), Catch::Contains("keep_best"));
  const auto r = train::train(recipe, quiet(d / "run"));
  const auto l = losses(r.run_dir);
  REQUIRE(l.size() == 6);
  const auto rewards = metric_values(r.run_dir, "reward");
  REQUIRE(rewards.size() == 6);
  CHECK(std::count_if(rewards.begin(), rewards.end(), [](double x) { return x > 0 && x < 1; }) >= 3);
  CHECK(std::count_if(l.begin(), l.end(), [](double x) { return x != 0; }) >= 3);
  CHECK(metric_values(r.run_dir, "val_exact_match").size() == 2);
  CHECK(file_bytes(fs::path(r.run_dir) / "samples.txt").find("reference: e\n") != std::string::npos);
  // The same seed samples and learns the same, bit for bit; resuming restores the sampling too.
  const auto again = train::train(recipe, quiet(d / "again"));
  CHECK(losses(again.run_dir) == l);
  CHECK(metric_values(again.run_dir, "reward") == metric_values(r.run_dir, "reward"));
  const auto resumed = stop_and_resume(recipe, d / "resumed", 3);
  CHECK(losses(resumed.run_dir) == l);
  CHECK(metric_values(resumed.run_dir, "reward") == metric_values(r.run_dir, "reward"));

  // At lr 0 the policy stays its reference: KL exactly 0 at every step, the weights the base's.
  const auto still = train::train(read_recipe(path.string(), {"optim.lr=0", "train.steps=3", "eval.every=0"}), quiet(d / "lr0"));
  for (double kl : metric_values(still.run_dir, "kl")) CHECK(kl == 0.0);
  auto a = load_run(still.run_dir, "cpu"), b = load_run(base.run, "cpu");
  for (std::size_t i = 0; i < a.model->params().entries().size(); ++i) {
    const auto& e = a.model->params().entries()[i];
    if (e.name == "embed.tokens" || e.name == "head.w") continue;  // two rows longer: the template's tokens
    CHECK(std::memcmp(a.model->params()[int(i)].data, b.model->params()[b.model->params().find(e.name)].data,
                      a.model->params()[int(i)].bytes()) == 0);
  }
}

// The inputs and outputs of each preference loss, for the independent PyTorch check
// (tests/golden/check_preference.py, run by tests/scripts/preference_golden.sh).
// ---- reward model -------------------------------------------------------------------------------

TEST_CASE("Bradley-Terry loss on hand-made scores: the positions it reads, its value and its gradient", "[align][reward]") {
  const std::int64_t P = 2, T = 5, R = 2 * P;
  std::vector<std::int32_t> targets(std::size_t(R * T), kIgnoreIndex);
  targets[0 * T + 1] = 3, targets[0 * T + 2] = 4;  // row 0: the last target at 2, so its score at 3
  for (int t = 1; t <= 3; ++t) targets[std::size_t(1 * T + t)] = 2;  // row 1: at 4
  targets[2 * T + 4] = 1;  // row 2: a target at the row's last position: the score there, 4
  targets[3 * T + 0] = 5;  // row 3: at 1
  CHECK(score_positions(targets.data(), R, T) == std::vector<std::int64_t>{3, 4, 4, 1});
  std::vector<float> scores(std::size_t(R * T));
  Rng rng(7);
  for (auto& x : scores) x = float(rng.normal());
  const TensorRef s(scores.data(), DType::f32, {R, T, 1});
  const Labels labels(TensorRef(targets.data(), DType::i32, {R, T}));
  auto direct = [&](const std::vector<float>& v) {
    const double m0 = double(v[0 * T + 3]) - v[2 * T + 4], m1 = double(v[1 * T + 4]) - v[3 * T + 1];
    return (std::log1p(std::exp(-m0)) + std::log1p(std::exp(-m1))) / 2;
  };
  BradleyTerryLoss loss;
  CHECK(loss.forward(s, labels) == Approx(direct(scores)).epsilon(1e-6));
  const double acc = ((scores[0 * T + 3] > scores[2 * T + 4]) + (scores[1 * T + 4] > scores[3 * T + 1])) / 2.0;
  CHECK(metric(loss.metrics(), "reward_accuracy") == acc);
  std::vector<float> grad(scores.size(), 99.0f);
  loss.backward(TensorRef(grad.data(), DType::f32, {R, T, 1}));
  for (std::size_t i = 0; i < scores.size(); ++i) {
    std::vector<float> up = scores, down = scores;
    up[i] += 1e-3f, down[i] -= 1e-3f;
    INFO("score " << i);
    CHECK(grad[i] == Approx((direct(up) - direct(down)) / 2e-3).margin(1e-4));  // 0 where no score is read
  }
  // Equal scores: −log σ(0) = log 2, accuracy 0 (a tie is not a win).
  std::vector<float> flat(scores.size(), 0.25f);
  BradleyTerryLoss tie;
  CHECK(tie.forward(TensorRef(flat.data(), DType::f32, {R, T, 1}), labels) == float(std::log(2.0)));
  CHECK(metric(tie.metrics(), "reward_accuracy") == 0.0);
  // A row with nothing counted, or outputs of a language model, are named.
  std::fill(targets.begin() + 3 * T, targets.end(), kIgnoreIndex);
  CHECK_THROWS_WITH(BradleyTerryLoss().forward(s, labels), Catch::Contains("pair 1 has a reply with no counted target"));
  std::vector<float> logits(std::size_t(R * T * 7));
  CHECK_THROWS_WITH(BradleyTerryLoss().forward(TensorRef(logits.data(), DType::f32, {R, T, 7}), labels),
                    Catch::Contains("scores [4, 5, 1]") && Catch::Contains("+score"));
}

TEST_CASE("a reward model: a score head in the LM head's place, its gradients by the generic checker", "[align][reward]") {
  ops::ScopedBackend on_reference("reference");
  Dims d = find_arch("llama-tiny").dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 2, d.d_ff = 24, d.vocab = 23, d.max_seq = 8;
  auto m = make_model("llama-tiny+score", d);
  CHECK(m->scorer());
  CHECK(m->outputs() == 1);
  CHECK(m->structure()[0] == "WithScoreHead<Llama> = DecoderLM<TokenEmbedding, Repeat<LlamaBlock>, RMSNorm, ScoreHead>");
  CHECK_THROWS_WITH(m->plan_decode(4), Catch::Contains("cannot generate"));
  CHECK_THROWS_WITH(make_model("gpt5+score", d), Catch::Contains("registered: gpt2+score"));
  const std::int64_t P = 2, T = 6;
  m->plan(2 * P, T);
  CHECK(m->params().entries().back().name == "head.weight");
  CHECK(m->params().entries().back().shape == std::vector<std::int64_t>{1, 16});
  BradleyTerryLoss loss;
  std::vector<std::int32_t> ids(std::size_t(2 * P * T)), targets(ids.size());
  Rng rng(5);
  const auto rep = test::gradcheck_model(
      *m, loss,
      [&](Rng& r) {
        for (auto& v : ids) v = std::int32_t(r.next() % 23);
        for (std::size_t n = 0; n < targets.size(); ++n)  // replies of different lengths after a 2-token prompt
          targets[n] = n % std::size_t(T) < 2 || n % std::size_t(T) > 2 + (n / std::size_t(T)) % 3 ? kIgnoreIndex : 1;
        return train::Batch{{TensorRef(ids.data(), DType::i32, {2 * P, T}), {}, {}},
                            {TensorRef(targets.data(), DType::i32, {2 * P, T})}};
      },
      rng);
  REQUIRE_GRADIENTS(rep);
}

TEST_CASE("reward model training from a base run: learns the preference, resumes exactly, scores pairs and replies",
          "[align][reward][train]") {
  const auto d = tmp("align-reward");
  const AlignedBase base = aligned_base(d);
  std::string pairs;
  for (int i = 0; i < 40; ++i)
    pairs += "{\"prompt\": \"Which came first, " + std::to_string(i) + "?\", \"chosen\": \"light.\", \"rejected\": \"darkness.\"}\n";
  write(d / "pairs.jsonl", pairs);
  const auto path = d / "reward.toml";
  std::ofstream(path) << "[finetune]\nfrom = \"" << base.run << "\"\n\n[data]\ndir = \"" << base.data
                      << "\"\n\n[reward]\ntrain = \"" << (d / "pairs.jsonl").string() << "\"\ntest = \""
                      << (d / "pairs.jsonl").string() << "\"\n\n"
                         "[train]\nbatch = 4\nseq = 48\nsteps = 24\ndevice = \"cpu\"\nthreads = 2\n\n"
                         "[optim]\nlr = 3e-2\nweight_decay = 0\n\n[eval]\nevery = 12\nbatches = 2\n\n[checkpoint]\nevery = 12\n\n[log]\nevery = 1\n";
  const auto recipe = read_recipe(path.string());
  CHECK(recipe.model.arch == "llama-tiny+score");
  CHECK(recipe.rows() == 8);
  std::string log;
  auto o = quiet(d / "run");
  o.log = [&](const std::string& line) { log += line + "\n"; };
  const auto r = train::train(recipe, o);
  INFO(log);
  CHECK(log.find("the score head (head.weight) starts at random") != std::string::npos);
  const auto l = losses(r.run_dir);
  REQUIRE(l.size() == 24);
  CHECK(l.back() < 0.1);  // from about log 2: "light." scores above "darkness."
  CHECK(metric_values(r.run_dir, "val_reward_accuracy").back() == 1.0);

  // Every parameter but the head starts as the base's: at lr 0 they stay so.
  const auto still = train::train(read_recipe(path.string(), {"optim.lr=0", "train.steps=2", "eval.every=0"}), quiet(d / "lr0"));
  auto a = load_run(still.run_dir, "cpu"), b = load_run(base.run, "cpu");
  for (const auto& e : a.model->params().entries()) {
    if (e.name == "head.weight" || e.name == "embed.tokens") continue;  // new; two rows longer (the template's tokens)
    const int j = b.model->params().find(e.name);
    REQUIRE(j >= 0);
    CHECK(std::memcmp(a.model->params()[e.name].data, b.model->params()[j].data, e.numel * 4) == 0);
  }

  // Resuming from the middle gives the same losses.
  CHECK(losses(stop_and_resume(recipe, d / "resumed", 12).run_dir) == l);

  // Scores of pairs and of single replies, as `llmtk reward` prints them.
  auto rm = load_run(r.run_dir, "cpu");
  data::ChatTemplate tmpl;
  REQUIRE(data::ChatTemplate::saved_beside(rm.state.tokenizer, tmpl));
  const auto res = evaluate_reward_pairs(*rm.model, *rm.tokenizer, tmpl, read_preferences((d / "pairs.jsonl").string()).pairs, 3);
  CHECK(res.pairs == 40);
  CHECK(res.accuracy == 1.0);
  CHECK(res.margin > 2.0);
  write(d / "replies.jsonl", "{\"prompt\": \"Which came first, 3?\", \"completion\": \"light.\"}\n"
                             "{\"instruction\": \"Which came first, 3?\", \"output\": \"darkness.\"}\n");
  const auto scores = score_replies(*rm.model, *rm.tokenizer, tmpl, read_replies((d / "replies.jsonl").string()), 2);
  REQUIRE(scores.size() == 2);
  CHECK(scores[0] - scores[1] == Approx(res.margin).epsilon(0.2));
  write(d / "bad.jsonl", "{\"prompt\": \"x\"}\n");
  CHECK_THROWS_WITH(read_replies((d / "bad.jsonl").string()), Catch::Contains("bad.jsonl:1"));
  CHECK_THROWS_WITH(score_replies(*b.model, *rm.tokenizer, tmpl, read_replies((d / "replies.jsonl").string()), 2),
                    Catch::Contains("is a language model"));

  // Recipes that cannot work say why.
  CHECK_THROWS_WITH(read_recipe(path.string(), {"preference.train=" + (d / "pairs.jsonl").string()}),
                    Catch::Contains("[preference] and [reward] together"));
  CHECK_THROWS_WITH(read_recipe(path.string(), {"log.sample_prompt=In"}), Catch::Contains("cannot write any"));
  CHECK_THROWS_WITH(read_recipe(path.string(), {"finetune.from="}), Catch::Contains("[reward] trains a reward model from a trained one"));
  CHECK_THROWS_WITH(read_recipe(path.string(), {"model.arch=llama-tiny"}), Catch::Contains("(a reward model: llama-tiny+score)"));
}

// ---- PPO ----------------------------------------------------------------------------------------

TEST_CASE("PPO's pieces on hand-made numbers: GAE, per-token advantages, the critic's loss", "[align][ppo]") {
  std::vector<double> a, g;
  gae({0, 0, 1}, {0.5, 0.2, 0.4}, 1.0, 0.95, a, g);
  // δ = (−0.3, 0.2, 0.6); A_2 = 0.6, A_1 = 0.2 + 0.95·0.6, A_0 = −0.3 + 0.95·A_1; G = A + V.
  CHECK(a[2] == Approx(0.6));
  CHECK(a[1] == Approx(0.77));
  CHECK(a[0] == Approx(0.4315));
  CHECK(g[0] == Approx(0.9315));
  CHECK(g[1] == Approx(0.97));
  CHECK(g[2] == Approx(1.0));
  gae({0, 0, 1}, {0.5, 0.2, 0.4}, 1.0, 1.0, a, g);  // λ = 1: the return minus the value
  CHECK(a == std::vector<double>{0.5, 0.8, 0.6});
  CHECK(g == std::vector<double>{1.0, 1.0, 1.0});
  gae({1, 1}, {0, 0}, 0.5, 1.0, a, g);  // γ discounts: G_0 = 1 + 0.5·1
  CHECK(g[0] == 1.5);

  // Advantages per token equal to each row's: the same loss and gradient as per row.
  ops::ScopedBackend on_reference("reference");
  PairBatch b(3);
  const std::int64_t R = 2 * b.P, T = b.T;
  std::vector<float> per_row = {1.0f, -0.5f, 0.25f, 0.0f, 2.0f, -1.0f}, per_token(std::size_t(R * T));
  for (std::int64_t k = 0; k < R * T; ++k) per_token[std::size_t(k)] = per_row[std::size_t(k / T)];
  std::vector<float> ref(std::size_t(R * T), -2.0f);
  auto run = [&](TensorRef adv, std::vector<float>& grad) {
    Labels l(TensorRef(b.targets.data(), DType::i32, {R, T}), {}, TensorRef(ref.data(), DType::f32, {R, T}));
    l.advantages = adv;
    GrpoLoss loss({0.1, 0.2, 1.0});
    const float v = loss.forward(b.logits_ref(), l);
    grad = b.logits;
    loss.backward(TensorRef(grad.data(), DType::f32, {R, T, b.V}));
    return v;
  };
  std::vector<float> g1, g2;
  CHECK(run(TensorRef(per_row.data(), DType::f32, {R}), g1) == run(TensorRef(per_token.data(), DType::f32, {R, T}), g2));
  CHECK(g1 == g2);
  std::vector<float> wrong(std::size_t(R + 1));
  CHECK_THROWS_WITH(run(TensorRef(wrong.data(), DType::f32, {R + 1}), g1), Catch::Contains("per token"));

  // Sampled at temperature 0.5, π is the policy of logits / 0.5: the loss of 2z, the gradient 2·f'(2z).
  {
    Labels l(TensorRef(b.targets.data(), DType::i32, {R, T}), {}, TensorRef(ref.data(), DType::f32, {R, T}));
    l.advantages = TensorRef(per_row.data(), DType::f32, {R});
    std::vector<float> z = b.logits, doubled = b.logits;
    for (auto& x : doubled) x *= 2;
    GrpoLoss hot({0.1, 0.2, 0.5}), plain({0.1, 0.2, 1.0});
    CHECK(hot.forward(TensorRef(z.data(), DType::f32, {R, T, b.V}), l) ==
          plain.forward(TensorRef(doubled.data(), DType::f32, {R, T, b.V}), l));
    hot.backward(TensorRef(z.data(), DType::f32, {R, T, b.V}));
    plain.backward(TensorRef(doubled.data(), DType::f32, {R, T, b.V}));
    for (auto& x : doubled) x *= 2;
    CHECK(z == doubled);
  }

  // The critic's loss: ½ mean (V − G)² over counted positions; its gradient (V − G)/N there.
  std::vector<std::int32_t> tg = {kIgnoreIndex, 4, 4, kIgnoreIndex};
  std::vector<float> values = {9.0f, 0.5f, -1.0f, 9.0f}, returns = {0.0f, 1.0f, 1.0f, 0.0f};
  Labels vl(TensorRef(tg.data(), DType::i32, {1, 4}));
  vl.returns = TensorRef(returns.data(), DType::f32, {1, 4});
  ValueLoss value;
  CHECK(value.forward(TensorRef(values.data(), DType::f32, {1, 4, 1}), vl) == Approx(0.5 * (0.25 + 4.0) / 2));
  std::vector<float> dv(4, 7.0f);
  value.backward(TensorRef(dv.data(), DType::f32, {1, 4, 1}));
  CHECK(dv == std::vector<float>{0.0f, -0.25f, -1.0f, 0.0f});
  vl.returns = {};
  CHECK_THROWS_WITH(value.forward(TensorRef(values.data(), DType::f32, {1, 4, 1}), vl), Catch::Contains("labels.returns"));
}

TEST_CASE("PPO with a reward model, and GRPO with one: reproducible, resume exactly (the critic too)", "[align][ppo][train]") {
  const auto d = tmp("ppo-run");
  const AlignedBase base = aligned_base(d);
  // A reward model that prefers replies with "light" in them.
  std::string pairs, tasks;
  for (int i = 0; i < 40; ++i)
    pairs += "{\"prompt\": \"Say it " + std::to_string(i) + "\", \"chosen\": \"light.\", \"rejected\": \"darkness.\"}\n";
  for (int i = 0; i < 24; ++i) tasks += "{\"instruction\": \"Say it " + std::to_string(i) + "\", \"output\": \"light.\"}\n";
  write(d / "pairs.jsonl", pairs);
  write(d / "tasks.jsonl", tasks);
  std::ofstream(d / "reward.toml") << "[finetune]\nfrom = \"" << base.run << "\"\n\n[data]\ndir = \"" << base.data
                                   << "\"\n\n[reward]\ntrain = \"" << (d / "pairs.jsonl").string()
                                   << "\"\n\n[train]\nbatch = 4\nseq = 48\nsteps = 12\ndevice = \"cpu\"\nthreads = 2\n\n"
                                      "[optim]\nlr = 3e-2\nweight_decay = 0\n\n[log]\nevery = 1\n";
  const auto rm = train::train(read_recipe((d / "reward.toml").string()), quiet(d / "rm"));
  const auto path = d / "ppo.toml";
  std::ofstream(path) << "[finetune]\nfrom = \"" << base.run << "\"\n\n[data]\ndir = \"" << base.data
                      << "\"\n\n[rl]\nalgorithm = \"ppo\"\ntask = \"" << (d / "tasks.jsonl").string() << "\"\ntest = \""
                      << (d / "tasks.jsonl").string() << "\"\nreward = \"model\"\nreward_model = \"" << rm.run_dir
                      << "\"\ngroup = 2\nmax_tokens = 4\ntemperature = 1.5\nbeta = 0.1\ncritic_lr = 1e-2\nsample_every = 2\n\n"
                         "[train]\nbatch = 2\nseq = 32\nsteps = 6\ndevice = \"cpu\"\nthreads = 2\n\n"
                         "[optim]\nlr = 1e-2\nweight_decay = 0\n\n[eval]\nevery = 3\nbatches = 2\n\n[checkpoint]\nevery = 3\n\n[log]\nevery = 1\n";
  const auto recipe = read_recipe(path.string());
  CHECK(recipe.rows() == 4);
  std::string log;
  auto o = quiet(d / "run");
  o.log = [&](const std::string& line) { log += line + "\n"; };
  const auto r = train::train(recipe, o);
  INFO(log);
  CHECK(log.find("critic: initialised from the weights of " + rm.run_dir) != std::string::npos);
  CHECK(log.find("reward model: initialised from the weights of " + rm.run_dir) != std::string::npos);
  const auto l = losses(r.run_dir);
  REQUIRE(l.size() == 6);
  for (const char* key : {"reward", "value_loss", "explained_variance", "kl_penalty", "kl", "clip_fraction"})
    CHECK(metric_values(r.run_dir, key).size() == 6);
  CHECK(metric_values(r.run_dir, "solved").empty());  // a reward model's scores are not solved or not
  const auto vloss = metric_values(r.run_dir, "value_loss");
  CHECK(std::all_of(vloss.begin(), vloss.end(), [](double v) { return v > 0 && std::isfinite(v); }));
  for (double c : metric_values(r.run_dir, "clip_fraction")) CHECK(c == 0.0);  // one update per rollout: ratio 1
  CHECK(fs::exists(fs::path(r.run_dir) / "checkpoints" / "step_00000006" / "critic" / "model.safetensors"));
  CHECK(fs::exists(fs::path(r.run_dir) / "checkpoints" / "step_00000006" / "critic" / "optimizer.m.safetensors"));
  // Bit-reproducible; resuming restores the critic and its optimizer (the losses depend on them).
  CHECK(losses(train::train(recipe, quiet(d / "again")).run_dir) == l);
  const auto resumed = stop_and_resume(recipe, d / "resumed", 3);
  CHECK(losses(resumed.run_dir) == l);
  CHECK(metric_values(resumed.run_dir, "value_loss") == vloss);

  // At lr 0 the policy stays its reference: no KL, in the loss's estimate or the rewards' penalty.
  const auto still = train::train(read_recipe(path.string(), {"optim.lr=0", "train.steps=2", "eval.every=0"}), quiet(d / "lr0"));
  for (const char* key : {"kl", "kl_penalty"})
    for (double kl : metric_values(still.run_dir, key)) CHECK(kl == 0.0);

  // GRPO with the reward model's scores as rewards.
  std::string text = file_bytes(path);
  text.replace(text.find("critic_lr = 1e-2\n"), 17, "");
  write(d / "grpo.toml", text);
  const auto grpo = train::train(read_recipe((d / "grpo.toml").string(), {"rl.algorithm=grpo", "rl.group=4", "train.steps=2", "eval.every=0"}),
                                 quiet(d / "grpo"));
  CHECK(metric_values(grpo.run_dir, "reward").size() == 2);
  CHECK(metric_values(grpo.run_dir, "value_loss").empty());

  // What cannot work is named.
  CHECK_THROWS_WITH(read_recipe(path.string(), {"rl.reward_model="}), Catch::Contains("needs rl.reward_model"));
  CHECK_THROWS_WITH(read_recipe(path.string(), {"rl.algorithm=grpo"}), Catch::Contains("rl.critic_lr is PPO's"));
  CHECK_THROWS_WITH(read_recipe(path.string(), {"rl.reward_model=" + (d / "nowhere").string()}), Catch::Contains("does not exist"));
  CHECK_THROWS_WITH(train::train(read_recipe(path.string(), {"rl.reward_model=" + base.run}), quiet(d / "lm-as-rm")),
                    Catch::Contains("score head"));
}

TEST_CASE("preference losses for the PyTorch golden check", "[.golden]") {
  const char* out = std::getenv("LLMTK_PREFERENCE_DUMP");
  REQUIRE(out);
  ops::ScopedBackend on_reference("reference");
  nlohmann::json cases = nlohmann::json::array();
  for (const auto& o : loss_cases()) {
    PairBatch b(23);
    PreferenceLoss loss(o);
    const float value = loss.forward(b.logits_ref(), b.labels());
    std::vector<float> grad = b.logits;
    loss.backward(TensorRef(grad.data(), DType::f32, {2 * b.P, b.T, b.V}));
    cases.push_back({{"loss_type", o.loss}, {"beta", o.beta}, {"label_smoothing", o.label_smoothing}, {"simpo_gamma", o.simpo_gamma},
                     {"shape", {2 * b.P, b.T, b.V}}, {"logits", b.logits}, {"targets", b.targets}, {"reference", b.reference},
                     {"loss", value}, {"dlogits", grad}});
  }
  std::ofstream(out) << cases.dump();
}
