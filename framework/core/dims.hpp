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

// A configuration key a part owns (model.moe_experts belongs to MoE): parts list theirs as
//   static constexpr KeySpec keys[] = {{"moe_experts", KeyKind::integer, 8, 1, 4096, "experts per layer"}};
// and the visitor (protocol/visit.hpp) gathers them per architecture, so recipes, --set and
// state.json accept exactly the keys the architecture's parts declare, with their ranges.
enum class KeyKind { integer, real, boolean };
struct KeySpec {
  std::string_view name;  // without "model."
  KeyKind kind;
  double fallback;        // the value when a recipe or preset does not set it
  double lo, hi;          // the accepted range, inclusive
  std::string_view help;
};

// A part key's value as Dims stores it: a fixed-size name and a number (a boolean is 0 or 1), so
// that Dims stays a literal type a preset passes as a template argument.
struct PartValue {
  char name[24]{};
  double value = 0;
  constexpr bool operator==(const PartValue&) const = default;
};

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
  // Keys owned by parts (KeySpec), by name; unused entries have an empty name.
  PartValue part[8]{};
  // Tensor parallel (docs/distributed.md): the ranks among which n_heads, n_kv_heads and d_ff are
  // divided. A model's own Dims keep 1 and the whole sizes; the dims a tensor-parallel rank plans
  // and runs its parts with hold that rank's share of each (and tp), so a part sizes its split
  // weights from n_heads, n_kv_heads and d_ff as it always does, and head_dim stays the model's.
  int tp = 1;

  constexpr int head_dim() const { return n_heads > 0 ? d_model / (n_heads * tp) : 0; }
  // A part key's value; `fallback` when it is not set.
  constexpr double get(std::string_view key, double fallback = 0) const {
    for (const auto& p : part)
      if (std::string_view(p.name) == key) return p.value;
    return fallback;
  }
  constexpr int get_int(std::string_view key, int fallback = 0) const { return int(get(key, fallback)); }
  constexpr bool has(std::string_view key) const {
    for (const auto& p : part)
      if (p.name[0] != 0 && std::string_view(p.name) == key) return true;
    return false;
  }
  // Sets a part key; false when the name is too long or the table is full.
  constexpr bool set(std::string_view key, double value) {
    if (key.empty() || key.size() >= sizeof part[0].name) return false;
    for (auto& p : part)
      if (std::string_view(p.name) == key) return p.value = value, true;
    for (auto& p : part)
      if (p.name[0] == 0) {
        for (std::size_t i = 0; i < key.size(); ++i) p.name[i] = key[i];
        p.value = value;
        return true;
      }
    return false;
  }
  // The same sizes with part key `key` set: a preset writes with(kTiny, "moe_experts", 8).
  constexpr Dims with(std::string_view key, double value) const {
    Dims d = *this;
    d.set(key, value);
    return d;
  }
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
