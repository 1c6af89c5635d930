// The generic part visitor. A composite part lists its children as a type:
//
//   using Parts = PartList<Child<"attn", Attn>, Child<"mlp", Mlp>>;
//
// (the names are the scopes their parameters live under; "" for a child that shares its parent's
// scope, kEach for the repeated child of a stack), and everything that walks a model — `llmtk arch
// show`, the size rules each part owns, tags such as "rope" that export and checks ask about —
// walks that list, at compile time or at run time, for any composition. A new combinator lists
// its children and is then shown, checked and exported like the built-in ones.
#pragma once
#include <algorithm>
#include <cstddef>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/dims.hpp"

namespace llmtk {

// A string usable as a template argument: Child<"attn", Attn>.
template <std::size_t N>
struct FixedString {
  char chars[N]{};
  constexpr FixedString(const char (&s)[N]) { std::copy_n(s, N, chars); }
  constexpr std::string_view view() const { return {chars, N - 1}; }
};

template <FixedString Name, class T>
struct Child {
  static constexpr std::string_view name = Name.view();
  using type = T;
};
template <class... C>
struct PartList {};

// The name of a stack's repeated child: its parameters are named 0, 1, ... n-1 in its place.
inline constexpr std::string_view kEach = "N";

template <class P>
concept HasParts = requires { typename P::Parts; };

// Calls f.template operator()<Child<...>>() for each child of P, in order.
template <class P, class F>
constexpr void for_each_child(F&& f) {
  if constexpr (HasParts<P>) {
    [&]<class... C>(PartList<C...>) { (f.template operator()<C>(), ...); }(typename P::Parts{});
  }
}

// ---- tags: what a part says about itself ("rope", "learned_positions", "mha"...) -------------
template <class P>
constexpr bool has_tag(std::string_view tag) {
  bool found = false;
  if constexpr (requires { P::tags; })
    for (std::string_view t : P::tags) found = found || t == tag;
  for_each_child<P>([&]<class C>() { found = found || has_tag<typename C::type>(tag); });
  return found;
}
template <class P>
std::vector<std::string_view> tags_of() {
  std::vector<std::string_view> out;
  auto add = [&](std::string_view t) {
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  };
  if constexpr (requires { P::tags; })
    for (std::string_view t : P::tags) add(t);
  for_each_child<P>([&]<class C>() {
    for (auto t : tags_of<typename C::type>()) add(t);
  });
  return out;
}

// ---- size rules: each part owns the rules on the sizes it reads --------------------------------
// A part lists them as `using Rules = RuleList<rules::rope_even_head_dim, ...>;` (core/dims.hpp).
// all_rules<P>() gathers them into one flat RuleList, P's own first, then its children's.
template <class... L, class... R>
constexpr RuleList<L..., R...> operator+(RuleList<L...>, RuleList<R...>) {
  return {};
}
template <class P>
constexpr auto all_rules() {
  auto own = [] {
    if constexpr (requires { typename P::Rules; }) return typename P::Rules{};
    else return RuleList<>{};
  }();
  if constexpr (HasParts<P>)
    return [&]<class... C>(PartList<C...>) { return (own + ... + all_rules<typename C::type>()); }(typename P::Parts{});
  else
    return own;
}
// Every rule of a composition: the core rules, then each part's, each once.
template <class P>
std::vector<DimsRule> rules_of() {
  std::vector<DimsRule> out;
  auto add = [&](const DimsRule& r) {
    for (const auto& o : out)
      if (o.name == r.name) return;
    out.push_back(r);
  };
  [&]<class... R>(RuleList<R...>) { (add(R::rule()), ...); }(CoreRules{} + all_rules<P>());
  return out;
}

// ---- keys: each part owns the configuration keys it reads ---------------------------------------
// A part lists them as `static constexpr KeySpec keys[] = {...};` (core/dims.hpp). keys_of<P>()
// gathers them (each name once, P's own first); with_key_defaults<P>(d) sets each one d lacks to
// its fallback, so a part reads d.get("moe_experts") without knowing whether a recipe set it.
template <class P, class F>
constexpr void for_each_key(F&& f) {
  if constexpr (requires { P::keys; })
    for (const KeySpec& k : P::keys) f(k);
  for_each_child<P>([&]<class C>() { for_each_key<typename C::type>(f); });
}
template <class P>
std::vector<KeySpec> keys_of() {
  std::vector<KeySpec> out;
  for_each_key<P>([&](const KeySpec& k) {
    for (const auto& o : out)
      if (o.name == k.name) return;
    out.push_back(k);
  });
  return out;
}
template <class P>
constexpr Dims with_key_defaults(Dims d) {
  for_each_key<P>([&](const KeySpec& k) {
    if (!d.has(k.name)) d.set(k.name, k.fallback);
  });
  return d;
}

// The static check of a constexpr Dims against a composition: dims_hold<D, P>() is true when D
// keeps every size rule of P (core and every part's); a rule D breaks fails its own
// static_assert, whose message names it. Instantiated by every preset.
// dims_hold is an object whose call checks the flat list of rules rather than a function that
// walks the parts: then a broken rule's error shows three lines of "required from" (the rule,
// this list, the line that asked) instead of the whole walk.
template <Dims D, class Rules>
struct RulesHold;
template <Dims D, class... R>
struct RulesHold<D, RuleList<R...>> {
  consteval bool operator()() const { return (R::template check<D>() && ... && true); }
};
template <Dims D, class P>
inline constexpr RulesHold<with_key_defaults<P>(D), decltype(CoreRules{} + all_rules<P>())> dims_hold{};

// Defaults a part derives from the sizes the user set (MHA: n_kv_heads = n_heads unless set).
template <class P>
constexpr void resolve_dims(Dims& d, const SetKeys& set) {
  if constexpr (requires { P::resolve(d, set); }) P::resolve(d, set);
  for_each_child<P>([&]<class C>() { resolve_dims<typename C::type>(d, set); });
  d = with_key_defaults<P>(d);
}

}  // namespace llmtk

namespace llmtk {
// D with the sizes P's parts derive from the others (MHA: n_kv_heads = n_heads), at compile time.
template <class P, Dims D>
inline constexpr Dims resolved_dims = [] {
  Dims d = D;
  resolve_dims<P>(d, SetKeys{});
  return d;
}();
}  // namespace llmtk
