// Compile-fail cases, one per rule. tests/CMakeLists.txt compiles this file once per rule with
// -DCASE_<rule> and expects an error naming the rule, in fewer than 20 lines of compiler output;
// with no CASE it must compile (the sanity case). Each case breaks exactly one rule.
#include "dsl/combinators.hpp"
#include "layers/positions.hpp"
#include "models/gpt2.hpp"
#include "models/ablation.hpp"
#include "models/llama.hpp"
#include "models/gemma.hpp"
#include "models/hybrid.hpp"
#include "models/moe.hpp"
#include "models/bert.hpp"
#include "models/parallel.hpp"
#include "models/seq2seq.hpp"
#include "models/t5.hpp"
#include "models/registry.hpp"

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

// Parts that lack one requirement each: Partial<axes, memory, forward, flops, role>.
struct WithAxes { using In = Hidden; using Out = Hidden; };
struct WithRole { static constexpr Role role = Role::norm; };
template <int> struct Nothing {};
template <bool A, bool M, bool F, bool C, bool R>
struct Partial : std::conditional_t<A, WithAxes, Nothing<0>>, std::conditional_t<R, WithRole, Nothing<1>> {
  void declare(Planner&) requires M {}
  void forward(Ctx&, TensorRef, TensorRef) requires F {}
  void backward(Ctx&, TensorRef, TensorRef, TensorRef) {}
  static double flops_per_token(const Dims&, std::int64_t) requires C { return 0; }
};
// A mixer that works on the wrong axes, and one that changes them.
struct WideMixer {
  static constexpr Role role = Role::mixer;
  using In = Axes<Batch, Seq, Ffn>;
  using Out = Axes<Batch, Seq, Ffn>;
  void declare(Planner&) {}
  void forward(Ctx&, TensorRef, TensorRef) {}
  void backward(Ctx&, TensorRef, TensorRef, TensorRef) {}
  static double flops_per_token(const Dims&, std::int64_t) { return 0; }
};
struct WideningMixer : WideMixer {
  using In = Hidden;
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
static_assert(dims_hold<Gpt2Small::dims, Gpt2>());
static_assert(dims_hold<LlamaTiny::dims, Llama>());
static_assert(Norm<RMSNorm> && Mixer<GQA<RoPE>> && FeedForward<SwiGLU>);
[[maybe_unused]] Chain<RMSNorm, SwiGLU> sanity_chain;

#if defined(CASE_harness_sees_failure)
static_assert(sizeof(int) == 0, "harness_sees_failure: this case exists to fail");

// ---- size rules -------------------------------------------------------------------------------
#elif defined(CASE_sizes_within_limits)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.n_layers = 5000; }), Gpt2>());
#elif defined(CASE_norm_eps_in_range)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.norm_eps = 0; }), Gpt2>());
#elif defined(CASE_rope_base_above_one)
static_assert(dims_hold<edit(LlamaTiny::dims, [](Dims& d) { d.rope_base = 0.5; }), Llama>());
#elif defined(CASE_positive_sizes)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.d_ff = 0; }), Gpt2>());
#elif defined(CASE_heads_tile_model)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.n_heads = d.n_kv_heads = 3; }), Gpt2>());
#elif defined(CASE_kv_heads_divide_heads)
static_assert(dims_hold<edit(LlamaTiny::dims, [](Dims& d) { d.n_kv_heads = 3; }), Llama>());
#elif defined(CASE_rope_even_head_dim)
static_assert(dims_hold<edit(LlamaTiny::dims, [](Dims& d) { d.d_model = 264; }), Llama>());
#elif defined(CASE_sinusoidal_even_model)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.d_model = 255, d.n_heads = d.n_kv_heads = 3; }),
                        SinusoidalLM>());
#elif defined(CASE_pattern_divides_layers)
static_assert(dims_hold<edit(GemmaTiny::dims, [](Dims& d) { d.n_layers = 5; }), Gemma>());
#elif defined(CASE_pattern_axes_agree)
// A layer that keeps its axes, but not the hidden stream's: fine in a stack of its own kind only.
[[maybe_unused]] Pattern<LlamaBlock, Residual<WideMixer>> mixed_axes;
#elif defined(CASE_recurrent_positions)
[[maybe_unused]] MinGRU<RoPE> recurrence_with_rope;
#elif defined(CASE_moe_top_k_within_experts)
static_assert(dims_hold<MoeTiny::dims.with("moe_top_k", 9), TiedMixtral>());
#elif defined(CASE_window_within_context)
static_assert(dims_hold<edit(LlamaTiny::dims, [](Dims& d) { d.window = 1000; }), Llama>());
#elif defined(CASE_mha_kv_heads_equal_heads)
static_assert(dims_hold<edit(Gpt2Tiny::dims, [](Dims& d) { d.n_kv_heads = 2; }), Gpt2>());
#elif defined(CASE_mqa_one_kv_head)
static_assert(dims_hold<LlamaTiny::dims, MqaLM>());

// ---- type rules -------------------------------------------------------------------------------
#elif defined(CASE_single_position_scheme)
struct Mixed final : DecoderLM<Embedding<LearnedPositions>, Repeat<LlamaBlock>, RMSNorm, LMHead<Tied>> {};
Mixed m;
#elif defined(CASE_attention_positions)
GQA<LearnedPositions> g;
#elif defined(CASE_embedding_positions)
Embedding<RoPE> e;
#elif defined(CASE_attention_mask_kind)
GQA<RoPE, int> g;
#elif defined(CASE_mlp_activation)
MLP<int> m;
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
#elif defined(CASE_norm_role_in_model)
// The same mistake as a user makes it: a named block in a full model, registered as a preset
// (which size-checks it and builds a ModelOf). The one error is the block's; nothing cascades.
struct Bad final : Block<SwiGLU, GQA<RoPE>, SwiGLU, PreNorm> {};
struct BadLM final : DecoderLM<TokenEmbedding, Repeat<Bad>, RMSNorm, LMHead<Tied>> {};
struct BadTiny final {
  using Arch = BadLM;
  static constexpr const char* name = "bad-tiny";
  static constexpr const char* about = "a Llama whose blocks start with SwiGLU";
  static constexpr Dims dims = LlamaTiny::dims;
};
ArchInfo bad_entry() { return preset_entry<BadTiny>(); }
#elif defined(CASE_mixer_role)
Block<RMSNorm, SwiGLU, SwiGLU, PreNorm> b;
#elif defined(CASE_feedforward_role)
Block<RMSNorm, GQA<RoPE>, RMSNorm, PreNorm> b;
#elif defined(CASE_parallel_mixer_role)
ParallelBlock<LayerNorm, MLP<GELU>, MLP<GELU>> b;
#elif defined(CASE_placement)
Block<RMSNorm, GQA<RoPE>, SwiGLU, RMSNorm> b;
#elif defined(CASE_layer_needs_backward)
Block<NoBackward, GQA<RoPE>, SwiGLU, PreNorm> b;
#elif defined(CASE_declares_axes)
Block<Partial<false, true, true, true, true>, GQA<RoPE>, SwiGLU, PreNorm> b;
#elif defined(CASE_declares_memory)
Block<Partial<true, false, true, true, true>, GQA<RoPE>, SwiGLU, PreNorm> b;
#elif defined(CASE_has_forward)
Block<Partial<true, true, false, true, true>, GQA<RoPE>, SwiGLU, PreNorm> b;
#elif defined(CASE_counts_flops)
Block<Partial<true, true, true, false, true>, GQA<RoPE>, SwiGLU, PreNorm> b;
#elif defined(CASE_has_role)
Block<Partial<true, true, true, true, false>, GQA<RoPE>, SwiGLU, PreNorm> b;
#elif defined(CASE_takes_hidden)
Block<RMSNorm, WideMixer, SwiGLU, PreNorm> b;
#elif defined(CASE_keeps_axes)
Block<RMSNorm, WideningMixer, SwiGLU, PreNorm> b;
#elif defined(CASE_embedding_role)
DecoderLM<RMSNorm, Repeat<LlamaBlock>, RMSNorm, LMHead<Tied>> m;

// ---- ablations: a variant that breaks a rule is named by its number V and its type -------------
#elif defined(CASE_ablation_rule)
struct OddHeads final {  // head size 33: RoPE needs an even one, NoPE does not
  using Arch = DecoderLM<TokenEmbedding, Repeat<Block<RMSNorm, GQA<Ablate<NoPE, RoPE>>, SwiGLU, PreNorm>>, RMSNorm,
                         LMHead<Tied>>;
  static constexpr const char* name = "odd";
  static constexpr const char* about = "";
  static constexpr Dims dims = edit(LlamaTiny::dims, [](Dims& d) { d.d_model = 264; });
};
auto entries = ablation_entries<OddHeads>();
#elif defined(CASE_ablation_positions)
struct TwoSchemes final {  // variant 1 adds learned positions and rotates q and k
  using Arch = DecoderLM<Embedding<Ablate<NoPE, LearnedPositions>>, Repeat<Block<RMSNorm, GQA<Ablate<NoPE, RoPE>>, SwiGLU, PreNorm>>,
                         RMSNorm, LMHead<Tied>>;
  static constexpr const char* name = "two";
  static constexpr const char* about = "";
  static constexpr Dims dims = LlamaTiny::dims;
};
auto entries = ablation_entries<TwoSchemes>();
#elif defined(CASE_encoder_bidirectional)
struct CausalEncoder final : EncoderLM<BertEmbedding, Repeat<Gpt2Block>, LayerNorm, MLMHead<Tied>> {};
CausalEncoder m;
#elif defined(CASE_mlm_head_needs_encoder)
struct MaskedDecoder final : DecoderLM<Embedding<LearnedPositions>, Repeat<Gpt2Block>, LayerNorm, MLMHead<Tied>> {};
MaskedDecoder m;
#elif defined(CASE_cross_attention_needs_memory)
struct CrossEncoder final
    : EncoderLM<BertEmbedding, Repeat<Block<LayerNorm, CrossAttention, MLP<GELU>, PostNorm>>, LayerNorm, MLMHead<Tied>> {};
CrossEncoder m;
#elif defined(CASE_decoder_causal)
struct PeekingDecoder final
    : EncoderDecoderLM<Embedding<Sinusoidal>, Repeat<TransformerEncoderBlock>, LayerNorm,
                       Repeat<CrossBlock<LayerNorm, MHA<NoPE, Bidirectional>, CrossAttention, MLP<ReLU>, PostNorm>>,
                       LayerNorm, LMHead<Tied>> {};
PeekingDecoder m;
#elif defined(CASE_decoder_reads_memory)
struct DeafDecoder final : EncoderDecoderLM<Embedding<Sinusoidal>, Repeat<TransformerEncoderBlock>, LayerNorm,
                                            Repeat<Gpt2Block>, LayerNorm, LMHead<Tied>> {};
DeafDecoder m;
#elif defined(CASE_relative_bias_positions)
struct TwoPositions final : EncoderDecoderLM<Embedding<LearnedPositions>, Repeat<T5EncoderBlock>, RMSNorm,
                                             Repeat<T5DecoderBlock>, RMSNorm, LMHead<TiedScaled>> {};
TwoPositions m;
#elif defined(CASE_head_role)
DecoderLM<TokenEmbedding, Repeat<LlamaBlock>, RMSNorm, RMSNorm> m;
#endif
