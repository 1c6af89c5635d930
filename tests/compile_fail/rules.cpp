// Compile-fail cases, one per rule. tests/CMakeLists.txt compiles this file once per rule with
// -DCASE_<rule> and expects an error naming the rule; with no CASE it must compile (the sanity
// case). Each case breaks exactly one rule.
#include "dsl/combinators.hpp"
#include "layers/positions.hpp"
#include "models/gpt2.hpp"
#include "models/llama.hpp"

using namespace llmtk;

namespace {

// A well-formed part that widens the stream to Ffn: fine alone, wrong where Model is expected.
struct UpProject {
  static constexpr Role role = Role::feedforward;
  using In = Hidden;
  using Out = Axes<Batch, Seq, Ffn>;
  void declare(Planner&) {}
  void forward(Ctx&, TensorRef, TensorRef) {}
  void backward(Ctx&, TensorRef, TensorRef, TensorRef) {}
  static double flops_per_token(const Dims&, std::int64_t) { return 0; }
};

// A norm that forgot its backward.
struct NoBackward {
  static constexpr Role role = Role::norm;
  using In = Hidden;
  using Out = Hidden;
  void declare(Planner&) {}
  void forward(Ctx&, TensorRef, TensorRef) {}
  static double flops_per_token(const Dims&, std::int64_t) { return 0; }
};

struct SinusoidalLM final : DecoderLM<Embedding<Sinusoidal>, Repeat<Gpt2Block>, LayerNorm, LMHead<Tied>> {};
struct MqaBlock final : Block<RMSNorm, MQA<RoPE>, SwiGLU, PreNorm> {};
struct MqaLM final : DecoderLM<TokenEmbedding, Repeat<MqaBlock>, RMSNorm, LMHead<Tied>> {};

template <class F>
constexpr Dims edit(Dims d, F f) {
  f(d);
  return d;
}

}  // namespace

// The sanity case: valid presets and compositions compile.
static_assert(dims_hold<Gpt2Small::dims, Gpt2::traits>());
static_assert(dims_hold<LlamaTiny::dims, Llama::traits>());
static_assert(Norm<RMSNorm> && Mixer<GQA<RoPE>> && FeedForward<SwiGLU>);
[[maybe_unused]] Chain<RMSNorm, SwiGLU> sanity_chain;

#if defined(CASE_harness_sees_failure)
static_assert(sizeof(int) == 0, "harness_sees_failure: this case exists to fail");

// ---- size rules -------------------------------------------------------------------------------
#elif defined(CASE_positive_sizes)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.d_ff = 0; }), Gpt2::traits>());
#elif defined(CASE_heads_tile_model)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.n_heads = d.n_kv_heads = 3; }), Gpt2::traits>());
#elif defined(CASE_kv_heads_divide_heads)
static_assert(dims_hold<edit(LlamaTiny::dims, [](Dims& d) { d.n_kv_heads = 3; }), Llama::traits>());
#elif defined(CASE_rope_even_head_dim)
static_assert(dims_hold<edit(LlamaTiny::dims, [](Dims& d) { d.d_model = 264; }), Llama::traits>());
#elif defined(CASE_sinusoidal_even_model)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.d_model = 255, d.n_heads = d.n_kv_heads = 3; }),
                        SinusoidalLM::traits>());
#elif defined(CASE_window_within_context)
static_assert(dims_hold<edit(LlamaTiny::dims, [](Dims& d) { d.window = 1000; }), Llama::traits>());
#elif defined(CASE_mha_kv_heads_equal_heads)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.n_kv_heads = 2; }), Gpt2::traits>());
#elif defined(CASE_mqa_one_kv_head)
static_assert(dims_hold<LlamaTiny::dims, MqaLM::traits>());

// ---- type rules -------------------------------------------------------------------------------
#elif defined(CASE_single_position_scheme)
struct Mixed final : DecoderLM<Embedding<LearnedPositions>, Repeat<LlamaBlock>, RMSNorm, LMHead<Tied>> {};
constexpr ArchTraits t = Mixed::traits;
#elif defined(CASE_attention_positions)
GQA<LearnedPositions> g;
#elif defined(CASE_embedding_positions)
Embedding<RoPE> e;
#elif defined(CASE_axes_connect)
Chain<UpProject, LMHead<Untied>> c;
#elif defined(CASE_residual_keeps_axes)
Residual<UpProject> r;
#elif defined(CASE_repeat_keeps_axes)
Repeat<UpProject> r;
#elif defined(CASE_lm_head_tying)
LMHead<int> h;
#elif defined(CASE_norm_role)
Block<SwiGLU, GQA<RoPE>, SwiGLU, PreNorm> b;
#elif defined(CASE_mixer_role)
Block<RMSNorm, SwiGLU, SwiGLU, PreNorm> b;
#elif defined(CASE_feedforward_role)
Block<RMSNorm, GQA<RoPE>, RMSNorm, PreNorm> b;
#elif defined(CASE_placement)
Block<RMSNorm, GQA<RoPE>, SwiGLU, RMSNorm> b;
#elif defined(CASE_layer_needs_backward)
Block<NoBackward, GQA<RoPE>, SwiGLU, PreNorm> b;
#endif
