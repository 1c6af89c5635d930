// Ablations expanded from the type (models/ablation.hpp) and the experiment's numerics
// (train/experiment.hpp): names, variant types, rule-breaking variants skipped with their reason,
// and the power-law fit recovering known exponents.
#include <catch2/catch.hpp>
#include <cmath>
#include <type_traits>

#include "models/ablation.hpp"
#include "models/llama.hpp"
#include "layers/mlp.hpp"
#include "layers/positions.hpp"
#include "dsl/placement.hpp"
#include "train/experiment.hpp"

using namespace llmtk;

namespace {

template <class F>
constexpr Dims edit(Dims d, F f) {
  f(d);
  return d;
}

// Two independent axes (3 × 2 = 6 variants); the first varies slowest.
struct TwoAxes final {
  using Arch = DecoderLM<TokenEmbedding,
                         Repeat<Block<RMSNorm, GQA<RoPE>, Ablate<SwiGLU, GeGLU, Alt<"gelu", MLP<GELU>>>,
                                      Ablate<PreNorm, Alt<"post", PostNorm>>>>,
                         RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "two";
  static constexpr const char* about = "two axes";
  static constexpr Dims dims = LlamaTiny::dims;
};

// One named axis in two slots: they vary together (3 variants, not 9).
using P = Axis<"pe">;
struct Linked final {
  using Arch = DecoderLM<Embedding<Ablate<P, Alt<"none", NoPE>, Alt<"learned", LearnedPositions>, Alt<"rope", NoPE>>>,
                         Repeat<Block<RMSNorm, GQA<Ablate<P, NoPE, NoPE, RoPE>>, SwiGLU, PreNorm>>, RMSNorm,
                         LMHead<Tied>>;
  static constexpr const char* name = "linked";
  static constexpr const char* about = "";
  static constexpr Dims dims = LlamaTiny::dims;
};

// Unlinked, skipping: learned + RoPE breaks single_position_scheme and is left out.
struct Unlinked final {
  using Arch = DecoderLM<Embedding<Ablate<NoPE, LearnedPositions>>,
                         Repeat<Block<RMSNorm, GQA<Ablate<NoPE, RoPE>>, SwiGLU, PreNorm>>, RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "unlinked";
  static constexpr const char* about = "";
  static constexpr Dims dims = LlamaTiny::dims;
};

// Head size 33: RoPE's size rule fails, NoPE's variants stay; MHA and MQA derive their kv heads.
struct OddHeads final {
  using Arch = DecoderLM<TokenEmbedding,
                         Repeat<Block<RMSNorm, Ablate<Alt<"mha-rope", MHA<RoPE>>, MHA<NoPE>, MQA<NoPE>>, SwiGLU, PreNorm>>,
                         RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "odd";
  static constexpr const char* about = "";
  static constexpr Dims dims = edit(LlamaTiny::dims, [](Dims& d) { d.d_model = 264; });
};

std::vector<std::string> names(const std::vector<ArchInfo>& v) {
  std::vector<std::string> out;
  for (const auto& a : v) out.push_back(a.name);
  return out;
}

}  // namespace

TEST_CASE("an ablation expands into the product of its axes, with readable names", "[ablation]") {
  static_assert(ablation_size<TwoAxes> == 6);
  static_assert(std::is_same_v<ablation_variant<TwoAxes, 0>,
                               DecoderLM<TokenEmbedding, Repeat<Block<RMSNorm, GQA<RoPE>, SwiGLU, PreNorm>>, RMSNorm, LMHead<Tied>>>);
  static_assert(std::is_same_v<ablation_variant<TwoAxes, 5>,
                               DecoderLM<TokenEmbedding, Repeat<Block<RMSNorm, GQA<RoPE>, MLP<GELU>, PostNorm>>, RMSNorm,
                                         LMHead<Tied>>>);
  const auto entries = ablation_entries<TwoAxes>();
  CHECK(names(entries) == std::vector<std::string>{"two[ffn=swiglu,placement=prenorm]", "two[ffn=swiglu,placement=post]",
                                                   "two[ffn=geglu,placement=prenorm]", "two[ffn=geglu,placement=post]",
                                                   "two[ffn=gelu,placement=prenorm]", "two[ffn=gelu,placement=post]"});
  for (const auto& e : entries) CHECK(e.group == "two");
  // Each variant is a model of its own: the GELU MLP has two matrices, the gated ones three.
  auto params = [&](std::size_t i) {
    auto m = entries[i].make(entries[i].dims);
    m->plan(1, 1);
    return m->param_count();
  };
  CHECK(params(0) == params(2));
  CHECK(params(4) < params(0));
  CHECK(entries[1].structure.front().find("PostNorm") != std::string::npos);
}

TEST_CASE("axes with one name vary together", "[ablation]") {
  static_assert(ablation_size<Linked> == 3);
  static_assert(std::is_same_v<ablation_variant<Linked, 2>,
                               DecoderLM<Embedding<NoPE>, Repeat<Block<RMSNorm, GQA<RoPE>, SwiGLU, PreNorm>>, RMSNorm, LMHead<Tied>>>);
  CHECK(names(ablation_entries<Linked>()) == std::vector<std::string>{"linked[pe=none]", "linked[pe=learned]", "linked[pe=rope]"});
}

TEST_CASE("a variant that breaks a rule is skipped with the rule when the ablation says so", "[ablation]") {
  std::vector<std::string> skipped;
  CHECK(names(ablation_entries<Unlinked, RuleBreak::skip>(&skipped)) ==
        std::vector<std::string>{"unlinked[pos=nope,pos2=nope]", "unlinked[pos=nope,pos2=rope]",
                                 "unlinked[pos=learned_positions,pos2=nope]"});
  REQUIRE(skipped.size() == 1);
  CHECK(skipped[0].starts_with("unlinked[pos=learned_positions,pos2=rope]: single_position_scheme"));

  skipped.clear();
  const auto odd = ablation_entries<OddHeads, RuleBreak::skip>(&skipped);
  CHECK(names(odd) == std::vector<std::string>{"odd[attn=mha]", "odd[attn=mqa]"});
  REQUIRE(skipped.size() == 1);
  CHECK(skipped[0].starts_with("odd[attn=mha-rope]: rope_even_head_dim"));
  // The sizes each variant derives: MHA one kv head per query head, MQA one.
  CHECK(odd[0].dims.n_kv_heads == odd[0].dims.n_heads);
  CHECK(odd[1].dims.n_kv_heads == 1);
}

TEST_CASE("the power-law fit recovers known exponents", "[experiment]") {
  // Exact points of L(x) = 40·x^(−0.28) + 1.7 over three decades.
  std::vector<double> x, y, noisy;
  for (int i = 0; i < 9; ++i) {
    x.push_back(std::pow(10.0, 5.0 + 0.375 * i));
    y.push_back(40 * std::pow(x.back(), -0.28) + 1.7);
    noisy.push_back(y.back() * (1 + 0.004 * std::sin(3.7 * i)));  // ±0.4%, deterministic
  }
  const auto f = train::fit_power_law(x, y);
  INFO("a " << f.a << " alpha " << f.alpha << " c " << f.c);
  CHECK(f.alpha == Approx(0.28).epsilon(1e-6));
  CHECK(f.c == Approx(1.7).epsilon(1e-6));
  CHECK(f.a == Approx(40).epsilon(1e-5));
  CHECK(f.rms < 1e-9);
  const auto g = train::fit_power_law(x, noisy);
  REQUIRE(std::isfinite(g.alpha_se));
  CHECK(g.alpha_se > 0);
  CHECK(std::fabs(g.alpha - 0.28) < 3 * g.alpha_se + 0.01);
  CHECK(std::fabs(g.c - 1.7) < 3 * g.c_se + 0.02);
  // Three points determine the curve: no spread is left to estimate an error from.
  const auto h = train::fit_power_law({1e3, 1e4, 1e5}, {40 * std::pow(1e3, -0.3) + 2, 40 * std::pow(1e4, -0.3) + 2,
                                                        40 * std::pow(1e5, -0.3) + 2});
  CHECK(h.alpha == Approx(0.3).epsilon(1e-4));
  CHECK(std::isnan(h.alpha_se));
  CHECK_THROWS_WITH(train::fit_power_law({1, 2}, {3, 4}), Catch::Contains("at least 3 points"));
}
