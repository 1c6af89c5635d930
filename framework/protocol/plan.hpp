// Planner and Ctx: how a part asks for memory and finds it again.
//   declare(Planner&)  names parameters (parameter arena, mirrored by the gradient arena) and
//                      saved activations or backward scratch (activation arena), once per plan;
//   forward/backward(Ctx&, ...) read them back through the slots declare returned.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../core/arena.hpp"
#include "../core/dims.hpp"

namespace llmtk {

// A parameter: its entry in the parameter arena and, unless it is frozen, in the gradient arena
// (which holds trainable parameters only).
struct ParamSlot {
  int id = -1;
  int grad = -1;
  explicit operator bool() const { return id >= 0; }
};
struct ActSlot {
  int id = -1;
};

class Planner;
struct Ctx;
class Communicator;  // core/communicator.hpp
class Probe;         // protocol/probe.hpp
class GradientHook;  // protocol/probe.hpp

// A part beside a Linear (layers/linear.hpp) that adds to its output: LoRA and its kin. It declares
// its own parameters (under the linear's scope) and accumulates its own gradients.
class LinearAdapter {
 public:
  virtual ~LinearAdapter() = default;
  virtual void declare(Planner& p) = 0;
  // y: [N, out] += the adapter's contribution; x: [N, in]
  virtual void forward(Ctx& c, TensorRef y, TensorRef x) = 0;
  // dx: [N, in] += the adapter's input gradient (dx may be null); its parameter gradients +=
  virtual void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) = 0;
};

class Planner {
 public:
  // `params_fixed`: the parameter arena is already planned (a re-plan for another batch or
  // sequence length); param() then finds each name instead of adding it.
  Planner(const Dims& sizes, std::int64_t batch, std::int64_t seq, Arena& params, Arena& acts,
          bool params_fixed = false)
      : dims(sizes), B(batch), T(seq), params_(params), acts_(acts), fixed_(params_fixed) {}

  const Dims& dims;
  // The rows activations are planned for: batch and sequence (a part planning per-token work on
  // other rows, an MoE's experts, changes them for a scope with rows()).
  std::int64_t B, T;
  // An encoder-decoder's source length: the encoder's rows and the keys its decoder's
  // cross-attention reads (Flow::memory); 0 in a model without an encoder side.
  std::int64_t S = 0;

  class Rows {
   public:
    Rows(Planner& p, std::int64_t b, std::int64_t t) : p_(p), B_(p.B), T_(p.T) { p.B = b, p.T = t; }
    ~Rows() { p_.B = B_, p_.T = T_; }
    Rows(const Rows&) = delete;
    Rows& operator=(const Rows&) = delete;

   private:
    Planner& p_;
    std::int64_t B_, T_;
  };
  // Activations declared in this scope are planned for b × t rows.
  Rows rows(std::int64_t b, std::int64_t t) { return Rows(*this, b, t); }

  // A parameter is frozen when its full name matches one of the model's freeze patterns
  // (AnyModel::freeze) and none of its "!pattern" exceptions: it keeps its values but gets no
  // gradient and no optimizer state.
  ParamSlot param(std::string_view name, std::vector<std::int64_t> shape, ParamKind kind) {
    std::string full = prefix_ + std::string(name);
    if (!alias_to_.empty() && full.starts_with(alias_to_)) {
      // Another part's parameter under a second name (reuse_params): found, never added.
      full = alias_from_ + full.substr(alias_to_.size());
      const int id = params_.find(full);
      LLMTK_CHECK(id >= 0 && params_.entries()[std::size_t(id)].shape == shape, "plan", "'", prefix_, name,
                  "' reuses '", full, "', which is not planned with that shape");
      return {id, params_.entries()[std::size_t(id)].grad};
    }
    if (!fixed_) {
      const bool frozen = matches_any(full);
      const int id = params_.add(std::move(full), std::move(shape), DType::f32, kind, frozen);
      return {id, params_.entries()[id].grad};
    }
    int id = params_.find(full);
    LLMTK_CHECK(id >= 0 && params_.entries()[id].shape == shape, "plan", "parameter '", full,
                "' changed between plans");
    return {id, params_.entries()[id].grad};
  }
  // Adapters: called by every Linear with its weight's full name and shape; returns the adapter to
  // put beside it, or null. Set by the strategy that adds adapters (LoRA); none by default.
  std::function<std::shared_ptr<LinearAdapter>(std::string_view weight, std::int64_t out, std::int64_t in)> adapters;
  std::shared_ptr<LinearAdapter> adapter_for(std::string_view weight, std::int64_t out, std::int64_t in) {
    if (!adapters) return nullptr;
    auto a = adapters(prefix_ + std::string(weight), out, in);
    if (a) {
      auto s = scope(std::string(weight) + "_adapter");
      in_adapter_ = true;  // freeze patterns are for the model's own parameters: adapters train
      a->declare(*this);
      in_adapter_ = false;
    }
    return a;
  }
  // Glob patterns over full parameter names ('*' matches any run of characters, dots included):
  // "embed.*", "blocks.*.attn.w?"... set before the first plan.
  std::vector<std::string> freeze;
  static bool glob(std::string_view pattern, std::string_view name) {
    if (pattern.empty()) return name.empty();
    if (pattern[0] == '*') {
      for (std::size_t i = 0; i <= name.size(); ++i)
        if (glob(pattern.substr(1), name.substr(i))) return true;
      return false;
    }
    return !name.empty() && (pattern[0] == '?' || pattern[0] == name[0]) && glob(pattern.substr(1), name.substr(1));
  }
  // The dtype of activations and activation gradients in this plan (f32, or bf16 with
  // precision = "bf16"; docs/bf16.md). Statistics a backward reads are declared with stat().
  DType act_dtype = DType::f32;
  ActSlot act(std::string_view name, std::vector<std::int64_t> shape) { return act(name, std::move(shape), act_dtype); }
  // A statistic saved for backward (norm means and rstd, attention's lse): f32 in every precision.
  ActSlot stat(std::string_view name, std::vector<std::int64_t> shape) { return act(name, std::move(shape), DType::f32); }
  // A matmul reads parameter `w` (Linear, a tied head): in bf16 it gets a bf16 working copy.
  std::vector<int>* matmul_weights = nullptr;
  void read_by_matmul(ParamSlot w) {
    if (matmul_weights && w) matmul_weights->push_back(w.id);
  }
  // Tensor parallel (docs/distributed.md): parameter `s` is divided among the ranks along
  // dimension `dim` (0: its rows, 1: its columns); dims.tp > 1 sized it as this rank's share.
  // Parameters never named here are whole on every rank.
  std::vector<std::pair<int, int>>* splits = nullptr;
  void split(ParamSlot s, int dim) {
    if (splits && s) splits->emplace_back(s.id, dim);
  }
  ActSlot act(std::string_view name, std::vector<std::int64_t> shape, DType dtype) {
    std::string full = prefix_ + std::string(name);
    // Shared memory (recomputed blocks, experts): the innermost sharing first, then the ones around it.
    std::string twin = full;
    for (auto it = shares_.rbegin(); it != shares_.rend(); ++it)
      if (twin.starts_with(it->second)) twin = it->first + twin.substr(it->second.size());
    if (twin != full) {
      const int id = acts_.find(twin);
      LLMTK_CHECK(id >= 0 && acts_.entries()[id].shape == shape, "plan", "'", full, "' has no twin '", twin,
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
  // Prompt tuning: this many trainable vectors stand at positions 0 .. soft_prompt − 1 of every
  // row, before its tokens (the embedding owns them; AnyModel::set_soft_prompt).
  std::int64_t soft_prompt = 0;
  // Prefix tuning: each attention layer's queries see this many trainable keys and values first;
  // the tokens stand at positions prefix .. prefix + T − 1 (AnyModel::set_prefix).
  std::int64_t prefix_tokens = 0;
  // Prefix tuning's reparameterisation (Li and Liang 2021): the hidden width of the MLP that makes
  // every layer's prefix from one shared embedding (0: the prefixes are parameters themselves).
  std::int64_t prefix_projection = 0;
  // A parameter several parts share, under its full name (no scope): the first part to ask
  // declares it, the others find it; its gradient accumulates from every part that reads it.
  ParamSlot shared_param(std::string_view full_name, std::vector<std::int64_t> shape, ParamKind kind) {
    const int id = params_.find(full_name);
    if (id >= 0) {
      LLMTK_CHECK(params_.entries()[std::size_t(id)].shape == shape, "plan", "shared parameter '", full_name,
                  "' is asked for with another shape");
      return {id, params_.entries()[std::size_t(id)].grad};
    }
    LLMTK_CHECK(!fixed_, "plan", "shared parameter '", full_name, "' changed between plans");
    const int nid = params_.add(std::string(full_name), std::move(shape), DType::f32, kind, matches_any(full_name));
    return {nid, params_.entries()[std::size_t(nid)].grad};
  }
  // While it lives, parameters declared under scope `to` are the same-named ones already declared
  // under `from`: one part's parameters read by a second instance of it that plans its own
  // activations (an encoder-decoder's embedding, run on the source and on the target rows).
  // Their gradients accumulate from both.
  class Reuse {
   public:
    Reuse(Planner& p, std::string from, std::string to) : p_(p) {
      p_.alias_from_ = std::move(from) + ".", p_.alias_to_ = std::move(to) + ".";
    }
    ~Reuse() { p_.alias_from_.clear(), p_.alias_to_.clear(); }
    Reuse(const Reuse&) = delete;
    Reuse& operator=(const Reuse&) = delete;

   private:
    Planner& p_;
  };
  Reuse reuse_params(std::string from, std::string to) { return Reuse(*this, std::move(from), std::move(to)); }
  // While set, activations declared under `to` reuse the same-named ones under `from` (Repeat's
  // recomputed blocks); share_activations("", "") ends it.
  void share_activations(std::string from, std::string to) {
    if (from.empty()) {
      if (!shares_.empty()) shares_.erase(shares_.begin());
    } else {
      shares_.insert(shares_.begin(), {std::move(from), std::move(to)});
    }
  }
  // The same for one scope, inside any sharing around it (an MoE's experts reuse expert 0's
  // memory at other rows); `on` false: nothing is shared.
  class Sharing {
   public:
    Sharing(Planner& p, std::string from, std::string to, bool on) : p_(p), on_(on) {
      if (on_) p_.shares_.push_back({std::move(from), std::move(to)});
    }
    ~Sharing() {
      if (on_) p_.shares_.pop_back();
    }
    Sharing(const Sharing&) = delete;
    Sharing& operator=(const Sharing&) = delete;

   private:
    Planner& p_;
    bool on_;
  };
  Sharing share_activations_within(std::string from, std::string to, bool on) {
    return Sharing(*this, std::move(from), std::move(to), on);
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
  std::vector<std::pair<std::string, std::string>> shares_;  // (from, to), outermost first
  std::string alias_from_, alias_to_;                         // reuse_params, with their dots
  bool in_adapter_ = false;
  bool matches_any(std::string_view name) const {
    if (in_adapter_) return false;
    bool frozen = false;
    for (const auto& f : freeze) {
      if (!f.empty() && f[0] == '!') {
        if (glob(std::string_view(f).substr(1), name)) return false;
      } else {
        frozen = frozen || glob(f, name);
      }
    }
    return frozen;
  }
};

// What flows with the batch besides the hidden stream. A part reads the fields it uses and
// ignores the rest; combinators hand Ctx on unchanged, so a new input is a field here and the
// part that reads it, never an edit to Block, Repeat or a placement. Absent inputs are null.
struct Flow {
  // [B] i32: row b holds lengths[b] real tokens, then padding. Attention hides padding keys.
  TensorRef lengths;
  // [B, T] i32: the document of each token in a packed row (non-decreasing). Attention stays
  // within a document, so packed documents do not see each other.
  TensorRef segments;
  // [B, T] i32, given with segments: each token's position within its document (0 at each
  // document's start). Absolute position schemes read it; RoPE and ALiBi see only distances
  // between a query and a key of one document, which restarting would not change.
  TensorRef positions;
  // [B, T] i32: each token's type (BERT's segment A or B, Embedding<..., TokenTypes>); the model
  // gives type 0 everywhere when the batch names none.
  TensorRef token_types = {};
  // An encoder-decoder (dsl/encoder_decoder_lm.hpp): the source ids [B, S] i32 the encoder reads,
  // and their padding lengths [B] i32 (null: no padding), which hide padded keys from the
  // encoder's attention and from every cross-attention.
  TensorRef source = {};
  TensorRef source_lengths = {};
  // The encoder's output [B, S, C] that the decoder's cross-attention layers read (their keys and
  // values), and its gradient [B, S, C], into which each of them adds (+=) in backward.
  TensorRef memory = {};
  TensorRef dmemory = {};
};

// Statistics parts report from a forward (an MoE router's load, its auxiliary losses), by name;
// the model clears them before each forward and reports each name's mean over the parts that
// added it (AnyModel::part_stats).
class PartStats {
 public:
  void add(std::string_view name, double value) {
    for (auto& e : entries_)
      if (e.name == name) return void((e.sum += value, ++e.count));
    entries_.push_back({std::string(name), value, 1});
  }
  void clear() { entries_.clear(); }
  std::vector<std::pair<std::string, double>> means() const {
    std::vector<std::pair<std::string, double>> out;
    for (const auto& e : entries_) out.emplace_back(e.name, e.sum / double(e.count));
    return out;
  }

 private:
  struct Entry {
    std::string name;
    double sum;
    int count;
  };
  std::vector<Entry> entries_;
};

// What forward and backward see: the arenas, the sizes, this plan's batch and sequence length.
struct Ctx {
  Arena& params;
  Arena& grads;
  Arena& acts;
  const Dims& dims;
  std::int64_t B, T;
  std::int64_t pos0 = 0;  // position of the first token (non-zero only when decoding with a KV cache)
  Flow flow{};            // inputs beyond the hidden stream: padding, document boundaries
  // Training: this forward and backward's dropout seed (a part mixes in its own name); 0 outside
  // training, where dropout is the identity.
  std::uint64_t dropout_seed = 0;

  // Working copies (docs/bf16.md): twin[id] is parameter id's bf16 copy in `working`, or -1.
  const Arena* working = nullptr;
  const std::vector<int>* twin = nullptr;

  TensorRef p(ParamSlot s) const { return params[s.id]; }
  // What a matmul reads for parameter s: its bf16 working copy when it has one, else itself.
  TensorRef w(ParamSlot s) const {
    const int t = twin && s.id >= 0 ? (*twin)[std::size_t(s.id)] : -1;
    return t >= 0 ? (*working)[t] : params[s.id];
  }
  // A parameter's gradient (+=), or null when the parameter is frozen or absent.
  TensorRef g(ParamSlot s) const { return grads[s.grad]; }
  // Forward only: where parts report statistics (null: nobody asked).
  PartStats* stats = nullptr;
  // Forward only, when the trainer records internals: what parts show of their insides
  // (protocol/probe.hpp); null otherwise.
  Probe* probe = nullptr;
  // Backward only, in data-parallel training: told as each layer's backward finishes
  // (protocol/probe.hpp); null otherwise.
  GradientHook* gradient_hook = nullptr;
  // A row window (an MoE expert's tokens): a(s) is rows row0 .. row0 + rows of each activation,
  // which the part planned per row (Planner::rows); rows < 0: whole activations.
  std::int64_t row0 = 0, rows = -1;
  // Tensor parallel (docs/distributed.md): the ranks that hold the other shares of the split
  // parts (dims.tp of them; null: none) and this rank among them. A split part sums its output
  // and its input gradient over them (layers/common.hpp, tp_sum).
  Communicator* tp = nullptr;
  int tp_rank = 0;

  TensorRef a(ActSlot s) const { return rows < 0 ? acts[s.id] : acts[s.id].row_range(row0, rows); }
  // The residual stream's shape [B, T, C] over an activation slot, and one with another width.
  TensorRef hidden(ActSlot s) const { return a(s).view({B, T, dims.d_model}); }
};

}  // namespace llmtk
