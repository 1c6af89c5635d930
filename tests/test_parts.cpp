// Every part's backward against finite differences of its forward (tests/gradcheck.hpp).
#include "dsl/block.hpp"
#include "dsl/combinators.hpp"
#include "dsl/repeat.hpp"
#include "gradcheck.hpp"
#include "layers/attention.hpp"
#include "layers/embedding.hpp"
#include "layers/glu.hpp"
#include "layers/layernorm.hpp"
#include "layers/lm_head.hpp"
#include "layers/mlp.hpp"
#include "layers/rmsnorm.hpp"

using namespace llmtk;
using llmtk::test::gradcheck_part;

namespace {

// Odd sizes on purpose: C = 12, 3 heads of 4, F = 20, V = 11.
Dims small(int kv_heads = 3, bool bias = true, int window = 0) {
  return Dims{.d_model = 12, .n_layers = 2, .n_heads = 3, .n_kv_heads = kv_heads, .d_ff = 20,
              .vocab = 11, .max_seq = 9, .rope_base = 10000.0, .window = window,
              .norm_eps = 1e-5, .bias = bias};
}
Dims even_heads(int kv_heads, int window = 0) {  // RoPE needs an even head dim: 4 heads of 4
  Dims d = small(kv_heads, false, window);
  d.d_model = 16, d.n_heads = 4;
  return d;
}

template <class L>
void check(const Dims& d, std::int64_t B = 2, std::int64_t T = 5, llmtk::test::GradTolerance tol = {}) {
  L part{};
  REQUIRE_GRADIENTS(gradcheck_part(part, d, B, T, 42, tol));
}

}  // namespace

TEST_CASE("norms", "[gradcheck]") {
  SECTION("LayerNorm with bias") { check<LayerNorm>(small(3, true)); }
  SECTION("LayerNorm without bias") { check<LayerNorm>(small(3, false)); }
  SECTION("RMSNorm") { check<RMSNorm>(small()); }
}

TEST_CASE("attention", "[gradcheck]") {
  SECTION("MHA<NoPE> with biases") { check<MHA<NoPE>>(small(3, true)); }
  SECTION("GQA<RoPE>, 4 heads over 2 kv heads") { check<GQA<RoPE>>(even_heads(2)); }
  SECTION("MQA<RoPE>") { check<MQA<RoPE>>(even_heads(1)); }
  SECTION("GQA<ALiBi>, 3 heads (not a power of two)") { check<GQA<ALiBi>>(small(3, false)); }
  SECTION("GQA<ALiBi>, 4 heads") { check<GQA<ALiBi>>(even_heads(4)); }
  SECTION("GQA<RoPE> with a sliding window of 2") { check<GQA<RoPE>>(even_heads(2, 2), 2, 7); }
}

TEST_CASE("feed-forwards", "[gradcheck]") {
  SECTION("MLP<GELU>") { check<MLP<GELU>>(small(3, true)); }
  SECTION("MLP<SiLU>") { check<MLP<SiLU>>(small(3, false)); }
  SECTION("SwiGLU") { check<SwiGLU>(small(3, false)); }
  SECTION("GeGLU with biases") { check<GeGLU>(small(3, true)); }
  SECTION("MLP<ReLU>") {
    // ReLU has a kink at 0: a smaller step keeps the central difference off it.
    llmtk::test::GradTolerance tol;
    tol.h = 1e-3, tol.atol = 5e-3;
    check<MLP<ReLU>>(small(3, true), 2, 5, tol);
  }
}

TEST_CASE("embeddings and head", "[gradcheck]") {
  SECTION("TokenEmbedding") { check<TokenEmbedding>(small()); }
  SECTION("Embedding<LearnedPositions>") { check<Embedding<LearnedPositions>>(small()); }
  SECTION("Embedding<Sinusoidal>") { check<Embedding<Sinusoidal>>(small()); }
  SECTION("LMHead<Untied>") { check<LMHead<Untied>>(small()); }
}

TEST_CASE("combinators", "[gradcheck]") {
  SECTION("Residual<MLP<GELU>>") { check<Residual<MLP<GELU>>>(small()); }
  SECTION("Chain<RMSNorm, SwiGLU>") { check<Chain<RMSNorm, SwiGLU>>(small(3, false)); }
  SECTION("PreNorm block") { check<Block<LayerNorm, MHA<NoPE>, MLP<GELU>, PreNorm>>(small()); }
  SECTION("PostNorm block") { check<Block<LayerNorm, MHA<NoPE>, MLP<GELU>, PostNorm>>(small()); }
  SECTION("SandwichNorm block") {
    check<Block<RMSNorm, GQA<RoPE>, GeGLU, SandwichNorm>>(even_heads(2));
  }
  SECTION("Repeat of Llama-style blocks") {
    check<Repeat<Block<RMSNorm, GQA<RoPE>, SwiGLU, PreNorm>>>(even_heads(2));
  }
}

// The checker itself must see a wrong gradient: these parts break the protocol on purpose.
namespace {
struct OverwritesGrad : RMSNorm {  // dw = … instead of dw += …
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    TensorRef g = c.g(w);
    for (std::int64_t i = 0; i < g.numel(); ++i) g.f32()[i] = 0;
    RMSNorm::backward(c, dx, dy, x);
  }
};
struct SkipsDx : RMSNorm {  // leaves the last row of dx unwritten
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    RMSNorm::backward(c, dx, dy, x);
    const std::int64_t C = c.dims.d_model;
    for (std::int64_t i = dx.numel() - C; i < dx.numel(); ++i)
      dx.f32()[i] = std::numeric_limits<float>::quiet_NaN();
  }
};
struct ScalesGrad : RMSNorm {  // dx 5% too large
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    RMSNorm::backward(c, dx, dy, x);
    for (std::int64_t i = 0; i < dx.numel(); ++i) dx.f32()[i] *= 1.05f;
  }
};
}  // namespace

TEST_CASE("the gradient checker catches broken backward passes", "[gradcheck][sanity]") {
  Dims d = small();
  auto fails = [&](auto part) { return gradcheck_part(part, d, 2, 5, 7).failed > 0; };
  CHECK(fails(OverwritesGrad{}));
  CHECK(fails(SkipsDx{}));
  CHECK(fails(ScalesGrad{}));
  CHECK_FALSE(fails(RMSNorm{}));
}
