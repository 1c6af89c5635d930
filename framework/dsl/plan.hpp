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
    return {acts_.add(prefix_ + std::string(name), std::move(shape), dtype)};
  }

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
  std::string prefix_;
};

// What forward and backward see: the arenas, the sizes, this plan's batch and sequence length.
struct Ctx {
  Arena& params;
  Arena& grads;
  Arena& acts;
  const Dims& dims;
  std::int64_t B, T;

  TensorRef p(ParamSlot s) const { return params[s.id]; }
  TensorRef g(ParamSlot s) const { return grads[s.id]; }
  TensorRef a(ActSlot s) const { return acts[s.id]; }
  // The residual stream's shape [B, T, C] over an activation slot, and one with another width.
  TensorRef hidden(ActSlot s) const { return a(s).view({B, T, dims.d_model}); }
};

}  // namespace llmtk
