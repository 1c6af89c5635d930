// Dims: the sizes of a model, as values. The rules on them are constexpr functions written once:
// presets check them with static_assert (LLMTK_STATIC_CHECK_DIMS), recipes and the command line
// at start-up (check_dims), with the same names and messages.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmtk {

struct Dims {
  int d_model = 0;      // model.d_model: width of the residual stream (C)
  int n_layers = 0;     // model.n_layers: number of repeated blocks
  int n_heads = 0;      // model.n_heads: query heads (H)
  int n_kv_heads = 0;   // model.n_kv_heads: key/value heads (KV); H for MHA, 1 for MQA
  int d_ff = 0;         // model.d_ff: hidden width of the feed-forward (F)
  int vocab = 0;        // model.vocab: vocabulary size (V)
  int max_seq = 0;      // model.max_seq: longest sequence the model accepts
  double rope_base = 10000.0;  // model.rope_base: RoPE's theta
  int window = 0;       // model.window: sliding attention window in tokens, 0 = full causal
  double norm_eps = 1e-5;      // model.norm_eps: epsilon of LayerNorm / RMSNorm
  bool bias = false;    // model.bias: biases in linear maps and LayerNorm

  constexpr int head_dim() const { return n_heads > 0 ? d_model / n_heads : 0; }
  constexpr int kv_dim() const { return n_kv_heads * head_dim(); }
  constexpr bool operator==(const Dims&) const = default;
};

// What an architecture's type says about itself, for rules that depend on the parts chosen.
struct ArchTraits {
  bool rope = false;               // a mixer rotates q and k (RoPE)
  bool alibi = false;              // a mixer adds ALiBi score biases
  bool learned_positions = false;  // the embedding adds trained position vectors
  bool sinusoidal = false;         // the embedding adds sin/cos position vectors
  bool mha = false;                // a mixer is MHA: one kv head per query head
  bool mqa = false;                // a mixer is MQA: one kv head in all
};

namespace rules {
// clang-format off
constexpr bool positive_sizes(const Dims& d, const ArchTraits&) {
  return d.d_model > 0 && d.n_layers > 0 && d.n_heads > 0 && d.n_kv_heads > 0 && d.d_ff > 0 &&
         d.vocab > 0 && d.max_seq > 0;
}
// Bounds that keep every tensor's element count far from overflow and every value meaningful in f32.
constexpr bool sizes_within_limits(const Dims& d, const ArchTraits&) {
  constexpr int kMaxWidth = 1 << 20, kMaxLayers = 4096, kMaxVocab = 1 << 24, kMaxSeq = 1 << 24;
  return d.d_model <= kMaxWidth && d.d_ff <= kMaxWidth && d.n_heads <= kMaxWidth &&
         d.n_layers <= kMaxLayers && d.vocab <= kMaxVocab && d.max_seq <= kMaxSeq;
}
constexpr bool norm_eps_in_range(const Dims& d, const ArchTraits&) {
  return d.norm_eps >= 1e-12 && d.norm_eps <= 1.0;  // also false for NaN
}
constexpr bool heads_tile_model(const Dims& d, const ArchTraits&) {
  return d.n_heads > 0 && d.d_model % d.n_heads == 0;
}
constexpr bool kv_heads_divide_heads(const Dims& d, const ArchTraits&) {
  return d.n_kv_heads > 0 && d.n_kv_heads <= d.n_heads && d.n_heads % d.n_kv_heads == 0;
}
constexpr bool rope_even_head_dim(const Dims& d, const ArchTraits& t) {
  return !t.rope || d.head_dim() % 2 == 0;
}
constexpr bool rope_base_above_one(const Dims& d, const ArchTraits& t) {
  return !t.rope || (d.rope_base > 1.0 && d.rope_base < 1e12);  // also false for NaN
}
constexpr bool sinusoidal_even_model(const Dims& d, const ArchTraits& t) {
  return !t.sinusoidal || d.d_model % 2 == 0;
}
constexpr bool single_position_scheme(const Dims&, const ArchTraits& t) {
  return !((t.learned_positions || t.sinusoidal) && (t.rope || t.alibi));
}
constexpr bool mha_kv_heads_equal_heads(const Dims& d, const ArchTraits& t) {
  return !t.mha || d.n_kv_heads == d.n_heads;
}
constexpr bool mqa_one_kv_head(const Dims& d, const ArchTraits& t) {
  return !t.mqa || d.n_kv_heads == 1;
}
constexpr bool window_within_context(const Dims& d, const ArchTraits&) {
  return d.window >= 0 && d.window <= d.max_seq;
}
// clang-format on
}  // namespace rules

// The rule list: name, the recipe keys involved, what must hold. One line per rule; both the
// static and the run-time check expand it.
#define LLMTK_DIMS_RULES(X)                                                                       \
  X(positive_sizes, "model.d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab, max_seq",         \
    "every size must be positive")                                                                \
  X(sizes_within_limits, "model.d_model, d_ff, n_heads, n_layers, vocab, max_seq",                 \
    "sizes must stay within d_model, d_ff, n_heads <= 2^20, n_layers <= 4096, vocab and "         \
    "max_seq <= 2^24")                                                                            \
  X(norm_eps_in_range, "model.norm_eps", "norm_eps must be between 1e-12 and 1")                  \
  X(heads_tile_model, "model.n_heads, model.d_model",                                             \
    "n_heads must divide d_model (head_dim = d_model / n_heads)")                                 \
  X(kv_heads_divide_heads, "model.n_kv_heads, model.n_heads",                                     \
    "n_kv_heads must divide n_heads (each kv head serves n_heads / n_kv_heads query heads)")      \
  X(rope_even_head_dim, "model.d_model, model.n_heads",                                           \
    "RoPE rotates pairs, so head_dim = d_model / n_heads must be even")                           \
  X(rope_base_above_one, "model.rope_base", "RoPE's base must be above 1 (10000 is usual)")      \
  X(sinusoidal_even_model, "model.d_model",                                                       \
    "position vectors pair sin and cos, so d_model must be even")                                 \
  X(window_within_context, "model.window, model.max_seq",                                         \
    "window must be 0 (full causal attention) or between 1 and max_seq")                          \
  X(single_position_scheme, "model.arch",                                                         \
    "an embedding that adds positions (LearnedPositions, Sinusoidal) cannot be combined with "   \
    "RoPE or ALiBi in the mixer; pick one position scheme")                                       \
  X(mha_kv_heads_equal_heads, "model.n_kv_heads, model.n_heads",                                  \
    "MHA has one kv head per query head: n_kv_heads must equal n_heads")                          \
  X(mqa_one_kv_head, "model.n_kv_heads", "MQA shares one kv head: n_kv_heads must be 1")

struct RuleViolation {
  std::string_view rule;
  std::string_view keys;
  std::string_view message;
};

// Every rule `dims` breaks for an architecture with `traits`; empty when all hold.
inline std::vector<RuleViolation> check_dims(const Dims& dims, const ArchTraits& traits) {
  std::vector<RuleViolation> out;
#define LLMTK_X(rule, keys, msg) \
  if (!rules::rule(dims, traits)) out.push_back({#rule, keys, msg});
  LLMTK_DIMS_RULES(LLMTK_X)
#undef LLMTK_X
  return out;
}

// Static check of a constexpr Dims: one static_assert per rule, each message naming its rule.
// Instantiated by every preset (models/registry.hpp), so no preset escapes it.
template <Dims D, ArchTraits T>
consteval bool dims_hold() {
#define LLMTK_X(rule, keys, msg) static_assert(rules::rule(D, T), #rule ": " msg " [" keys "]");
  LLMTK_DIMS_RULES(LLMTK_X)
#undef LLMTK_X
  return true;
}

}  // namespace llmtk
