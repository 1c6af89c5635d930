// Golden test: tiny GPT-2-, Llama-, MoE- and hybrid (minGRU + attention) models with fixed weights; logits, loss and every
// parameter gradient compared with PyTorch (tests/golden/gen_golden.py computed them in float64).
// The reference backend keeps f32 between ops. Measured on the reference backend: logits within
// 6.4e-7 (|logits| ≤ 3.7), gradients within 1.1e-7 (|grad| ≤ 0.61); the tolerances below leave
// a margin of about 5-10x.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/step.hpp"

using namespace llmtk;
using nlohmann::json;

namespace {

json load(const std::string& file) {
  std::ifstream in(std::string(LLMTK_GOLDEN_DIR) + "/" + file);
  REQUIRE(in.good());
  return json::parse(in);
}

// max |a − b| ≤ atol + rtol · max |b|
void expect_close(const std::string& what, const float* a, const json& ref, double atol, double rtol) {
  const auto& data = ref.at("data");
  double max_ref = 0, max_err = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const double b = data[i].get<double>();
    max_ref = std::max(max_ref, std::abs(b));
    max_err = std::max(max_err, std::abs(double(a[i]) - b));
  }
  INFO(what << ": max error " << max_err << " with max |reference| " << max_ref);
  CHECK(max_err <= atol + rtol * max_ref);
}

void run_golden(const std::string& file, const std::string& arch) {
  const json g = load(file);
  REQUIRE(g.at("arch") == (arch == "gpt2" ? "gpt2" : arch == "moe-tiny" ? "moe" : arch == "hybrid-tiny" ? "hybrid" : "llama"));
  const auto& cfg = g.at("config");
  Dims d = find_arch(arch).dims;
  d.vocab = cfg.at("vocab"), d.d_model = cfg.at("d_model"), d.n_layers = cfg.at("n_layers");
  d.n_heads = cfg.at("n_heads"), d.n_kv_heads = cfg.at("n_kv_heads"), d.d_ff = cfg.at("d_ff");
  d.max_seq = cfg.at("max_seq"), d.bias = cfg.at("bias"), d.norm_eps = cfg.at("norm_eps");
  d.rope_base = cfg.at("rope_base");
  for (const char* key : {"moe_experts", "moe_top_k", "moe_aux_coef", "moe_z_coef"})
    if (cfg.contains(key)) d.set(key, cfg.at(key).get<double>());
  const std::int64_t B = g.at("batch"), T = g.at("seq");

  auto m = make_model(arch, d);
  m->plan(B, T);
  m->allocate();
  // Every tensor of ours is in the file with the same shape, and nothing in the file is left over.
  REQUIRE(g.at("params").size() == m->params().entries().size());
  for (const auto& e : m->params().entries()) {
    INFO("parameter " << e.name);
    REQUIRE(g.at("params").contains(e.name));
    const auto& p = g.at("params").at(e.name);
    REQUIRE(p.at("shape").get<std::vector<std::int64_t>>() == e.shape);
    float* dst = m->params()[e.name].f32();
    for (std::size_t i = 0; i < p.at("data").size(); ++i) dst[i] = p.at("data")[i].get<float>();
  }
  auto ids = g.at("ids").get<std::vector<std::int32_t>>();
  auto targets = g.at("targets").get<std::vector<std::int32_t>>();
  TensorRef tid(ids.data(), DType::i32, {B, T}), ttg(targets.data(), DType::i32, {B, T});

  NextTokenLoss objective;
  const float loss = train::forward_loss(*m, objective, train::lm_batch(tid, ttg));
  expect_close("logits", m->logits().f32(), g.at("logits"), 1e-6, 1e-6);
  for (const auto& [name, value] : m->part_stats())  // an MoE's statistics, which its layers add to the loss
    if (g.contains(name)) {
      INFO(name << " " << value << " vs PyTorch " << g.at(name).get<double>());
      CHECK(std::abs(value - g.at(name).get<double>()) <= 1e-6 * std::abs(g.at(name).get<double>()));
    }
  train::backward_from_loss(*m, objective);  // overwrites the logits with their gradient

  const double ref_loss = g.at("loss");
  INFO("loss " << loss << " vs PyTorch " << ref_loss);
  CHECK(std::abs(loss - ref_loss) <= 1e-6 * std::abs(ref_loss));
  for (const auto& e : m->params().entries())
    expect_close("grad " + e.name, m->grads()[e.name].f32(), g.at("grads").at(e.name), 1e-7, 2e-6);
}

}  // namespace

TEST_CASE("GPT-2 style model matches PyTorch", "[golden]") {
  run_golden("gpt2_tiny.json", "gpt2");
}

TEST_CASE("Llama style model matches PyTorch", "[golden]") {
  run_golden("llama_tiny.json", "llama-tiny");
}

// Mixture of experts: 4 SwiGLU experts, top-2 renormalised, the load-balancing and z-losses in
// the gradients (docs/moe.md).
TEST_CASE("MoE model matches PyTorch, auxiliary losses included", "[golden]") {
  run_golden("moe_tiny.json", "moe-tiny");
}

// Two minGRU layers and an attention layer (Pattern<...>): the recurrence step by step in PyTorch,
// a scan here.
TEST_CASE("hybrid recurrent/attention model matches PyTorch", "[golden]") {
  run_golden("hybrid_tiny.json", "hybrid-tiny");
}
