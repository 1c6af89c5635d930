// The bf16 fallback every backend shares (docs/bf16.md): an op that has no bf16 code runs on
// widened copies. `widened<op>` widens each bf16 argument exactly into f32 scratch (one copy per
// distinct buffer, so an output that aliases an input stays aliased), runs the op's f32 code, and
// rounds its outputs — the leading arguments, ops.hpp's "outputs first" — back into the caller's
// bf16 tensors, once. That is the bf16 contract to the letter: compute in f32, round on store.
// Calls without a bf16 argument go straight to the op. Conversions use the backend's own
// `convert`, so the copies stay in the backend's memory (host or GPU).
#pragma once
#include <array>
#include <cstdint>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "core/memory.hpp"
#include "ops/ops.hpp"

namespace llmtk::backend {

// How many leading arguments of an op it writes. The optimizer ops and sum_squares take f32 only
// (their outputs are not all leading, and they never see bf16); convert is never widened.
constexpr int outputs_of(std::string_view op) {
  constexpr std::pair<std::string_view, int> kOutputs[] = {
      {"matmul_forward", 1},        {"matmul_backward", 3},       {"matmul_gelu_forward", 2},
      {"gelu_matmul_backward", 3},  {"add_forward", 1},           {"layernorm_forward", 3},
      {"layernorm_backward", 3},    {"rmsnorm_forward", 2},       {"rmsnorm_backward", 2},
      {"rope_forward", 1},          {"rope_backward", 1},         {"attention_forward", 2},
      {"attention_backward", 3},    {"gelu_forward", 1},          {"gelu_backward", 1},
      {"relu_forward", 1},          {"relu_backward", 1},         {"silu_forward", 1},
      {"silu_backward", 1},         {"swiglu_forward", 1},        {"swiglu_backward", 2},
      {"geglu_forward", 1},         {"geglu_backward", 2},        {"embedding_forward", 1},
      {"embedding_backward", 1},    {"positions_forward", 1},     {"positions_backward", 1},
      {"sinusoidal_forward", 1},    {"cross_entropy_forward", 1}, {"cross_entropy_backward", 1},
      {"adamw_step", 0},            {"sgd_step", 0},              {"lion_step", 0},
      {"sum_squares", 0},           {"scale_forward", 1},         {"convert", -1},
      {"dropout", 1},               {"tanh_forward", 1},          {"tanh_backward", 1},
      {"moe_route_forward", 4},     {"moe_route_backward", 1},    {"moe_gather", 1},
      {"moe_combine_forward", 1},   {"moe_combine_backward", 2},
      {"mingru_gates_forward", 2},  {"mingru_gates_backward", 2}, {"linear_scan_forward", 1},
      {"linear_scan_backward", 2},  {"vocab_parallel_ce_forward", 1}, {"vocab_parallel_ce_backward", 1},
  };
  for (const auto& [name, n] : kOutputs)
    if (name == op) return n;
  return -2;
}
// Every op in the list has an entry: an op added to op_list.hpp without one fails here.
#define LLMTK_X(name, params, args) static_assert(outputs_of(#name) >= -1, "widen.hpp: no outputs_of entry for " #name);
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

// Whether `op` names an op of op_list.hpp; all_ops: every name of a list does (a backend's list of
// ops with bf16 code of its own is checked with it, so a misspelt name fails to compile instead
// of leaving the op silently widened).
constexpr bool is_op(std::string_view op) {
#define LLMTK_X(name, params, args) \
  if (op == #name) return true;
  LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
  return false;
}
template <std::size_t N>
constexpr bool all_ops(const std::string_view (&names)[N]) {
  for (auto n : names)
    if (!is_op(n)) return false;
  return true;
}

// Scratch for the widened copy in `slot` of the current op call: at least `count` floats in the
// memory of `device`, grown once and reused (backends/widen.cpp). Ops run one at a time.
float* widen_scratch(Device device, int slot, std::int64_t count);

template <auto convert>
class Widening {
 public:
  static constexpr int kMaxCopies = 16;

  TensorRef widen(TensorRef t) {
    if (!t || t.dtype != DType::bf16) return t;
    TensorRef wide = t;
    wide.dtype = DType::f32;
    for (int i = 0; i < n_; ++i)
      if (copies_[i].narrow.data == t.data && copies_[i].narrow.numel() == t.numel()) {
        wide.data = copies_[i].wide.data;  // the same buffer seen again (y aliasing x): one copy
        return wide;
      }
    LLMTK_CHECK(n_ < kMaxCopies, "bf16 fallback", "more than ", kMaxCopies, " bf16 tensors in one op call");
    wide.data = widen_scratch(t.device, n_, t.numel());
    convert(wide, t);
    copies_[n_++] = {t, wide};
    return wide;
  }
  template <class T>
  T widen(const T& v) {  // masks, scalars, hyper-parameters: as they are
    return v;
  }
  bool any() const { return n_ > 0; }

 private:
  struct Copy {
    TensorRef narrow, wide;
  };
  std::array<Copy, kMaxCopies> copies_{};
  int n_ = 0;
};

// fn on widened copies of a's bf16 tensors, its first `outputs` arguments rounded back (a backend
// may also call it for one path of an op: the CUDA attention's tiled kernel).
template <auto fn, int outputs, auto convert, class... A>
void widened(A... a) {
  Widening<convert> w;
  const std::tuple<A...> given{a...};
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    const std::tuple<A...> wide{w.widen(std::get<I>(given))...};  // braced: left to right
    if (!w.any()) return fn(a...);
    std::apply(fn, wide);
    auto narrow = [&](const auto& out, const auto& computed) {
      if constexpr (std::is_same_v<std::decay_t<decltype(out)>, TensorRef>)
        if (out && out.dtype == DType::bf16 && out.data != computed.data) convert(out, computed);
    };
    ((I < std::size_t(outputs) ? narrow(std::get<I>(given), std::get<I>(wide)) : void()), ...);
  }(std::index_sequence_for<A...>{});
}

// The table entry of a backend op with the bf16 fallback: widened<op> with the op's output count
// (convert itself is entered as it is).
template <auto fn, int outputs, auto convert, class... A>
constexpr auto widened_entry(void (*)(A...)) -> void (*)(A...) {
  if constexpr (outputs < 0) return fn;
  else return &widened<fn, outputs, convert, A...>;
}

}  // namespace llmtk::backend

// In a backend's table, `LLMTK_WIDENED(cpu, silu_forward)` in place of `&cpu::silu_forward`.
#define LLMTK_WIDENED(ns, name) \
  ::llmtk::backend::widened_entry<&ns::name, ::llmtk::backend::outputs_of(#name), &ns::convert>(&ns::name)
