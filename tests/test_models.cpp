// Whole tiny models of both families: d(loss)/dθ for every parameter against finite differences.
#include "gradcheck.hpp"
#include "models/registry.hpp"

using namespace llmtk;

namespace {
llmtk::test::GradTolerance model_tolerance() {
  llmtk::test::GradTolerance tol;
  tol.atol = 1e-4;  // the loss is a mean: its gradients are small, so is the bound
  tol.rtol = 2e-2;
  tol.max_per_tensor = 24;
  return tol;
}
Dims tiny(const std::string& arch) {
  Dims d = find_arch(arch).dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = arch == "gpt2" ? 4 : 2;
  d.d_ff = 24, d.vocab = 13, d.max_seq = 8;
  return d;
}
}  // namespace

TEST_CASE("GPT-2 family: every parameter gradient", "[gradcheck][model]") {
  auto m = make_model("gpt2", tiny("gpt2"));
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, 2, 6, 11, model_tolerance()));
}

TEST_CASE("Llama family: every parameter gradient", "[gradcheck][model]") {
  auto m = make_model("llama-tiny", tiny("llama-tiny"));
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, 2, 6, 12, model_tolerance()));
}

TEST_CASE("Llama family with a sliding window", "[gradcheck][model]") {
  Dims d = tiny("llama-tiny");
  d.window = 3;
  auto m = make_model("llama-tiny", d);
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, 1, 8, 13, model_tolerance()));
}
