// Fine-tuning: LoRA's gradients, its start from the base exactly, the base untouched by training,
// merging, freezing by recipe, [finetune] from, and the errors for bad fine-tuning recipes.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "gradcheck.hpp"
#include "layers/lora.hpp"
#include "models/registry.hpp"
#include "train/finetune.hpp"
#include "train/hf.hpp"
#include "train/peft.hpp"
#include "train/safetensors.hpp"
#include "train/step.hpp"
#include "train_fixtures.hpp"

using namespace llmtk;
using namespace llmtk::train;
namespace fs = std::filesystem;
using namespace train_fixtures;

namespace {

Dims tiny(const char* arch) {
  Dims d = find_arch(arch).dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = std::string(arch) == "gpt2" ? 4 : 2;
  d.d_ff = 24, d.vocab = 29, d.max_seq = 8;
  return d;
}

// Logits of one row, on the host.
std::vector<float> logits_of(AnyModel& m, const std::vector<std::int32_t>& ids) {
  ModelInputs in;
  in.ids = TensorRef(const_cast<std::int32_t*>(ids.data()), DType::i32, {1, std::int64_t(ids.size())});
  const TensorRef l = m.forward(in);
  std::vector<float> out(std::size_t(l.numel()));
  copy_bytes(out.data(), Device::host, l.data, l.device, l.bytes());
  return out;
}

// The parameters of a checkpoint, by name, in a model of its own.
std::unique_ptr<AnyModel> load(const std::string& arch, const Dims& d, const std::string& checkpoint, const LoraConfig& lora = {}) {
  auto m = make_model(arch, d);
  if (lora.enabled()) apply_lora(*m, lora);
  const CheckpointState st = read_checkpoint_state(checkpoint);
  if (!st.frozen.empty()) m->freeze(st.frozen);  // a checkpoint with a base holds only what trained
  m->plan(1, 8);
  m->allocate();
  load_checkpoint(checkpoint, *m, nullptr);
  return m;
}

// A base run of the tiny recipe, trained once for the tests below.
const TrainResult& base_run() {
  static const TrainResult r = [] {
    const auto d = tmp("base");
    return train::train(read_recipe(write_recipe(d)), quiet(d / "run"));
  }();
  return r;
}

}  // namespace

TEST_CASE("LoRA's gradients (A, B and through them the input) by the generic checker", "[finetune][lora]") {
  for (const char* arch : {"llama-tiny", "gpt2"}) {
    INFO(arch);
    auto m = make_model(arch, tiny(arch));
    // No freezing here, so every parameter's gradient is checked, the base's with the adapters'.
    m->set_adapters([](std::string_view name, std::int64_t out, std::int64_t in) -> std::shared_ptr<LinearAdapter> {
      const std::string w(name);
      if (!lora_target_matches("attn.wq", w) && !lora_target_matches("attn.wv", w) && !lora_target_matches("mlp.w_up", w) &&
          !lora_target_matches("mlp.w_fc", w))
        return nullptr;
      return std::make_shared<LoRA>(out, in, 3, 0.5f);
    });
    llmtk::test::GradTolerance tol;
    tol.atol = 1e-4;  // the loss is a mean: its gradients are small, so is the bound
    REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, 2, 6, 41, tol));
    CHECK(m->params().find("blocks.1.attn.wv_adapter.lora_A") >= 0);
    const TensorRef b = m->params()["blocks.0.attn.wq_adapter.lora_B"];
    CHECK((b.rank == 2 && b.size(0) == 16 && b.size(1) == 3));
  }
}

TEST_CASE("LoRA dropout: gradients through the mask, and no dropout outside training", "[finetune][lora]") {
  // On the reference backend, whatever an earlier training left active (a recipe's train.device):
  // finite differences need its exact functions (the cpu backend's tanh and exp are approximations).
  ops::ScopedBackend on_reference("reference");
  // With the seed held, the masks are fixed and the loss is a smooth function of every parameter:
  // the generic checker sees the gradient through dropout(x) into A and, via dx, the layers below.
  const Dims d = tiny("llama-tiny");
  auto factory = [](float p) {
    return [p](std::string_view name, std::int64_t out, std::int64_t in) -> std::shared_ptr<LinearAdapter> {
      const std::string w(name);
      if (!lora_target_matches("attn.wq", w) && !lora_target_matches("mlp.w_up", w)) return nullptr;
      return std::make_shared<LoRA>(out, in, 3, 0.5f, p);
    };
  };
  auto m = make_model("llama-tiny", d);
  m->set_adapters(factory(0.4f));
  m->set_dropout_seed(0x5eed);
  llmtk::test::GradTolerance tol;
  tol.atol = 1e-4;
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, 2, 6, 43, tol));

  // A run with dropout resumes exactly: the masks are a function of the seed, the step and the
  // micro-batch, so the resumed half draws the ones it would have drawn.
  {
    const auto& base = base_run();
    const auto dir = tmp("lora-dropout");
    const auto recipe = read_recipe(write_recipe(dir, "\n[finetune]\nfrom = \"" + base.run_dir + "\"\n\n[lora]\nrank = 4\ndropout = 0.2\n"));
    const auto whole = train::train(recipe, quiet(dir / "run"));
    const auto l = losses(whole.run_dir);
    CHECK(l == losses(stop_and_resume(recipe, dir / "resumed", 4).run_dir));
    const auto no_dropout = read_recipe(write_recipe(dir, "\n[finetune]\nfrom = \"" + base.run_dir + "\"\n\n[lora]\nrank = 4\n"));
    CHECK(l != losses(train::train(no_dropout, quiet(dir / "plain")).run_dir));  // dropout did act
  }

  // Outside training (seed 0) the adapter sees x whole: the same logits as without dropout.
  auto plain = make_model("llama-tiny", d);
  plain->set_adapters(factory(0.0f));
  plain->plan(1, 6);
  plain->allocate();
  m->plan(1, 6);
  plain->params().copy_from(m->params());
  const std::vector<std::int32_t> ids = {3, 17, 2, 9, 11, 7};
  m->set_dropout_seed(0);
  CHECK(logits_of(*m, ids) == logits_of(*plain, ids));
  m->set_dropout_seed(77);
  const auto a = logits_of(*m, ids);
  CHECK(a != logits_of(*plain, ids));
  CHECK(a == logits_of(*m, ids));  // a seed is a mask
  m->set_dropout_seed(78);
  CHECK(a != logits_of(*m, ids));
}

TEST_CASE("LoRA's gradients are the merged model's, through the chain rule", "[finetune][lora]") {
  // The LoRA model and its merge compute one function, so every shared parameter has the same
  // gradient, and with W' = W + s·B·A: dB = s·dW'·Aᵀ and dA = s·Bᵀ·dW' (no finite differences).
  const Dims d = tiny("llama-tiny");
  LoraConfig lora;
  lora.rank = 3, lora.alpha = 1.5, lora.targets = {"attn.wk", "mlp.w_down"};
  auto m = make_model("llama-tiny", d);
  apply_lora(*m, lora);
  m->freeze({});  // every parameter gets a gradient here
  m->plan(2, 6);
  m->allocate();
  Rng rng(9);
  for (std::size_t i = 0; i < m->params().entries().size(); ++i)
    llmtk::test::fill_normal(m->params()[int(i)], rng, m->params().entries()[i].kind == ParamKind::norm ? 0.1 : 0.3,
                             m->params().entries()[i].kind == ParamKind::norm ? 1.0 : 0.0);
  auto merged = merge_lora("llama-tiny", d, lora, *m);
  merged->plan(2, 6);
  std::vector<std::int32_t> ids(12), targets(12);
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = std::int32_t(rng.next() % 29), targets[i] = std::int32_t(rng.next() % 29);
  const TensorRef tid(ids.data(), DType::i32, {2, 6}), ttg(targets.data(), DType::i32, {2, 6});
  NextTokenLoss objective;
  m->grads().zero(), merged->grads().zero();
  const float la = train::forward_backward(*m, objective, train::lm_batch(tid, ttg));
  const float lb = train::forward_backward(*merged, objective, train::lm_batch(tid, ttg));
  CHECK(la == Approx(lb).epsilon(1e-5));
  auto close = [](const float* x, const float* y, std::int64_t n) {
    double worst = 0, scale = 1e-6;
    for (std::int64_t i = 0; i < n; ++i) worst = std::max(worst, double(std::abs(x[i] - y[i]))), scale = std::max(scale, double(std::abs(y[i])));
    return worst / scale;
  };
  for (const auto& e : merged->params().entries()) {
    INFO(e.name);
    CHECK(close(m->grads()[m->params().find(e.name)].f32(), merged->grads()[merged->params().find(e.name)].f32(), e.numel) < 1e-4);
  }
  const double s = lora.scale();
  for (const char* w : {"blocks.0.attn.wk", "blocks.1.mlp.w_down"}) {
    INFO(w);
    const std::string name(w);
    const TensorRef A = m->params()[name + "_adapter.lora_A"], B = m->params()[name + "_adapter.lora_B"];
    const TensorRef dA = m->grads()[m->params().find(name + "_adapter.lora_A")], dB = m->grads()[m->params().find(name + "_adapter.lora_B")];
    const TensorRef dW = merged->grads()[merged->params().find(name)];
    const std::int64_t R = A.size(0), I = A.size(1), O = B.size(0);
    std::vector<float> wantA(std::size_t(R * I)), wantB(std::size_t(O * R));
    for (std::int64_t r = 0; r < R; ++r)
      for (std::int64_t i = 0; i < I; ++i) {
        double acc = 0;
        for (std::int64_t o = 0; o < O; ++o) acc += double(B.f32()[o * R + r]) * double(dW.f32()[o * I + i]);
        wantA[std::size_t(r * I + i)] = float(s * acc);
      }
    for (std::int64_t o = 0; o < O; ++o)
      for (std::int64_t r = 0; r < R; ++r) {
        double acc = 0;
        for (std::int64_t i = 0; i < I; ++i) acc += double(dW.f32()[o * I + i]) * double(A.f32()[r * I + i]);
        wantB[std::size_t(o * R + r)] = float(s * acc);
      }
    CHECK(close(dA.f32(), wantA.data(), R * I) < 1e-4);
    CHECK(close(dB.f32(), wantB.data(), O * R) < 1e-4);
  }
}

TEST_CASE("LoRA starts from the base exactly, trains only its adapters, and merges", "[finetune][lora]") {
  const auto& base = base_run();
  const auto d = tmp("lora");
  const std::string extra = "\n[finetune]\nfrom = \"" + base.run_dir + "\"\n\n[lora]\nrank = 4\nalpha = 8\n"
                            "targets = [\"attn.wq\", \"attn.wv\", \"mlp.w_down\"]\n";
  const auto recipe = read_recipe(write_recipe(d, extra), {"optim.lr=3e-2"});
  REQUIRE(recipe.lora.rank == 4);
  const std::string base_ckpt = best_or_newest_checkpoint(base.run_dir);
  auto before = load("llama-tiny", recipe.model.dims, base_ckpt);

  // B = 0: the adapted model computes the base's logits bit for bit.
  auto fresh = make_model("llama-tiny", recipe.model.dims);
  apply_lora(*fresh, recipe.lora);
  fresh->plan(1, 8);
  fresh->init(5);
  const Arena weights = before->params().host_copy();
  for (const auto& e : weights.entries()) fresh->params().write(fresh->params().find(e.name), weights[e.name].data);
  const std::vector<std::int32_t> ids = {3, 17, 42, 9, 100, 7, 250, 1};
  CHECK(logits_of(*fresh, ids) == logits_of(*before, ids));

  std::string log;
  auto o = quiet(d / "run");
  o.log = [&](const std::string& line) { log += line + "\n"; };
  const auto r = train::train(recipe, o);
  INFO(log);
  CHECK(log.find("initialised from the weights of") != std::string::npos);
  CHECK(log.find(" frozen: ") != std::string::npos);
  // (Whether LoRA lowers the loss is measured on a real base, not here: this base's frozen 16-wide
  // tied embeddings bound how far any adapter can move its logits.)
  REQUIRE(losses(r.run_dir).size() == 8);

  // The base is bit-identical after training; the adapters moved.
  auto after = load("llama-tiny", recipe.model.dims, r.checkpoint, recipe.lora);
  for (const auto& e : weights.entries()) {
    INFO(e.name);
    CHECK(std::memcmp(after->params()[e.name].data, weights[e.name].data, std::size_t(e.numel) * 4) == 0);
  }
  const TensorRef b = after->params()["blocks.0.attn.wv_adapter.lora_B"];
  CHECK(std::any_of(b.f32(), b.f32() + b.numel(), [](float v) { return v != 0; }));

  // Merged into the weights, the model computes what base + adapters computed.
  auto merged = merge_lora("llama-tiny", recipe.model.dims, recipe.lora, *after);
  merged->plan(1, 8);
  const auto want = logits_of(*after, ids), got = logits_of(*merged, ids);
  REQUIRE(want.size() == got.size());
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, double(std::abs(want[i] - got[i])));
  CHECK(worst < 1e-5);
  CHECK(got != logits_of(*before, ids));  // the merge is not the base

  // The run reloads as generate, eval and export see it, adapters included.
  const auto loaded = load_run(r.run_dir, "cpu");
  CHECK(loaded.state.lora == recipe.lora);
  CHECK(loaded.model->params().find("blocks.0.mlp.w_down_adapter.lora_A") >= 0);
  CHECK_THROWS_WITH(export_hf(*loaded.model, (d / "hf").string(), nullptr), Catch::Contains("carries adapters"));
  CHECK_FALSE(fs::exists(d / "hf"));

  // The checkpoint holds the adapters alone and names its base by path and fingerprint.
  const CheckpointState st = read_checkpoint_state(r.checkpoint);
  CHECK(st.base.path == base_ckpt);
  CHECK(st.base.hash.size() == 16);
  const SafetensorsFile file((fs::path(r.checkpoint) / "model.safetensors").string());
  CHECK(file.names().size() == 2 * 3 * std::size_t(recipe.model.dims.n_layers));  // A and B of 3 maps per layer
  for (const auto& n : file.names()) CHECK(n.find("_adapter.lora_") != std::string::npos);
  // A base that changed since is refused by name, as is one that is gone.
  const fs::path weights_file = fs::path(base_ckpt) / "model.safetensors";
  fs::copy_file(weights_file, d / "saved.safetensors");
  {
    std::fstream f(weights_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-4, std::ios::end);
    f.write("\x01\x02\x03\x04", 4);
  }
  CHECK_THROWS_WITH(load_run(r.run_dir, "cpu"), Catch::Contains("whose weights have changed since"));
  fs::remove(weights_file);
  CHECK_THROWS_WITH(load_run(r.run_dir, "cpu"), Catch::Contains("which is gone"));
  fs::copy_file(d / "saved.safetensors", weights_file);
  CHECK(load_run(r.run_dir, "cpu").model->params().find("blocks.0.attn.wq_adapter.lora_A") >= 0);
}

TEST_CASE("train.freeze: frozen parameters keep their values through a run", "[finetune][freeze]") {
  const auto& base = base_run();
  const auto d = tmp("freeze");
  const auto recipe =
      read_recipe(write_recipe(d, "\n[finetune]\nfrom = \"" + base.run_dir + "\"\n"), {"train.freeze=[\"embed.*\", \"blocks.0.*\"]"});
  REQUIRE(recipe.train.freeze.size() == 2);
  const auto r = train::train(recipe, quiet(d / "run"));
  auto before = load("llama-tiny", recipe.model.dims, best_or_newest_checkpoint(base.run_dir));
  auto after = load("llama-tiny", recipe.model.dims, r.checkpoint);
  int frozen = 0, moved = 0;
  for (const auto& e : before->params().entries()) {
    const bool same = std::memcmp(before->params()[e.name].data, after->params()[e.name].data, std::size_t(e.numel) * 4) == 0;
    const bool should_freeze = e.name.starts_with("embed.") || e.name.starts_with("blocks.0.");
    INFO(e.name);
    CHECK(same == should_freeze);
    (should_freeze ? frozen : moved) += 1;
  }
  CHECK(frozen > 0);
  CHECK(moved > 0);
}

TEST_CASE("bad fine-tuning recipes stop before training, naming the problem and the fix", "[finetune][errors]") {
  const auto& base = base_run();
  const auto d = tmp("ft-bad");
  const std::string from = "\n[finetune]\nfrom = \"" + base.run_dir + "\"\n";
  auto fails = [&](const std::string& extra, const std::vector<std::string>& sets, const std::string& expect) {
    INFO(extra);
    CHECK_THROWS_WITH(train::train(read_recipe(write_recipe(d, extra), sets), quiet(d / "run")), Catch::Contains(expect));
    CHECK_FALSE(fs::exists(d / "run"));
  };
  fails("\n[finetune]\nfrom = \"/nonexistent/run\"\n", {}, "'/nonexistent/run' does not exist");
  fails(from, {"model.d_ff=48"}, "model.d_ff = 48 but the base " + base.run_dir + " has model.d_ff = 32; remove the key");
  fails(from + "\n[lora]\nrank = 4\ntargets = [\"attn.wz\"]\n", {},
        "target 'attn.wz' matches no linear map; this model's are: blocks.*.attn.wq, blocks.*.attn.wk");
  fails(from + "\n[lora]\nrank = 40\n", {}, "lora.rank = 40 is larger than blocks.0.attn.wq [16, 16] can use (at most 16)");
  fails("\n[lora]\nrank = 4\n", {}, "[lora] trains adapters on a base model: set finetune.from");
  fails(from + "\n[lora]\nrank = 4\n", {"train.freeze=[\"embed.*\"]"}, "LoRA already freezes the whole base");
  fails(from + "\n[lora]\nrank = 4\ndropout = 1.5\n", {}, "lora.dropout");
  fails(from, {"train.freeze=[\"block.*\"]"}, "freeze pattern 'block.*' matches no parameter");
}

TEST_CASE("PEFT layout: adapters go out in PEFT's names and come back as they were", "[finetune][peft]") {
  const auto d = tmp("peft");
  for (const char* arch : {"gpt2", "llama-tiny"}) {
    INFO(arch);
    const bool gpt2 = std::string(arch) == "gpt2";
    Dims dims = tiny(arch);
    if (gpt2) dims.bias = true;
    LoraConfig lora;
    lora.rank = 3, lora.alpha = 6;
    lora.targets = gpt2 ? std::vector<std::string>{"attn.wq", "attn.wv", "mlp.w_fc"} : std::vector<std::string>{"attn.*", "mlp.w_up"};
    lora.rank_pattern = {{"blocks.1.attn.wv", 2}};  // a rank that differs in one layer
    auto m = make_model(arch, dims);
    apply_lora(*m, lora);
    m->plan(1, 8);
    m->allocate();
    Rng rng(4);
    for (std::size_t i = 0; i < m->params().entries().size(); ++i) llmtk::test::fill_normal(m->params()[int(i)], rng, 0.3, 0.0);
    const std::string out = (d / arch).string();
    export_peft(*m, lora, out, "base-dir");
    const SafetensorsFile f(out + "/adapter_model.safetensors");
    const std::string q = gpt2 ? "base_model.model.transformer.h.0.attn.c_attn" : "base_model.model.model.layers.0.self_attn.q_proj";
    REQUIRE(f.has(q + ".lora_A.weight"));
    // GPT-2: wq and wv (rank 3 each) fused into c_attn, rank 6, B [3·16, 6]; layer 1 has 3 + 2.
    CHECK(f.shape(q + ".lora_A.weight") == std::vector<std::int64_t>{gpt2 ? 6 : 3, 16});
    CHECK(f.shape(q + ".lora_B.weight") == std::vector<std::int64_t>{gpt2 ? 48 : 16, gpt2 ? 6 : 3});
    if (gpt2) CHECK(f.shape("base_model.model.transformer.h.1.attn.c_attn.lora_A.weight") == std::vector<std::int64_t>{5, 16});

    // Read back: the same maps, ranks, scales and values (the fused c_attn split at B's zero blocks).
    fs::create_directories(fs::path(out) / "base-dir");  // base_model_name_or_path, found beside the adapter
    const PeftAdapter back = read_peft(out, gpt2 ? "gpt2" : "llama", dims.n_layers);
    const Arena host = m->params().host_copy();
    std::size_t adapters = 0;
    for (const auto& e : host.entries())
      if (e.name.find("_adapter.") != std::string::npos) {
        ++adapters;
        INFO(e.name);
        const std::string w = e.name.substr(0, e.name.find("_adapter."));
        CHECK(back.lora.rank_of(w) == e.shape[e.name.ends_with("lora_A") ? 0 : 1]);
        const auto it = std::find_if(back.tensors.begin(), back.tensors.end(), [&](const auto& t) { return t.first == e.name; });
        REQUIRE(it != back.tensors.end());
        const double s0 = lora.scale_of(w), s1 = back.lora.scale_of(w);
        if (e.name.ends_with("lora_A") || s0 == s1) {
          CHECK(std::memcmp(it->second.data(), host[e.name].data, std::size_t(e.numel) * 4) == 0);
        } else {
          // Parts of one c_attn with different scales: PEFT has one scale per module, so each
          // part's scale went into its B (layer 1 here: wq 6/3, wv 6/2); s·B is what it was.
          CHECK((gpt2 && w == "blocks.1.attn.wq") + (gpt2 && w == "blocks.1.attn.wv") == 1);
          for (std::int64_t i = 0; i < e.numel; ++i) CHECK(s1 * it->second[std::size_t(i)] == Approx(s0 * host[e.name].f32()[i]).epsilon(1e-6));
        }
      }
    CHECK(back.tensors.size() == adapters);
    auto again = make_model(arch, dims);
    apply_lora(*again, back.lora);
    again->plan(1, 8);
    again->allocate();
    load_peft(back, *again);
    const Arena h2 = again->params().host_copy();
    for (const auto& e : h2.entries())
      if (e.name.find("_adapter.") != std::string::npos) CHECK(host.find(e.name) >= 0);
  }

  // An adapter trained in PEFT on c_attn has a dense B: exact rank-R adapters on wq, wk and wv,
  // sharing A, each with its third of B.
  {
    const std::string dir = (d / "dense").string();
    fs::create_directories(dir + "/base-dir");
    fs::copy_file(d / "gpt2" / "adapter_config.json", dir + "/adapter_config.json");
    Arena t("dense");
    const std::string a = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", b = "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight";
    t.add(a, {6, 16}), t.add(b, {48, 6});
    t.allocate(host_memory());
    Rng rng(8);
    llmtk::test::fill_normal(t[a], rng, 0.3, 0.0), llmtk::test::fill_normal(t[b], rng, 0.3, 0.0);
    save_safetensors(dir + "/adapter_model.safetensors", t);
    const PeftAdapter dense = read_peft(dir, "gpt2", 2);
    CHECK(dense.lora.targets == std::vector<std::string>{"blocks.0.attn.wk", "blocks.0.attn.wq", "blocks.0.attn.wv"});
    for (int part = 0; part < 3; ++part) {
      const std::string w = std::string("blocks.0.attn.w") + "qkv"[part];
      INFO(w);
      CHECK(dense.lora.rank_of(w) == 6);
      const auto B = std::find_if(dense.tensors.begin(), dense.tensors.end(), [&](const auto& x) { return x.first == w + "_adapter.lora_B"; });
      REQUIRE(B != dense.tensors.end());
      CHECK(std::equal(B->second.begin(), B->second.end(), t[b].f32() + part * 16 * 6));
    }
  }

  // What PEFT files llmtk cannot read say so, naming the file.
  auto bad_config = [&](const std::string& json_text, const std::string& expect) {
    const std::string dir = (d / "bad").string();
    fs::remove_all(dir);
    fs::create_directories(dir + "/base-dir");
    fs::copy_file(d / "gpt2" / "adapter_model.safetensors", dir + "/adapter_model.safetensors");
    std::ofstream(dir + "/adapter_config.json") << json_text;
    CHECK_THROWS_WITH(read_peft(dir, "gpt2", 2), Catch::Contains(expect));
  };
  bad_config(R"({"peft_type": "IA3", "base_model_name_or_path": "base-dir"})", "has peft_type \"IA3\"; llmtk reads LoRA adapters");
  bad_config(R"({"peft_type": "LORA", "base_model_name_or_path": "base-dir", "use_dora": true, "r": 3})", "DoRA");
  bad_config(R"({"peft_type": "LORA", "base_model_name_or_path": "/nowhere/base", "r": 3})", "names the base \"/nowhere/base\", which is not a directory here");
  bad_config(R"({"peft_type": "LORA", "base_model_name_or_path": "base-dir", "r": 8, "lora_alpha": 6})", "rank 8 but its tensors have rank");
  // Adapters on a model with nothing PEFT can name.
  auto none = make_model("llama-tiny", tiny("llama-tiny"));
  none->plan(1, 8);
  none->allocate();
  CHECK_THROWS_WITH(export_peft(*none, {}, (d / "none").string(), ""), Catch::Contains("carries no LoRA adapters"));
  CHECK_FALSE(fs::exists(d / "none"));
}

TEST_CASE("prompt tuning: gradients, the prompt as token rows, and decoding through the cache", "[finetune][prompt]") {
  // On the reference backend, whatever an earlier training left active (a recipe's train.device):
  // finite differences need its exact functions (the cpu backend's tanh and exp are approximations).
  ops::ScopedBackend on_reference("reference");
  for (const char* arch : {"llama-tiny", "gpt2"}) {
    INFO(arch);
    Dims d = tiny(arch);
    d.max_seq = 12;
    // Every parameter's gradient, the prompt's with the base's (nothing frozen here).
    auto g = make_model(arch, d);
    g->set_soft_prompt(3);
    llmtk::test::GradTolerance tol;
    tol.atol = 1e-4;
    REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*g, 2, 5, 47, tol));
    CHECK(g->params().find("embed.prompt") >= 0);

    // With the prompt set to the token rows of ids u, the model computes on x what the plain
    // model computes on u then x: the logits of x's positions, exactly.
    auto m = make_model(arch, d);
    m->set_soft_prompt(3);
    m->plan(2, 5);
    m->init(3);
    auto plain = make_model(arch, d);
    plain->plan(2, 8);
    plain->allocate();
    const Arena w = m->params().host_copy();
    for (const auto& e : plain->params().entries()) plain->params().write(plain->params().find(e.name), w[e.name].data);
    const std::vector<std::int32_t> u = {5, 11, 2};
    std::vector<float> rows;
    for (auto id : u) rows.insert(rows.end(), w["embed.tokens"].f32() + id * d.d_model, w["embed.tokens"].f32() + (id + 1) * d.d_model);
    m->params().write(m->params().find("embed.prompt"), rows.data());
    std::vector<std::int32_t> x = {3, 17, 2, 9, 11, 7, 1, 20, 4, 6}, ux;
    for (int b = 0; b < 2; ++b) ux.insert(ux.end(), u.begin(), u.end()), ux.insert(ux.end(), x.begin() + b * 5, x.begin() + b * 5 + 5);
    const TensorRef lm = m->forward(TensorRef(x.data(), DType::i32, {2, 5}));
    REQUIRE(lm.numel() == 2 * 5 * d.vocab);
    const std::vector<float> got(lm.f32(), lm.f32() + lm.numel());
    const TensorRef lp = plain->forward(TensorRef(ux.data(), DType::i32, {2, 8}));
    double worst = 0;
    for (int b = 0; b < 2; ++b)
      for (std::int64_t i = 0; i < 5 * d.vocab; ++i)
        worst = std::max(worst, double(std::abs(got[std::size_t(b * 5 * d.vocab + i)] - lp.f32()[(b * 8 + 3) * d.vocab + i])));
    CHECK(worst < 1e-5);

    // Decoding: the prompt goes into the cache first; each step's logits are the full forward's.
    auto dec = make_model(arch, d);
    dec->set_soft_prompt(3);
    dec->plan_decode(5);
    dec->allocate();
    dec->params().copy_from(m->params());
    for (std::int64_t t = 0; t < 5; ++t) {
      std::int32_t id = x[std::size_t(t)];
      const float* l = dec->decode(TensorRef(&id, DType::i32, {1, 1}), t);
      double err = 0;
      for (std::int64_t v = 0; v < d.vocab; ++v) err = std::max(err, double(std::abs(l[v] - got[std::size_t(t * d.vocab + v)])));
      INFO("position " << t);
      CHECK(err < 1e-5);
    }
  }
}

TEST_CASE("prompt tuning from a base run: only the prompt trains and is saved", "[finetune][prompt]") {
  const auto& base = base_run();
  const auto d = tmp("prompt");
  const auto recipe = read_recipe(write_recipe(d, "\n[finetune]\nfrom = \"" + base.run_dir + "\"\n\n[prompt_tuning]\nn_tokens = 4\n"),
                                  {"train.seq=12"});
  REQUIRE(recipe.prompt_tuning.n_tokens == 4);
  std::string log;
  auto o = quiet(d / "run");
  o.log = [&](const std::string& line) { log += line + "\n"; };
  const auto r = train::train(recipe, o);
  INFO(log);
  const SafetensorsFile f((fs::path(r.checkpoint) / "model.safetensors").string());
  CHECK(f.names() == std::vector<std::string>{"embed.prompt"});
  const auto before = load("llama-tiny", recipe.model.dims, best_or_newest_checkpoint(base.run_dir));
  const auto run = load_run(r.run_dir, "cpu");
  CHECK(run.model->soft_prompt() == 4);
  const Arena after = run.model->params().host_copy();
  for (const auto& e : before->params().entries()) {
    INFO(e.name);
    CHECK(std::memcmp(after[e.name].data, before->params()[e.name].data, std::size_t(e.numel) * 4) == 0);
  }
  // The vectors moved from where they started (rows of the token table).
  const float* p = after["embed.prompt"].f32();
  bool is_a_row = false;
  for (std::int64_t v = 0; v < recipe.model.dims.vocab && !is_a_row; ++v)
    is_a_row = std::equal(p, p + recipe.model.dims.d_model, before->params()["embed.tokens"].f32() + v * recipe.model.dims.d_model);
  CHECK_FALSE(is_a_row);
  CHECK_THROWS_WITH(export_hf(*run.model, (d / "hf").string(), nullptr), Catch::Contains("has a soft prompt"));
  CHECK(losses(stop_and_resume(recipe, d / "resumed", 4).run_dir) == losses(r.run_dir));
  export_peft_prompt(*run.model, (d / "peft").string(), best_or_newest_checkpoint(base.run_dir));
  CHECK(SafetensorsFile((d / "peft" / "adapter_model.safetensors").string()).shape("prompt_embeddings") ==
        std::vector<std::int64_t>{4, recipe.model.dims.d_model});
  // Read back: a run from the PEFT directory (lr 0: nothing moves) holds the same vectors.
  {
    const auto back = read_recipe(write_recipe(d, "\n[finetune]\nfrom = \"" + (d / "peft").string() + "\"\n"),
                                  {"train.seq=12", "optim.lr=0", "schedule.min_lr=0", "train.steps=3"});
    CHECK(back.prompt_tuning.n_tokens == 4);
    const auto again = load_run(train::train(back, quiet(d / "back")).run_dir, "cpu");
    CHECK(std::memcmp(again.model->params().host_copy()["embed.prompt"].data, after["embed.prompt"].data, 4 * 4 * std::size_t(recipe.model.dims.d_model)) == 0);
  }

  // What cannot work stops before anything is written.
  auto fails = [&](const std::string& extra, const std::vector<std::string>& sets, const std::string& expect) {
    INFO(extra);
    CHECK_THROWS_WITH(train::train(read_recipe(write_recipe(d, extra), sets), quiet(d / "bad")), Catch::Contains(expect));
    CHECK_FALSE(fs::exists(d / "bad"));
  };
  const std::string from = "\n[finetune]\nfrom = \"" + base.run_dir + "\"\n";
  fails("\n[prompt_tuning]\nn_tokens = 4\n", {"train.seq=12"}, "[prompt_tuning] trains a soft prompt for a base model: set finetune.from");
  fails(from + "\n[prompt_tuning]\nn_tokens = 4\n\n[lora]\nrank = 2\n", {"train.seq=12"}, "[prompt_tuning] and [lora] together");
  fails(from + "\n[prompt_tuning]\nn_tokens = 4\n", {}, "train.seq = 16 plus prompt_tuning.n_tokens = 4 exceeds model.max_seq = 16");
  fails(from + "\n[prompt_tuning]\nn_tokens = 4\ninit = \"words\"\n", {"train.seq=12"}, "is not \"vocab\", \"random\" or \"text:...\"");
}

TEST_CASE("prefix tuning: gradients, prefixes as a cache of earlier positions, and decoding", "[finetune][prefix]") {
  // On the reference backend, whatever an earlier training left active (a recipe's train.device):
  // finite differences need its exact functions (the cpu backend's tanh and exp are approximations).
  ops::ScopedBackend on_reference("reference");
  for (const char* arch : {"llama-tiny", "gpt2"}) {
    INFO(arch);
    Dims d = tiny(arch);
    d.max_seq = 12;
    auto g = make_model(arch, d);
    g->set_prefix(3);
    llmtk::test::GradTolerance tol;
    tol.atol = 1e-4;
    REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*g, 2, 5, 53, tol));
    CHECK(g->params().find("blocks.1.attn.prefix_v") >= 0);
    // The reparameterisation: every layer's prefix made by one MLP from a shared embedding; the
    // shared parameters gather every layer's gradient.
    auto gp = make_model(arch, d);
    gp->set_prefix(3, 6);
    REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*gp, 2, 5, 59, tol));
    CHECK(gp->params().find("prefix.w1") >= 0);
    CHECK(gp->params().find("blocks.1.attn.prefix_wv") >= 0);
    CHECK(gp->params().find("blocks.1.attn.prefix_v") < 0);

    // With each layer's prefix set to the keys and values the plain model computes for tokens u
    // (after RoPE, as a cache holds them), the model on x computes what the plain model computes
    // on u then x, at x's positions.
    auto plain = make_model(arch, d);
    plain->plan(2, 8);
    plain->init(5);
    const std::vector<std::int32_t> u = {5, 11, 2}, x = {3, 17, 2, 9, 11, 7, 1, 20, 4, 6};
    std::vector<std::int32_t> ux;
    for (int b = 0; b < 2; ++b) ux.insert(ux.end(), u.begin(), u.end()), ux.insert(ux.end(), x.begin() + b * 5, x.begin() + b * 5 + 5);
    const TensorRef lp = plain->forward(TensorRef(ux.data(), DType::i32, {2, 8}));
    const std::vector<float> want(lp.f32(), lp.f32() + lp.numel());
    auto m = make_model(arch, d);
    m->set_prefix(3);
    m->plan(2, 5);
    m->allocate();
    const Arena w = plain->params().host_copy();
    for (const auto& e : w.entries()) m->params().write(m->params().find(e.name), w[e.name].data);
    const std::int64_t KD = d.kv_dim();
    for (int l = 0; l < d.n_layers; ++l)
      for (const char* kv : {"k", "v"}) {
        const std::string layer = "blocks." + std::to_string(l) + ".attn.";
        const TensorRef act = plain->acts()[layer + kv];  // row 0's first 3 positions
        REQUIRE(act.numel() == 2 * 8 * KD);
        m->params().write(m->params().find(layer + "prefix_" + kv), act.f32());
      }
    const TensorRef lm = m->forward(TensorRef(const_cast<std::int32_t*>(x.data()), DType::i32, {2, 5}));
    const std::vector<float> got(lm.f32(), lm.f32() + lm.numel());
    double worst = 0;
    for (int b = 0; b < 2; ++b)
      for (std::int64_t i = 0; i < 5 * d.vocab; ++i)
        worst = std::max(worst, double(std::abs(got[std::size_t(b * 5 * d.vocab + i)] - want[std::size_t((b * 8 + 3) * d.vocab + i)])));
    CHECK(worst < 1e-5);

    // Decoding with the MLP's prefix equals the full forward too.
    {
      gp->plan(1, 5);
      const TensorRef full = gp->forward(TensorRef(const_cast<std::int32_t*>(x.data()), DType::i32, {1, 5}));
      const std::vector<float> ref(full.f32(), full.f32() + full.numel());
      auto dp = make_model(arch, d);
      dp->set_prefix(3, 6);
      dp->plan_decode(5);
      dp->allocate();
      dp->params().copy_from(gp->params());
      double err = 0;
      for (std::int64_t t = 0; t < 5; ++t) {
        std::int32_t id = x[std::size_t(t)];
        const float* l = dp->decode(TensorRef(&id, DType::i32, {1, 1}), t);
        for (std::int64_t v = 0; v < d.vocab; ++v) err = std::max(err, double(std::abs(l[v] - ref[std::size_t(t * d.vocab + v)])));
      }
      CHECK(err < 1e-5);
    }

    // Decoding: the prefix fills the cache's first rows; each step's logits are the full forward's.
    auto dec = make_model(arch, d);
    dec->set_prefix(3);
    dec->plan_decode(5);
    dec->allocate();
    dec->params().copy_from(m->params());
    for (std::int64_t t = 0; t < 5; ++t) {
      std::int32_t id = x[std::size_t(t)];
      const float* l = dec->decode(TensorRef(&id, DType::i32, {1, 1}), t);
      double err = 0;
      for (std::int64_t v = 0; v < d.vocab; ++v) err = std::max(err, double(std::abs(l[v] - got[std::size_t(t * d.vocab + v)])));
      INFO("position " << t);
      CHECK(err < 1e-5);
    }
  }
}

TEST_CASE("prefix tuning from a base run: only the prefixes train and are saved", "[finetune][prefix]") {
  const auto& base = base_run();
  const auto d = tmp("prefix");
  const auto recipe = read_recipe(write_recipe(d, "\n[finetune]\nfrom = \"" + base.run_dir + "\"\n\n[prefix_tuning]\nn_tokens = 4\n"),
                                  {"train.seq=12"});
  REQUIRE(recipe.prefix_tuning.n_tokens == 4);
  std::string log;
  auto o = quiet(d / "run");
  o.log = [&](const std::string& line) { log += line + "\n"; };
  const auto r = train::train(recipe, o);
  INFO(log);
  const SafetensorsFile f((fs::path(r.checkpoint) / "model.safetensors").string());
  CHECK(f.names().size() == 2 * std::size_t(recipe.model.dims.n_layers));
  for (const auto& n : f.names()) CHECK(n.find(".attn.prefix_") != std::string::npos);
  const auto before = load("llama-tiny", recipe.model.dims, best_or_newest_checkpoint(base.run_dir));
  const auto run = load_run(r.run_dir, "cpu");
  CHECK(run.model->prefix() == 4);
  const Arena after = run.model->params().host_copy();
  for (const auto& e : before->params().entries()) {
    INFO(e.name);
    CHECK(std::memcmp(after[e.name].data, before->params()[e.name].data, std::size_t(e.numel) * 4) == 0);
  }
  CHECK_THROWS_WITH(export_hf(*run.model, (d / "hf").string(), nullptr), Catch::Contains("has prefix keys and values"));
  // Stopped halfway and resumed (base + prefixes + optimizer state), the run goes on exactly.
  CHECK(losses(stop_and_resume(recipe, d / "resumed", 4).run_dir) == losses(r.run_dir));
  export_peft_prefix(*run.model, (d / "peft").string(), best_or_newest_checkpoint(base.run_dir));
  const SafetensorsFile pf((d / "peft" / "adapter_model.safetensors").string());
  const std::int64_t KD = recipe.model.dims.kv_dim(), L = recipe.model.dims.n_layers;
  REQUIRE(pf.shape("prompt_embeddings") == std::vector<std::int64_t>{4, L * 2 * KD});
  // PEFT's order: position i, layer l, key then value.
  std::vector<float> pe(std::size_t(4 * L * 2 * KD));
  pf.read("prompt_embeddings", pe.data(), {4, L * 2 * KD});
  const std::int64_t l = L - 1;  // position 1, the last layer, its value
  CHECK(std::equal(pe.begin() + (2 * L + 2 * l + 1) * KD, pe.begin() + (2 * L + 2 * l + 2) * KD,
                   after["blocks." + std::to_string(l) + ".attn.prefix_v"].f32() + 1 * KD));
  {  // read back, as for prompt tuning: every layer's prefix as it was
    const auto back = read_recipe(write_recipe(d, "\n[finetune]\nfrom = \"" + (d / "peft").string() + "\"\n"),
                                  {"train.seq=12", "optim.lr=0", "schedule.min_lr=0", "train.steps=3"});
    CHECK(back.prefix_tuning.n_tokens == 4);
    const Arena again = load_run(train::train(back, quiet(d / "back")).run_dir, "cpu").model->params().host_copy();
    for (std::int64_t i = 0; i < L; ++i)
      for (const char* kv : {"k", "v"}) {
        const std::string name = "blocks." + std::to_string(i) + ".attn.prefix_" + kv;
        CHECK(std::memcmp(again[name].data, after[name].data, std::size_t(4 * KD) * 4) == 0);
      }
  }

  auto fails = [&](const std::string& extra, const std::vector<std::string>& sets, const std::string& expect) {
    INFO(extra);
    CHECK_THROWS_WITH(train::train(read_recipe(write_recipe(d, extra), sets), quiet(d / "bad")), Catch::Contains(expect));
    CHECK_FALSE(fs::exists(d / "bad"));
  };
  const std::string from = "\n[finetune]\nfrom = \"" + base.run_dir + "\"\n";
  fails("\n[prefix_tuning]\nn_tokens = 4\n", {"train.seq=12"}, "[prefix_tuning] trains keys and values for a base model");
  fails(from + "\n[prefix_tuning]\nn_tokens = 4\n\n[lora]\nrank = 2\n", {"train.seq=12"}, "[prefix_tuning] with [lora]");
  fails(from + "\n[prefix_tuning]\nn_tokens = 4\n", {}, "train.seq = 16 plus prefix_tuning.n_tokens = 4 exceeds model.max_seq = 16");

  // With the reparameterisation: the MLP trains and is saved; PEFT gets the prefixes it makes.
  const auto mlp = read_recipe(write_recipe(d, from + "\n[prefix_tuning]\nn_tokens = 4\nprojection = 8\n"), {"train.seq=12"});
  const auto rm = train::train(mlp, quiet(d / "mlp"));
  const SafetensorsFile fm((fs::path(rm.checkpoint) / "model.safetensors").string());
  CHECK(fm.names().size() == 3 + 4 * std::size_t(L));  // E, W1, b1; Wk, bk, Wv, bv per layer
  auto made = load_run(rm.run_dir, "cpu");
  CHECK(made.model->prefix_projection() == 8);
  std::vector<std::int32_t> one = {1, 2, 3};
  made.model->plan(1, 3);
  made.model->forward(TensorRef(one.data(), DType::i32, {1, 3}));
  const std::vector<float> made_v(made.model->acts()["blocks." + std::to_string(l) + ".attn.prefix_v_made"].f32(),
                                  made.model->acts()["blocks." + std::to_string(l) + ".attn.prefix_v_made"].f32() + 4 * KD);
  export_peft_prefix(*made.model, (d / "peft-mlp").string(), best_or_newest_checkpoint(base.run_dir));
  std::vector<float> pm(std::size_t(4 * L * 2 * KD));
  SafetensorsFile((d / "peft-mlp" / "adapter_model.safetensors").string()).read("prompt_embeddings", pm.data(), {4, L * 2 * KD});
  double err = 0;
  for (std::int64_t k = 0; k < KD; ++k) err = std::max(err, double(std::abs(pm[std::size_t((2 * L + 2 * l + 1) * KD + k)] - made_v[std::size_t(KD + k)])));
  CHECK(err < 1e-5);
}
