// Training: recipes (every file in recipes/, and bad ones), schedules, determinism, exact resume,
// checkpoints (round trip and corrupt files), the NaN guard, generation and the run report.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/rng.hpp"
#include "data/prepare.hpp"
#include "layers/mlp.hpp"
#include "models/llama.hpp"
#include "models/moe.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/generate.hpp"
#include "train/gguf.hpp"
#include "train/hf.hpp"
#include "train/optimizer.hpp"
#include "train/run_report.hpp"
#include "train/safetensors.hpp"
#include "train/schedule.hpp"
#include "train/trainer.hpp"
#include "train_fixtures.hpp"

using namespace llmtk;
using namespace llmtk::train;
namespace fs = std::filesystem;

using namespace train_fixtures;

TEST_CASE("every recipe in recipes/ is valid", "[train][recipe]") {
  int n = 0;
  for (const auto& e : fs::directory_iterator(LLMTK_RECIPES_DIR))
    if (e.path().extension() == ".toml") {
      INFO(e.path());
      CHECK_NOTHROW(read_recipe(e.path().string()));
      ++n;
    }
  CHECK(n >= 1);
}

TEST_CASE("bad recipes stop before a run, naming file, line and key", "[train][recipe]") {
  const auto d = tmp("bad");
  auto check = [&](const std::string& text, const std::string& expect) {
    std::ofstream(d / "r.toml") << text;
    INFO(text);
    CHECK_THROWS_WITH(read_recipe((d / "r.toml").string()), Catch::Contains(expect));
  };
  const std::string ok = "[data]\ndir = \"x\"\n[train]\nsteps = 10\n";
  check(ok + "[optim]\nlr_max = 1e-3\n", "r.toml:6");
  check(ok + "[optim]\nlr_max = 1e-3\n", "did you mean optim.lr?");
  check(ok + "[optim]\nlr = \"fast\"\n", "optim.lr must be a number");
  // A bare word is not a TOML value: say so, and how to write a string, not what toml++ expected.
  check(ok + "[optim]\nlr = fast\n", "r.toml:6:");
  check(ok + "[optim]\nlr = fast\n", "'fast' is not a TOML value: a string needs quotes (lr = \"fast\")");
  check(ok + "[optim]\nlr = 50\n", "optim.lr is 50; it must be between 0 and 10");
  check(ok + "[optim]\nname = \"adam\"\n", "allowed: \"adamw\", \"sgd\", \"lion\"");
  check("[model]\narch = \"gpt5\"\n" + ok, "registered: gpt2, gpt2-tiny, llama-tiny");
  check("[model]\nn_kv_heads = 3\n" + ok, "rule kv_heads_divide_heads");
  check("[data]\ndir = \"x\"\n[train]\nsteps = 10\ntokens = 1000\n", "exactly one of train.steps and train.tokens");
  check("[train]\nsteps = 10\n", "data.dir is required");
  check(ok + "[schedule]\nwarmup = 10\n", "schedule.warmup (10) must be shorter than the run");
  check(ok + "[train\n", "r.toml:5");
  check("[data]\ndir = \"x\"\n[train]\nsteps = 10\ndevice = \"gpu\"\n", "r.toml:5");
  check("[data]\ndir = \"x\"\n[train]\nsteps = 10\ndevice = \"gpu\"\n", "did you mean cuda?");
  // --set overrides go through the same checks.
  std::ofstream(d / "r.toml") << ok;
  CHECK_THROWS_WITH(read_recipe((d / "r.toml").string(), {"optim.lr=-1"}), Catch::Contains("optim.lr is -1"));
  CHECK(read_recipe((d / "r.toml").string(), {"optim.lr=0.5", "train.batch=3"}).optim.lr == 0.5);
}

TEST_CASE("the optimizer updates each weight-decay group with one op, exactly as it would each tensor", "[train][optim]") {
  // Mixed kinds in planning order (decayed and undecayed tensors alternate; the arena groups
  // them) and odd sizes (so there is alignment padding between tensors, which must stay zero).
  Arena params("params");
  params.add("w1", {7, 5}, DType::f32, ParamKind::matrix);
  params.add("w2", {3, 11}, DType::f32, ParamKind::residual_matrix);
  params.add("g", {13}, DType::f32, ParamKind::norm);
  params.add("b", {9}, DType::f32, ParamKind::bias);
  params.add("emb", {6, 5}, DType::f32, ParamKind::embedding);
  params.add("w3", {5, 5}, DType::f32, ParamKind::matrix);
  for (const char* name : {"adamw", "sgd", "lion"}) {
    INFO(name);
    Recipe::Optim cfg;
    cfg.name = name, cfg.weight_decay = 0.3;
    Arena p = params.like("p"), g = params.like("g"), ref_p = params.like("ref p");
    p.allocate(), g.allocate(), ref_p.allocate();
    Rng rng(5);
    for (int i = 0; i < int(params.entries().size()); ++i)
      for (std::int64_t k = 0; k < p[i].numel(); ++k) {
        p[i].f32()[k] = ref_p[i].f32()[k] = float(rng.normal());
        g[i].f32()[k] = float(rng.normal());
      }
    Optimizer fused(cfg, params);
    // Matrices, then the embedding, then the norm and bias: one range decayed, one not.
    const auto ranges = fused.ranges(p);
    REQUIRE(ranges.size() == 2);
    CHECK(ranges[0].weight_decay == 0.3f);
    CHECK(ranges[1].weight_decay == 0.0f);
    CHECK(ranges[0].begin == 0);
    CHECK(ranges[1].end == p.bytes() - 64 + 9 * 4);  // ends with the bias (9 floats, then padding)
    Arena m = params.like("m"), v = params.like("v");
    m.allocate(), v.allocate();
    for (int step = 1; step <= 3; ++step) {
      fused.step(p, g, 0.01, step);
      for (int i = 0; i < int(params.entries().size()); ++i) {  // one op per tensor
        const float wd = fused.decays(params.entries()[std::size_t(i)]) ? 0.3f : 0.0f;
        if (cfg.name == "adamw")
          ops::adamw_step(ref_p[i], g[i], m[i], v[i], AdamWArgs{0.01f, 0.9f, 0.95f, 1e-8f, wd, step});
        else if (cfg.name == "sgd")
          ops::sgd_step(ref_p[i], g[i], m[i], SgdArgs{0.01f, 0.9f, wd, false, step});
        else
          ops::lion_step(ref_p[i], g[i], m[i], LionArgs{0.01f, 0.9f, 0.95f, wd});
      }
    }
    for (int i = 0; i < int(params.entries().size()); ++i)
      for (std::int64_t k = 0; k < p[i].numel(); ++k) REQUIRE(p[i].f32()[k] == ref_p[i].f32()[k]);
    // The padding between tensors is still zero.
    const auto* bytes = static_cast<const unsigned char*>(p.data());
    std::vector<Arena::Entry> in_memory = p.entries();
    std::sort(in_memory.begin(), in_memory.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
    std::size_t covered = 0;
    for (const auto& e : in_memory) {
      REQUIRE(e.offset >= covered);
      for (std::size_t b = covered; b < e.offset; ++b) REQUIRE(bytes[b] == 0);
      covered = e.offset + std::size_t(e.numel) * sizeof(float);
    }
  }
}

TEST_CASE("a whole model's parameters update in two ops, whichever way embeddings decay", "[train][optim]") {
  for (const char* arch : {"gpt2-tiny", "llama-tiny"})
    for (bool decay_embeddings : {false, true}) {
      INFO(arch << ", decay_embeddings " << decay_embeddings);
      auto m = make_model(arch, find_arch(arch).dims);
      m->plan(1, 8);
      m->allocate();
      Recipe::Optim cfg;
      cfg.weight_decay = 0.1, cfg.decay_embeddings = decay_embeddings;
      const auto ranges = Optimizer(cfg, m->params()).ranges(m->params());
      REQUIRE(ranges.size() == 2);
      // The ranges cover every parameter and nothing else but padding.
      std::int64_t covered = 0;
      for (const auto& r : ranges) covered += std::int64_t(r.end - r.begin) / 4;
      CHECK(covered >= m->params().numel());
      CHECK(covered < m->params().numel() + 16 * std::int64_t(m->params().entries().size()));
    }
}

TEST_CASE("optim.lr_scale multiplies the learning rate of the parameters its patterns name", "[train][optim]") {
  auto m = make_model("llama-tiny", find_arch("llama-tiny").dims);
  m->plan(1, 8);
  m->init(5);
  Rng rng(11);
  for (float *g = static_cast<float*>(m->grads().data()), *end = g + m->grads().bytes() / 4; g != end; ++g)
    *g = float(rng.normal());
  // One AdamW step without weight decay moves each weight by lr·m̂/(√v̂ + eps), about lr: with a
  // multiplier the move is that many times the plain one, for exactly the parameters named.
  auto step_with = [&](std::vector<std::pair<std::string, double>> scale) {
    Recipe::Optim cfg;
    cfg.weight_decay = 0, cfg.lr_scale = std::move(scale);
    Arena p = m->params().host_copy(), g = m->grads().host_copy();
    const Arena before = p.host_copy();
    Optimizer(cfg, p).step(p, g, 1e-2, 1);
    std::map<std::string, double> moved;
    for (const auto& e : p.entries()) {
      const int i = p.find(e.name);
      double d = 0;
      for (std::int64_t k = 0; k < e.numel; ++k) d += std::abs(p[i].f32()[k] - before[i].f32()[k]);
      moved[e.name] = d;
    }
    return moved;
  };
  const auto plain = step_with({});
  const auto scaled = step_with({{"embed.*", 0.0}, {"blocks.*.attn.*", 0.5}});
  for (const auto& [name, d] : plain) {
    INFO(name);
    REQUIRE(d > 0);
    const double want = name.starts_with("embed.") ? 0.0 : name.find(".attn.") != std::string::npos ? 0.5 : 1.0;
    CHECK(scaled.at(name) == Approx(want * d).epsilon(1e-3));
  }
  // A pattern that names nothing, or two patterns naming one parameter, stop before training.
  Recipe::Optim none;
  none.lr_scale = {{"blocks.9.*", 0.1}};
  CHECK_THROWS_WITH(Optimizer(none, m->params()), Catch::Contains("\"blocks.9.*\" matches no trainable parameter"));
  Recipe::Optim both;
  both.lr_scale = {{"blocks.*", 0.1}, {"*.attn.wq", 2.0}};
  CHECK_THROWS_WITH(Optimizer(both, m->params()), Catch::Contains("matches both \"blocks.*\" and \"*.attn.wq\""));
  // In a recipe: an inline table, written back into the run's recipe.toml.
  const auto d = tmp("lr_scale");
  const auto r = read_recipe(write_recipe(d), {"optim.lr_scale={ \"embed.*\" = 0.25 }"});
  REQUIRE(r.optim.lr_scale.size() == 1);
  CHECK(r.optim.lr_scale[0] == std::pair<std::string, double>{"embed.*", 0.25});
  CHECK_THROWS_WITH(read_recipe(write_recipe(d), {"optim.lr_scale={ \"embed.*\" = \"fast\" }"}),
                    Catch::Contains("optim.lr_scale [\"embed.*\"] must be a number"));
}

TEST_CASE("schedules: warmup, then constant, cosine, linear or warmup-stable-decay", "[train][schedule]") {
  Schedule s{"cosine", 1.0, 0.1, 4, 104, 0.2};
  CHECK(s.at(0) == Approx(0.2));   // linear warmup: (step + 1) / (warmup + 1)
  CHECK(s.at(3) == Approx(0.8));
  CHECK(s.at(4) == Approx(1.0));   // peak right after warmup
  CHECK(s.at(103) == Approx(0.1)); // min_lr at the last step
  CHECK(s.at(54) == Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(3.141592653589793 * 50.0 / 99.0))));
  s.name = "linear";
  CHECK(s.at(103) == Approx(0.1));
  CHECK(s.at(4 + 99 / 2) == Approx(1.0 - 0.9 * (49.0 / 99.0)));
  s.name = "constant";
  CHECK(s.at(90) == Approx(1.0));
  s.name = "wsd";
  CHECK(s.at(60) == Approx(1.0));  // stable for the first 80% after warmup
  CHECK(s.at(103) == Approx(0.1));
}

TEST_CASE("training is deterministic and resumes exactly", "[train][resume]") {
  const auto d = tmp("resume");
  const auto recipe = read_recipe(write_recipe(d));
  const auto a = train::train(recipe, quiet(d / "a"));
  const auto b = train::train(recipe, quiet(d / "b"));
  REQUIRE(losses(a.run_dir).size() == 8);
  CHECK(losses(a.run_dir) == losses(b.run_dir));  // bit-identical
  CHECK(losses(a.run_dir).back() < losses(a.run_dir).front());

  // Half, then resume for the rest: the same losses and the same weights, byte for byte.
  const auto c2 = stop_and_resume(recipe, d / "c", 4);
  CHECK(c2.steps == 8);
  CHECK(losses(c2.run_dir) == losses(a.run_dir));
  CHECK(file_bytes(fs::path(a.checkpoint) / "model.safetensors") == file_bytes(fs::path(c2.checkpoint) / "model.safetensors"));
  CHECK(file_bytes(fs::path(a.checkpoint) / "optimizer.m.safetensors") == file_bytes(fs::path(c2.checkpoint) / "optimizer.m.safetensors"));
}

TEST_CASE("gradient accumulation matches one large batch", "[train][accum]") {
  // Two micro-batches of 4 windows read the same 8 windows as one batch of 8; the averaged
  // gradient equals the large batch's up to float rounding.
  const auto d = tmp("accum");
  const auto big = train::train(read_recipe(write_recipe(d), {"train.batch=8", "train.steps=4"}), quiet(d / "big"));
  const auto acc = train::train(read_recipe(write_recipe(d), {"train.batch=4", "train.grad_accum=2", "train.steps=4"}),
                                quiet(d / "acc"));
  const auto a = losses(big.run_dir), b = losses(acc.run_dir);
  REQUIRE(a.size() == 4);
  REQUIRE(b.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) CHECK(b[i] == Approx(a[i]).epsilon(1e-4));
}

TEST_CASE("recomputation trains to the same losses", "[train][recompute]") {
  const auto d = tmp("recompute");
  const auto a = train::train(read_recipe(write_recipe(d), {"train.steps=4", "model.n_layers=3"}), quiet(d / "a"));
  const auto b = train::train(read_recipe(write_recipe(d), {"train.steps=4", "model.n_layers=3", "train.recompute=blocks"}), quiet(d / "b"));
  CHECK(losses(a.run_dir) == losses(b.run_dir));
}

TEST_CASE("bf16 trains like f32 within bf16 rounding and resumes exactly", "[train][bf16]") {
  const auto d = tmp("bf16");
  const auto a = train::train(read_recipe(write_recipe(d), {"train.steps=6"}), quiet(d / "f32"));
  const auto bf = read_recipe(write_recipe(d), {"train.steps=6", "train.precision=bf16"});
  const auto b = train::train(bf, quiet(d / "bf16"));
  const auto la = losses(a.run_dir), lb = losses(b.run_dir);
  REQUIRE(lb.size() == 6);
  CHECK(lb.front() == Approx(la.front()).epsilon(1e-2));  // same initial weights and data
  CHECK(lb.back() < lb.front());
  CHECK(lb != la);  // the rounding is really there
  // Checkpoints hold the f32 master weights; the working copy is rebuilt from them on resume, so
  // a bf16 run stopped and resumed is the same run, byte for byte.
  const auto c = stop_and_resume(bf, d / "c", 3);
  CHECK(losses(c.run_dir) == lb);
  CHECK(file_bytes(fs::path(b.checkpoint) / "model.safetensors") == file_bytes(fs::path(c.checkpoint) / "model.safetensors"));
  ops::set_matmul_precision(DType::f32);
}

TEST_CASE("bf16 plans bf16 activations, f32 statistics and a working copy rebuilt when weights change", "[train][bf16]") {
  auto m = make_model("llama-tiny", find_arch("llama-tiny").dims);
  m->set_precision(DType::bf16);
  m->plan(2, 8);
  m->init(3);
  int bf16_acts = 0, f32_acts = 0;
  for (const auto& e : m->acts().entries()) {
    const bool stat = e.name.ends_with("rstd") || e.name.ends_with("lse") || e.name.ends_with("mean");
    INFO(e.name);
    CHECK(e.dtype == (stat ? DType::f32 : DType::bf16));
    (e.dtype == DType::bf16 ? bf16_acts : f32_acts)++;
  }
  CHECK(bf16_acts > 0);
  CHECK(f32_acts > 0);
  // Every matmul weight has one bf16 twin (the tied head shares the embedding's); norms have none.
  const Arena& w = m->working();
  CHECK(w.find("embed.tokens") >= 0);
  CHECK(w.find("blocks.0.attn.wq") >= 0);
  CHECK(w.find("final_norm.weight") < 0);
  std::vector<std::int32_t> ids(16, 5);
  const TensorRef in(ids.data(), DType::i32, {2, 8});
  auto twin_is_master = [&] {
    const int pi = m->params().find("blocks.0.attn.wq"), wi = w.find("blocks.0.attn.wq");
    const TensorRef p = static_cast<const AnyModel&>(*m).params()[pi];
    const auto* h = static_cast<const bf16*>(w[wi].data);
    for (std::int64_t i = 0; i < p.numel(); ++i)
      if (h[i].bits != bf16(p.f32()[i]).bits) return false;
    return true;
  };
  const TensorRef logits = m->forward(in);
  CHECK(logits.dtype == DType::bf16);
  CHECK(twin_is_master());
  m->params()[m->params().find("blocks.0.attn.wq")].f32()[0] += 1.0f;  // as an optimizer step would
  CHECK_FALSE(twin_is_master());
  m->forward(in);
  CHECK(twin_is_master());
}

TEST_CASE("checkpoints round-trip and corrupt files are rejected naming the tensor", "[train][checkpoint]") {
  const auto d = tmp("ckpt");
  Arena a("params");
  a.add("embed.tokens", {3, 4});
  a.add("final_norm.weight", {4});
  a.allocate();
  for (int i = 0; i < 12; ++i) a[0].f32()[i] = float(i) * 0.5f;
  a[1].f32()[2] = -7;
  const auto path = (d / "m.safetensors").string();
  save_safetensors(path, a, {{"arch", "test"}});
  Arena b = a.like("copy");
  b.allocate();
  CHECK(load_safetensors(path, b).at("arch") == "test");
  CHECK(std::memcmp(a.data(), b.data(), a.bytes()) == 0);

  Arena other("params");
  other.add("embed.tokens", {4, 4});
  other.add("final_norm.weight", {4});
  other.allocate();
  CHECK_THROWS_WITH(load_safetensors(path, other), Catch::Contains("tensor 'embed.tokens'") && Catch::Contains("has shape [3,4]"));
  Arena missing("params");
  missing.add("head.weight", {3, 4});
  missing.allocate();
  CHECK_THROWS_WITH(load_safetensors(path, missing), Catch::Contains("has no tensor 'head.weight'"));
  Arena fewer("params");
  fewer.add("embed.tokens", {3, 4});
  fewer.allocate();
  CHECK_THROWS_WITH(load_safetensors(path, fewer), Catch::Contains("has a tensor 'final_norm.weight' the model does not have"));
  const auto bytes = file_bytes(path);
  std::ofstream(d / "cut.safetensors", std::ios::binary) << bytes.substr(0, bytes.size() - 8);
  CHECK_THROWS_WITH(load_safetensors((d / "cut.safetensors").string(), b), Catch::Contains("truncated"));
  std::string bad = bytes;
  bad[8] = '!';  // break the JSON header's opening brace
  std::ofstream(d / "bad.safetensors", std::ios::binary) << bad;
  CHECK_THROWS_WITH(load_safetensors((d / "bad.safetensors").string(), b), Catch::Contains("not valid JSON"));
  std::ofstream(d / "tiny.safetensors", std::ios::binary) << "abc";
  CHECK_THROWS_WITH(load_safetensors((d / "tiny.safetensors").string(), b), Catch::Contains("too short"));
}

TEST_CASE("non-finite steps are skipped, then the run stops naming a checkpoint whose weights are finite", "[train][nan]") {
  const auto d = tmp("nan");
  // An absurd learning rate without clipping: SGD diverges to inf within a few steps, and the
  // weights themselves become infinite, so the state at the last finite step is not good.
  const auto recipe = read_recipe(write_recipe(d), {"optim.name=sgd", "optim.lr=10", "optim.momentum=0.99",
                                                   "optim.grad_clip=0", "train.steps=60", "schedule.warmup=0",
                                                   "model.norm_eps=1e-12", "checkpoint.every=1", "checkpoint.keep=100"});
  std::vector<std::string> log;
  auto o = quiet(d / "run");
  o.log = [&](const std::string& s) { log.push_back(s); };
  std::string message;
  try {
    train::train(recipe, o);
  } catch (const Error& e) {
    message = e.what();
  }
  INFO(message);
  CHECK(message.find("steps in a row had non-finite values") != std::string::npos);
  bool warned = false;
  for (const auto& l : log) warned |= l.find("skipped") != std::string::npos;
  CHECK(warned);
  const auto named = [&](const std::string& before) {
    const auto at = message.find(before);
    if (at == std::string::npos) return std::string();
    const auto start = at + before.size();
    return message.substr(start, message.find_first_of(". ", start) - start);
  };
  const std::string good = !named("is saved in ").empty() ? named("is saved in ") : named("with finite weights is ");
  REQUIRE_FALSE(good.empty());  // checkpoint.every = 1: the early, finite steps were saved
  auto m = make_model("llama-tiny", recipe.model.dims);
  m->plan(1, 1);
  m->allocate();
  load_safetensors((fs::path(good) / "model.safetensors").string(), m->params());
  CHECK(all_finite(m->params()));
  // ... and it is the newest such checkpoint: every later one holds non-finite weights.
  for (const auto& e : fs::directory_iterator(d / "run" / "checkpoints"))
    if (e.path().filename().string() > fs::path(good).filename().string() && e.path().filename().string().starts_with("step_")) {
      load_safetensors((e.path() / "model.safetensors").string(), m->params());
      CHECK_FALSE(all_finite(m->params()));
    }
}

TEST_CASE("keeping checkpoints never deletes the newest state", "[train][checkpoint]") {
  const auto d = tmp("prune");
  for (const char* name : {"step_00000600", "step_00000050", "step_00000040", "step_00000030", "best"})
    fs::create_directories(d / "checkpoints" / name);
  // step_50 was just written; step_600 is from some other history: it is not counted, and step_50
  // survives even with keep = 1.
  prune_checkpoints(d.string(), 1, (d / "checkpoints" / "step_00000050").string());
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(d / "checkpoints")) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<std::string>{"best", "step_00000050", "step_00000600"});
  fs::create_directories(d / "checkpoints" / "step_00000030");
  prune_checkpoints(d.string(), 2, (d / "checkpoints" / "step_00000050").string());
  CHECK(fs::exists(d / "checkpoints" / "step_00000030"));
}

TEST_CASE("--init starts a new run from an llmtk run's weights, checked against the recipe", "[train][init]") {
  const auto d = tmp("init");
  const auto recipe = read_recipe(write_recipe(d));
  const auto a = train::train(recipe, quiet(d / "a"));
  // Learning rate 0: after one step the weights are exactly the ones --init loaded.
  const auto frozen = read_recipe(write_recipe(d), {"optim.lr=0", "schedule.min_lr=0", "train.steps=1", "schedule.warmup=0"});
  auto o = quiet(d / "b");
  o.init = a.run_dir;
  std::string log;
  o.log = [&](const std::string& line) { log += line + "\n"; };
  const auto b = train::train(frozen, o);
  CHECK(log.find("initialised from the weights of") != std::string::npos);
  CHECK(b.steps == 1);
  auto wa = make_model("llama-tiny", recipe.model.dims), wb = make_model("llama-tiny", recipe.model.dims);
  wa->plan(1, 1), wb->plan(1, 1), wa->allocate(), wb->allocate();
  load_safetensors((fs::path(best_or_newest_checkpoint(a.run_dir)) / "model.safetensors").string(), wa->params());
  load_safetensors((fs::path(b.checkpoint) / "model.safetensors").string(), wb->params());
  CHECK(std::memcmp(wa->params().data(), wb->params().data(), wa->params().bytes()) == 0);
  // Other sizes are refused, naming the key and the value that would fit.
  const auto wider = read_recipe(write_recipe(d), {"model.d_ff=48"});
  auto o2 = quiet(d / "c");
  o2.init = a.run_dir;
  CHECK_THROWS_WITH(train::train(wider, o2), Catch::Contains("has model.d_ff = 32 and the recipe says 48; set model.d_ff = 32"));
  CHECK_FALSE(fs::exists(d / "c"));
}

TEST_CASE("generation continues a prompt and the report draws every run", "[train][generate]") {
  const auto d = tmp("gen");
  const auto recipe = read_recipe(write_recipe(d, "sample_prompt = \"And God\"\nsample_tokens = 8\n"));
  const auto r = train::train(recipe, quiet(d / "run"));
  CHECK(fs::file_size(fs::path(r.run_dir) / "samples.txt") > 0);
  auto model = make_model("llama-tiny", recipe.model.dims);
  model->plan(1, 1);
  model->allocate();
  load_safetensors((fs::path(r.checkpoint) / "model.safetensors").string(), model->params());
  GenerateOptions g;
  g.max_tokens = 20, g.temperature = 0;  // greedy: deterministic
  const auto a = generate(*model, {1, 2, 3}, g), b = generate(*model, {1, 2, 3}, g);
  CHECK(a.size() == 20);
  CHECK(a == b);
  g.temperature = 1.0, g.seed = 5;
  CHECK(generate(*model, {1, 2, 3}, g).size() == 20);
  const auto html = (d / "report.html").string();
  write_run_report({r.run_dir}, html);
  const auto page = file_bytes(html);
  CHECK(page.find("<polyline") != std::string::npos);
  CHECK(page.find("Final numbers") != std::string::npos);
  // Comparing runs: a chart per curve, the second half on its own scale, and each run's
  // architecture and size in the table.
  write_run_report({r.run_dir, r.run_dir}, html);
  const auto two = file_bytes(html);
  CHECK(two.find("validation loss, second half") != std::string::npos);
  CHECK(two.find("<td>llama-tiny</td>") != std::string::npos);
  auto counted = make_model("llama-tiny", recipe.model.dims);
  counted->plan(1, 1);
  CHECK(counted->param_count() > 1000);
  // Thousands separated by commas, as the report writes them (appended, not inserted: g++ 12
  // warns falsely about overlapping copies in string::insert).
  const std::string digits = std::to_string(counted->param_count());
  std::string grouped;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  CHECK(two.find("<td class=n>" + grouped + "</td>") != std::string::npos);
  CHECK_THROWS_WITH(write_run_report({d.string()}, html), Catch::Contains("has no metrics.jsonl"));
}

TEST_CASE("Transformers export and import round-trip both families", "[train][hf]") {
  for (const char* arch : {"gpt2-tiny", "llama-tiny"}) {
    INFO(arch);
    Dims d = find_arch(arch).dims;
    d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = std::string(arch) == "gpt2-tiny" ? 4 : 2;
    d.d_ff = 24, d.vocab = 29, d.max_seq = 8;
    auto a = make_model(arch, d), b = make_model(arch, d);
    a->plan(1, 8), b->plan(1, 8);
    a->init(1), b->init(2);
    const auto dir = tmp(std::string("hf-") + arch);
    export_hf(*a, dir.string(), nullptr);
    std::ifstream cfg(dir / "config.json");
    const auto c = nlohmann::json::parse(cfg);
    CHECK(c.at("model_type") == (std::string(arch) == "gpt2-tiny" ? "gpt2" : "llama"));
    SafetensorsFile f((dir / "model.safetensors").string());
    if (std::string(arch) == "gpt2-tiny") {
      CHECK(f.shape("transformer.h.0.attn.c_attn.weight") == std::vector<std::int64_t>{16, 48});  // Conv1D: [in, out]
      CHECK(f.shape("transformer.h.1.mlp.c_fc.weight") == std::vector<std::int64_t>{16, 24});
    } else {
      CHECK(f.shape("model.layers.0.self_attn.k_proj.weight") == std::vector<std::int64_t>{8, 16});  // Linear: [out, in]
      CHECK(f.shape("model.layers.1.mlp.gate_proj.weight") == std::vector<std::int64_t>{24, 16});
    }
    import_hf(*b, dir.string());
    CHECK(std::memcmp(a->params().data(), b->params().data(), a->params().bytes()) == 0);
    // The layout is right, not just invertible: c_attn's first block is wqᵀ.
    if (std::string(arch) == "gpt2-tiny") {
      std::vector<float> cattn(16 * 48);
      f.read("transformer.h.0.attn.c_attn.weight", cattn.data(), {16, 48});
      const float* wq = a->params()["blocks.0.attn.wq"].f32();
      CHECK(cattn[3 * 48 + 5] == wq[5 * 16 + 3]);  // c_attn[i=3, o=5] = wq[o=5, i=3]
    }
    // A checkpoint of other sizes is refused, naming the key.
    Dims other = d;
    other.d_ff = 32;
    auto c2 = make_model(arch, other);
    c2->plan(1, 8), c2->allocate();
    CHECK_THROWS_WITH(import_hf(*c2, dir.string()), Catch::Contains("has d_ff = 24 but the model has 32"));
  }
}

TEST_CASE("Transformers export and import round-trip an MoE model as MixtralForCausalLM", "[train][hf][moe]") {
  const Dims d = Dims{.d_model = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 12, .vocab = 29, .max_seq = 8}
                     .with("moe_experts", 4)
                     .with("moe_top_k", 2);
  auto a = make_model("moe-tiny", with_key_defaults<TiedMixtral>(d)), b = make_model("moe-tiny", with_key_defaults<TiedMixtral>(d));
  a->plan(1, 8), b->plan(1, 8);
  a->init(1), b->init(2);
  const auto dir = tmp("hf-moe");
  export_hf(*a, dir.string(), nullptr);
  std::ifstream cfg(dir / "config.json");
  const auto c = nlohmann::json::parse(cfg);
  CHECK(c.at("model_type") == "mixtral");
  CHECK(c.at("num_local_experts") == 4);
  CHECK(c.at("num_experts_per_tok") == 2);
  SafetensorsFile f((dir / "model.safetensors").string());
  CHECK(f.shape("model.layers.1.block_sparse_moe.gate.weight") == std::vector<std::int64_t>{4, 16});
  CHECK(f.shape("model.layers.0.block_sparse_moe.experts.3.w2.weight") == std::vector<std::int64_t>{16, 12});
  std::vector<float> w1(12 * 16);
  f.read("model.layers.0.block_sparse_moe.experts.2.w1.weight", w1.data(), {12, 16});
  CHECK(w1[5 * 16 + 3] == a->params()["blocks.0.mlp.experts.2.w_gate"].f32()[5 * 16 + 3]);  // w1 is the gate
  import_hf(*b, dir.string());
  CHECK(std::memcmp(a->params().data(), b->params().data(), a->params().bytes()) == 0);
  // Another expert count is refused, naming the keys.
  auto other = make_model("moe-tiny", with_key_defaults<TiedMixtral>(d.with("moe_experts", 8)));
  other->plan(1, 8), other->allocate();
  CHECK_THROWS_WITH(import_hf(*other, dir.string()), Catch::Contains("model.moe_experts and model.moe_top_k"));
  // What Mixtral cannot hold is refused before anything is written.
  auto shared = make_model("moe-tiny", with_key_defaults<TiedMixtral>(d.with("moe_shared", 1)));
  shared->plan(1, 8), shared->allocate();
  CHECK_THROWS_WITH(export_hf(*shared, tmp("hf-shared").string(), nullptr), Catch::Contains("shared experts"));
  auto hybrid = make_model("hybrid-tiny", Dims{.d_model = 16, .n_layers = 3, .n_heads = 4, .n_kv_heads = 2, .d_ff = 12,
                                               .vocab = 29, .max_seq = 8});
  hybrid->plan(1, 8), hybrid->allocate();
  CHECK_THROWS_WITH(export_hf(*hybrid, tmp("hf-hybrid").string(), nullptr), Catch::Contains("recurrent (minGRU) layers"));
  auto gemma = make_model("gemma-tiny", Dims{.d_model = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 12,
                                             .vocab = 29, .max_seq = 8}
                                            .with("local_window", 4));
  gemma->plan(1, 8), gemma->allocate();
  CHECK_THROWS_WITH(export_hf(*gemma, tmp("hf-gemma").string(), nullptr), Catch::Contains("local attention layers"));
}

TEST_CASE("Transformers export and import round-trip a BERT encoder as BertForMaskedLM", "[train][hf][encoder]") {
  Dims d = find_arch("bert-tiny").dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 4, d.d_ff = 24, d.vocab = 29, d.max_seq = 8;
  d.set("type_vocab", 3);
  auto a = make_model("bert-tiny", d), b = make_model("bert-tiny", d);
  a->plan(1, 8), b->plan(1, 8);
  a->init(1), b->init(2);
  const auto dir = tmp("hf-bert");
  export_hf(*a, dir.string(), nullptr);
  std::ifstream cfg(dir / "config.json");
  const auto c = nlohmann::json::parse(cfg);
  CHECK(c.at("model_type") == "bert");
  CHECK(c.at("architectures")[0] == "BertForMaskedLM");
  CHECK(c.at("hidden_act") == "gelu_new");  // llmtk's GELU is the tanh approximation
  CHECK(c.at("type_vocab_size") == 3);
  SafetensorsFile f((dir / "model.safetensors").string());
  CHECK(f.shape("bert.embeddings.token_type_embeddings.weight") == std::vector<std::int64_t>{3, 16});
  CHECK(f.shape("bert.encoder.layer.1.intermediate.dense.weight") == std::vector<std::int64_t>{24, 16});  // Linear: [out, in]
  CHECK(f.shape("cls.predictions.bias") == std::vector<std::int64_t>{29});
  CHECK_FALSE(f.has("cls.predictions.decoder.weight"));  // tied to the word embeddings
  // Post-norm: the LayerNorm after attention's residual add is the attention sub-block's norm.
  std::vector<float> ln(16);
  f.read("bert.encoder.layer.1.attention.output.LayerNorm.bias", ln.data(), {16});
  CHECK(ln[7] == a->params()["blocks.1.attn.norm.bias"].f32()[7]);
  import_hf(*b, dir.string());
  CHECK(std::memcmp(a->params().data(), b->params().data(), a->params().bytes()) == 0);
  // The config's sizes and its activation must be the model's.
  Dims two = d;
  two.set("type_vocab", 2);
  auto c2 = make_model("bert-tiny", two);
  c2->plan(1, 8), c2->allocate();
  CHECK_THROWS_WITH(import_hf(*c2, dir.string()), Catch::Contains("type_vocab_size = 3 but the model has 2"));
  auto erf = c;
  erf["hidden_act"] = "gelu";  // bert-base-uncased's exact GELU
  std::ofstream(dir / "config.json") << erf.dump();
  std::string family;
  CHECK_THROWS_WITH(hf_dims(dir.string(), family), Catch::Contains("hidden_act = \"gelu\"") && Catch::Contains("tanh approximation"));
  // What BertForMaskedLM cannot hold is refused before anything is written: pre-norm blocks.
  auto pre = make_model("bert-prenorm-tiny", d);
  pre->plan(1, 8), pre->allocate();
  const auto pre_dir = tmp("hf-bert-pre") / "out";
  CHECK_THROWS_WITH(export_hf(*pre, pre_dir.string(), nullptr),
                    Catch::Contains("has PreNorm") && Catch::Contains("BertForMaskedLM") && Catch::Contains("nothing was written"));
  CHECK_FALSE(fs::exists(pre_dir));
  // A classifier is BertForSequenceClassification, its class names in id2label; it reads back as one.
  Dims dc = d;
  dc.set("n_labels", 3);
  auto cls = make_model("bert-tiny+classify", dc), cls_back = make_model("bert-tiny+classify", dc);
  cls->plan(1, 8), cls_back->plan(1, 8);
  cls->init(1), cls_back->init(2);
  const std::vector<std::string> labels = {"old", "new", "apocrypha"};
  CHECK_THROWS_WITH(export_hf(*cls, tmp("hf-cls-x").string() + "/out", nullptr), Catch::Contains("3 classes apart but 0 class names"));
  const auto cdir = tmp("hf-cls");
  export_hf(*cls, cdir.string(), nullptr, nullptr, &labels);
  std::ifstream ccfg(cdir / "config.json");
  const auto cc = nlohmann::json::parse(ccfg);
  CHECK(cc.at("architectures")[0] == "BertForSequenceClassification");
  CHECK(cc.at("id2label").at("2") == "apocrypha");
  CHECK(cc.at("label2id").at("new") == 1);
  SafetensorsFile fc((cdir / "model.safetensors").string());
  CHECK(fc.shape("classifier.weight") == std::vector<std::int64_t>{3, 16});
  CHECK(fc.shape("bert.pooler.dense.weight") == std::vector<std::int64_t>{16, 16});
  std::string fam;
  CHECK(hf_dims(cdir.string(), fam).get_int("n_labels") == 3);
  import_hf(*cls_back, cdir.string());
  CHECK(std::memcmp(cls->params().data(), cls_back->params().data(), cls->params().bytes()) == 0);
  CHECK_THROWS_WITH(import_hf(*b, cdir.string()), Catch::Contains("is a classifier (BertForSequenceClassification)"));
  // GGUF and PEFT are written for decoders: an encoder is refused with the export it has.
  const auto tok = data::load_tokenizer(corpus() + "/tokenizer.json");
  CHECK_THROWS_WITH(export_gguf(*a, tmp("bert.gguf").string(), *tok, "f32"),
                    Catch::Contains("is an encoder") && Catch::Contains("BertForMaskedLM with --hf DIR"));
}

namespace {
// A Llama-shaped composition with a plain MLP<GELU>, which LlamaForCausalLM cannot hold (GeGLU,
// which it holds as hidden_act gelu_pytorch_tanh, is the llama-geglu-tiny preset).
struct MlpBlock final : Block<RMSNorm, GQA<RoPE>, MLP<GELU>, PreNorm> {};
struct MlpLlama final : DecoderLM<TokenEmbedding, Repeat<MlpBlock>, RMSNorm, LMHead<Tied>> {};
}  // namespace

TEST_CASE("export writes only what the format holds, whole or not at all", "[train][hf]") {
  Dims d = find_arch("llama-tiny").dims;
  d.d_model = 16, d.n_layers = 1, d.n_heads = 2, d.n_kv_heads = 1, d.d_ff = 24, d.vocab = 29, d.max_seq = 8;
  const auto dir = tmp("hf-parts");

  // GeGLU is LlamaForCausalLM with hidden_act = gelu_pytorch_tanh; it imports back only into GeGLU.
  ModelOf<GegluLlama> geglu("llama-geglu", d), back("llama-geglu", d);
  geglu.plan(1, 8), back.plan(1, 8);
  geglu.init(1), back.init(2);
  export_hf(geglu, (dir / "geglu").string(), nullptr);
  std::ifstream cfg(dir / "geglu" / "config.json");
  CHECK(nlohmann::json::parse(cfg).at("hidden_act") == "gelu_pytorch_tanh");
  CHECK_FALSE(fs::exists(dir / "geglu.tmp"));
  import_hf(back, (dir / "geglu").string());
  CHECK(std::memcmp(geglu.params().data(), back.params().data(), geglu.params().bytes()) == 0);
  auto swiglu = make_model("llama-tiny", d);
  swiglu->plan(1, 8), swiglu->allocate();
  CHECK_THROWS_WITH(import_hf(*swiglu, (dir / "geglu").string()), Catch::Contains("hidden_act = \"gelu_pytorch_tanh\"") &&
                                                                       Catch::Contains("feed-forward is SwiGLU"));

  // MLP<GELU> has no place in LlamaForCausalLM: refused naming the part, and nothing is written.
  ModelOf<MlpLlama> mlp("llama-mlp", d);
  mlp.plan(1, 8), mlp.init(1);
  CHECK_THROWS_WITH(export_hf(mlp, (dir / "mlp").string(), nullptr),
                    Catch::Contains("has MLP<GELU>, which LlamaForCausalLM cannot hold") &&
                        Catch::Contains("nothing was written"));
  CHECK_FALSE(fs::exists(dir / "mlp"));
  CHECK_FALSE(fs::exists(dir / "mlp.tmp"));
  // ... and a refused export over an earlier one leaves the earlier one as it was.
  const std::string before = file_bytes(dir / "geglu" / "model.safetensors");
  CHECK_THROWS(export_hf(mlp, (dir / "geglu").string(), nullptr));
  CHECK(file_bytes(dir / "geglu" / "model.safetensors") == before);
}

TEST_CASE("GGUF export refuses what llama.cpp's llama architecture cannot hold, and writes whole files", "[train][gguf]") {
  // The running check against llama.cpp itself is tests/scripts/gguf_llamacpp.sh.
  const auto tok = data::load_tokenizer(corpus() + "/tokenizer.json");
  Dims d = find_arch("llama-tiny").dims;
  d.d_model = 16, d.n_layers = 1, d.n_heads = 2, d.n_kv_heads = 1, d.d_ff = 24, d.vocab = tok->vocab_size(), d.max_seq = 8;
  const auto dir = tmp("gguf");
  auto llama = make_model("llama-tiny", d);
  llama->plan(1, 8), llama->init(1);
  export_gguf(*llama, (dir / "m.gguf").string(), *tok, "f32");
  const std::string bytes = file_bytes(dir / "m.gguf");
  REQUIRE(bytes.size() > 24);
  CHECK(bytes.substr(0, 4) == "GGUF");
  std::uint32_t version = 0;
  std::uint64_t tensors = 0;
  std::memcpy(&version, bytes.data() + 4, 4), std::memcpy(&tensors, bytes.data() + 8, 8);
  CHECK(version == 3);
  const bool untied = llama->params().find("head.weight") >= 0;
  CHECK(tensors == std::uint64_t(1 + 9 * d.n_layers + 1 + (untied ? 1 : 0)));
  CHECK_FALSE(fs::exists(dir / "m.gguf.tmp"));

  auto refused = [&](const AnyModel& m, const char* type, const std::string& why) {
    INFO(m.name() << " as " << type);
    CHECK_THROWS_WITH(export_gguf(m, (dir / "x.gguf").string(), *tok, type), Catch::Contains(why));
    CHECK_FALSE(fs::exists(dir / "x.gguf"));
    CHECK_FALSE(fs::exists(dir / "x.gguf.tmp"));
  };
  ModelOf<GegluLlama> geglu("llama-geglu", d);
  geglu.plan(1, 8), geglu.init(1);
  refused(geglu, "f32", "has GeGLU; llama.cpp's llama architecture computes SwiGLU");
  ModelOf<MlpLlama> mlp("llama-mlp", d);
  mlp.plan(1, 8), mlp.init(1);
  refused(mlp, "f32", "has MLP<GELU>, which llama.cpp's llama architecture cannot hold");
  Dims g = find_arch("gpt2-tiny").dims;
  g.vocab = tok->vocab_size();
  auto gpt2 = make_model("gpt2-tiny", g);
  gpt2->plan(1, 8), gpt2->init(1);
  // GPT-2 is llama.cpp's gpt2 architecture (tests/test_gguf.cpp reads it back); one without biases is not.
  export_gguf(*gpt2, (dir / "gpt2.gguf").string(), *tok, "f32");
  CHECK(fs::exists(dir / "gpt2.gguf"));
  g.bias = false;
  auto unbiased = make_model("gpt2-tiny", g);
  unbiased->plan(1, 8), unbiased->init(1);
  refused(*unbiased, "f32", "has biases in every linear map and LayerNorm");
  refused(*llama, "q8_0", "q8_0 quantizes rows in blocks of 32");
  refused(*llama, "q4", "--type q4 is not one of f32, f16, bf16, q8_0");
}

TEST_CASE("GGUF encodings: f16 rounding, a Q8_0 block, RoPE rows reordered to llama.cpp's pairs", "[train][gguf]") {
  using gguf::half_bits;
  CHECK(half_bits(1.0f) == 0x3c00);
  CHECK(half_bits(-2.5f) == 0xc100);
  CHECK(half_bits(65504.0f) == 0x7bff);                      // the largest half
  CHECK(half_bits(65520.0f) == 0x7c00);                      // rounds up to inf
  CHECK(half_bits(std::ldexp(1.0f, -24)) == 0x0001);         // the smallest subnormal
  CHECK(half_bits(std::ldexp(1.0f, -25)) == 0x0000);         // a tie: to even, zero
  CHECK(half_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // a tie below: to even
  CHECK(half_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK((half_bits(std::nanf("")) & 0x7e00) == 0x7e00);      // NaN stays a (quiet) NaN
  // Q8_0: d = max|x| / 127 as f16, then round(x / d); dequantized within half a step.
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[std::size_t(i)] = 0.37f * float(i - 13) + 0.01f * float(i % 5);
  const auto block = gguf::q8_0_block(x.data());
  REQUIRE(block.size() == 34);
  const float amax = 0.37f * 18 + 0.01f * 1;  // x[31] = 0.37·18 + 0.01·1
  const std::uint16_t d_bits = std::uint16_t(std::uint8_t(block[0]) | (std::uint8_t(block[1]) << 8));
  CHECK(d_bits == half_bits(amax / 127.0f));
  for (int i = 0; i < 32; ++i) {
    const int q = std::int8_t(block[std::size_t(2 + i)]);
    CHECK(q == int(std::round(x[std::size_t(i)] * 127.0f / amax)));
  }
  // Reordered rows under adjacent-pair RoPE give the half-split RoPE result of the original rows,
  // reordered the same way: q·k, and the model, are unchanged.
  const std::int64_t H = 2, D = 8, in = 5;
  Rng rng(3);
  std::vector<float> w(static_cast<std::size_t>(H * D * in)), v(static_cast<std::size_t>(in));
  for (auto& e : w) e = float(rng.normal());
  for (auto& e : v) e = float(rng.normal());
  const auto wp = gguf::rope_pairs_adjacent(w, H, D, in);
  auto times = [&](const std::vector<float>& m) {
    std::vector<double> y(std::size_t(H * D));
    for (std::int64_t r = 0; r < H * D; ++r)
      for (std::int64_t c = 0; c < in; ++c) y[std::size_t(r)] += double(m[std::size_t(r * in + c)]) * v[std::size_t(c)];
    return y;
  };
  const auto a = times(w), b = times(wp);
  const double pos = 7;
  for (std::int64_t h = 0; h < H; ++h)
    for (std::int64_t i = 0; i < D / 2; ++i) {
      const double t = pos * std::pow(10000.0, -2.0 * double(i) / double(D)), c = std::cos(t), s = std::sin(t);
      const double a0 = a[std::size_t(h * D + i)], a1 = a[std::size_t(h * D + i + D / 2)];  // half-split pair
      const double b0 = b[std::size_t(h * D + 2 * i)], b1 = b[std::size_t(h * D + 2 * i + 1)];  // adjacent pair
      CHECK(b0 * c - b1 * s == Approx(a0 * c - a1 * s).margin(1e-9));
      CHECK(b1 * c + b0 * s == Approx(a1 * c + a0 * s).margin(1e-9));
    }
}

TEST_CASE("a split too small for one batch is named, with the keys that fix it", "[train][data]") {
  const auto d = tmp("small-val");
  const auto recipe = read_recipe(write_recipe(d), {"train.batch=64"});
  CHECK_THROWS_WITH(train::train(recipe, quiet(d / "run")),
                    Catch::Contains("the validation split (" + corpus() + "/val_*.bin) is too small") &&
                        Catch::Contains("split.val_fraction"));
  CHECK_FALSE(fs::exists(d / "run"));
}
