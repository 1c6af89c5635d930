// Planner and Ctx: how a part asks for memory and finds it again.
//   declare(Planner&)  names parameters (parameter arena, mirrored by the gradient arena) and
//                      saved activations or backward scratch (activation arena), once per plan;
//   forward/backward(Ctx&, ...) read them back through the slots declare returned.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/arena.hpp"
#include "../core/dims.hpp"

namespace llmtk {

struct ParamSlot {
  int id = -1;
  explicit operator bool() const { return id >= 0; }
};
struct ActSlot {
  int id = -1;
};

class Planner {
 public:
  // `params_fixed`: the parameter arena is already planned (a re-plan for another batch or
  // sequence length); param() then finds each name instead of adding it.
  Planner(const Dims& sizes, std::int64_t batch, std::int64_t seq, Arena& params, Arena& acts,
          bool params_fixed = false)
      : dims(sizes), B(batch), T(seq), params_(params), acts_(acts), fixed_(params_fixed) {}

  const Dims& dims;
  const std::int64_t B, T;

  ParamSlot param(std::string_view name, std::vector<std::int64_t> shape, ParamKind kind) {
    std::string full = prefix_ + std::string(name);
    if (!fixed_) return {params_.add(std::move(full), std::move(shape), DType::f32, kind)};
    int id = params_.find(full);
    LLMTK_CHECK(id >= 0 && params_.entries()[id].shape == shape, "plan", "parameter '", full,
                "' changed between plans");
    return {id};
  }
  ActSlot act(std::string_view name, std::vector<std::int64_t> shape, DType dtype = DType::f32) {
    std::string full = prefix_ + std::string(name);
    if (!share_from_.empty() && full.starts_with(share_to_)) {
      // Recomputation: this block reuses the first block's activation memory.
      const std::string first = share_from_ + full.substr(share_to_.size());
      const int id = acts_.find(first);
      LLMTK_CHECK(id >= 0 && acts_.entries()[id].shape == shape, "plan", "'", full, "' has no twin '", first,
                  "' to share memory with");
      return {id};
    }
    return {acts_.add(std::move(full), std::move(shape), dtype)};
  }

  // Activation recomputation: blocks keep only their inputs and recompute the rest in backward,
  // so all blocks can share one block's activation memory.
  bool recompute_blocks = false;
  // Decoding: each attention layer keeps keys and values of up to this many positions (0: none).
  std::int64_t kv_cache = 0;
  // While set, activations declared under `to` reuse the same-named ones under `from`.
  void share_activations(std::string from, std::string to) { share_from_ = std::move(from), share_to_ = std::move(to); }

  // Names declared inside a scope get "name." in front: blocks.3.attn.wq.
  class Scope {
   public:
    Scope(Planner& p, std::string_view name) : p_(p), saved_(p.prefix_.size()) {
      if (!name.empty()) p_.prefix_ += std::string(name) + ".";
    }
    ~Scope() { p_.prefix_.resize(saved_); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Planner& p_;
    std::size_t saved_;
  };
  Scope scope(std::string_view name) { return Scope(*this, name); }
  const std::string& prefix() const { return prefix_; }

 private:
  Arena& params_;
  Arena& acts_;
  bool fixed_;
  std::string prefix_, share_from_, share_to_;
};

// What forward and backward see: the arenas, the sizes, this plan's batch and sequence length.
struct Ctx {
  Arena& params;
  Arena& grads;
  Arena& acts;
  const Dims& dims;
  std::int64_t B, T;
  std::int64_t pos0 = 0;  // position of the first token (non-zero only when decoding with a KV cache)

  TensorRef p(ParamSlot s) const { return params[s.id]; }
  TensorRef g(ParamSlot s) const { return grads[s.id]; }
  TensorRef a(ActSlot s) const { return acts[s.id]; }
  // The residual stream's shape [B, T, C] over an activation slot, and one with another width.
  TensorRef hidden(ActSlot s) const { return a(s).view({B, T, dims.d_model}); }
};

}  // namespace llmtk
