// Named axes. A part declares the axes it takes (In) and returns (Out) as Axes<...>; combinators
// check at compile time that consecutive parts connect (rule axes_connect).
#pragma once
#include <string>
#include <string_view>
#include <type_traits>

namespace llmtk {

// clang-format off
struct Batch   { static constexpr std::string_view name = "Batch"; };
struct Seq     { static constexpr std::string_view name = "Seq"; };
struct Model   { static constexpr std::string_view name = "Model"; };
struct Heads   { static constexpr std::string_view name = "Heads"; };
struct KvHeads { static constexpr std::string_view name = "KvHeads"; };
struct HeadDim { static constexpr std::string_view name = "HeadDim"; };
struct Ffn     { static constexpr std::string_view name = "Ffn"; };
struct Vocab   { static constexpr std::string_view name = "Vocab"; };
struct Score   { static constexpr std::string_view name = "Score"; };
struct Label   { static constexpr std::string_view name = "Label"; };
// clang-format on

template <class... A>
struct Axes {
  static constexpr int rank = sizeof...(A);
  static std::string str() {
    std::string s = "[";
    bool first = true;
    ((s += (first ? "" : ", "), s += A::name, first = false), ...);
    return s + "]";
  }
};

using Tokens = Axes<Batch, Seq>;               // token ids
using Hidden = Axes<Batch, Seq, Model>;        // the residual stream
using Logits = Axes<Batch, Seq, Vocab>;        // the LM head's output
using Scores = Axes<Batch, Seq, Score>;        // a score head's output: one number per position
using Classes = Axes<Batch, Seq, Label>;       // a classifier's output: one logit per class and position

// `To` consumes what `From` produces. On failure the compiler's note shows both Axes<...> types,
// which read as "takes [Batch, Seq, Model] but got [Batch, Seq, Ffn]".
template <class Consumer, class Takes, class Got>
struct AxesConnect {
  static_assert(std::is_same_v<Takes, Got>,
                "axes_connect: a part's output axes must equal the next part's input axes; "
                "the instantiation note above reads AxesConnect<consumer, axes it takes, axes it got>");
  static constexpr bool value = true;
};

}  // namespace llmtk
