#include "model.hpp"

#include <algorithm>
#include <cmath>

#include "../core/communicator.hpp"
#include "../core/rng.hpp"
#include "../ops/ops.hpp"
#include "registry.hpp"  // dims_as_keys

namespace llmtk {

namespace {
// "model.n_kv_heads = 3, model.n_heads = 4" for the keys a rule names.
std::string current_values(const Dims& dims, std::string_view keys) {
  const auto values = dims_as_keys(dims);
  std::string out;
  while (!keys.empty()) {
    auto comma = keys.find(", ");
    std::string_view key = keys.substr(0, comma);
    keys = comma == std::string_view::npos ? std::string_view() : keys.substr(comma + 2);
    if (key.starts_with("model.")) key.remove_prefix(6);
    for (const auto& [k, v] : values)
      if (k == key) out += cat(out.empty() ? "" : ", ", "model.", k, " = ", v);
    if (key == "arch") out += cat(out.empty() ? "" : ", ", "model.arch");
  }
  return out;
}
}  // namespace

AnyModel::AnyModel(std::string name, const Dims& dims, std::vector<DimsRule> rules, std::vector<std::string_view> tags,
                   bool scorer, std::int64_t outputs)
    : name_(std::move(name)), dims_(dims), run_dims_(dims), scorer_(scorer), outputs_(outputs > 0 ? outputs : dims.vocab), rules_(std::move(rules)), tags_(std::move(tags)) {
  auto broken = check_dims(dims, rules_);
  if (!broken.empty()) {
    std::string msg;
    for (const auto& v : broken) msg += cat("\n  rule ", v.rule, ": ", v.message, " (", current_values(dims, v.keys), ")");
    fail(name_, "invalid dims:", msg);
  }
}

bool AnyModel::has_tag(std::string_view tag) const {
  return std::find(tags_.begin(), tags_.end(), tag) != tags_.end();
}

void AnyModel::plan(std::int64_t B, std::int64_t T, bool recompute, std::int64_t S) {
  LLMTK_CHECK(B > 0 && T > 0, name_, "batch and sequence length must be positive, got batch ", B,
              ", seq ", T);
  const bool seq2seq = encoder_decoder();
  LLMTK_CHECK(S >= 0 && (seq2seq || S == 0), name_, "a source length (", S, ") is for encoder-decoders only");
  if (seq2seq) {
    S = S > 0 ? S : T;
    LLMTK_CHECK(S <= dims_.max_seq, name_, "source length ", S, " exceeds model.max_seq = ", dims_.max_seq);
    LLMTK_CHECK(prompt_n_ == 0 && prefix_n_ == 0, name_, "is an encoder-decoder: prompt and prefix tuning are for "
                "decoders (tune the encoder-decoder with LoRA or in full)");
  }
  // Prompt tuning: the prompt's n positions run before the tokens (decoding feeds them one by one).
  const std::int64_t n = kv_cache_ > 0 ? 0 : prompt_n_, Tp = T + n;
  const std::int64_t before = prompt_n_ + prefix_n_;
  LLMTK_CHECK(T + before <= dims_.max_seq, name_, "sequence length ", T,
              before ? cat(" after the ", before, " positions of the soft prompt or prefix") : std::string(),
              " exceeds model.max_seq = ", dims_.max_seq);
  const bool had_memory = acts_.allocated();
  acts_ = Arena("activations");
  io_ = Arena("io");
  io_ids_ = io_.add("ids", {B, Tp}, DType::i32), io_lengths_ = io_.add("lengths", {B}, DType::i32);
  io_segments_ = io_.add("segments", {B, T}, DType::i32), io_positions_ = io_.add("positions", {B, T}, DType::i32);
  token_types_ = has_tag("token_types");
  if (token_types_) io_types_ = io_.add("token_types", {B, Tp}, DType::i32);
  if (seq2seq) io_source_ = io_.add("source", {B, S}, DType::i32), io_source_lengths_ = io_.add("source_lengths", {B}, DType::i32);
  Planner p(run_dims_, B, Tp, params_, acts_, planned_);
  std::vector<std::pair<int, int>> splits;
  if (!planned_) p.splits = &splits;
  p.S = S;
  p.soft_prompt = prompt_n_;
  p.prefix_tokens = prefix_n_;
  p.prefix_projection = prefix_projection_;
  p.freeze = freeze_;
  p.adapters = adapters_;
  p.recompute_blocks = recompute;
  p.kv_cache = kv_cache_;
  p.act_dtype = precision_;
  std::vector<int> matmul_weights;
  if (!planned_) p.matmul_weights = &matmul_weights;
  decoding_ = kv_cache_ > 0;
  recompute_ = recompute;
  declare(p);
  logits_ = p.act("logits", {B, Tp, outputs()});
  if (n > 0) {
    prompt_logits_ = p.act("prompt_tuning.token_logits", {B, T, outputs()});
    prompt_zeros_ = p.act("prompt_tuning.zeros", {n, outputs()});  // never written: the arena starts zeroed
  }
  if (!planned_) matmul_weights_ = std::move(matmul_weights);
  if (!planned_) {
    split_.assign(params_.entries().size(), -1);
    for (const auto& [id, dim] : splits) split_[std::size_t(id)] = dim;
  }
  if (!planned_) {
    for (const auto& f : freeze_) {
      bool any = false;
      const std::string_view pattern = !f.empty() && f[0] == '!' ? std::string_view(f).substr(1) : std::string_view(f);
      for (const auto& e : params_.entries()) any |= Planner::glob(pattern, e.name);
      LLMTK_CHECK(any, name_, "freeze pattern '", f, "' matches no parameter; names look like ",
                  params_.entries().front().name, " or ", params_.entries().back().name, " (llmtk arch show lists the parts)");
    }
    grads_ = params_.trainable_like("grads");
  }
  planned_ = true;
  B_ = B, T_ = T, Tp_ = Tp, S_ = S;
  encoded_ = false;
  prepare_working();
  if (had_memory) {
    acts_.allocate();
    if (acts_.device() != Device::host) io_.allocate(memory_of(acts_.device()));
  }
}

void AnyModel::set_precision(DType activations) {
  LLMTK_CHECK(activations == DType::f32 || activations == DType::bf16, name_, "activations are f32 or bf16, not ",
              name_of(activations));
  LLMTK_CHECK(!planned_, name_, "set_precision() comes before the first plan()");
  LLMTK_CHECK(!tp_ || activations == DType::f32, name_, "bf16 activations under tensor parallel are not built yet");
  precision_ = activations;
  prepare_working();
}

void AnyModel::prepare_working() {
  if (precision_ != DType::bf16 || !planned_) return;
  if (twin_.empty()) {
    twin_.assign(params_.entries().size(), -1);
    for (int id : matmul_weights_) {
      if (twin_[std::size_t(id)] >= 0) continue;  // read by two matmuls (a tied head): one copy
      const auto& e = params_.entries()[std::size_t(id)];
      twin_[std::size_t(id)] = working_.add(e.name, e.shape, DType::bf16);
    }
  }
  if (params_.allocated() && !working_.allocated()) {
    working_.allocate(memory_of(params_.device()));
    working_stale_ = true;
  }
}

void AnyModel::refresh_working() {
  if (precision_ != DType::bf16 || !working_stale_) return;
  prepare_working();
  for (std::size_t id = 0; id < twin_.size(); ++id)
    if (twin_[id] >= 0) ops::convert(working_[twin_[id]], params_[static_cast<int>(id)]);
  working_stale_ = false;
}

// The ids or targets as the ops need them: on the activations' device (copied from the host
// into the io arena when they differ).
TensorRef AnyModel::on_device(TensorRef t, int io_slot) {
  if (!t || t.device == acts_.device()) return t;
  LLMTK_CHECK(t.device == Device::host, name_, "ids and targets must be in host memory or on the model's device");
  io_.write(io_slot, t.data);
  return io_[io_slot];
}

void AnyModel::set_adapters(AdapterFactory factory) {
  LLMTK_CHECK(!planned_, name_, "set_adapters() comes before the first plan()");
  adapters_ = std::move(factory);
}

void AnyModel::set_prefix(std::int64_t n, std::int64_t projection) {
  LLMTK_CHECK(!planned_, name_, "set_prefix() comes before the first plan()");
  LLMTK_CHECK(n >= 0 && n < dims_.max_seq, name_, "a prefix of ", n, " positions does not fit model.max_seq = ", dims_.max_seq);
  LLMTK_CHECK(projection >= 0, name_, "the prefix's projection width must be positive (0: none), got ", projection);
  prefix_n_ = n, prefix_projection_ = projection;
}

void AnyModel::set_soft_prompt(std::int64_t n) {
  LLMTK_CHECK(!planned_, name_, "set_soft_prompt() comes before the first plan()");
  LLMTK_CHECK(n >= 0 && n < dims_.max_seq, name_, "a soft prompt of ", n, " vectors does not fit model.max_seq = ", dims_.max_seq);
  prompt_n_ = n;
}

void AnyModel::freeze(std::vector<std::string> patterns) {
  LLMTK_CHECK(!planned_, name_, "freeze() comes before the first plan()");
  freeze_ = std::move(patterns);
}

namespace {
// The parts tensor parallel covers: the split ones (attention with grouped, all or one kv heads;
// the feed-forwards), and those every rank holds whole (norms, placements, additive positions,
// RoPE, the LM head). Any other tag names a part that would be split wrongly or not at all.
constexpr std::string_view kTensorParallelTags[] = {
    "sequential_block", "prenorm", "postnorm", "sandwichnorm", "layernorm", "rmsnorm", "mha", "gqa", "mqa",
    "causal", "local_attention", "rope", "attention_positions", "learned_positions", "additive_positions",
    "sinusoidal", "lm_head", "scaled_head", "gelu_mlp", "relu_mlp", "mlp", "swiglu", "geglu"};
}  // namespace

void AnyModel::set_tensor_parallel(Communicator& ranks) {
  LLMTK_CHECK(!planned_, name_, "set_tensor_parallel() comes before the first plan()");
  const int P = ranks.size();
  if (P == 1) return;
  for (const auto tag : tags_)
    LLMTK_CHECK(std::find(std::begin(kTensorParallelTags), std::end(kTensorParallelTags), tag) != std::end(kTensorParallelTags),
                name_, ": tensor parallel splits decoders built of attention (MHA, GQA) and feed-forwards (MLP, SwiGLU, GeGLU), "
                "but this model has a part tagged '", tag, "' (llmtk arch show ", name_, " lists them), which is not split "
                "over ranks; train it with data parallel (distributed.strategy = \"ddp\", \"zero1\" or \"zero2\")");
  const auto rule = [&](bool ok, const char* name, const char* key, int value, const char* hint = "") {
    LLMTK_CHECK(ok, name_, "invalid dims for tensor parallel over ", P, " ranks:\n  rule ", name, ": each rank takes model.", key,
                " / ", P, ", so ", key, " must be a multiple of the ", P, " tensor-parallel ranks (model.", key, " = ", value,
                "); launch a number of processes that divides it, or change model.", key, hint);
  };
  rule(dims_.vocab % P == 0, "tp_divides_vocab", "vocab", dims_.vocab,
       " (a vocabulary may be padded: rows past the tokenizer's are tokens it never emits, as GPT-2's 50257 padded to "
       "50304 = 393 x 128)");
  rule(dims_.n_heads % P == 0, "tp_divides_heads", "n_heads", dims_.n_heads);
  rule(dims_.n_kv_heads % P == 0, "tp_divides_kv_heads", "n_kv_heads", dims_.n_kv_heads);
  rule(dims_.d_ff % P == 0, "tp_divides_d_ff", "d_ff", dims_.d_ff);
  LLMTK_CHECK(precision_ == DType::f32, name_, "tensor parallel sums f32 activations over the ranks; bf16 activations under ",
              "tensor parallel are not built yet: set train.precision = \"fp32\" or use data parallel");
  LLMTK_CHECK(!adapters_ && prompt_n_ == 0 && prefix_n_ == 0, name_, "tensor parallel trains whole models; LoRA, prompt and ",
              "prefix tuning under it are not built: fine-tune with data parallel (distributed.strategy = \"ddp\")");
  tp_ = &ranks, tp_rank_ = ranks.rank();
  run_dims_.n_heads /= P, run_dims_.n_kv_heads /= P, run_dims_.d_ff /= P, run_dims_.tp = P;
}

int AnyModel::split_dim(int id) const {
  return tp_ && id >= 0 && std::size_t(id) < split_.size() ? split_[std::size_t(id)] : -1;
}

namespace {
// Rows × columns of a 1-D or 2-D entry around its split dimension: dimension 0 is contiguous in
// the whole (rank r's rows follow rank r − 1's), dimension 1 interleaves (each row holds every
// rank's columns in turn).
struct SplitShape {
  std::int64_t rows = 1, cols = 1;
};
SplitShape split_shape(const std::vector<std::int64_t>& shape) {
  SplitShape s;
  s.rows = shape.empty() ? 1 : shape[0];
  for (std::size_t i = 1; i < shape.size(); ++i) s.cols *= shape[i];
  return s;
}
// Rank `rank`'s share (of local `shape`, split along `dim` among P) out of the whole tensor.
void copy_share(const float* whole, float* share, const std::vector<std::int64_t>& shape, int dim, int P, int rank) {
  const SplitShape s = split_shape(shape);
  if (dim == 0) return void(std::copy_n(whole + rank * s.rows * s.cols, s.rows * s.cols, share));
  for (std::int64_t row = 0; row < s.rows; ++row) std::copy_n(whole + row * s.cols * P + rank * s.cols, s.cols, share + row * s.cols);
}
}  // namespace

Arena AnyModel::whole_like(const Arena& local, std::string name) const {
  Arena whole(std::move(name));
  for (const auto& e : local.entries()) {
    auto shape = e.shape;
    if (const int d = split_dim(params_.find(e.name)); d >= 0) shape[std::size_t(d)] *= tp_->size();
    whole.add(e.name, shape, e.dtype, e.kind, e.frozen);
  }
  return whole;
}

void AnyModel::gather_whole(const Arena& local, Arena& whole) const {
  LLMTK_CHECK(whole.allocated() && whole.device() == Device::host && whole.entries().size() == local.entries().size(), name_,
              "gather_whole() fills an allocated host arena laid out by whole_like()");
  const int P = tp_ ? tp_->size() : 1;
  std::vector<float> part, all;
  for (std::size_t i = 0; i < local.entries().size(); ++i) {
    const auto& e = local.entries()[i];
    LLMTK_CHECK(e.dtype == DType::f32, name_, "gather_whole() reads f32 entries, not ", e.name);
    part.resize(std::size_t(e.numel));
    local.read(int(i), part.data());
    float* out = whole[int(i)].f32();
    const int d = split_dim(params_.find(e.name));
    if (d < 0) {
      std::copy(part.begin(), part.end(), out);
      continue;
    }
    all.resize(part.size() * std::size_t(P));
    tp_->all_gather(TensorRef(part.data(), DType::f32, {e.numel}), TensorRef(all.data(), DType::f32, {e.numel * P}),
                    "the shares of " + e.name + " (tensor parallel)");
    if (d == 0) {
      std::copy(all.begin(), all.end(), out);
      continue;
    }
    const SplitShape s = split_shape(e.shape);  // this rank's rows × columns
    for (int r = 0; r < P; ++r)
      for (std::int64_t row = 0; row < s.rows; ++row)
        std::copy_n(all.data() + r * e.numel + row * s.cols, s.cols, out + row * s.cols * P + r * s.cols);
  }
}

void AnyModel::take_share(const Arena& whole, Arena& local) const {
  LLMTK_CHECK(whole.device() == Device::host && whole.entries().size() == local.entries().size(), name_,
              "take_share() reads a host arena laid out by whole_like()");
  const int P = tp_ ? tp_->size() : 1;
  std::vector<float> part;
  for (std::size_t i = 0; i < local.entries().size(); ++i) {
    const auto& e = local.entries()[i];
    const float* in = whole[int(i)].f32();
    const int d = split_dim(params_.find(e.name));
    if (d < 0) {
      local.write(int(i), in);
      continue;
    }
    part.resize(std::size_t(e.numel));
    copy_share(in, part.data(), e.shape, d, P, tp_rank_);
    local.write(int(i), part.data());
  }
}

void AnyModel::plan_decode(std::int64_t cache_len, std::int64_t source_len) {
  LLMTK_CHECK(!tp_, name_, "decoding under tensor parallel is not built: generate from a checkpoint in one process (llmtk generate "
              "RUN), which loads the whole model");
  LLMTK_CHECK(!scorer_, name_, "is a reward or value model (a score head, one number per position): it scores text "
              "and cannot generate any; generate with the policy it was trained for");
  LLMTK_CHECK(!has_tag("encoder"), name_, "is an encoder (bidirectional attention, a masked language model): it fills "
              "in [MASK] tokens instead of continuing text; write [MASK] in the prompt (llmtk generate RUN --prompt "
              "\"... [MASK] ...\") to see its predictions");
  const std::int64_t before = prompt_n_ + prefix_n_;
  LLMTK_CHECK(cache_len > 0 && cache_len + before <= dims_.max_seq, name_, "a KV cache of ", cache_len,
              " positions", before ? cat(" after the soft prompt's or prefix's ", before) : std::string(),
              " is outside [1, model.max_seq = ", dims_.max_seq, "]");
  LLMTK_CHECK(!encoder_decoder() || (source_len > 0 && source_len <= dims_.max_seq), name_,
              "is an encoder-decoder: decoding needs the source's length, in [1, model.max_seq = ", dims_.max_seq,
              "], got ", source_len);
  kv_cache_ = cache_len + before;
  plan(1, 1, false, encoder_decoder() ? source_len : 0);
  kv_cache_ = 0;  // later plan() calls are for training unless asked again
}

void AnyModel::encode(TensorRef source) {
  LLMTK_CHECK(encoder_decoder(), name_, "has no encoder to run on its own: encode() is for encoder-decoders");
  LLMTK_CHECK(acts_.allocated() && decoding_, name_, "encode() needs plan_decode() and allocate()");
  LLMTK_CHECK(source.dtype == DType::i32 && source.numel() == S_, name_, "encode takes [1, ", S_,
              "] i32 source ids (the length plan_decode was given), got ", source.shape_str());
  refresh_working();
  Ctx c = ctx();
  c.flow.source = on_device(source, io_source_).view({1, S_});
  run_encode(c);
  encoded_ = true;
}

const float* AnyModel::decode(TensorRef ids, std::int64_t pos0) {
  LLMTK_CHECK(acts_.allocated() && decoding_, name_, "decode() needs plan_decode() and allocate()");
  LLMTK_CHECK(ids.dtype == DType::i32 && ids.numel() == T_ && B_ == 1, name_, "decode takes [1, ", T_, "] i32 ids");
  LLMTK_CHECK(!encoder_decoder() || encoded_, name_, "is an encoder-decoder: encode() the source before decode()");
  refresh_working();
  Ctx c = ctx();
  if (prompt_n_ > 0 && pos0 == 0) {
    // A new sequence: the soft prompt's vectors go into the cache first, at positions 0 .. n − 1
    // (the embedding puts them in place of the placeholder ids).
    std::vector<std::int32_t> placeholder(std::size_t(T_), 0);
    for (std::int64_t i = 0; i < prompt_n_; i += T_) {
      c.pos0 = i;
      run_forward(c, c.a(logits_), on_device(TensorRef(placeholder.data(), DType::i32, {1, T_}), io_ids_).view({1, T_}));
    }
  }
  c.pos0 = pos0 + prompt_n_ + prefix_n_;  // a prefix fills the cache's first rows (layers/attention.hpp)
  run_forward(c, c.a(logits_), on_device(ids, io_ids_).view({1, T_}));
  const TensorRef logits = c.a(logits_);
  if (logits.device == Device::host && logits.dtype == DType::f32) return logits.f32() + (T_ - 1) * dims_.vocab;
  // The last row on the host, in f32 (bf16 logits widened exactly).
  const std::size_t V = std::size_t(dims_.vocab), bytes = V * size_of(logits.dtype);
  host_logits_.resize(V);
  const char* last = static_cast<const char*>(logits.data) + std::size_t(T_ - 1) * bytes;
  if (logits.dtype == DType::f32) {
    copy_bytes(host_logits_.data(), Device::host, last, logits.device, bytes);
  } else {
    std::vector<bf16> h(V);
    copy_bytes(h.data(), Device::host, last, logits.device, bytes);
    for (std::size_t i = 0; i < V; ++i) host_logits_[i] = float(h[i]);
  }
  return host_logits_.data();
}

void AnyModel::allocate() {
  LLMTK_CHECK(planned_, name_, "allocate() before plan()");
  params_.allocate();
  grads_.allocate();
  acts_.allocate();
  if (acts_.device() != Device::host) io_.allocate(memory_of(acts_.device()));
  prepare_working();
  working_stale_ = true;
}

void AnyModel::init(std::uint64_t seed) {
  allocate();
  Rng rng(seed);
  const double residual_std = 0.02 / std::sqrt(2.0 * dims_.n_layers);
  // Generated on the host in entry order, so every backend and device starts from the same weights.
  // Tensor parallel: each entry is drawn whole, as one process draws it, and this rank keeps its
  // share, so that the ranks together start from one process's weights.
  std::vector<float> host, share;
  const int P = tp_ ? tp_->size() : 1;
  for (std::size_t i = 0; i < params_.entries().size(); ++i) {
    const auto& e = params_.entries()[i];
    const int d = split_dim(int(i));
    const bool direct = params_.device() == Device::host && d < 0;
    const std::int64_t n = d < 0 ? e.numel : e.numel * P;
    if (!direct) host.resize(std::size_t(n));
    float* w = direct ? params_[static_cast<int>(i)].f32() : host.data();
    for (std::int64_t j = 0; j < n; ++j) {
      switch (e.kind) {
        case ParamKind::norm: w[j] = 1.0f; break;
        case ParamKind::bias:
        case ParamKind::lora_b:
        case ParamKind::none: w[j] = 0.0f; break;
        case ParamKind::lora_a: {  // PEFT's kaiming_uniform_(a=sqrt(5)): bound 1/sqrt(fan_in)
          const double bound = 1.0 / std::sqrt(double(e.shape.back()));
          w[j] = static_cast<float>(bound * (2.0 * rng.uniform() - 1.0));
          break;
        }
        case ParamKind::residual_matrix: w[j] = static_cast<float>(residual_std * rng.normal()); break;
        case ParamKind::matrix:
        case ParamKind::embedding: w[j] = static_cast<float>(0.02 * rng.normal()); break;
      }
    }
    if (d >= 0) {
      share.resize(std::size_t(e.numel));
      copy_share(host.data(), share.data(), e.shape, d, P, tp_rank_);
      params_.write(static_cast<int>(i), share.data());
    } else if (!direct) {
      params_.write(static_cast<int>(i), host.data());
    }
  }
  grads_.zero();
}

TensorRef AnyModel::forward(const ModelInputs& in) {
  LLMTK_CHECK(acts_.allocated(), name_, "forward() before allocate()");
  LLMTK_CHECK(in.ids.dtype == DType::i32 && in.ids.numel() == B_ * T_, name_, "ids must be [", B_, ", ", T_,
              "] i32 (the planned batch and sequence), got ", in.ids.shape_str());
  LLMTK_CHECK(!in.lengths || (in.lengths.dtype == DType::i32 && in.lengths.numel() == B_), name_,
              "lengths must be [", B_, "] i32 (real tokens per row), got ", in.lengths.shape_str());
  LLMTK_CHECK(!in.segments || (in.segments.dtype == DType::i32 && in.segments.numel() == B_ * T_), name_,
              "segments must be [", B_, ", ", T_, "] i32 (the document of each token), got ", in.segments.shape_str());
  TensorRef ids = in.ids, lengths = in.lengths;
  // Positions before the row's tokens: a soft prompt's (in this plan's rows) and a prefix's (in
  // every attention layer's keys). Attention counts both among a row's keys.
  const std::int64_t n = Tp_ - T_, before = n + prefix_n_;
  if (before > 0) {
    LLMTK_CHECK(!in.segments, name_, n ? "prompt" : "prefix", " tuning runs one example per row (its vectors before it); "
                "set data.packing = false");
    if (in.lengths) {
      host_lengths_.resize(std::size_t(B_));
      copy_bytes(host_lengths_.data(), Device::host, in.lengths.data, in.lengths.device, host_lengths_.size() * sizeof(std::int32_t));
      for (auto& l : host_lengths_) l += std::int32_t(before);
      lengths = TensorRef(host_lengths_.data(), DType::i32, {B_});
    }
  }
  if (n > 0) {  // prompt tuning: placeholder ids (0) at the prompt's positions, then the row's tokens
    host_ids_.assign(std::size_t(B_ * Tp_), 0);
    std::vector<std::int32_t> given(std::size_t(B_ * T_));
    copy_bytes(given.data(), Device::host, in.ids.data, in.ids.device, given.size() * sizeof(std::int32_t));
    for (std::int64_t b = 0; b < B_; ++b) std::copy_n(given.begin() + b * T_, T_, host_ids_.begin() + b * Tp_ + n);
    ids = TensorRef(host_ids_.data(), DType::i32, {B_, Tp_});
  }
  in_.ids = on_device(ids, io_ids_).view({B_, Tp_});
  in_.lengths = lengths ? on_device(lengths, io_lengths_).view({B_}) : TensorRef{};
  in_.segments = in.segments ? on_device(in.segments, io_segments_).view({B_, T_}) : TensorRef{};
  in_positions_ = {};
  if (in_.segments) {  // positions restart at each document (segments are contiguous runs)
    host_positions_.resize(std::size_t(B_ * T_));
    std::vector<std::int32_t> seg(host_positions_.size());
    copy_bytes(seg.data(), Device::host, in.segments.data, in.segments.device, seg.size() * sizeof(std::int32_t));
    for (std::int64_t b = 0; b < B_; ++b)
      for (std::int64_t t = 0; t < T_; ++t) {
        const std::size_t i = std::size_t(b * T_ + t);
        host_positions_[i] = t > 0 && seg[i] == seg[i - 1] ? host_positions_[i - 1] + 1 : 0;
      }
    in_positions_ = on_device(TensorRef(host_positions_.data(), DType::i32, {B_, T_}), io_positions_).view({B_, T_});
  }
  in_.source = in_.source_lengths = {};
  if (encoder_decoder()) {
    LLMTK_CHECK(in.source && in.source.dtype == DType::i32 && in.source.numel() == B_ * S_, name_,
                "is an encoder-decoder: source must be [", B_, ", ", S_, "] i32 (the planned batch and source length), got ",
                in.source ? in.source.shape_str() : std::string("none"));
    LLMTK_CHECK(!in.source_lengths || (in.source_lengths.dtype == DType::i32 && in.source_lengths.numel() == B_), name_,
                "source_lengths must be [", B_, "] i32 (real source tokens per row), got ", in.source_lengths.shape_str());
    in_.source = on_device(in.source, io_source_).view({B_, S_});
    if (in.source_lengths) in_.source_lengths = on_device(in.source_lengths, io_source_lengths_).view({B_});
  } else {
    LLMTK_CHECK(!in.source && !in.source_lengths, name_, "source ids given, but ", name_, " has no encoder side");
  }
  in_.token_types = {};
  if (token_types_) {  // type 0 everywhere unless the batch says otherwise
    LLMTK_CHECK(!in.token_types || (in.token_types.dtype == DType::i32 && in.token_types.numel() == B_ * T_), name_,
                "token_types must be [", B_, ", ", T_, "] i32, got ", in.token_types.shape_str());
    LLMTK_CHECK(!in.token_types || n == 0, name_, "token types cannot be combined with prompt tuning");
    TensorRef types = in.token_types;
    if (!types) host_types_.assign(std::size_t(B_ * Tp_), 0), types = TensorRef(host_types_.data(), DType::i32, {B_, Tp_});
    in_.token_types = on_device(types, io_types_).view({B_, Tp_});
  } else {
    LLMTK_CHECK(!in.token_types, name_, "token_types given, but ", name_, "'s embedding has no token types");
  }
  refresh_working();
  Ctx c = ctx();
  c.flow = {in_.lengths, in_.segments, in_positions_, in_.token_types, in_.source, in_.source_lengths};
  stats_.clear();
  c.stats = &stats_;
  c.probe = probe_;
  run_forward(c, c.a(logits_), in_.ids);
  if (n == 0) return c.a(logits_);
  // The tokens' logits: each row's last T positions.
  const std::int64_t V = outputs();
  for (std::int64_t b = 0; b < B_; ++b)
    ops::convert(c.a(prompt_logits_).span(b * T_ * V, T_ * V), c.a(logits_).span((b * Tp_ + n) * V, T_ * V));
  return c.a(prompt_logits_);
}

void AnyModel::backward(TensorRef doutputs) {
  LLMTK_CHECK(in_.ids, name_, "backward() needs a forward() first");
  LLMTK_CHECK(doutputs.numel() == B_ * T_ * outputs() && doutputs.device == acts_.device(), name_,
              "doutputs must be [", B_, ", ", T_, ", ", outputs(), "] in the model's memory, got ", doutputs.shape_str());
  Ctx c = ctx();
  c.flow = {in_.lengths, in_.segments, in_positions_, in_.token_types, in_.source, in_.source_lengths};
  c.gradient_hook = gradient_hook_;
  if (Tp_ == T_) return run_backward(c, doutputs.view({B_, T_, outputs()}), in_.ids);
  // Prompt tuning: no loss at the prompt's positions (zeros), the tokens' gradient after them.
  const std::int64_t V = outputs(), n = Tp_ - T_;
  const TensorRef full = c.a(logits_);
  for (std::int64_t b = 0; b < B_; ++b) {
    ops::convert(full.span(b * Tp_ * V, n * V), c.a(prompt_zeros_).span(0, n * V));
    ops::convert(full.span((b * Tp_ + n) * V, T_ * V), doutputs.span(b * T_ * V, T_ * V));
  }
  run_backward(c, full.view({B_, Tp_, outputs()}), in_.ids);
}

TensorRef AnyModel::logits() const { return acts_[Tp_ > T_ ? prompt_logits_.id : logits_.id]; }

std::int64_t count_params(const Arena& params, std::string_view prefix) {
  std::int64_t n = 0;
  for (const auto& e : params.entries())
    if (e.name.starts_with(prefix)) n += e.numel;
  return n;
}

std::string tidy_type_name(std::string s) {
  for (auto p = s.find("> >"); p != std::string::npos; p = s.find("> >")) s.erase(p + 1, 1);
  // Default arguments as the source leaves them out: Embedding<LearnedPositions>.
  // (Copied into a new string: g++ 12 sees a false overlap in std::string::replace, -Wrestrict.)
  constexpr std::string_view dflt = ", NoTokenTypes";
  std::string out;
  for (std::size_t i = 0; i < s.size();)
    if (std::string_view(s).substr(i, dflt.size()) == dflt) i += dflt.size();
    else out += s[i++];
  return out;
}

}  // namespace llmtk
