// The expansion of Ablate<...> (dsl/ablate.hpp) into variants, and their registration.
//
//   struct FfnAblation final {
//     using Arch = DecoderLM<TokenEmbedding, Repeat<Block<RMSNorm, GQA<RoPE>,
//                            Ablate<SwiGLU, GeGLU, MLP<GELU>>, PreNorm>>, RMSNorm, LMHead<Tied>>;
//     static constexpr const char* name = "llama-ffn";
//     static constexpr const char* about = "...";
//     static constexpr Dims dims = LlamaTiny::dims;
//   };
//   ablation_entries<FfnAblation>()  // llama-ffn[ffn=swiglu], llama-ffn[ffn=geglu], llama-ffn[ffn=gelu_mlp]
//
// All of it is type substitution: the axes are collected from the type (each Ablate's key is its
// Axis<...> or, unnamed, the Ablate type itself), the variants are numbered in mixed radix over
// the axes (the first axis varies slowest), and variant v is the type with every Ablate replaced
// by its alternative at v's digit for that axis.
#pragma once
#include <array>
#include <cctype>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../dsl/ablate.hpp"
#include "../layers/attention.hpp"  // GQA, whose KvGrouping argument no generic match takes
#include "registry.hpp"

namespace llmtk {

// What a rule-breaking variant does: fail the build (the default: an ablation is a claim that all
// its variants make sense) or stay out of the list with the rule it breaks stated in `arch list`.
enum class RuleBreak { error, skip };

namespace ablation {

template <class... T>
struct List {};

template <class T>
struct Unalt {
  using type = T;
};
template <FixedString N, class T>
struct Unalt<Alt<N, T>> {
  using type = T;
};

// ---- an Ablate node: its key and alternatives ----
template <class A>
struct Node;
template <class... Alts>
struct Node<Ablate<Alts...>> {
  using key = Ablate<Alts...>;
  using alts = List<Alts...>;
  static constexpr std::size_t count = sizeof...(Alts);
  static constexpr bool named = false;
};
template <FixedString N, class... Alts>
struct Node<Ablate<Axis<N>, Alts...>> {
  using key = Axis<N>;
  using alts = List<Alts...>;
  static constexpr std::size_t count = sizeof...(Alts);
  static constexpr bool named = true;
};

template <class T>
struct IsAblate : std::false_type {};
template <class... A>
struct IsAblate<Ablate<A...>> : std::true_type {};

// An axis: its key, the number of alternatives, and the first Ablate that names it (whose
// alternatives' names the variants take).
template <class Key, std::size_t N, class First>
struct AxisEntry {
  using key = Key;
  using first = First;
  static constexpr std::size_t count = N;
};

// Appends E to L unless L has an entry with E's key (then the counts must agree).
template <class L, class E>
struct AddAxis;
template <class E, class... Es>
struct AddAxis<List<Es...>, E> {
  static constexpr bool present = (std::is_same_v<typename Es::key, typename E::key> || ...);
  static constexpr bool same_count =
      ((!std::is_same_v<typename Es::key, typename E::key> || Es::count == E::count) && ...);
  static_assert(same_count, "Ablate: two axes with the same Axis<\"name\"> must have as many alternatives "
                            "each; they vary together (the i-th of each in one variant)");
  using type = std::conditional_t<present, List<Es...>, List<Es..., E>>;
};
template <class L, class... More>
struct Merge {
  using type = L;
};
template <class L, class... Es, class... More>
struct Merge<L, List<Es...>, More...> {
  template <class Acc, class... Rest>
  struct Fold {
    using type = Acc;
  };
  template <class Acc, class E, class... Rest>
  struct Fold<Acc, E, Rest...> {
    using type = typename Fold<typename AddAxis<Acc, E>::type, Rest...>::type;
  };
  using type = typename Merge<typename Fold<L, Es...>::type, More...>::type;
};

// ---- the axes of a type, in order of first appearance ----
template <class T>
struct Axes {
  using type = List<>;
};
template <class... A>
struct Axes<Ablate<A...>> {
  using N = Node<Ablate<A...>>;
  template <class Alt>
  static constexpr bool nested = !std::is_same_v<typename Axes<typename Unalt<Alt>::type>::type, List<>>;
  template <class L>
  struct NoNesting;
  template <class... Alts>
  struct NoNesting<List<Alts...>> {
    static constexpr bool value = (!nested<Alts> && ...);
  };
  static_assert(NoNesting<typename N::alts>::value,
                "Ablate: an alternative may not itself contain an Ablate; write the axes side by side");
  using type = List<AxisEntry<typename N::key, N::count, Ablate<A...>>>;
};
template <template <class...> class Tm, class... A>
struct Axes<Tm<A...>> {
  using type = typename Merge<List<>, typename Axes<A>::type...>::type;
};
template <class P, class M, KvGrouping G>
struct Axes<GQA<P, M, G>> {
  using type = typename Merge<List<>, typename Axes<P>::type, typename Axes<M>::type>::type;
};

// ---- numbering: variant v's alternative on each axis ----
template <class L>
struct Radix;
template <class... Es>
struct Radix<List<Es...>> {
  static constexpr std::size_t n = sizeof...(Es);
  static constexpr std::array<std::size_t, n> counts{Es::count...};
  static constexpr std::size_t total = (Es::count * ... * std::size_t(1));
  template <class Key>
  static constexpr std::size_t index() {
    std::size_t i = 0, found = n;
    ((std::is_same_v<typename Es::key, Key> ? (found = i, ++i) : ++i), ...);
    return found;
  }
  static constexpr std::size_t digit(std::size_t v, std::size_t axis) {
    std::size_t stride = 1;
    for (std::size_t i = axis + 1; i < n; ++i) stride *= counts[i];
    return v / stride % counts[axis];
  }
};

template <std::size_t I, class L>
struct Nth;
template <std::size_t I, class H, class... T>
struct Nth<I, List<H, T...>> : Nth<I - 1, List<T...>> {};
template <class H, class... T>
struct Nth<0, List<H, T...>> {
  using type = H;
};

// ---- substitution ----
template <class T, class R, std::size_t V>
struct Subst {
  using type = T;
};
template <class... A, class R, std::size_t V>
struct Subst<Ablate<A...>, R, V> {
  using N = Node<Ablate<A...>>;
  using chosen = typename Unalt<typename Nth<R::digit(V, R::template index<typename N::key>()), typename N::alts>::type>::type;
  using type = chosen;
};
template <template <class...> class Tm, class... A, class R, std::size_t V>
struct Subst<Tm<A...>, R, V> {
  using type = Tm<typename Subst<A, R, V>::type...>;
};
template <class P, class M, KvGrouping G, class R, std::size_t V>
struct Subst<GQA<P, M, G>, R, V> {
  using type = GQA<typename Subst<P, R, V>::type, typename Subst<M, R, V>::type, G>;
};

// ---- names ----
template <class T>
std::string alternative_name() {
  if constexpr (requires { T::tags; }) {
    if (std::size(T::tags) > 0) return std::string(T::tags[0]);
  }
  std::string s, raw = type_name<T>();
  for (char ch : raw) {
    if (std::isalnum(static_cast<unsigned char>(ch))) s += char(std::tolower(static_cast<unsigned char>(ch)));
    else if (!s.empty() && s.back() != '-') s += '-';
  }
  while (!s.empty() && s.back() == '-') s.pop_back();
  return s;
}
template <class A>
std::string alternative_label() {
  if constexpr (requires { A::name; typename A::type; }) return std::string(A::name);
  else return alternative_name<A>();
}
// An unnamed axis is called by what its alternatives are.
template <class T>
std::string axis_kind() {
  if constexpr (PositionScheme<T>) return "pos";
  else if constexpr (Placement<T>) return "placement";
  else if constexpr (Activation<T>) return "act";
  else if constexpr (requires { T::role; }) {
    switch (T::role) {
      case Role::norm: return "norm";
      case Role::mixer: return "attn";
      case Role::feedforward: return "ffn";
      case Role::block: return "block";
      default: return "alt";
    }
  } else {
    return "alt";
  }
}

struct AxisNames {
  std::string axis;
  std::vector<std::string> values;
};
template <class E>
AxisNames axis_names() {
  using N = Node<typename E::first>;
  AxisNames out;
  if constexpr (N::named) out.axis = std::string(N::key::name);
  [&]<class... Alts>(List<Alts...>) {
    (out.values.push_back(alternative_label<Alts>()), ...);
    if constexpr (!N::named) out.axis = axis_kind<typename Unalt<typename Nth<0, List<Alts...>>::type>::type>();
  }(typename N::alts{});
  return out;
}
template <class... Es>
std::vector<AxisNames> all_axis_names(List<Es...>) {
  std::vector<AxisNames> out = {axis_names<Es>()...};
  // Two unnamed axes of one kind: norm, norm2.
  for (std::size_t i = 0; i < out.size(); ++i) {
    int seen = 1;
    for (std::size_t j = 0; j < i; ++j)
      if (out[j].axis == out[i].axis) ++seen;
    if (seen > 1) out[i].axis += std::to_string(seen);
  }
  return out;
}

// "[ffn=geglu,pos=alibi]"
template <class R>
std::string variant_suffix(const std::vector<AxisNames>& names, std::size_t v) {
  std::string s = "[";
  for (std::size_t i = 0; i < names.size(); ++i)
    s += (i ? "," : "") + names[i].axis + "=" + names[i].values[R::digit(v, i)];
  return s + "]";
}

// The one position scheme rule (dsl/decoder_lm.hpp), asked without instantiating the model.
template <class Arch>
struct PositionConflict : std::false_type {};
template <class E, class S, class FinalNorm, class H>
struct PositionConflict<DecoderLM<E, S, FinalNorm, H>>
    : std::bool_constant<!one_position_scheme<E, S>> {};

}  // namespace ablation

// The variants of Preset::Arch as types: ablation_variant<Preset, v>.
template <class Preset>
using ablation_axes = typename ablation::Axes<typename Preset::Arch>::type;
template <class Preset>
inline constexpr std::size_t ablation_size = ablation::Radix<ablation_axes<Preset>>::total;
template <class Preset, std::size_t V>
using ablation_variant =
    typename ablation::Subst<typename Preset::Arch, ablation::Radix<ablation_axes<Preset>>, V>::type;

// Variant V of the ablation `Preset`, as a registered architecture; `name` is the variant's. Its
// sizes are checked rule by rule at compile time (RuleBreak::error: a broken rule's static_assert
// fires here, and the compiler's "required from" line above it shows V and the variant's type), or
// at registration (RuleBreak::skip: `skipped` gets the reason instead).
template <class Preset, std::size_t V, RuleBreak OnBreak>
void add_ablation_variant(std::vector<ArchInfo>& out, std::vector<std::string>& skipped, const std::string& name,
                          const std::string& about) {
  using Arch = ablation_variant<Preset, V>;
  constexpr bool conflict = ablation::PositionConflict<Arch>::value;
  static_assert(OnBreak == RuleBreak::skip || !conflict,
                "Ablate: this variant puts an additive position scheme in the embedding and RoPE or ALiBi "
                "in the mixer (single_position_scheme); the line above names V, the variant; register "
                "with RuleBreak::skip to leave such variants out");
  if constexpr (conflict) {
    skipped.push_back(name + ": single_position_scheme (an embedding that adds positions cannot be combined "
                             "with RoPE or ALiBi in the mixer)");
  } else {
    // The preset's sizes with what this variant derives (MHA: n_kv_heads = n_heads; MQA: 1).
    static constexpr Dims dims = resolved_dims<Arch, Preset::dims>;
    if constexpr (OnBreak == RuleBreak::error) {
      out.push_back(arch_entry<Arch, dims>(name, about));
    } else {
      const auto broken = check_dims(dims, rules_of<Arch>());
      if (!broken.empty()) {
        skipped.push_back(name + ": " + std::string(broken.front().rule) + " (" + std::string(broken.front().message) + ")");
        return;
      }
      out.push_back(arch_entry<Arch, dims, false>(name, about));
    }
  }
}

// Every variant of the ablation `Preset`, named "NAME[axis=value,...]", grouped under NAME.
// `skipped` (if given) receives "NAME[...]: rule (message)" for each variant left out.
template <class Preset, RuleBreak OnBreak = RuleBreak::error>
std::vector<ArchInfo> ablation_entries(std::vector<std::string>* skipped = nullptr) {
  using L = ablation_axes<Preset>;
  using R = ablation::Radix<L>;
  static_assert(R::n > 0, "ablation_entries: the preset's Arch has no Ablate<...>; register it with preset_entry");
  const auto names = ablation::all_axis_names(L{});
  std::vector<ArchInfo> out;
  std::vector<std::string> left_out;
  [&]<std::size_t... V>(std::index_sequence<V...>) {
    (add_ablation_variant<Preset, V, OnBreak>(out, left_out, std::string(Preset::name) + ablation::variant_suffix<R>(names, V),
                                              std::string(Preset::about)),
     ...);
  }(std::make_index_sequence<R::total>{});
  for (const auto& n : names)
    for (std::size_t i = 0; i < n.values.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        LLMTK_CHECK(n.values[i] != n.values[j], Preset::name, "the axis '", n.axis, "' has two alternatives called '",
                    n.values[i], "'; name them apart with Alt<\"name\", T>");
  for (auto& a : out) a.group = Preset::name;
  if (skipped) skipped->insert(skipped->end(), left_out.begin(), left_out.end());
  return out;
}

}  // namespace llmtk
