// Ablate<A, B, ...>: alternatives written where a part goes, so that one type names a family of
// architectures. `Block<RMSNorm, GQA<RoPE>, Ablate<SwiGLU, GeGLU>, PreNorm>` is two blocks. An
// Ablate is not a part: registering the type (models/ablation.hpp) expands it into its variants
// before anything is instantiated, and each variant is an ordinary composition, checked by the
// same rules as one written by hand. docs/experiments.md has the guide.
#pragma once
#include "../protocol/visit.hpp"  // FixedString

namespace llmtk {

// Names an axis: Ablate<Axis<"pos">, ...>. Axes with the same name vary together (the i-th
// alternative of each in one variant), so one axis can change two slots at once.
template <FixedString Name>
struct Axis {
  static constexpr std::string_view name = Name.view();
};

// Names an alternative: Alt<"learned", LearnedPositions>. Unnamed ones are called by their first
// tag ("swiglu", "alibi") or their type name in lower case ("nope").
template <FixedString Name, class T>
struct Alt {
  static constexpr std::string_view name = Name.view();
  using type = T;
};

// The alternatives (optionally after an Axis<...>). Deliberately not a part: used in a preset
// registered as one architecture (preset_entry), it fails the slot's check, whose note names it.
template <class... Alternatives>
struct Ablate {
  static_assert(sizeof...(Alternatives) >= 1, "Ablate<...> needs at least one alternative");
};

}  // namespace llmtk
