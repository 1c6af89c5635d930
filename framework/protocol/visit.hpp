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
template <class P>
void collect_rules(std::vector<DimsRule>& out) {
  if constexpr (requires { typename P::Rules; }) {
    [&]<class... R>(RuleList<R...>) {
      auto add = [&](const DimsRule& r) {
        for (const auto& o : out)
          if (o.name == r.name) return;
        out.push_back(r);
      };
      (add(R::rule()), ...);
      (void)add;  // an empty list (a part without rules of its own)
    }(typename P::Rules{});
  }
  for_each_child<P>([&]<class C>() { collect_rules<typename C::type>(out); });
}
// Every rule of a composition: the core rules, then each part's, each once.
template <class P>
std::vector<DimsRule> rules_of() {
  std::vector<DimsRule> out = core_rules();
  collect_rules<P>(out);
  return out;
}

// The static check of a constexpr Dims against a composition: one static_assert per rule (core
// and every part's), each message naming its rule. Instantiated by every preset.
template <Dims D, class P>
consteval bool part_rules_hold() {
  bool ok = true;
  if constexpr (requires { typename P::Rules; }) {
    ok = []<class... R>(RuleList<R...>) { return (R::template check<D>() && ... && true); }(typename P::Rules{});
  }
  for_each_child<P>([&]<class C>() { ok = part_rules_hold<D, typename C::type>() && ok; });
  return ok;
}
template <Dims D, class P>
consteval bool dims_hold() {
  return core_rules_hold<D>() && part_rules_hold<D, P>();
}

// Defaults a part derives from the sizes the user set (MHA: n_kv_heads = n_heads unless set).
template <class P>
void resolve_dims(Dims& d, const SetKeys& set) {
  if constexpr (requires { P::resolve(d, set); }) P::resolve(d, set);
  for_each_child<P>([&]<class C>() { resolve_dims<typename C::type>(d, set); });
}

}  // namespace llmtk
