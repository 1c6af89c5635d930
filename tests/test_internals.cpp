// Training internals (train/internals.hpp) against the same quantities computed directly from the
// model's arenas: attention entropy from explicit softmaxes, block statistics and dead units from
// the saved activations, per-layer norms and update ratios from copies of the weights; the trainer's
// internals.jsonl (resume included), the report's heat maps; and doctor's checks on hand-made runs.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsl/block.hpp"
#include "dsl/decoder_lm.hpp"
#include "dsl/repeat.hpp"
#include "layers/attention.hpp"
#include "layers/embedding.hpp"
#include "layers/lm_head.hpp"
#include "layers/mlp.hpp"
#include "layers/rmsnorm.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/doctor.hpp"
#include "train/internals.hpp"
#include "train/run_report.hpp"
#include "train/step.hpp"
#include "train_fixtures.hpp"

using namespace llmtk;
using namespace llmtk::train;
using namespace train_fixtures;
using nlohmann::json;

namespace {

// A ReLU feed-forward (dead units are exact zeros), RoPE attention, two blocks.
using ReluBlock = Block<RMSNorm, GQA<RoPE>, MLP<ReLU>, PreNorm>;
using ReluLM = DecoderLM<Embedding<NoPE>, Repeat<ReluBlock>, RMSNorm, LMHead<Tied>>;

Dims tiny() {
  return Dims{.d_model = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 24, .vocab = 13, .max_seq = 8};
}

std::vector<float> host_f32(const Arena& a, const std::string& name) {
  const int id = a.find(name);
  REQUIRE(id >= 0);
  std::vector<float> v(std::size_t(a.entries()[std::size_t(id)].numel));
  a.read(id, v.data());
  return v;
}

const json& layer(const json& record, const std::string& name) {
  for (const auto& l : record["layers"])
    if (l["name"] == name) return l;
  FAIL("no layer " << name << " in " << record.dump());
  static json none;
  return none;
}

// One forward (and backward) of batch `ids` with rows of `lengths` under the probe.
json probe_once(AnyModel& m, std::vector<std::int32_t>& ids, std::vector<std::int32_t>& lengths) {
  const std::int64_t B = std::int64_t(lengths.size()), T = std::int64_t(ids.size()) / B;
  Internals in;
  in.begin(m);
  m.forward(ModelInputs{TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(lengths.data(), DType::i32, {B}), {}});
  in.gradients(m);
  return json::parse(in.end(m, 1));
}

}  // namespace

TEST_CASE("attention entropy equals the entropy of each query's softmax, computed by hand", "[internals]") {
  ModelOf<ReluLM> m("test", tiny());
  const std::int64_t B = 2, T = 8, H = 4, KV = 2, D = 4;
  m.plan(B, T);
  m.allocate();
  m.init(7);
  std::vector<std::int32_t> ids(B * T), lengths = {8, 5};  // row 1 is padded after 5 tokens
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int32_t((i * 5 + 3) % 13);
  const json rec = probe_once(m, ids, lengths);
  for (int blk = 0; blk < 2; ++blk) {
    const std::string name = "blocks." + std::to_string(blk);
    INFO(name);
    // q and k after RoPE, as the layer saved them for backward.
    const auto q = host_f32(m.acts(), name + ".attn.q"), k = host_f32(m.acts(), name + ".attn.k");
    std::vector<double> expect(H, 0.0), count(H, 0.0);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < lengths[std::size_t(b)]; ++t)
        for (std::int64_t h = 0; h < H; ++h) {
          const std::int64_t g = h / (H / KV);
          std::vector<double> s;
          for (std::int64_t j = 0; j <= t; ++j) {  // causal, and keys past the row's length hidden
            double dot = 0;
            for (std::int64_t d = 0; d < D; ++d)
              dot += double(q[std::size_t(((b * T + t) * H + h) * D + d)]) * k[std::size_t(((b * T + j) * KV + g) * D + d)];
            s.push_back(dot / std::sqrt(double(D)));
          }
          const double mx = *std::max_element(s.begin(), s.end());
          double z = 0;
          for (double x : s) z += std::exp(x - mx);
          double entropy = 0;
          for (double x : s) {
            const double p = std::exp(x - mx) / z;
            entropy -= p * std::log(p);
          }
          expect[std::size_t(h)] += entropy, count[std::size_t(h)] += 1;
        }
    const auto& got = layer(rec, name)["attn_entropy"];
    REQUIRE(got.size() == std::size_t(H));
    for (std::int64_t h = 0; h < H; ++h) CHECK(got[std::size_t(h)].get<double>() == Approx(expect[std::size_t(h)] / count[std::size_t(h)]).margin(2e-5));
  }
}

TEST_CASE("block statistics and dead units equal the saved activations'", "[internals]") {
  ModelOf<ReluLM> m("test", tiny());
  m.plan(2, 8);
  m.allocate();
  m.init(11);
  std::vector<std::int32_t> ids(16), lengths = {8, 8};
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int32_t((i * 7 + 1) % 13);
  const json rec = probe_once(m, ids, lengths);
  // Block 0's output is saved for block 1 ("blocks.0.out").
  const auto y = host_f32(m.acts(), "blocks.0.out");
  double sum = 0, sq = 0, mx = 0;
  for (float v : y) sum += v, sq += double(v) * v, mx = std::max(mx, double(std::fabs(v)));
  const double mean = sum / double(y.size());
  const auto& b0 = layer(rec, "blocks.0");
  CHECK(b0["act_mean"].get<double>() == Approx(mean).margin(1e-9));
  CHECK(b0["act_std"].get<double>() == Approx(std::sqrt(sq / double(y.size()) - mean * mean)).epsilon(1e-9));
  CHECK(b0["act_max"].get<double>() == Approx(mx).epsilon(1e-12));
  // Dead units: columns of the ReLU's output that are zero on every token.
  for (int blk = 0; blk < 2; ++blk) {
    const std::string name = "blocks." + std::to_string(blk);
    const auto a = host_f32(m.acts(), name + ".mlp.a");
    const std::size_t F = 24, N = a.size() / F;
    int dead = 0;
    for (std::size_t f = 0; f < F; ++f) {
      bool alive = false;
      for (std::size_t n = 0; n < N; ++n) alive |= std::fabs(a[n * F + f]) >= 1e-3f;
      dead += !alive;
    }
    CHECK(layer(rec, name)["dead"].get<double>() == Approx(dead / 24.0));
  }
  // The last block writes the stack's output, which the final norm reads: measured there too.
  CHECK(layer(rec, "blocks.1").contains("act_std"));
}

TEST_CASE("per-layer gradient, weight and update norms equal the arenas'", "[internals]") {
  auto m = make_model("llama-tiny", tiny());
  m->plan(2, 8);
  m->allocate();
  m->init(5);
  Recipe::Optim oc;
  oc.lr = 1e-2;
  Optimizer opt(oc, m->params());
  NextTokenLoss loss;
  TrainStep step(*m, loss, opt, {0.0, true, 1});
  Internals in;
  step.set_gradient_observer([&] { in.gradients(*m); });
  std::vector<std::int32_t> ids(16), tg(16);
  for (std::size_t i = 0; i < 16; ++i) ids[i] = std::int32_t((i * 3) % 13), tg[i] = std::int32_t((i * 5 + 2) % 13);
  const Arena before = std::as_const(*m).params().host_copy();
  in.begin(*m);
  step.run([&] { return lm_batch(TensorRef(ids.data(), DType::i32, {2, 8}), TensorRef(tg.data(), DType::i32, {2, 8})); }, 1, 1e-2, 1);
  const json rec = json::parse(in.end(*m, 1));
  const Arena after = std::as_const(*m).params().host_copy(), grads = m->grads().host_copy();
  std::map<std::string, std::array<double, 3>> sq;  // layer → Σg², Σw², Σ(Δw)²
  for (const auto& e : after.entries()) {
    const auto w1 = host_f32(after, e.name), w0 = host_f32(before, e.name), g = host_f32(grads, e.name);
    auto& s = sq[layer_of(e.name)];
    for (std::size_t i = 0; i < w1.size(); ++i)
      s[0] += double(g[i]) * g[i], s[1] += double(w1[i]) * w1[i], s[2] += (double(w1[i]) - w0[i]) * (double(w1[i]) - w0[i]);
  }
  CHECK(sq.size() == rec["layers"].size());
  for (const auto& [name, s] : sq) {
    INFO(name);
    const auto& l = layer(rec, name);
    CHECK(l["grad_norm"].get<double>() == Approx(std::sqrt(s[0])).epsilon(1e-5));
    CHECK(l["weight_norm"].get<double>() == Approx(std::sqrt(s[1])).epsilon(1e-5));
    CHECK(l["update_ratio"].get<double>() == Approx(std::sqrt(s[2] / s[1])).epsilon(1e-3));
  }
  CHECK(layer_of("blocks.3.attn.wq") == "blocks.3");
  CHECK(layer_of("decoder.blocks.12.mlp.w_up") == "decoder.blocks.12");
  CHECK(layer_of("embed.tokens") == "embed");
  CHECK(layer_of("unblocks.2.w") == "unblocks");
}

TEST_CASE("the trainer records internals at its interval, resumes them, and the report draws them", "[internals][train]") {
  const auto d = tmp("internals");
  const std::string recipe = write_recipe(d, "internals = true\ninternals_every = 3\n");
  TrainOptions o = quiet(d / "run");
  o.stop_after = 4;
  llmtk::train::train(read_recipe(recipe), o);
  o.stop_after = 0;
  o.resume = (d / "run").string();
  llmtk::train::train(read_recipe(recipe), o);
  std::vector<std::int64_t> steps;
  std::ifstream in(d / "run" / "internals.jsonl");
  for (std::string line; std::getline(in, line);) steps.push_back(json::parse(line)["step"].get<std::int64_t>());
  CHECK(steps == std::vector<std::int64_t>{3, 6, 8});  // every 3 steps and the last, once each
  const InternalsHistory h = read_internals((d / "run").string());
  CHECK(h.steps.size() == 3);
  CHECK(h.layers.front() == "embed");
  REQUIRE(h.row("attn_entropy", 1));
  CHECK(std::isfinite(h.row("attn_entropy", 1)->back()));
  write_run_report({(d / "run").string()}, (d / "report.html").string());
  const std::string html = file_bytes(d / "report.html");
  CHECK(html.find("Training internals") != std::string::npos);
  CHECK(html.find("gradient norm per layer (log scale)") != std::string::npos);
  CHECK(html.find("attention entropy per head at step 8") != std::string::npos);
  // Recording changes nothing the run computes: the same losses, bit for bit, without it.
  TrainOptions plain = quiet(d / "plain");
  llmtk::train::train(read_recipe(write_recipe(d)), plain);
  CHECK(losses((d / "run").string()) == losses((d / "plain").string()));
  // A line that is not a record is named.
  std::ofstream(d / "run" / "internals.jsonl", std::ios::app) << "[1, 2]\n{}\n";
  CHECK_THROWS_WITH(read_internals((d / "run").string()), Catch::Contains("internals.jsonl:4] not an internals record"));
}

namespace {
// A run directory with a hand-made loss curve: metrics.jsonl (and internals.jsonl), and the tiny
// recipe (vocab 300: ln V = 5.70) so doctor reads the recipe and the data.
fs::path fake_run(const std::string& name, const std::vector<std::pair<double, double>>& loss,
                  const std::vector<std::pair<double, double>>& val = {}, const std::string& internals = "") {
  const auto d = tmp("doctor-" + name);
  const std::string recipe = write_recipe(d);
  fs::copy_file(recipe, d / "recipe.toml");
  std::ofstream m(d / "metrics.jsonl");
  for (auto [s, l] : loss) m << json{{"step", s}, {"loss", l}, {"mfu", 0.5}, {"tokens_per_s", 1000}}.dump() << "\n";
  for (auto [s, v] : val) m << json{{"step", s}, {"val_loss", v}}.dump() << "\n";
  if (!internals.empty()) std::ofstream(d / "internals.jsonl") << internals;
  return d;
}
std::vector<std::string> ids_of(const Diagnosis& d) {
  std::vector<std::string> out;
  for (const auto& f : d.findings) out.push_back(f.id);
  return out;
}
}  // namespace

TEST_CASE("doctor names each problem from its evidence and finds none in a healthy run", "[doctor]") {
  std::vector<std::pair<double, double>> healthy, diverged, flat, spikes, stuck;
  const double h1 = [] {  // the corpus's unigram entropy, as doctor computes it
    const Diagnosis d = diagnose(fake_run("probe", {{10, 5.0}}).string());
    for (const auto& c : d.checked)
      if (c.starts_with("unigram entropy")) return std::stod(c.substr(c.find(": ") + 2));
    return double(NAN);
  }();
  REQUIRE(std::isfinite(h1));
  for (int s = 10; s <= 300; s += 10) {
    const double t = s / 300.0;
    healthy.push_back({s, 5.6 - 3.0 * t + 0.05 * std::sin(s)});
    diverged.push_back({s, t < 0.5 ? 5.6 - 2 * t : 4.6 + 4 * (t - 0.5)});
    flat.push_back({s, 5.69 + 0.01 * std::sin(s)});
    spikes.push_back({s, 5.6 - 3.0 * t + (s == 200 ? 2.0 : 0.0)});
    stuck.push_back({s, h1 + 0.05 + 0.02 * std::sin(s)});
  }
  CHECK(ids_of(diagnose(fake_run("healthy", healthy, {{100, 4.8}, {200, 3.9}, {300, 2.8}}).string())).empty());
  CHECK(to_text(diagnose(fake_run("healthy2", healthy).string())).find("no problems found") != std::string::npos);
  CHECK(ids_of(diagnose(fake_run("diverged", diverged).string())) == std::vector<std::string>{"divergence"});
  CHECK(ids_of(diagnose(fake_run("flat", flat).string())) == std::vector<std::string>{"no_progress"});
  CHECK(ids_of(diagnose(fake_run("spikes", spikes).string())) == std::vector<std::string>{"loss_spikes"});
  CHECK(ids_of(diagnose(fake_run("stuck", stuck).string())) == std::vector<std::string>{"unigram_plateau"});
  CHECK(ids_of(diagnose(fake_run("overfit", healthy, {{100, 4.0}, {200, 3.5}, {300, 3.9}}).string())) ==
        std::vector<std::string>{"overfitting"});
  // Per-layer evidence from internals: gradients fading toward the input, dead units, a collapsed router.
  std::string rec;
  for (int s : {100, 200, 300})
    rec += json{{"step", s},
                {"layers",
                 {{{"name", "blocks.0"}, {"grad_norm", 1e-6}, {"dead", 0.6}, {"router_top_share", 0.97}},
                  {{"name", "blocks.1"}, {"grad_norm", 0.1}, {"dead", 0.0}, {"router_top_share", 0.3}}}}}
               .dump() +
           "\n";
  const Diagnosis layers = diagnose(fake_run("layers", healthy, {}, rec).string());
  CHECK(ids_of(layers) == std::vector<std::string>{"vanishing_gradients", "dead_units", "expert_collapse"});
  for (const auto& f : layers.findings) {
    CHECK(f.evidence.find("blocks.0") != std::string::npos);  // the evidence names the layer
    CHECK(f.page.starts_with("docs/learn/07-diagnose.md#" + f.id));
  }
  const json j = json::parse(to_json(layers));
  CHECK(j["findings"].size() == 3);
  CHECK(j["findings"][0]["id"] == "vanishing_gradients");
  // Slow steps, and the op that dominates when the run was profiled (LLMTK_PROFILE=1: profile.json).
  const fs::path slow = fake_run("slow", healthy);
  {
    std::ofstream m(slow / "metrics.jsonl");
    for (auto [st, l] : healthy) m << json{{"step", st}, {"loss", l}, {"mfu", 0.04}, {"tokens_per_s", 900}}.dump() << "\n";
  }
  CHECK(ids_of(diagnose(slow.string())) == std::vector<std::string>{"slow"});
  CHECK(diagnose(slow.string()).findings[0].advice.find("LLMTK_PROFILE=1") != std::string::npos);
  std::ofstream(slow / "profile.json") << R"({"ops": [{"op": "attention_backward", "seconds": 3.0, "calls": 10},
                                                     {"op": "matmul_forward", "seconds": 1.0, "calls": 40}]})";
  CHECK(diagnose(slow.string()).findings[0].evidence.find("attention_backward (75% of the time in ops") != std::string::npos);
  CHECK_THROWS_WITH(diagnose(tmp("not-a-run").string()), Catch::Contains("has no metrics.jsonl"));
}
