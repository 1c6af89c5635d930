// Dims: the sizes of a model, as values, and the size rules every model shares. Rules that belong
// to one part (RoPE's even head dim, MHA's kv heads...) live with that part (layers/) and are
// gathered by the part visitor (protocol/visit.hpp); a preset checks them all with static_assert
// (dims_hold), recipes and the command line at start-up (check_dims), with the same names and
// messages.
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
  int window = 0;       // model.window: sliding attention window in tokens, 0 = full attention
  double norm_eps = 1e-5;      // model.norm_eps: epsilon of LayerNorm / RMSNorm
  bool bias = false;    // model.bias: biases in linear maps and LayerNorm

  constexpr int head_dim() const { return n_heads > 0 ? d_model / n_heads : 0; }
  constexpr int kv_dim() const { return n_kv_heads * head_dim(); }
  constexpr bool operator==(const Dims&) const = default;
};

// A size rule as the run-time check sees it.
struct DimsRule {
  std::string_view name;     // rope_even_head_dim
  std::string_view keys;     // the recipe keys it reads: "model.d_model, model.n_heads"
  std::string_view message;  // what must hold, in words
  bool (*holds)(const Dims&);
};
template <class... Rule>
struct RuleList {};

// Defines a rule as a type: LLMTK_DIMS_RULE(name, "keys", "message", expression over `d`). The
// type gives the run-time DimsRule and a static check whose message names the rule.
#define LLMTK_DIMS_RULE(rule_, keys_, message_, ...)                                        \
  struct rule_ {                                                                            \
    static constexpr bool holds(const ::llmtk::Dims& d) { return __VA_ARGS__; }             \
    static constexpr ::llmtk::DimsRule rule() { return {#rule_, keys_, message_, &holds}; } \
    template <::llmtk::Dims D>                                                              \
    static consteval bool check() {                                                         \
      static_assert(holds(D), #rule_ ": " message_ " [" keys_ "]");                         \
      return true;                                                                          \
    }                                                                                       \
  }

namespace rules {
// clang-format off
LLMTK_DIMS_RULE(positive_sizes, "model.d_model, n_layers, n_heads, n_kv_heads, d_ff, vocab, max_seq",
                "every size must be positive",
                d.d_model > 0 && d.n_layers > 0 && d.n_heads > 0 && d.n_kv_heads > 0 && d.d_ff > 0 && d.vocab > 0 &&
                d.max_seq > 0);
// Bounds that keep every tensor's element count far from overflow and every value meaningful in f32.
LLMTK_DIMS_RULE(sizes_within_limits, "model.d_model, d_ff, n_heads, n_layers, vocab, max_seq",
                "sizes must stay within d_model, d_ff, n_heads <= 2^20, n_layers <= 4096, vocab and max_seq <= 2^24",
                d.d_model <= (1 << 20) && d.d_ff <= (1 << 20) && d.n_heads <= (1 << 20) && d.n_layers <= 4096 &&
                d.vocab <= (1 << 24) && d.max_seq <= (1 << 24));
LLMTK_DIMS_RULE(norm_eps_in_range, "model.norm_eps", "norm_eps must be between 1e-12 and 1",
                d.norm_eps >= 1e-12 && d.norm_eps <= 1.0);  // also false for NaN
LLMTK_DIMS_RULE(heads_tile_model, "model.n_heads, model.d_model",
                "n_heads must divide d_model (head_dim = d_model / n_heads)",
                d.n_heads > 0 && d.d_model % d.n_heads == 0);
LLMTK_DIMS_RULE(kv_heads_divide_heads, "model.n_kv_heads, model.n_heads",
                "n_kv_heads must divide n_heads (each kv head serves n_heads / n_kv_heads query heads)",
                d.n_kv_heads > 0 && d.n_kv_heads <= d.n_heads && d.n_heads % d.n_kv_heads == 0);
LLMTK_DIMS_RULE(window_within_context, "model.window, model.max_seq",
                "window must be 0 (full attention) or between 1 and max_seq",
                d.window >= 0 && d.window <= d.max_seq);
// clang-format on
}  // namespace rules

using CoreRules = RuleList<rules::positive_sizes, rules::sizes_within_limits, rules::norm_eps_in_range,
                           rules::heads_tile_model, rules::kv_heads_divide_heads, rules::window_within_context>;

// The model.* keys a recipe or the command line set explicitly ("n_kv_heads"), for defaults a
// part derives from the others (MHA: n_kv_heads = n_heads unless set).
using SetKeys = std::vector<std::string>;
constexpr bool key_set(const SetKeys& keys, std::string_view key) {
  for (const std::string& k : keys)
    if (std::string_view(k) == key || (std::string_view(k).starts_with("model.") && std::string_view(k).substr(6) == key))
      return true;
  return false;
}

struct RuleViolation {
  std::string_view rule;
  std::string_view keys;
  std::string_view message;
};

// Every rule of `rules` that `dims` breaks; empty when all hold.
inline std::vector<RuleViolation> check_dims(const Dims& dims, const std::vector<DimsRule>& rules) {
  std::vector<RuleViolation> out;
  for (const auto& r : rules)
    if (!r.holds(dims)) out.push_back({r.name, r.keys, r.message});
  return out;
}

}  // namespace llmtk
