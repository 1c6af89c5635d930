// One golden model (tests/golden/*.json, written by tests/golden/gen_golden.py from an independent
// PyTorch implementation in float64) on the active backend: the file's weights and inputs, then
// logits, loss and every parameter gradient against PyTorch's. Shared by tests/test_golden.cpp
// (reference and cpu backends) and tests/test_cuda.cpp (cuda, and the emulated CUDA backend).
//
// Tolerances for `scale` = 1, measured on the reference backend (which keeps f32 between ops):
// logits within 6.7e-7 (|logits| ≤ 3.7), gradients within 1.8e-7 (|grad| ≤ 0.65), a margin of about
// 5-10x. A GPU sums in other orders; test_cuda passes scale = 10.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/step.hpp"

namespace llmtk::test {

// max |a − b| ≤ atol + rtol · max |b|
inline void expect_close_to_golden(const std::string& what, const std::vector<float>& got, const nlohmann::json& ref,
                                   double atol, double rtol) {
  const auto& data = ref.at("data");
  REQUIRE(data.size() == got.size());
  double max_ref = 0, max_err = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    const double b = data[i].get<double>();
    max_ref = std::max(max_ref, std::abs(b));
    max_err = std::max(max_err, std::abs(double(got[i]) - b));
  }
  INFO(what << ": max error " << max_err << " with max |reference| " << max_ref);
  CHECK(max_err <= atol + rtol * max_ref);
}

// The generator's name for one of our presets.
inline std::string golden_arch(const std::string& preset) {
  for (const char* a : {"moe", "hybrid", "bert", "t5"})
    if (preset == std::string(a) + "-tiny") return a;
  return preset == "gpt2" ? "gpt2" : "llama";
}

inline void check_golden(const std::string& file, const std::string& arch, double scale = 1) {
  // LLMTK_GOLDEN_DIR in the environment overrides the source path compiled in, for a test binary
  // built on one machine and run on another (benchmarks/cuda/bundle.sh).
  const char* dir = std::getenv("LLMTK_GOLDEN_DIR");
  std::ifstream in(std::string(dir && *dir ? dir : LLMTK_GOLDEN_DIR) + "/" + file);
  INFO("golden file " << file << " (set LLMTK_GOLDEN_DIR to the folder holding it)");
  REQUIRE(in.good());
  const auto g = nlohmann::json::parse(in);
  REQUIRE(g.at("arch") == golden_arch(arch));
  const auto& cfg = g.at("config");
  Dims d = find_arch(arch).dims;
  d.vocab = cfg.at("vocab"), d.d_model = cfg.at("d_model"), d.n_layers = cfg.at("n_layers");
  d.n_heads = cfg.at("n_heads"), d.n_kv_heads = cfg.at("n_kv_heads"), d.d_ff = cfg.at("d_ff");
  d.max_seq = cfg.at("max_seq"), d.bias = cfg.at("bias"), d.norm_eps = cfg.at("norm_eps");
  d.rope_base = cfg.at("rope_base");
  for (const char* key : {"moe_experts", "moe_top_k", "moe_aux_coef", "moe_z_coef", "type_vocab"})
    if (cfg.contains(key)) d.set(key, cfg.at(key).get<double>());
  const std::int64_t B = g.at("batch"), T = g.at("seq"), S = g.value("source_seq", 0);

  auto m = make_model(arch, d);
  m->plan(B, T, false, S);
  m->allocate();
  // Every tensor of ours is in the file with the same shape, and nothing in the file is left over.
  REQUIRE(g.at("params").size() == m->params().entries().size());
  for (std::size_t i = 0; i < m->params().entries().size(); ++i) {
    const auto& e = m->params().entries()[i];
    INFO("parameter " << e.name);
    REQUIRE(g.at("params").contains(e.name));
    const auto& p = g.at("params").at(e.name);
    REQUIRE(p.at("shape").get<std::vector<std::int64_t>>() == e.shape);
    m->params().write(int(i), p.at("data").get<std::vector<float>>().data());
  }
  // ids and targets; a BERT's token types and padding lengths, a T5's source and its lengths.
  auto ints = [&](const char* key) {
    return g.contains(key) ? g.at(key).get<std::vector<std::int32_t>>() : std::vector<std::int32_t>{};
  };
  auto ids = ints("ids"), targets = ints("targets"), types = ints("token_types"), lengths = ints("lengths");
  auto source = ints("source"), source_lengths = ints("source_lengths");
  train::Batch batch =
      train::lm_batch(TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(targets.data(), DType::i32, {B, T}));
  if (!types.empty()) batch.inputs.token_types = TensorRef(types.data(), DType::i32, {B, T});
  if (!lengths.empty()) batch.inputs.lengths = TensorRef(lengths.data(), DType::i32, {B});
  if (!source.empty()) batch.inputs.source = TensorRef(source.data(), DType::i32, {B, S});
  if (!source_lengths.empty()) batch.inputs.source_lengths = TensorRef(source_lengths.data(), DType::i32, {B});

  // The masked-token and span objectives are this cross-entropy over the positions their targets select.
  NextTokenLoss objective;
  const float loss = train::forward_loss(*m, objective, batch);
  std::vector<float> logits(std::size_t(m->logits().numel()));
  copy_bytes(logits.data(), Device::host, m->logits().data, m->logits().device, m->logits().bytes());
  expect_close_to_golden("logits", logits, g.at("logits"), 1e-6 * scale, 1e-6 * scale);
  for (const auto& [name, value] : m->part_stats())  // an MoE's statistics, which its layers add to the loss
    if (g.contains(name)) {
      INFO(name << " " << value << " vs PyTorch " << g.at(name).get<double>());
      CHECK(std::abs(value - g.at(name).get<double>()) <= 1e-6 * scale * std::abs(g.at(name).get<double>()));
    }
  train::backward_from_loss(*m, objective);  // overwrites the logits with their gradient

  const double ref_loss = g.at("loss");
  INFO("loss " << loss << " vs PyTorch " << ref_loss);
  CHECK(std::abs(loss - ref_loss) <= 1e-6 * scale * std::abs(ref_loss));
  for (std::size_t i = 0; i < m->params().entries().size(); ++i) {
    const auto& e = m->params().entries()[i];
    std::vector<float> grad(std::size_t(e.numel));
    m->grads().read(int(i), grad.data());
    expect_close_to_golden("grad " + e.name, grad, g.at("grads").at(e.name), 1e-7 * scale, 2e-6 * scale);
  }
}

}  // namespace llmtk::test
