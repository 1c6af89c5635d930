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
  m->plan(1, 8);
  m->allocate();
  load_safetensors((fs::path(checkpoint) / "model.safetensors").string(), m->params());
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
  fails(from + "\n[lora]\nrank = 4\ndropout = 0.1\n", {}, "lora.dropout = 0.1 is not supported yet");
  fails(from, {"train.freeze=[\"block.*\"]"}, "freeze pattern 'block.*' matches no parameter");
}
