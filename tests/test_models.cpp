// Whole tiny models of both families: d(loss)/dθ for every parameter against finite differences.
#include "gradcheck.hpp"
#include "dsl/block.hpp"
#include "dsl/decoder_lm.hpp"
#include "dsl/repeat.hpp"
#include "layers/attention.hpp"
#include "layers/embedding.hpp"
#include "layers/glu.hpp"
#include "layers/layernorm.hpp"
#include "layers/lm_head.hpp"
#include "layers/mlp.hpp"
#include "layers/rmsnorm.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"

using namespace llmtk;

namespace {
llmtk::test::GradTolerance model_tolerance() {
  llmtk::test::GradTolerance tol;
  tol.atol = 1e-4;  // the loss is a mean: its gradients are small, so is the bound
  // Other backends accumulate in f32 and use fast exp/tanh (relative error ~2e-7, not smooth), so
  // central differences of their loss are noisier; the reference backend keeps the tight bound.
  if (std::string_view(ops::active().backend) != "reference") tol.atol = 3e-4;
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

// Compositions no preset uses yet: each whole model's loss gradient against finite differences.
namespace {
struct PostNormBlock final : Block<LayerNorm, MHA<ALiBi>, MLP<ReLU>, PostNorm> {};
struct PostNormLM final : DecoderLM<TokenEmbedding, Repeat<PostNormBlock>, LayerNorm, LMHead<Tied>> {};
struct SandwichBlock final : Block<RMSNorm, MQA<NoPE>, GeGLU, SandwichNorm> {};
struct SinusoidalLM final : DecoderLM<Embedding<Sinusoidal>, Repeat<SandwichBlock>, RMSNorm, LMHead<Untied>> {};

template <class Arch>
void check_arch(Dims d, std::uint64_t seed) {
  ModelOf<Arch> m("test", d);
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(m, 2, 6, seed, model_tolerance()));
}
}  // namespace

TEST_CASE("PostNorm, ALiBi (3 heads), ReLU, tied head: every parameter gradient", "[gradcheck][model]") {
  Dims d{.d_model = 12, .n_layers = 2, .n_heads = 3, .n_kv_heads = 3, .d_ff = 20, .vocab = 11,
         .max_seq = 8, .bias = true};
  check_arch<PostNormLM>(d, 21);
}

TEST_CASE("Sandwich norms, MQA, GeGLU, sinusoidal positions, untied head", "[gradcheck][model]") {
  Dims d{.d_model = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 1, .d_ff = 24, .vocab = 13,
         .max_seq = 8};
  check_arch<SinusoidalLM>(d, 22);
}

TEST_CASE("activation recomputation gives the same gradients with less memory", "[model][recompute]") {
  Dims d = tiny("llama-tiny");
  d.n_layers = 3;
  auto plain = make_model("llama-tiny", d), saving = make_model("llama-tiny", d);
  plain->plan(2, 6);
  saving->plan(2, 6, true);
  CHECK(saving->acts().bytes() < plain->acts().bytes());
  plain->init(5), saving->init(5);
  std::vector<std::int32_t> ids(12), tg(12);
  for (int i = 0; i < 12; ++i) ids[std::size_t(i)] = (i * 5) % 13, tg[std::size_t(i)] = (i * 7 + 1) % 13;
  TensorRef tid(ids.data(), DType::i32, {2, 6}), ttg(tg.data(), DType::i32, {2, 6});
  NextTokenLoss o1, o2;
  CHECK(train::forward_backward(*plain, o1, train::lm_batch(tid, ttg)) ==
        train::forward_backward(*saving, o2, train::lm_batch(tid, ttg)));
  CHECK(std::memcmp(plain->grads().data(), saving->grads().data(), plain->grads().bytes()) == 0);  // bit for bit
}

TEST_CASE("decoding with a KV cache gives the logits of a full forward pass", "[model][decode]") {
  for (const char* arch : {"llama-tiny", "gpt2"}) {
    for (int window : {0, 3}) {
      INFO(arch << ", window " << window);
      Dims d = tiny(arch);
      d.window = window;
      auto full = make_model(arch, d), step = make_model(arch, d);
      full->plan(1, 7);
      full->init(9);
      step->plan_decode(7);
      step->allocate();
      std::memcpy(step->params().data(), full->params().data(), full->params().bytes());
      std::vector<std::int32_t> ids = {3, 1, 4, 1, 5, 9, 2};
      full->forward(TensorRef(ids.data(), DType::i32, {1, 7}));
      for (int t = 0; t < 7; ++t) {
        const float* got = step->decode(TensorRef(&ids[std::size_t(t)], DType::i32, {1, 1}), t);
        const float* want = full->logits().f32() + t * d.vocab;
        for (int v = 0; v < d.vocab; ++v) REQUIRE(got[v] == Approx(want[v]).margin(1e-5));
      }
    }
  }
}
