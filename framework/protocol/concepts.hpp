// The concepts a part must satisfy, each split into named one-rule requirements so that a failed
// check names the rule ("required for the satisfaction of 'IsNorm<N>'"), not a 40-line type.
#pragma once
#include <concepts>
#include <cstdint>
#include <type_traits>

#include "../core/axes.hpp"
#include "../core/tensor.hpp"
#include "plan.hpp"

namespace llmtk {

// The role a part plays in a block. Structure alone cannot tell a norm from a feed-forward (both
// map [Batch, Seq, Model] to itself), so each part says what it is.
enum class Role { norm, mixer, feedforward, embedding, head, block, stack, model, other };

// ---- one rule each ----
// (Two requires-expressions: a part that lacks both is told about In first, in one note.)
template <class L>
concept DeclaresAxes = requires { typename L::In; } && requires { typename L::Out; };
template <class L>
concept DeclaresMemory = requires(L& l, Planner& p) { l.declare(p); };
template <class L>
concept HasForward = requires(L& l, Ctx& c, TensorRef t) { l.forward(c, t, t); };
template <class L>
concept HasBackward = requires(L& l, Ctx& c, TensorRef t) { l.backward(c, t, t, t); };
template <class L>
concept CountsFlops = requires(const Dims& d, std::int64_t T) {
  { L::flops_per_token(d, T) } -> std::convertible_to<double>;
};
template <class L>
concept HasRole = requires { { L::role } -> std::convertible_to<Role>; };
// (is_same_v rather than std::same_as: a failure's note then shows these names, not libstdc++'s.)
template <class L>
concept KeepsAxes = std::is_same_v<typename L::In, typename L::Out>;
template <class L>
concept TakesHidden = std::is_same_v<typename L::In, Hidden>;

template <class L>
concept IsNorm = L::role == Role::norm;
template <class L>
concept IsMixer = L::role == Role::mixer;
template <class L>
concept IsFeedForward = L::role == Role::feedforward;
template <class L>
concept IsEmbedding = L::role == Role::embedding;
template <class L>
concept IsHead = L::role == Role::head;

// ---- the concepts ----
template <class L>
concept Layer = DeclaresAxes<L> && DeclaresMemory<L> && HasForward<L> && HasBackward<L> &&
                CountsFlops<L> && HasRole<L>;
template <class L>
concept Norm = Layer<L> && IsNorm<L> && TakesHidden<L> && KeepsAxes<L>;
template <class L>
concept Mixer = Layer<L> && IsMixer<L> && TakesHidden<L> && KeepsAxes<L>;
template <class L>
concept FeedForward = Layer<L> && IsFeedForward<L> && TakesHidden<L> && KeepsAxes<L>;

// What a composition that breaks a rule is instead of itself (Block<SwiGLU, ...>): its
// static_asserts name the rule, and this stand-in is still a complete part with the axes its
// slot needs, so the code that uses it (Repeat, DecoderLM, ModelOf) compiles on quietly instead
// of burying the one error under a cascade of its own. It never runs: the build has failed.
template <Role R, class In_ = Hidden, class Out_ = Hidden>
struct Rejected {
  static constexpr Role role = R;
  using In = In_;
  using Out = Out_;
  void declare(Planner&) {}
  void forward(Ctx&, TensorRef, TensorRef) {}
  void backward(Ctx&, TensorRef, TensorRef, TensorRef) {}
  static double flops_per_token(const Dims&, std::int64_t) { return 0; }
};

// Position schemes act where they belong: additive ones at the embedding, attention ones in
// the mixer.
enum class PositionKind { additive, attention };
template <class P>
concept DeclaresPositionKind = requires { { P::kind } -> std::convertible_to<PositionKind>; };
template <class P>
concept PositionScheme = DeclaresPositionKind<P>;
template <class P>
concept AdditivePositions = PositionScheme<P> && P::kind == PositionKind::additive;
template <class P>
concept AttentionPositions = PositionScheme<P> && P::kind == PositionKind::attention;

// A placement says where a block's norms sit around each sublayer: it provides Wrap<Norm, F>.
template <class P>
concept IsPlacement = requires { { P::is_placement } -> std::convertible_to<bool>; } && P::is_placement;
template <class P>
concept Placement = IsPlacement<P>;

// An activation function for MLP<Act>: names the forward and backward ops (two requirements, as
// DeclaresAxes, so that a type with neither gets one note).
template <class A>
concept Activation = requires(TensorRef t) { A::forward(t, t); } && requires(TensorRef t) { A::backward(t, t, t); };

// An activation that also names ops fusing it with the matmuls around it (GELU: cuBLASLt's
// epilogues on CUDA): matmul_forward(y, h, x, w, b) is h = x·wᵀ + b, y = act(h);
// matmul_backward(dh, dw, db, dy, a, w, h) is the backward of y = act(h)·wᵀ + b. MLP<Act> uses
// them when present.
template <class A>
concept FusedActivation = Activation<A> && requires(TensorRef t) {
  A::matmul_forward(t, t, t, t, t);
  A::matmul_backward(t, t, t, t, t, t, t);
};

}  // namespace llmtk
