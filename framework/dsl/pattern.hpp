// Stacks whose layers differ. Repeat<B> stacks n_layers copies of one block; these stack several
// block types in an order the type states:
//
//   Pattern<A, B>      A, B, A, B, ...: the pattern repeated to n_layers (Gemma 2's local and
//                      global attention); n_layers must be a multiple of its length (rule
//                      pattern_divides_layers)
//   PatternCut<A, B, C> the same, the last repetition cut where n_layers ends (Gemma 3's 5 local :
//                      1 global over 26 layers): the remainder is declared in the type
//   Layers<A, B, B, A> exactly these layers, one each; n_layers must equal their count (rule
//                      layers_match_n_layers)
//
// Every layer type must be a layer that returns what it takes, all of them the same axes (rule
// pattern_axes_agree); the size rules, keys and tags of every layer type hold for the whole stack
// (the visitor walks each type once). Parameters are named by layer as in Repeat (blocks.3.attn.wq),
// so a layer's names do not depend on its type. `arch show` lists each layer type with the layers
// it occupies and its parameters per layer.
#pragma once
#include <array>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../protocol/part.hpp"

namespace llmtk {

enum class StackEnd { multiple, cut, exact };

namespace pattern_detail {
// "0", "1", ... "15" as template arguments: the children of a stack are named by the first layer
// each type occupies, which is where `arch show` counts its parameters.
template <std::size_t I>
struct IndexName {
  static_assert(I < 100, "a stack pattern has at most 100 layer types");
  static constexpr char value[I < 10 ? 2 : 3] = {I < 10 ? char('0' + I) : char('0' + I / 10),
                                                  I < 10 ? char(0) : char('0' + I % 10)};
};
template <class Seq, class... B>
struct Children;
template <std::size_t... I, class... B>
struct Children<std::index_sequence<I...>, B...> {
  using type = PartList<Child<IndexName<I>::value, B>...>;
};
template <class... B>
struct First;
template <class F, class... R>
struct First<F, R...> {
  using type = F;
};
template <class... B>
using FirstOf = typename First<B...>::type;
}  // namespace pattern_detail

template <StackEnd End, class... L>
struct LayerStack;

template <StackEnd End, class... L>
  requires(sizeof...(L) >= 1 && ((Layer<L> && KeepsAxes<L>) && ...) &&
           (std::is_same_v<typename L::In, typename pattern_detail::FirstOf<L...>::In> && ...))
struct LayerStack<End, L...> {
  static constexpr Role role = Role::stack;
  using In = typename pattern_detail::FirstOf<L...>::In;
  using Out = In;
  static constexpr int K = int(sizeof...(L));  // layer types, in pattern order
  using Parts = typename pattern_detail::Children<std::make_index_sequence<sizeof...(L)>, L...>::type;

  LLMTK_DIMS_RULE(pattern_divides_layers, "model.n_layers",
                  "n_layers must be a multiple of the pattern's length (the number of layer types in "
                  "Pattern<...>); PatternCut<...> ends on a partial repetition instead",
                  d.n_layers % K == 0);
  LLMTK_DIMS_RULE(layers_match_n_layers, "model.n_layers",
                  "n_layers must equal the number of layers Layers<...> lists", d.n_layers == K);
  using Rules = std::conditional_t<End == StackEnd::multiple, RuleList<pattern_divides_layers>,
                                   std::conditional_t<End == StackEnd::exact, RuleList<layers_match_n_layers>, RuleList<>>>;

  // The type of layer i, and how many layers of type t a stack of n has.
  static constexpr int type_of(int i) { return i % K; }
  static constexpr int count_of(int t, int n) { return n / K + (t < n % K ? 1 : 0); }

  std::tuple<std::vector<L>...> blocks;
  std::vector<ActSlot> outs;  // outputs of layers 0 .. n-2 (saved); the last writes y
  ActSlot grad[2];            // ping-pong gradient buffers (scratch)
  bool recompute = false;     // layers share activation memory with their type's first layer
  std::string scope;          // "blocks.": layer i's parameters are "blocks.i.*" (a probe's layer names)

  void declare(Planner& p) {
    const int n = p.dims.n_layers;
    resize(n, std::make_index_sequence<sizeof...(L)>{});
    outs.assign(static_cast<std::size_t>(n > 0 ? n - 1 : 0), ActSlot{});
    recompute = p.recompute_blocks;
    const std::string base = p.prefix();
    scope = base;
    for (int i = 0; i < n; ++i) {
      auto s = p.scope(std::to_string(i));
      // Recomputation: a layer reuses the memory of the first layer of its type (same shapes).
      if (recompute && i >= K) p.share_activations(base + std::to_string(type_of(i)) + ".", p.prefix());
      with_layer(i, [&](auto& block) { block.declare(p); });
      if (recompute && i >= K) p.share_activations("", "");
      if (i + 1 < n) outs[std::size_t(i)] = p.act("out", {p.B, p.T, p.dims.d_model});
    }
    grad[0] = p.act("grad0", {p.B, p.T, p.dims.d_model});
    grad[1] = p.act("grad1", {p.B, p.T, p.dims.d_model});
  }
  // y, x: [B, T, C]
  void forward(Ctx& c, TensorRef y, TensorRef x) {
    const int n = layers();
    TensorRef in = x;
    for (int i = 0; i < n; ++i) {
      TensorRef out = i + 1 == n ? y : c.a(outs[std::size_t(i)]);
      if (c.probe) c.probe->enter(scope + std::to_string(i));
      with_layer(i, [&](auto& block) { block.forward(c, out, in); });
      if (c.probe) c.probe->block_output(out);
      in = out;
    }
  }
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) {
    const int n = layers();
    TensorRef g = dy;
    for (int i = n; i-- > 0;) {
      TensorRef in = i == 0 ? x : c.a(outs[std::size_t(i - 1)]);
      TensorRef dst = i == 0 ? dx : c.a(grad[i % 2]);
      with_layer(i, [&](auto& block) {
        // Shared memory: unless this is the last layer of its type, its saved activations are a
        // later layer's by now; recompute them from its input (its output is rewritten unchanged).
        if (recompute && i + K < n) block.forward(c, c.a(outs[std::size_t(i)]), in);
        block.backward(c, dst, g, in);
      });
      if (c.gradient_hook) c.gradient_hook->layer_done(scope + std::to_string(i));
      g = dst;
    }
  }
  static double flops_per_token(const Dims& d, std::int64_t T) {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return (0.0 + ... + (count_of(int(I), d.n_layers) * L::flops_per_token(d, T)));
    }(std::make_index_sequence<sizeof...(L)>{});
  }

  // What `arch show` prints beside the stack and beside each layer type.
  static std::string note(const Dims& d) {
    std::string s = std::to_string(d.n_layers) + " layers";
    if (End == StackEnd::exact) return s + " as listed";
    return s + ", a pattern of " + std::to_string(K) + (End == StackEnd::cut ? " (the last one cut)" : "");
  }
  static std::string child_note(std::string_view name, const Dims& d) {
    const int t = std::stoi(std::string(name)), n = d.n_layers, count = count_of(t, n);
    std::string layers;
    for (int i = t, shown = 0; i < n; i += K, ++shown) {
      if (shown == 4) {
        layers += ", ...";
        break;
      }
      layers += (layers.empty() ? "" : ", ") + std::to_string(i);
    }
    return std::to_string(count) + " x, layers " + layers;
  }
  static std::int64_t child_count(std::string_view name, const Dims& d) {
    return count_of(std::stoi(std::string(name)), d.n_layers);
  }

 private:
  int layers() const { return int(outs.size()) + 1; }
  template <std::size_t... I>
  void resize(int n, std::index_sequence<I...>) {
    ((std::get<I>(blocks).assign(std::size_t(count_of(int(I), n)), L{})), ...);
  }
  // Calls f with layer i: the (i / K)-th block of type i mod K.
  template <class F>
  void with_layer(int i, F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((type_of(i) == int(I) ? (f(std::get<I>(blocks)[std::size_t(i / K)]), 0) : 0), ...);
    }(std::make_index_sequence<sizeof...(L)>{});
  }
};

// Otherwise: the static_asserts name the rule (and the stack stands in as a Rejected part).
template <StackEnd End, class... L>
struct LayerStack : Rejected<Role::stack> {
  static_assert(sizeof...(L) >= 1, "pattern_has_layers: a stack pattern lists at least one layer type");
  static_assert(((Layer<L> && KeepsAxes<L>) && ...),
                "pattern_keeps_axes: every layer type of a stack feeds the next, so each must be a layer that "
                "returns the axes it takes; the notes below name the type");
  static_assert((std::is_same_v<typename L::In, typename pattern_detail::FirstOf<L...>::In> && ...),
                "pattern_axes_agree: every layer type of a stack must take and return the same axes as the first");
};

template <class... L>
struct Pattern final : LayerStack<StackEnd::multiple, L...> {};
template <class... L>
struct PatternCut final : LayerStack<StackEnd::cut, L...> {};
template <class... L>
struct Layers final : LayerStack<StackEnd::exact, L...> {};

}  // namespace llmtk
