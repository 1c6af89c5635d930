// ModelOf<Arch>: a composed architecture with its arenas, behind a small virtual interface
// (AnyModel) so the CLI, the trainer and tests pick an architecture by name at run time while
// every layer stays a template resolved at compile time.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/axes.hpp"  // Scores
#include "../core/dims.hpp"
#include "../core/type_name.hpp"
#include "../protocol/visit.hpp"
#include "../protocol/plan.hpp"

namespace llmtk {
class Communicator;  // core/communicator.hpp
}

namespace llmtk {

// What a forward pass reads: token ids and what flows with them (see Flow in protocol/plan.hpp).
// Host or device memory.
struct ModelInputs {
  TensorRef ids;       // [B, T] i32
  TensorRef lengths;   // [B] i32 or null: real tokens per row, padding after them
  TensorRef segments;  // [B, T] i32 or null: documents packed in each row (attention stays within one)
  TensorRef token_types = {};  // [B, T] i32 or null (type 0 everywhere): BERT's segment A / B
  // An encoder-decoder: the encoder's ids [B, S] i32 (then `ids` are the decoder's: the targets
  // shifted right after the decoder start token) and their padding lengths [B] i32 or null.
  TensorRef source = {};
  TensorRef source_lengths = {};
};

// One row of a model's parameter breakdown (llmtk arch show).
struct PartInfo {
  std::string path;   // "embed", "blocks", "blocks.*.attn", ...
  std::string type;   // the part's type as the source spells it
  std::int64_t params = 0;
  int depth = 0;      // indentation level
  std::string note;
};

// Sum of parameter counts whose names start with `prefix`, for the breakdown.
std::int64_t count_params(const Arena& params, std::string_view prefix);
// type_name<T>() with ">>" for "> >", as the source would spell it.
std::string tidy_type_name(std::string s);
template <class T>
std::string pretty_type_name() {
  return tidy_type_name(type_name<T>());
}

class AnyModel {
 public:
  // Checks `dims` against every size rule of the composition (core and its parts').
  // `scorer`: the head is a score head (one number per position) rather than an LM head;
  // `outputs`: the width of each position's output (0: dims.vocab, an LM head's).
  AnyModel(std::string name, const Dims& dims, std::vector<DimsRule> rules, std::vector<std::string_view> tags,
           bool scorer = false, std::int64_t outputs = 0);
  virtual ~AnyModel() = default;
  AnyModel(const AnyModel&) = delete;
  AnyModel& operator=(const AnyModel&) = delete;

  const std::string& name() const { return name_; }
  const Dims& dims() const { return dims_; }
  // What the composition's parts say about themselves: "rope", "mha", "learned_positions"...
  bool has_tag(std::string_view tag) const;
  const std::vector<DimsRule>& rules() const { return rules_; }
  // The width of each position's output: dims().vocab for a language model (logits), 1 for a
  // score head (a reward or value model, layers/score_head.hpp), model.n_labels for a classifier
  // (layers/class_head.hpp).
  // Under tensor parallel, this rank's share of the logits (dims().vocab / tp columns).
  std::int64_t outputs() const { return scorer_ ? 1 : outputs_ / run_dims_.tp; }
  bool scorer() const { return scorer_; }
  bool classifier() const { return has_tag("class_head"); }
  // An encoder-decoder (dsl/encoder_decoder_lm.hpp): forward reads ModelInputs::source too.
  bool encoder_decoder() const { return has_tag("encoder_decoder"); }
  std::int64_t batch() const { return B_; }
  std::int64_t seq() const { return T_; }
  std::int64_t source_len() const { return S_; }  // an encoder-decoder's planned source length

  // The structure as the types read, one "Name = Composition<...>" line per strong name.
  virtual std::vector<std::string> structure() const = 0;
  // The part tree down to `max_depth` (0: the model's own parts), from the visitor.
  virtual std::vector<PartInfo> parts(int max_depth = 2) const = 0;
  // Forward FLOPs per token at sequence length T (a training step is about 3x this); for a
  // mixture of experts, those of the experts a token visits.
  virtual double forward_flops_per_token(std::int64_t T) const = 0;
  // Parameters one token's forward reads: all of them, less the experts an MoE layer's router did
  // not choose (after plan()).
  virtual std::int64_t active_param_count() const = 0;
  // What parts reported from the last forward (an MoE router's load and auxiliary losses), each a
  // mean over the parts that reported it.
  std::vector<std::pair<std::string, double>> part_stats() const { return stats_.means(); }

  // Plans memory for batch B and sequence T (parameters once, activations every time). Cheap:
  // nothing is allocated until allocate(), so the size of any model can be shown.
  // recompute: blocks keep only their inputs and recompute activations in backward (less memory,
  // about one more forward pass of compute).
  // An encoder-decoder's sources have S positions (0: S = T) while its targets have T.
  void plan(std::int64_t B, std::int64_t T, bool recompute = false, std::int64_t S = 0);
  // The dtype of activations and their gradients (docs/bf16.md), before the first plan(): f32, or
  // bf16 — then every parameter a matmul reads also gets a bf16 working copy, rebuilt from the
  // f32 master weights at the first forward after they may have changed (an optimizer step, a
  // load: anything that took params() for writing).
  void set_precision(DType activations);
  DType precision() const { return precision_; }
  // Plans for decoding one token at a time (batch 1) with a KV cache of `cache_len` positions;
  // an encoder-decoder's encoder for a source of `source_len` tokens (encode() runs it).
  void plan_decode(std::int64_t cache_len, std::int64_t source_len = 0);
  // An encoder-decoder, after plan_decode: runs the encoder once on `source` ([1, S] i32); every
  // decode() until the next encode() reads its output (each cross-attention layer computes the
  // memory's keys and values at the first decoded position and keeps them).
  void encode(TensorRef source);
  // Decoding: runs `ids` ([1, T] i32) at positions pos0 .. pos0 + T − 1 against the cache, which
  // keeps their keys and values. Returns the logits of the last position ([vocab]).
  const float* decode(TensorRef ids, std::int64_t pos0);
  void allocate();
  // Initialises parameters from `seed` by their kind (see ParamKind); zeroes gradients.
  void init(std::uint64_t seed);
  void zero_grad() { grads_.zero(); }
  // Dropout (LoRA's): the seed of the next forward and backward, set per micro-batch by the
  // trainer, which resets it to 0 (no dropout: evaluation, generation) after the step.
  void set_dropout_seed(std::uint64_t seed) { dropout_seed_ = seed; }
  // Internals (train/internals.hpp): every forward() until the next call shows its parts' insides
  // to `probe` (null: none, the default).
  void set_probe(Probe* probe) { probe_ = probe; }
  // Data parallel (train/distributed.hpp): every backward() until the next call tells `hook` as
  // each layer's backward finishes (null: none, the default).
  void set_gradient_hook(GradientHook* hook) { gradient_hook_ = hook; }

  // Tensor parallel (docs/distributed.md), before the first plan(): the ranks of `ranks` divide
  // every attention layer's heads and every feed-forward's hidden width among them (Megatron-LM's
  // column-parallel then row-parallel maps, their partial sums added over the ranks once per
  // sublayer in forward and once in backward); this process plans, holds and trains its share,
  // and every other parameter (embeddings, norms, the head) whole. Refused, naming the reason,
  // when a part of the model is not one that splits or a size does not divide (rules
  // tp_divides_heads, tp_divides_kv_heads, tp_divides_d_ff).
  void set_tensor_parallel(Communicator& ranks);
  Communicator* tensor_parallel() const { return tp_; }
  // The dims the parts are planned and run with: dims() with this rank's share of the heads and
  // the hidden width under tensor parallel (Dims::tp > 1), else dims() itself.
  const Dims& run_dims() const { return run_dims_; }
  // Along which dimension parameter `id` is divided among the tensor-parallel ranks (0: rows,
  // 1: columns), or -1: every rank holds all of it (always -1 without tensor parallel).
  int split_dim(int id) const;
  // Under tensor parallel: an arena of `local`'s entries (the parameters, or an arena mirroring
  // them by name: gradients, optimizer moments) at the whole model's shapes, unallocated.
  Arena whole_like(const Arena& local, std::string name) const;
  // A collective: every rank's share of each entry of `local` gathered into `whole` (allocated,
  // host memory, laid out by whole_like), the same on every rank.
  void gather_whole(const Arena& local, Arena& whole) const;
  // This rank's share of each entry of `whole` into `local`.
  void take_share(const Arena& whole, Arena& local) const;

  // Freezes every parameter whose name matches one of `patterns` (globs: "embed.*",
  // "blocks.*.attn.w*"): frozen parameters keep their values and get no gradient buffer and no
  // optimizer state. Before the first plan(); a pattern that matches nothing fails then.
  void freeze(std::vector<std::string> patterns);
  const std::vector<std::string>& frozen_patterns() const { return freeze_; }
  // Adapters beside Linears (LoRA and its kin): the factory is asked once per Linear with its
  // weight's full name and shape (protocol/plan.hpp). Before the first plan().
  using AdapterFactory = std::function<std::shared_ptr<LinearAdapter>(std::string_view, std::int64_t, std::int64_t)>;
  void set_adapters(AdapterFactory factory);
  // Prompt tuning: `n` trainable vectors ("embed.prompt", [n, C]) before every row's tokens.
  // Before the first plan(). plan(B, T) then runs rows of n + T positions, while forward still
  // takes [B, T] ids and returns [B, T, V] logits (those of the row's own tokens); decoding runs
  // the n vectors into the cache first, so position 0 of a generation is position n inside.
  void set_soft_prompt(std::int64_t n);
  std::int64_t soft_prompt() const { return prompt_n_; }
  // Prefix tuning: every attention layer gets `n` trainable keys and values
  // ("blocks.N.attn.prefix_k", "prefix_v", [n, KV·D]) that its queries see before the tokens' own,
  // which stand at positions n .. n + T − 1, as after n cached positions. With projection = H > 0
  // they are made by an MLP of hidden width H from one shared embedding ("prefix.*", and each
  // layer's "prefix_w[kv]", "prefix_b[kv]"). Before the first plan().
  void set_prefix(std::int64_t n, std::int64_t projection = 0);
  std::int64_t prefix() const { return prefix_n_; }
  std::int64_t prefix_projection() const { return prefix_projection_; }
  // The positions a row's tokens can have: model.max_seq less a soft prompt's or prefix's.
  std::int64_t context() const { return dims_.max_seq - prompt_n_ - prefix_n_; }

  // Runs the model and returns its outputs: logits [B, T, V] in the model's memory, valid until
  // the next forward. An objective (train/objective.hpp) turns them into a loss.
  TensorRef forward(const ModelInputs& in);
  TensorRef forward(TensorRef ids) { return forward(ModelInputs{ids, {}, {}}); }
  // Back-propagates d(loss)/d(outputs) from `doutputs` ([B, T, V], in the model's memory; it may
  // be the outputs' own buffer, which the objective overwrites in place) and accumulates (+=)
  // every trainable parameter's gradient into grads().
  void backward(TensorRef doutputs);

  TensorRef logits() const;  // [B, T, V] from the last forward
  Arena& params() {
    working_stale_ = true;  // the caller may write: the working copy is rebuilt before next use
    return params_;
  }
  Arena& grads() { return grads_; }
  Arena& acts() { return acts_; }
  const Arena& params() const { return params_; }
  const Arena& acts() const { return acts_; }
  const Arena& working() const { return working_; }  // bf16 copies of the matmul weights (bf16 only)
  std::int64_t param_count() const { return params_.numel(); }
  std::int64_t trainable_count() const { return params_.trainable_numel(); }
  std::size_t grads_bytes() const { return grads_.bytes(); }

 protected:
  virtual void declare(Planner& p) = 0;
  virtual void run_forward(Ctx& c, TensorRef logits, TensorRef ids) = 0;
  virtual void run_backward(Ctx& c, TensorRef dlogits, TensorRef ids) = 0;
  virtual void run_encode(Ctx& c) = 0;  // an encoder-decoder's encoder alone (decoding)

 private:
  Ctx ctx() {
    Ctx c{params_, grads_, acts_, run_dims_, B_, Tp_, decoding_ ? 0 : prefix_n_, {}, dropout_seed_};
    if (precision_ == DType::bf16) c.working = &working_, c.twin = &twin_;
    c.tp = tp_, c.tp_rank = tp_rank_;
    return c;
  }
  void prepare_working();  // plans and allocates the working copy as the precision needs
  void refresh_working();  // rebuilds it from the master weights if they may have changed

  Probe* probe_ = nullptr;
  GradientHook* gradient_hook_ = nullptr;
  std::string name_;
  Dims dims_;
  Dims run_dims_;                 // dims_, or this rank's share under tensor parallel
  Communicator* tp_ = nullptr;    // tensor parallel's ranks (null: none)
  int tp_rank_ = 0;
  std::vector<int> split_;        // parameter id → the dimension split among them, or -1
  bool scorer_;
  std::int64_t outputs_;
  std::vector<DimsRule> rules_;
  std::vector<std::string_view> tags_;
  Arena params_{"params"}, grads_{"grads"}, acts_{"activations"};
  // On a device: the step's ids and targets copied from the host, and host copies of what
  // forward and decode hand back (planned with the activations, so a step allocates nothing).
  Arena io_{"io"};
  int io_ids_ = -1, io_lengths_ = -1, io_segments_ = -1, io_positions_ = -1, io_types_ = -1;
  int io_source_ = -1, io_source_lengths_ = -1;
  std::int64_t S_ = 0;  // an encoder-decoder's source length (0: none)
  bool encoded_ = false;  // decoding an encoder-decoder: encode() ran since the plan
  std::vector<float> host_logits_;
  TensorRef on_device(TensorRef t, int io_slot);
  std::vector<std::string> freeze_;
  AdapterFactory adapters_;
  bool planned_ = false;
  std::int64_t B_ = 0, T_ = 0;
  // Prompt tuning: n vectors per row; Tp_ = T_ + n positions run in training (T_ when decoding).
  std::int64_t prompt_n_ = 0, Tp_ = 0;
  std::int64_t prefix_n_ = 0, prefix_projection_ = 0;  // prefix tuning's keys and values per layer
  ActSlot prompt_logits_, prompt_zeros_;  // [B, T, V] the tokens' logits; [n, V] zeros (backward)
  std::vector<std::int32_t> host_ids_, host_lengths_;
  bool recompute_ = false;
  std::int64_t kv_cache_ = 0;
  bool decoding_ = false;
  ActSlot logits_;
  DType precision_ = DType::f32;
  std::vector<int> matmul_weights_;  // parameter ids a matmul reads (from the first plan)
  Arena working_{"working"};
  std::vector<int> twin_;  // parameter id → its entry in working_, or -1
  bool working_stale_ = true;
  std::uint64_t dropout_seed_ = 0;
  PartStats stats_;
  ModelInputs in_;  // the last forward's inputs, in the model's memory
  TensorRef in_positions_;  // with segments: each token's position in its document
  std::vector<std::int32_t> host_positions_;
  std::vector<std::int32_t> host_types_;  // zeros: the token types of a batch that names none
  bool token_types_ = false;              // the embedding adds token types (has_tag "token_types")
};

template <class Arch>
class ModelOf final : public AnyModel {
 public:
  ModelOf(std::string name, const Dims& dims)
      : AnyModel(std::move(name), dims, rules_of<Arch>(), tags_of<Arch>(), std::same_as<typename Arch::Out, Scores>,
                 head_outputs(dims)) {}

  // One line per strong name in the tree, outermost first.
  std::vector<std::string> structure() const override {
    std::vector<std::string> lines;
    add_lines<Arch>(lines);
    return lines;
  }
  std::vector<PartInfo> parts(int max_depth = 2) const override {
    std::vector<PartInfo> rows;
    add_rows<Arch>(rows, "", "", 0, max_depth);
    return rows;
  }
  double forward_flops_per_token(std::int64_t T) const override {
    return Arch::flops_per_token(dims(), T);
  }
  std::int64_t active_param_count() const override {
    return param_count() - inactive_params<Arch>("", 1);
  }

 protected:
  void declare(Planner& p) override { arch_.declare(p); }
  void run_forward(Ctx& c, TensorRef logits, TensorRef ids) override { arch_.forward(c, logits, ids); }
  void run_backward(Ctx& c, TensorRef dlogits, TensorRef ids) override {
    arch_.backward(c, TensorRef{}, dlogits, ids);
  }
  void run_encode(Ctx& c) override {
    if constexpr (requires { arch_.encode(c); }) arch_.encode(c);
    else fail(name(), "has no encoder to run on its own: encode() is for encoder-decoders");
  }

 private:
  // "LlamaBlock = Block<RMSNorm, GQA<RoPE>, SwiGLU, PreNorm>" for each strong name T.
  template <class T>
  static void add_lines(std::vector<std::string>& lines) {
    if constexpr (requires { typename T::Composition; }) {
      const std::string name = pretty_type_name<T>(), comp = pretty_type_name<typename T::Composition>();
      const std::string line = comp == name ? name : name + " = " + comp;
      if (std::find(lines.begin(), lines.end(), line) == lines.end()) lines.push_back(line);
    }
    for_each_child<T>([&]<class C>() { add_lines<typename C::type>(lines); });
  }
  // The rows of P's children: path "blocks.N.attn", parameter prefix "blocks.0.attn.". A child
  // named "" shares its parent's scope, so its own children show at the parent's level.
  template <class P>
  void add_rows(std::vector<PartInfo>& rows, const std::string& path, const std::string& prefix, int depth,
                int max_depth) const {
    for_each_child<P>([&]<class C>() {
      using T = typename C::type;
      if (C::name.empty()) return add_rows<T>(rows, path, prefix, depth, max_depth);
      if (depth > max_depth) return;
      const bool each = C::name == kEach;
      const std::string name(C::name), child_path = path.empty() ? name : path + "." + name;
      const std::string child_prefix = prefix + (each ? std::string("0") : name) + ".";
      std::string note = each ? "each block" : "";
      if constexpr (requires { T::note(dims()); }) note = T::note(dims());
      else
        for_each_child<T>([&]<class G>() {
          if (G::name == kEach) note = std::to_string(dims().n_layers) + " x " + pretty_type_name<typename G::type>();
        });
      // A parent may say what each child stands for: a stack of several layer types which layers
      // (dsl/pattern.hpp), an MoE's expert list "each expert".
      if constexpr (requires { P::child_note(C::name, dims()); }) {
        const std::string own = P::child_note(C::name, dims());
        note = each || note.empty() ? own : own + "; " + note;
      }
      rows.push_back({child_path, pretty_type_name<T>(), count_params(params(), child_prefix), depth, note});
      add_rows<T>(rows, child_path, child_prefix, depth + 1, max_depth);
    });
  }
  // Parameters of experts a token does not visit, under P at parameter prefix `prefix`, each part
  // counted `times` times (a stack's blocks: its child 0, n_layers times).
  template <class P>
  std::int64_t inactive_params(const std::string& prefix, std::int64_t times) const {
    std::int64_t n = 0;
    if constexpr (requires { P::inactive_experts(dims()); })
      return times * P::inactive_experts(dims()) * count_params(params(), prefix + "experts.0.");
    for_each_child<P>([&]<class C>() {
      const bool each = C::name == kEach;
      const std::string child_prefix = C::name.empty() ? prefix : prefix + (each ? std::string("0") : std::string(C::name)) + ".";
      std::int64_t count = each ? dims().n_layers : 1;
      if constexpr (requires { P::child_count(C::name, dims()); }) count = P::child_count(C::name, dims());
      n += inactive_params<typename C::type>(child_prefix, times * count);
    });
    return n;
  }
  static std::int64_t head_outputs(const Dims& d) {
    if constexpr (requires { Arch::HeadT::outputs(d); }) return Arch::HeadT::outputs(d);
    else return d.vocab;
  }
  Arch arch_;
};

}  // namespace llmtk
