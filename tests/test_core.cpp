// Core types and the rules on sizes: the positive static tests (every rule holds for the presets
// and a good composition satisfies every concept), the run-time check through the same
// functions, arenas, bf16, recipe keys, and the registry's parameter counts.
#include <catch2/catch.hpp>

#include "core/arena.hpp"
#include "core/dims.hpp"
#include "core/dtype.hpp"
#include "dsl/combinators.hpp"
#include "models/gpt2.hpp"
#include "models/llama.hpp"
#include "models/registry.hpp"

using namespace llmtk;

// ---- positive static tests: one per rule, and per concept ----
// Every rule of every preset holds (the registry also checks this when it registers them), and
// the rules no preset exercises (MQA, sinusoidal positions) hold for a composition that has them.
struct MqaSinusoidalBlock final : Block<RMSNorm, MQA<NoPE>, SwiGLU, PreNorm> {};
struct MqaSinusoidalLM final : DecoderLM<Embedding<Sinusoidal>, Repeat<MqaSinusoidalBlock>, RMSNorm, LMHead<Tied>> {};
constexpr Dims kMqaDims = [] { Dims d = LlamaTiny::dims; d.n_kv_heads = 1; return d; }();
static_assert(dims_hold<Gpt2Small::dims, Gpt2>() && dims_hold<LlamaTiny::dims, Llama>() &&
              dims_hold<Llama3_1B::dims, Llama>() && dims_hold<kMqaDims, MqaSinusoidalLM>());
static_assert(Norm<LayerNorm> && Norm<RMSNorm>);
static_assert(Mixer<GQA<RoPE>> && Mixer<MHA<NoPE>> && Mixer<MQA<ALiBi>>);
static_assert(FeedForward<MLP<GELU>> && FeedForward<SwiGLU> && FeedForward<GeGLU>);
static_assert(Placement<PreNorm> && Placement<PostNorm> && Placement<SandwichNorm>);
static_assert(AttentionPositions<RoPE> && AdditivePositions<LearnedPositions> && AdditivePositions<Sinusoidal>);
static_assert(Layer<Gpt2Block> && Layer<LlamaBlock> && Layer<Gpt2> && Layer<Llama>);
static_assert(std::same_as<Gpt2::Out, Logits> && std::same_as<Llama::In, Tokens>);
static_assert(has_tag<Llama>("rope") && !has_tag<Llama>("learned_positions") && has_tag<Gpt2>("learned_positions"));
static_assert(has_tag<Gpt2>("mha") && !has_tag<Llama>("mha") && has_tag<MqaSinusoidalLM>("mqa"));
// ...and the negative side of each concept, without a compile error:
static_assert(!Norm<SwiGLU> && !Mixer<RMSNorm> && !FeedForward<GQA<RoPE>> && !Placement<RMSNorm>);

TEST_CASE("run-time dims checks name every broken rule and its keys", "[dims]") {
  Dims d = LlamaTiny::dims;
  CHECK(check_dims(d, rules_of<Llama>()).empty());
  d.n_kv_heads = 3;
  auto v = check_dims(d, rules_of<Llama>());
  REQUIRE(v.size() == 1);
  CHECK(v[0].rule == "kv_heads_divide_heads");
  CHECK(v[0].keys == "model.n_kv_heads, model.n_heads");
  d.d_model = 264;  // head_dim 33: odd, RoPE cannot pair it
  v = check_dims(d, rules_of<Llama>());
  REQUIRE(v.size() == 2);
  CHECK(v[1].rule == "rope_even_head_dim");
  // GPT-2 has no RoPE, so an odd head dim is fine there.
  Dims g = Gpt2Tiny::dims;
  g.d_model = 132, g.n_heads = g.n_kv_heads = 4;
  CHECK(check_dims(g, rules_of<Gpt2>()).empty());
}

TEST_CASE("make_model refuses invalid dims with the rule's name", "[dims]") {
  Dims d = Gpt2Tiny::dims;
  d.n_heads = 5;
  CHECK_THROWS_WITH(make_model("gpt2-tiny", d),
                    Catch::Contains("rule heads_tile_model") && Catch::Contains("rule mha_kv_heads_equal_heads"));
  CHECK_THROWS_WITH(make_model("gpt5", d), Catch::Contains("registered: gpt2, gpt2-tiny, llama-tiny"));
}

TEST_CASE("recipe keys set dims and explain mistakes", "[dims]") {
  Dims d;
  set_dim(d, "model.n_layers", "6");
  set_dim(d, "rope_base", "500000");
  set_dim(d, "model.bias", "true");
  CHECK(d.n_layers == 6);
  CHECK(d.rope_base == 500000.0);
  CHECK(d.bias);
  CHECK_THROWS_WITH(set_dim(d, "model.n_head", "4"), Catch::Contains("did you mean model.n_heads?"));
  CHECK_THROWS_WITH(set_dim(d, "model.d_model", "7.5"), Catch::Contains("is not an integer"));
  CHECK_THROWS_WITH(set_dim(d, "model.bias", "yes"), Catch::Contains("is not true or false"));
  // MHA derives n_kv_heads from n_heads unless the user set it.
  Dims g = Gpt2Small::dims;
  g.n_heads = 16;
  find_arch("gpt2").resolve(g, {});
  CHECK(g.n_kv_heads == 16);
  g.n_kv_heads = 4;
  find_arch("gpt2").resolve(g, {"model.n_kv_heads"});
  CHECK(g.n_kv_heads == 4);  // set by the user: kept, and then refused by MHA's rule
  CHECK(check_dims(g, find_arch("gpt2").rules).size() == 1);
}

TEST_CASE("presets have the published parameter counts", "[registry]") {
  auto count = [](const char* name) {
    auto m = make_model(name, find_arch(name).dims);
    m->plan(1, 8);
    return m->param_count();
  };
  CHECK(count("gpt2") == 124439808);       // Radford et al. 2019, Hugging Face "gpt2"
  CHECK(count("llama3.2-1b") == 1235814400);  // Hugging Face meta-llama/Llama-3.2-1B
}

TEST_CASE("structure reads as the types", "[registry]") {
  const auto& a = find_arch("gpt2");
  REQUIRE(a.structure.size() == 2);
  CHECK(a.structure[0] == "Gpt2 = DecoderLM<Embedding<LearnedPositions>, Repeat<Gpt2Block>, LayerNorm, LMHead<Tied>>");
  CHECK(a.structure[1] == "Gpt2Block = Block<LayerNorm, MHA<NoPE>, MLP<GELU>, PreNorm>");
}

TEST_CASE("FLOPs per token follow the textbook count", "[registry]") {
  // Forward: 2 FLOPs per weight in every matmul plus attention scores and values
  // (4 · d_model per visible key per layer). GPT-2 124M at seq 1024, causal: 512.5 keys on average.
  auto m = make_model("gpt2", find_arch("gpt2").dims);
  const double matmul_weights = 12 * (4.0 * 768 * 768 + 2.0 * 768 * 3072) + 768.0 * 50257;
  const double attention = 12 * 4.0 * 768 * 512.5;
  const double norms_and_adds = m->forward_flops_per_token(1024) - 2 * matmul_weights - attention;
  CHECK(norms_and_adds > 0);
  CHECK(norms_and_adds < 0.001 * m->forward_flops_per_token(1024));
}

TEST_CASE("arenas plan, align and find tensors", "[arena]") {
  Arena a("test");
  int w = a.add("w", {3, 5});
  int b = a.add("b", {5});
  CHECK_THROWS_WITH(a.add("w", {1}), Catch::Contains("'w' is planned twice"));
  CHECK(a.numel() == 20);
  CHECK(a.bytes() == 128);  // each tensor starts on a 64-byte boundary
  a.allocate();
  CHECK(reinterpret_cast<std::uintptr_t>(a[w].data) % 64 == 0);
  CHECK(reinterpret_cast<std::uintptr_t>(a[b].data) % 64 == 0);
  CHECK(a["b"].shape_str() == "[5]");
  CHECK(a[b].f32()[4] == 0.0f);  // zero-filled
  CHECK_THROWS_WITH(a.add("late", {1}), Catch::Contains("after the arena is allocated"));
  Arena g = a.like("grads");
  CHECK(g.bytes() == a.bytes());
  CHECK_FALSE(g.allocated());
}

TEST_CASE("bf16 rounds to nearest even", "[dtype]") {
  CHECK(float(bf16(1.0f)) == 1.0f);
  CHECK(float(bf16(1.00390625f)) == 1.0f);       // exactly halfway: rounds to even (down)
  CHECK(float(bf16(1.01171875f)) == 1.015625f);  // halfway above an odd mantissa: rounds up
  CHECK(std::isnan(float(bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(size_of(DType::bf16) == 2);
}

TEST_CASE("a model plans without allocating and re-plans for a new shape", "[model]") {
  auto m = make_model("llama-tiny", find_arch("llama-tiny").dims);
  m->plan(4, 64);
  CHECK_FALSE(m->params().allocated());
  const auto bytes64 = m->acts().bytes();
  m->plan(4, 128);
  CHECK(m->acts().bytes() > bytes64);
  CHECK_THROWS_WITH(m->plan(1, 257), Catch::Contains("exceeds model.max_seq = 256"));
}
