#include "trainer.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../core/available_memory.hpp"
#include "../core/communicator.hpp"
#include "../core/durable.hpp"
#include "../core/error.hpp"
#include "../core/faults.hpp"
#include "../data/loader.hpp"
#include "../models/registry.hpp"
#include "../ops/ops.hpp"
#include "../ops/profile.hpp"
#include "checkpoint.hpp"
#include "classify.hpp"
#include "finetune.hpp"
#include "generate.hpp"
#include "hf.hpp"
#include "lm_eval.hpp"
#include "optimizer.hpp"
#include "peft.hpp"
#include "preference.hpp"
#include "rollout.hpp"
#include "task_eval.hpp"
#include "schedule.hpp"
#include "distributed.hpp"
#include "internals.hpp"
#include "step.hpp"
#include "masked.hpp"
#include "span.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;
using clock_type = std::chrono::steady_clock;

namespace {

volatile std::sig_atomic_t g_stop = 0;  // the signal that asks the run to stop (or 1: stop_after)
extern "C" void on_signal(int sig) { g_stop = sig; }

// Ctrl-C and SIGTERM stop after the current step with a checkpoint, for as long as this lives.
struct StopOnSignals {
  StopOnSignals() {
    g_stop = 0;
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
  }
  ~StopOnSignals() {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  }
};

std::vector<std::string> shards(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  if (fs::is_directory(dir))
    for (const auto& e : fs::directory_iterator(dir)) {
      const auto name = e.path().filename().string();
      if (name.starts_with(prefix) && name.ends_with(".bin")) out.push_back(e.path().string());
    }
  std::sort(out.begin(), out.end());
  return out;
}

// Peak resident memory of this process, from /proc (Linux).
std::int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("VmHWM:")) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

}  // namespace

std::optional<double> matmul_peak_override() {
  const char* e = std::getenv("LLMTK_MATMUL_PEAK_GFLOPS");
  if (!e || !*e) return std::nullopt;
  char* end = nullptr;
  const double g = std::strtod(e, &end);
  LLMTK_CHECK(end && *end == '\0' && g > 0, "LLMTK_MATMUL_PEAK_GFLOPS", "is '", e,
              "'; set it to a positive number of GFLOP/s, or unset it to measure");
  return g * 1e9;
}

double measure_matmul_peak_flops() {
  // LLMTK_MATMUL_PEAK_GFLOPS in the environment replaces the measurement (the same MFU
  // denominator across runs on a shared machine; emulated devices, where timing means nothing).
  if (const auto peak = matmul_peak_override()) return *peak;
  // In the active backend's memory and in the matmul precision, so that a bf16 peak is the bf16
  // product alone (no rounding of f32 inputs inside the timed call). The square product grows
  // from 1024 until one takes at least 2 ms (or reaches 8192): long enough to time and to reach
  // a GPU's peak (1024³ is far too small there), and 1024 on a CPU.
  const DeviceMemory& mem = current_memory();
  const bool half = ops::matmul_precision() == DType::bf16;
  const DType in = half ? DType::bf16 : DType::f32;
  for (std::int64_t n = 1024;; n *= 2) {
    const std::size_t count = static_cast<std::size_t>(n * n);
    std::vector<float> a(half ? 0 : count, 0.5f), b(half ? 0 : count, 0.25f);
    std::vector<bf16> a16(half ? count : 0, bf16(0.5f)), b16(half ? count : 0, bf16(0.25f));
    Arena m("matmul peak");
    // bf16: the product of a bf16 step, bf16 operands and a bf16 result (f32 accumulation).
    const int ia = m.add("a", {n, n}, in), ib = m.add("b", {n, n}, in), ic = m.add("c", {n, n}, in);
    m.allocate(mem);
    m.write(ia, half ? static_cast<const void*>(a16.data()) : a.data());
    m.write(ib, half ? static_cast<const void*>(b16.data()) : b.data());
    auto seconds = [&] {
      mem.synchronize();
      const auto t0 = clock_type::now();
      ops::matmul_forward(m[ic], m[ia], m[ib], TensorRef{});
      mem.synchronize();
      return std::chrono::duration<double>(clock_type::now() - t0).count();
    };
    seconds();  // first call: plan and warm-up
    if (n < 8192 && seconds() < 2e-3) continue;
    // The best of 12 after 2 more warm-ups: on a shared machine single runs vary by 2x.
    double best = 1e30;
    for (int i = 0; i < 14; ++i) {
      const double t = seconds();
      if (i >= 2) best = std::min(best, t);
    }
    return 2.0 * double(n * n * n) / best;
  }
}


namespace {

void write_text(const std::string& path, const std::string& s) { write_file_atomically(path, s, "train"); }

// ---- the run directory ---------------------------------------------------------------------

// An absolute, normal path without a trailing separator: two spellings of one folder compare equal.
fs::path normal_path(const std::string& p) {
  fs::path a = fs::absolute(p).lexically_normal();
  return a.filename().empty() ? a.parent_path() : a;
}

// The run a checkpoint belongs to, spelled as the user spelled the checkpoint: RUN for
// RUN/checkpoints/NAME; "" for one kept elsewhere.
std::string run_of(const std::string& checkpoint) {
  if (normal_path(checkpoint).parent_path().filename() != "checkpoints") return "";
  fs::path p = fs::path(checkpoint).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  const fs::path run = p.parent_path().parent_path();
  return run.empty() ? "." : run.string();
}

// What a run writes into its directory (trainer.hpp), and `llmtk train` its report.html.
constexpr const char* kRunFiles[] = {"checkpoints", "metrics.jsonl", "internals.jsonl", "profile.json", "recipe.toml", "samples.txt", "report.html"};

// Where the run goes, what it resumes, and what --overwrite removes once set-up has succeeded.
// Nothing is written here: a refusal leaves every folder as it was.
struct RunDirPlan {
  std::string dir;
  std::string checkpoint;         // the checkpoint to resume from; "" for a new run
  std::string history;            // the metrics.jsonl whose lines up to the resumed step continue
  std::vector<fs::path> discard;  // removed before the first write (only with --overwrite)
};

RunDirPlan plan_run_dir(const Recipe& r, const TrainOptions& opt) {
  RunDirPlan p;
  std::string source;  // the run the resumed checkpoint belongs to
  if (!opt.resume.empty()) {
    p.checkpoint = find_checkpoint(opt.resume);
    source = run_of(p.checkpoint);
    if (!source.empty()) p.history = (fs::path(source) / "metrics.jsonl").string();
  }
  p.dir = !opt.run_dir.empty() ? opt.run_dir
          : !source.empty()    ? source
                               : (fs::path("runs") / fs::path(r.file).stem()).string();
  const fs::path dir = normal_path(p.dir);
  if (!source.empty() && normal_path(source) == dir) {
    // Continuing a run in place. Checkpoints after the resumed one belong to a future this run
    // is about to replace: keeping them would make the next --resume pick the abandoned one.
    // Resuming the run itself (its newest step checkpoint) after a crash, "best" may be newer:
    // written at an eval the crash cut short of its step checkpoint. The resumed run replays
    // exactly that trajectory and writes it again, so it is kept, not counted as abandoned.
    const std::int64_t from = checkpoint_step(p.checkpoint);
    const bool newest_of_run = !fs::exists(fs::path(opt.resume) / "state.json");
    std::vector<std::string> later;
    for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
      if (fs::exists(e.path() / "state.json") && !e.path().filename().string().ends_with(".tmp") &&
          normal_path(e.path()) != normal_path(p.checkpoint) && !(newest_of_run && e.path().filename() == "best") &&
          checkpoint_step(e.path().string()) > from) {
        p.discard.push_back(e.path());
        later.push_back(e.path().filename().string());
      }
    std::sort(later.begin(), later.end());
    std::string names;
    for (const auto& n : later) names += (names.empty() ? "" : ", ") + n;
    LLMTK_CHECK(later.empty() || opt.overwrite, "train", "resuming ", p.dir, " from step ", from, " would abandon its later checkpoint",
                later.size() > 1 ? "s " : " ", names, "; pass --overwrite to delete ", later.size() > 1 ? "them" : "it",
                ", or --run-dir NEW to continue in a new directory and keep this run as it is");
    if (!opt.overwrite) p.discard.clear();
    return p;
  }
  // A new run, or a resumed one continuing elsewhere: the directory must not hold another run.
  std::vector<std::string> found;
  for (const char* f : kRunFiles)
    if (fs::exists(dir / f)) found.push_back(f), p.discard.push_back(dir / f);
  if (found.empty()) return p;
  std::string what;
  try {
    what = "its newest checkpoint is " + fs::relative(find_checkpoint(dir.string()), dir).string();
  } catch (const Error&) {
    for (const auto& f : found) what += (what.empty() ? "it has " : ", ") + f;
  }
  LLMTK_CHECK(opt.overwrite, "train", "'", p.dir, "' already holds a run (", what, "). Continue it with --resume ", p.dir,
              ", choose another directory with --run-dir, or pass --overwrite to replace it");
  return p;
}

// ---- setup ---------------------------------------------------------------------------------

// A loader over one split; a split too small for one batch says which split and which keys fix it.
std::unique_ptr<data::DataLoader> make_loader(const Recipe& r, const std::vector<std::string>& files, std::uint64_t tok_hash,
                                              data::LoaderOptions o, bool validation) {
  if (files.empty()) return nullptr;
  try {
    return std::make_unique<data::DataLoader>(files, tok_hash, o);
  } catch (const Error& e) {
    std::string why = e.what();
    if (why.starts_with("[data loader] ")) why.erase(0, 14);
    const std::string split = validation ? "validation" : "training";
    fail(r.file, "the ", split, " split (", r.data.dir, "/", validation ? "val" : "train", "_*.bin) is too small: ", why,
         ". Lower train.batch or train.seq",
         validation ? ", or prepare the data again with a larger split.val_fraction (llmtk data prepare --set split.val_fraction=0.05)"
                    : ", or add text to the corpus");
  }
}

// Pre-flight: the memory the plan needs (what `llmtk arch show` prints: parameters, gradients,
// optimizer state, a bf16 working copy, activations) against what the device has available now,
// before anything is allocated. A run that cannot fit is refused with both figures and the keys
// that shrink it, instead of being killed by the kernel (or the GPU's allocator) minutes in.
void check_memory(const Recipe& r, const AnyModel& m) {
  const Device device = current_memory().device;
  const std::size_t available = available_memory(device);
  if (available == 0) return;  // unknown here: nothing to compare with
  const int states = r.optim.name == "adamw" ? 2 : 1;  // AdamW's m and v; SGD's buffer or Lion's m
  const double gib = 1024.0 * 1024.0 * 1024.0, params = double(m.params().bytes()), grads = double(m.grads_bytes()),
               optim = double(states) * 4.0 * double(m.trainable_count()), working = double(m.working().bytes()),
               acts = double(m.acts().bytes()), total = params + grads + optim + working + acts;
  if (total <= double(available)) return;
  auto g = [&](double b) {
    char s[32];
    std::snprintf(s, sizeof s, "%.1f GiB", b / gib);
    return std::string(s);
  };
  fail("train", "the run needs ", g(total), " (parameters ", g(params), ", gradients ", g(grads), ", optimizer state ",
       g(optim), working > 0 ? ", bf16 weights " + g(working) : std::string(), ", activations ", g(acts), ") but ",
       g(double(available)), " of memory is available ", device == Device::host ? "on this machine" : "on the GPU",
       "; lower train.batch (now ", r.train.batch, ") or train.seq (now ", r.train.seq, ")",
       r.train.recompute == "blocks" ? std::string() : ", set train.recompute = \"blocks\" (activations kept per block only)",
       ", or choose a smaller model (model.d_model, model.n_layers, model.d_ff); llmtk arch show ARCH --batch B --seq T ",
       "prints the plan's memory");
}

// --init and [finetune] from: a Transformers directory, or an llmtk run or checkpoint of the same
// architecture and sizes trained with the data's tokenizer. The weights go into a model without
// adapters first and then, by name, into this one (whose LoRA adapters keep their initial values);
// the run starts at step 0 with a fresh optimizer.
std::string init_weights(const Recipe& r, const std::string& from_arg, AnyModel& model, const data::Tokenizer& tok,
                         const std::function<void(const std::string&)>& log) {
  // PEFT adapters: the base they name, then the adapters themselves.
  const bool peft = is_peft_dir(from_arg);
  const std::string from = peft ? peft_base(from_arg) : from_arg;
  // The base as it was trained: with a chat template's tokens added, the data's vocabulary (and
  // this model's) is larger than the base's by those tokens.
  Dims base_dims = r.model.dims;
  int base_vocab = r.finetune.base_vocab;
  if (base_vocab > 0) base_dims.vocab = base_vocab;
  std::string dir = from, base_arch(lm_arch(r.model.arch));
  if (fs::exists(fs::path(from) / "config.json")) {
    std::string family;
    if (model.classifier() && hf_dims(from, family).has("n_labels")) base_arch = r.model.arch;  // a classifier's export: its head too
    log("initialised from the Transformers checkpoint in " + from);
  } else {
    LLMTK_CHECK(fs::exists(fs::path(from) / "state.json") || fs::is_directory(fs::path(from) / "checkpoints"), "--init", "'",
                from, "' is neither a Transformers directory (config.json) nor an llmtk run or checkpoint (state.json)");
    const std::string ck = best_or_newest_checkpoint(from);
    const CheckpointState st = read_checkpoint_state(ck);
    // A model tuned with the data's tokenizer already (a reward model, an SFT run named as a
    // reference) has this model's vocabulary: nothing grows.
    if (base_vocab > 0 && st.dims.vocab == r.model.dims.vocab) base_vocab = 0, base_dims.vocab = r.model.dims.vocab;
    // A reward model starts from a language model of its architecture (all but the head).
    LLMTK_CHECK(st.arch == r.model.arch || ((model.scorer() || model.classifier()) && lm_arch(st.arch) == lm_arch(r.model.arch)),
                "--init", ck, " is a ",
                st.arch, " model and the recipe asks for ", r.model.arch, "; set model.arch = \"", st.arch, "\"");
    base_arch = st.arch;
    const auto want = dims_as_keys(base_dims), have = dims_as_keys(st.dims);
    for (const auto& [key, value] : have) {
      const auto it = std::find_if(want.begin(), want.end(), [&k = key](const auto& kv) { return kv.first == k; });
      LLMTK_CHECK(it != want.end() && it->second == value, "--init", ck, " has model.", key, " = ", value,
                  " and the recipe says ", it == want.end() ? std::string("nothing") : it->second, "; set model.", key, " = ", value);
    }
    LLMTK_CHECK(!st.lora.enabled(), "--init", ck, " holds LoRA adapters; export it merged first (llmtk export ", from,
                " --hf DIR --merge) and start from DIR");
    bool same_tokenizer = st.tokenizer_hash == std::to_string(tok.hash());
    if (!same_tokenizer && base_vocab > 0 && fs::exists(st.tokenizer)) {
      // The data's tokenizer may be the base's plus special tokens (data prepare, kind = "sft").
      auto extended = data::load_tokenizer(st.tokenizer);
      for (const auto& [text, id] : tok.specials())
        if (id >= extended->vocab_size()) extended->add_special(text);
      same_tokenizer = extended->hash() == tok.hash();
    }
    LLMTK_CHECK(same_tokenizer, "--init", ck, " was trained with the tokenizer ", st.tokenizer, " (hash ", st.tokenizer_hash,
                ") and data.dir = \"", r.data.dir, "\" was prepared with another (hash ", tok.hash(),
                "); prepare the data with [tokenizer] path = \"", st.tokenizer, "\"");
    dir = ck;
    log("initialised from the weights of " + ck + " (step " + std::to_string(st.step) + ")");
  }
  // A classifier's base is a masked language model, whose sizes lack the head's model.n_labels.
  const bool new_class_head = model.classifier() && !base_arch.ends_with(kClassifySuffix);
  if (new_class_head)
    for (auto& pv : base_dims.part)
      if (std::string_view(pv.name) == "n_labels") pv = PartValue{};
  const Arena weights = read_base_weights(base_arch, base_dims, dir);
  const bool new_head = (model.scorer() && !base_arch.ends_with(kScoreSuffix)) || new_class_head;
  const std::vector<std::string> grown = load_weights(weights, model, base_vocab, new_head ? "head." : "");
  if (new_head && model.scorer()) log("the score head (head.weight) starts at random, N(0, 0.02²); every other parameter is the base's");
  if (new_class_head) log("the classification head (head.pool.*, head.weight, head.bias) starts at random; every other parameter is the base's");
  if (!grown.empty()) {
    std::string names;
    for (const auto& g : grown) names += (names.empty() ? "" : ", ") + g;
    log("vocabulary " + std::to_string(base_vocab) + " -> " + std::to_string(r.model.dims.vocab) +
        ": new rows of " + names + " start at the mean of the base's rows");
  }
  if (peft && peft_type(from_arg) != "LORA") {
    load_peft_virtual_tokens(read_peft_virtual_tokens(from_arg), model);
    log("the " + std::string(model.soft_prompt() ? "soft prompt" : "prefix") + " from the PEFT directory " + from_arg);
  } else if (peft) {
    const PeftAdapter adapter = read_peft(from_arg, hf_family(model), model.dims().n_layers);
    LLMTK_CHECK(adapter.lora == r.lora, "--init", "the adapters in ", from_arg, " are not the recipe's [lora]; name them as "
                "finetune.from (the adapters then decide [lora]) instead of passing --init");
    load_peft(adapter, model);
    log("adapters from the PEFT directory " + from_arg + " (" + std::to_string(adapter.tensors.size()) + " tensors)");
  }
  return from;
}

// A model with the trained model's parameter table (adapters, frozen layout, soft prompt or
// prefix), planned for one token and allocated: one copy of params() moves the weights into it.
// Samples, rollouts and RL's validation decode with it, leaving the trained model's plan alone.
std::unique_ptr<AnyModel> make_twin(const Recipe& r, const AnyModel& trained) {
  auto gen = make_model(r.model.arch, r.model.dims);  // f32 activations: decoding reads f32 logits
  if (r.lora.enabled()) apply_lora(*gen, r.lora);
  else if (!r.train.freeze.empty()) gen->freeze(r.train.freeze);
  if (r.prompt_tuning.enabled()) gen->set_soft_prompt(r.prompt_tuning.n_tokens), gen->freeze(trained.frozen_patterns());
  if (r.prefix_tuning.enabled())
    gen->set_prefix(r.prefix_tuning.n_tokens, r.prefix_tuning.projection), gen->freeze(trained.frozen_patterns());
  gen->plan(1, 1);
  gen->allocate();
  return gen;
}

// [preference] and [rl]: the reference model (loaded like the base, frozen), the data through the
// chat template, and the objective (docs/alignment.md).
struct Setup;
void set_up_preference(const Recipe& r, const std::string& from, Setup& s, const std::function<void(const std::string&)>& log);
void set_up_rl(const Recipe& r, const std::string& from, Setup& s, const std::function<void(const std::string&)>& log);
void set_up_reward(const Recipe& r, Setup& s, const std::function<void(const std::string&)>& log);
void set_up_classify(const Recipe& r, Setup& s, const std::function<void(const std::string&)>& log);

// The backend, the data, the model, the optimizer and the resumed position of one run.
struct Setup {
  std::unique_ptr<data::Tokenizer> tok;
  std::string tok_path;
  std::unique_ptr<data::DataLoader> loader, val_loader;  // token shards (not with [preference])
  std::unique_ptr<BatchSource> batches, val_batches;      // what the steps and the evaluation read
  std::unique_ptr<Objective> objective, val_objective;
  std::unique_ptr<AnyModel> reference;  // [preference], [rl]: the frozen model the policy is compared with
  std::int64_t rows = 0;                // rows of one micro-batch (two per pair with [preference])
  std::int64_t seq = 0, source = 0;     // the model's planned length (an encoder-decoder's target's) and source length
  // [rl]: validation by generating (exact match on held-out prompts) instead of val_batches.
  std::function<EvalStats(AnyModel&)> validate;
  std::unique_ptr<AnyModel> model;
  std::unique_ptr<Optimizer> optimizer;
  std::int64_t step = 0;
  double best_val = INFINITY;
  BaseIdentity base;  // set when checkpoints hold only the trained parameters
};

// The frozen reference: loaded as the base is, planned for the batch's rows, no gradients.
AnyModel* load_reference(const Recipe& r, const std::string& ref, const char* key, Setup& s,
                         const std::function<void(const std::string&)>& log) {
  LLMTK_CHECK(!is_peft_dir(ref), r.file, "the reference model ", ref, " is a PEFT adapter directory; set ", key,
              " to an llmtk run or a Transformers directory (llmtk export RUN --hf DIR --merge)");
  s.reference = make_model(r.model.arch, r.model.dims);
  s.reference->set_precision(s.model->precision());
  s.reference->freeze({"*"});  // no gradients, no optimizer state: it only scores
  s.reference->plan(s.rows, r.train.seq);
  s.reference->init(r.train.seed);
  init_weights(r, ref, *s.reference, *s.tok, [&](const std::string& line) { log("reference model: " + line); });
  return s.reference.get();
}

data::ChatTemplate template_of(const Recipe& r, const Setup& s) {
  data::ChatTemplate tmpl;
  LLMTK_CHECK(data::ChatTemplate::saved_beside(s.tok_path, tmpl), r.file, "data.dir = \"", r.data.dir,
              "\" has no chat template beside its tokenizer; name the instruction data the base was tuned on (prepared with kind = \"sft\")");
  return tmpl;
}

void set_up_rl(const Recipe& r, const std::string& from, Setup& s, const std::function<void(const std::string&)>& log) {
  const auto& rl = r.rl;
  const data::ChatTemplate tmpl = template_of(r, s);
  AnyModel* reference = rl.loss.beta > 0 ? load_reference(r, rl.reference.empty() ? from : rl.reference, "rl.reference", s, log) : nullptr;
  const bool ppo = rl.algorithm == "ppo";
  auto tasks = [&](const std::string& file) {
    std::vector<data::TaskRecord> out;
    const auto records = data::read_conversations(file);
    for (std::size_t i = 0; i < records.size(); ++i) out.push_back(data::split_last_answer(records[i], file + ": record " + std::to_string(i + 1)));
    LLMTK_CHECK(!out.empty(), r.file, "'", file, "' holds no records");
    return out;
  };
  RolloutOptions o;
  o.prompts = r.train.batch, o.group = rl.group, o.seq = r.train.seq, o.max_tokens = rl.max_tokens;
  o.temperature = rl.temperature, o.top_p = rl.top_p, o.reward = rl.reward, o.seed = r.train.seed, o.sample_every = rl.sample_every;
  o.shuffle = r.data.order != "sequential";
  o.algorithm = rl.algorithm, o.kl_coef = rl.loss.beta, o.gamma = rl.gamma, o.lambda = rl.lambda;
  o.critic_lr = rl.critic_lr > 0 ? rl.critic_lr : r.optim.lr;
  auto rollouts = std::make_unique<RolloutBatches>(tasks(rl.task), *s.tok, tmpl, *s.model, reference,
                                                   [&r, policy = s.model.get()] { return make_twin(r, *policy); }, o);
  // A score-headed model of the policy's shape, planned for the rollout's rows, with the weights of
  // `dir` (a reward model's run; a language model's: all but the head).
  auto scorer = [&](const std::string& dir, bool trains, const char* who) {
    auto m = make_model(std::string(lm_arch(r.model.arch)) + std::string(kScoreSuffix), r.model.dims);
    m->set_precision(s.model->precision());
    if (!trains) m->freeze({"*"});
    m->plan(s.rows, r.train.seq);
    m->init(r.train.seed);
    init_weights(r, dir, *m, *s.tok, [&](const std::string& line) { log(cat(who, ": ", line)); });
    return m;
  };
  if (rl.reward == "model") {
    const bool trained = !fs::exists(fs::path(rl.reward_model) / "config.json") &&
                         read_checkpoint_state(best_or_newest_checkpoint(rl.reward_model)).arch.ends_with(kScoreSuffix);
    LLMTK_CHECK(trained, r.file, "rl.reward_model = \"", rl.reward_model, "\" is a language model, not a reward model (a score head ",
                "trained on preferences); train one with [reward] (recipes/align/reward.toml) and name its run");
    rollouts->set_reward_model(scorer(rl.reward_model, false, "reward model"));
  }
  if (ppo) {
    // The critic starts as the reward model (Ouyang et al. 2022), or as the policy with a new head.
    auto critic = scorer(rl.reward_model.empty() ? from : rl.reward_model, true, "critic");
    auto optimizer = std::make_unique<Optimizer>(r.optim, critic->params());
    rollouts->set_critic(std::move(critic), std::move(optimizer));
  }
  log(cat("rl: ", rollouts->size(), " prompts from ", rl.task,
          rollouts->too_long() ? cat(" (", rollouts->too_long(), " too long for train.seq = ", r.train.seq, " with rl.max_tokens = ", rl.max_tokens, " left out)") : "",
          "; ", rl.group, " replies sampled per prompt (temperature ", rl.temperature, ", top-p ", rl.top_p, ", up to ", rl.max_tokens,
          " tokens), reward ", rl.reward == "model" ? "from the reward model " + rl.reward_model : rl.reward, ", KL weight ", rl.loss.beta,
          ppo ? cat(" (in the rewards), GAE gamma ", rl.gamma, " lambda ", rl.lambda, ", critic lr ", o.critic_lr) : std::string(),
          ", clip ", rl.loss.clip, "; ", rl.algorithm));
  s.batches = std::move(rollouts);
  GrpoLossOptions policy_loss = rl.loss;
  policy_loss.temperature = rl.temperature;  // π is the policy that sampled
  if (ppo) policy_loss.beta = 0;  // PPO's KL penalty is in the rewards
  s.objective = std::make_unique<GrpoLoss>(policy_loss);
  if (rl.test.empty()) return;
  // Validation: greedy answers to the first held-out prompts, scored as `llmtk eval --task` scores them.
  const auto records = data::read_conversations(rl.test);
  LLMTK_CHECK(!records.empty(), r.file, "'", rl.test, "' holds no records");
  const std::size_t n = std::min(records.size(), std::size_t(r.eval.batches * r.train.batch));
  std::vector<data::Conversation> held_out;
  for (std::size_t i = 0; i < n; ++i) held_out.push_back(records[i * records.size() / n]);  // evenly spaced
  // Captures what outlives this Setup's move to the caller: the recipe and the tokenizer object.
  s.validate = [&r, tok = s.tok.get(), tmpl, held_out](AnyModel& policy) {
    auto twin = make_twin(r, policy);
    twin->params().copy_from(policy.params());
    TaskEvalOptions eo;
    eo.max_tokens = r.rl.max_tokens, eo.batch = r.train.batch;
    const TaskResult res = evaluate_task(*twin, *tok, tmpl, held_out, eo);
    // No loss of the objective's kind here: RL's loss is not measured on held-out data.
    return EvalStats{NAN, {{"exact_match", res.exact_match()}, {"token_accuracy", res.token_accuracy()}, {"answer_loss", res.answer_loss()}}};
  };
}

// A file of preference pairs through the chat template, with what was left out logged.
std::vector<EncodedPair> load_pairs(const Recipe& r, const Setup& s, const data::ChatTemplate& tmpl, const std::string& file,
                                    const char* split, const std::function<void(const std::string&)>& log) {
  const PreferenceFile f = read_preferences(file);
  if (f.identical)
    log(cat("warning: ", f.identical, " ", split, " records have chosen equal to rejected and are left out (the first at ",
            f.first_identical, ")"));
  EncodedPairs e = encode_pairs(*s.tok, tmpl, f.pairs, r.train.seq);
  LLMTK_CHECK(!e.pairs.empty(), r.file, "no ", split, " pair in ", file, " fits in train.seq = ", r.train.seq, " tokens; raise train.seq");
  log(cat("preference data: ", e.pairs.size(), " ", split, " pairs from ", file,
          e.too_long ? cat(" (", e.too_long, " longer than train.seq = ", r.train.seq, " are left out)") : std::string()));
  return std::move(e.pairs);
}

// The training and validation pairs (`reference`: scores every batch, or null). Validation reads
// eval.batches batches from the start of one fixed shuffle: a sample of every part of a file that
// may be sorted (by book, by task), the same sample at every evaluation.
void set_up_pairs(const Recipe& r, const std::string& train, const std::string& test, AnyModel* reference, Setup& s,
                  const std::function<void(const std::string&)>& log) {
  const data::ChatTemplate tmpl = template_of(r, s);
  s.batches = std::make_unique<PreferenceBatches>(load_pairs(r, s, tmpl, train, "training", log), r.train.batch, r.train.seq,
                                                  r.data.order != "sequential", r.train.seed, s.tok->eot(), reference, train);
  if (!test.empty())
    s.val_batches = std::make_unique<PreferenceBatches>(load_pairs(r, s, tmpl, test, "validation", log), r.train.batch, r.train.seq,
                                                        true, 0, s.tok->eot(), reference, test);
}

void set_up_preference(const Recipe& r, const std::string& from, Setup& s, const std::function<void(const std::string&)>& log) {
  const auto& p = r.preference;
  AnyModel* reference = p.loss.needs_reference() ? load_reference(r, p.reference.empty() ? from : p.reference, "preference.reference", s, log) : nullptr;
  set_up_pairs(r, p.train, p.test, reference, s, log);
  s.objective = std::make_unique<PreferenceLoss>(p.loss);
  s.val_objective = std::make_unique<PreferenceLoss>(p.loss);
  log(cat("objective: ", p.loss.loss, " (beta ", p.loss.beta, p.loss.label_smoothing > 0 ? cat(", label smoothing ", p.loss.label_smoothing) : "",
          p.loss.loss == "simpo" ? cat(", gamma ", p.loss.simpo_gamma) : "", "), ", r.train.batch, " pairs (",
          r.rows(), " rows) per micro-batch", reference ? "; the reference model scores every batch" : ""));
}

void set_up_reward(const Recipe& r, Setup& s, const std::function<void(const std::string&)>& log) {
  set_up_pairs(r, r.reward.train, r.reward.test, nullptr, s, log);
  s.objective = std::make_unique<BradleyTerryLoss>();
  s.val_objective = std::make_unique<BradleyTerryLoss>();
  log(cat("objective: bradley_terry (a reward model, ", r.model.arch, ": the score at each reply's last token), ", r.train.batch,
          " pairs (", r.rows(), " rows) per micro-batch"));
}

// [classify]: labelled examples as [CLS] text [SEP] rows; the loss and accuracy at [CLS].
void set_up_classify(const Recipe& r, Setup& s, const std::function<void(const std::string&)>& log) {
  const MlmTokens mlm = mlm_tokens(*s.tok, r.file);
  auto load = [&](const std::string& file, const char* split) {
    EncodedExamples e = encode_examples(*s.tok, mlm, read_labelled(file), r.classify.labels, r.train.seq);
    std::vector<std::int64_t> count(r.classify.labels.size(), 0);
    for (const auto& x : e.examples) ++count[std::size_t(x.label)];
    std::string counts;
    for (std::size_t k = 0; k < count.size(); ++k) counts += cat(k ? ", " : "", r.classify.labels[k], " ", count[k]);
    log(cat("classification data: ", e.examples.size(), " ", split, " examples from ", file, " (", counts, ")",
            e.truncated ? cat("; ", e.truncated, " longer than train.seq = ", r.train.seq, " are cut") : std::string()));
    return std::move(e.examples);
  };
  s.batches = std::make_unique<ClassifyBatches>(load(r.classify.train, "training"), r.train.batch, r.train.seq,
                                                r.data.order != "sequential", r.train.seed, mlm.pad, r.classify.train);
  // Validation: eval.batches batches from the start of one fixed shuffle, the same at every evaluation.
  if (!r.classify.test.empty())
    s.val_batches = std::make_unique<ClassifyBatches>(load(r.classify.test, "validation"), r.train.batch, r.train.seq, true, 0,
                                                      mlm.pad, r.classify.test);
  s.objective = std::make_unique<MaskedTokenLoss>("classify");
  s.val_objective = std::make_unique<MaskedTokenLoss>("classify");
  log(cat("objective: classification (", r.model.arch, ": cross-entropy of the label at [CLS] over ", r.classify.labels.size(),
          " classes), ", r.train.batch, " examples per micro-batch"));
}

Setup set_up(const Recipe& r, const TrainOptions& opt, const std::string& resume_from,
             const std::function<void(const std::string&)>& log, int rank = 0, int world = 1,
             Communicator* zero = nullptr, Communicator* tensor = nullptr) {
  Setup s;
  (void)matmul_peak_override();  // a bad value stops here, before the run directory exists
  ops::require_backend(r.train.device);
  // bf16: matmuls with f32 operands (the samples' model) round them to bf16 too.
  ops::set_matmul_precision(r.train.precision == "bf16" ? DType::bf16 : DType::f32);
  if (r.train.threads > 0) ops::set_threads(r.train.threads);  // through the backend's own setter
  s.tok_path = (fs::path(r.data.dir) / "tokenizer.json").string();
  // No token shards: pairs, or prompts.
  const bool aligned = r.preference.enabled() || r.rl.enabled() || r.reward.enabled() || r.classify.enabled();
  const auto train_files = aligned ? std::vector<std::string>{} : shards(r.data.dir, "train_");
  LLMTK_CHECK(aligned || !train_files.empty(), r.file, "data.dir = \"", r.data.dir,
              "\" holds no train_*.bin shards; run llmtk data prepare first (see recipes/data/)");
  LLMTK_CHECK(fs::exists(s.tok_path), r.file, "data.dir = \"", r.data.dir, "\" holds no tokenizer.json; run llmtk data prepare first");
  s.tok = data::load_tokenizer(s.tok_path);
  LLMTK_CHECK(s.tok->vocab_size() <= r.model.dims.vocab, r.file, "the tokenizer in ", r.data.dir, " has ",
              s.tok->vocab_size(), " tokens but model.vocab is ", r.model.dims.vocab, "; set model.vocab = ",
              s.tok->vocab_size());
  // Data parallel over pairs or labelled examples: this rank's rows of each global batch
  // (check_distributed has checked that the ranks divide it).
  s.rows = r.rows() / world;
  if (!aligned && r.encoder) {
    // An encoder's rows: [CLS], train.seq − 2 tokens of text, [SEP]; masked as BERT masks (masked.hpp).
    LLMTK_CHECK(r.train.seq >= 3, r.file, "train.seq = ", r.train.seq, " leaves no room for text between [CLS] and [SEP]; "
                "set train.seq to 3 or more");
    MlmTokens mlm = mlm_tokens(*s.tok, r.file);
    const std::int64_t S = mlm_loader_seq(r.train.seq);
    s.rows = r.train.batch / world;  // data parallel: this rank's rows, as below
    s.loader = make_loader(r, train_files, s.tok->hash(),
                           {s.rows, S, data::parse_order(r.data.order), r.train.seed, rank, world, r.data.packing}, false);
    s.val_loader = make_loader(r, shards(r.data.dir, "val_"), s.tok->hash(),
                               {s.rows, S, data::DataOrder::sequential, 0, rank, world, r.data.packing}, true);
    s.batches = std::make_unique<MaskedBatches>(*s.loader, mlm, r.masking, r.train.seed);
    if (s.val_loader) s.val_batches = std::make_unique<MaskedBatches>(*s.val_loader, mlm, r.masking, kValidationMaskSeed);
    s.objective = std::make_unique<MaskedTokenLoss>();
    s.val_objective = std::make_unique<MaskedTokenLoss>();
    log(cat("objective: masked language model (", r.model.arch, ": ", r.masking.rate * 100, "% of tokens selected; of those ",
            r.masking.mask * 100, "% [MASK], ", r.masking.random * 100, "% a random token, the rest unchanged); rows are [CLS] + ",
            S, " tokens + [SEP]"));
  } else if (!aligned && r.seq2seq) {
    // An encoder-decoder's rows: windows of L tokens, each corrupted into a source of at most
    // train.seq tokens and a target (span.hpp).
    SpanTokens st = span_tokens(*s.tok, r.file);
    const SpanLengths l = span_lengths_for_source(r.train.seq, r.span);
    LLMTK_CHECK(l.spans <= std::int64_t(st.sentinels.size()), r.file, "train.seq = ", r.train.seq, " gives rows with ", l.spans,
                " spans but the tokenizer in ", r.data.dir, " has ", st.sentinels.size(), " sentinels; prepare the data with "
                "[tokenizer] sentinels = ", l.spans, " or more, or lower train.seq");
    LLMTK_CHECK(l.target <= r.model.dims.max_seq, r.file, "targets of ", l.target, " tokens exceed model.max_seq = ",
                r.model.dims.max_seq);
    s.rows = r.train.batch / world;
    s.loader = make_loader(r, train_files, s.tok->hash(),
                           {s.rows, l.raw, data::parse_order(r.data.order), r.train.seed, rank, world, r.data.packing}, false);
    s.val_loader = make_loader(r, shards(r.data.dir, "val_"), s.tok->hash(),
                               {s.rows, l.raw, data::DataOrder::sequential, 0, rank, world, r.data.packing}, true);
    s.objective = std::make_unique<SpanLoss>(st.is_sentinel);
    s.val_objective = std::make_unique<SpanLoss>(st.is_sentinel);
    s.batches = std::make_unique<SpanBatches>(*s.loader, st, r.span, r.train.seed);
    if (s.val_loader) s.val_batches = std::make_unique<SpanBatches>(*s.val_loader, st, r.span, kValidationSpanSeed);
    s.seq = l.target, s.source = l.source;
    log(cat("objective: span corruption (", r.model.arch, ": ", r.span.noise_density * 100, "% of tokens dropped in spans of ",
            r.span.mean_span_length, " on average); windows of ", l.raw, " tokens become sources of ", l.source, " tokens (",
            l.spans, " sentinels) and targets of ", l.target));
  } else if (!aligned) {
    // Data parallel: this rank's rows of each global batch of train.batch rows (train() has
    // checked that the ranks divide it), for training and validation alike.
    s.rows = r.train.batch / world;
    s.loader = make_loader(r, train_files, s.tok->hash(),
                           {s.rows, r.train.seq, data::parse_order(r.data.order), r.train.seed, rank, world, r.data.packing}, false);
    s.val_loader = make_loader(r, shards(r.data.dir, "val_"), s.tok->hash(),
                               {s.rows, r.train.seq, data::DataOrder::sequential, 0, rank, world, r.data.packing}, true);
    s.batches = std::make_unique<LoaderBatches>(*s.loader);
    if (s.val_loader) s.val_batches = std::make_unique<LoaderBatches>(*s.val_loader);
    s.objective = std::make_unique<NextTokenLoss>();
    s.val_objective = std::make_unique<NextTokenLoss>();
  }
  if (s.loader && s.loader->examples())
    log(cat("instruction data: ", s.loader->example_count(), " training examples in ", s.loader->batches_per_epoch() * std::uint64_t(r.train.batch),
            " rows (", r.data.packing ? "packed, attention and positions restart at each example" : "one per row, padded",
            "); only the tokens the loss mask marks are learned",
            s.loader->truncated() ? cat("; ", s.loader->truncated(), " examples are longer than train.seq = ", r.train.seq,
                                        " and are cut (raise train.seq or prepare with sft.max_tokens)")
                                  : std::string()));
  s.model = make_model(r.model.arch, r.model.dims);
  // bf16: activations and their gradients in bf16, matmuls read a bf16 working copy of the
  // weights; master weights, gradients and optimizer state stay f32 (docs/bf16.md). On a backend
  // that keeps f32 activations for bf16 (cuda, for now), and under tensor parallel (whose
  // sublayer sums and parallel cross-entropy exchange f32), f32 activations with bf16 matmuls.
  s.model->set_precision(tensor ? DType::f32 : ops::activation_dtype(r.train.precision));
  // Tensor parallel: this rank plans and holds its share of every attention and feed-forward layer.
  if (tensor) s.model->set_tensor_parallel(*tensor);
  const std::string from = !opt.init.empty() ? opt.init : r.finetune.from;
  LLMTK_CHECK(opt.init.empty() || r.finetune.from.empty(), "--init", "the recipe names its base (finetune.from = \"",
              r.finetune.from, "\"); drop --init or the key");
  std::shared_ptr<LoraTargets> lora;
  if (r.lora.enabled()) {
    LLMTK_CHECK(!from.empty(), r.file, "[lora] trains adapters on a base model: set finetune.from (or pass --init)");
    lora = apply_lora(*s.model, r.lora);
  } else if (r.prompt_tuning.enabled()) {
    LLMTK_CHECK(!from.empty(), r.file, "[prompt_tuning] trains a soft prompt for a base model: set finetune.from (or pass --init)");
    LLMTK_CHECK(!s.loader || !s.loader->packed(), r.file, "prompt tuning puts its vectors before one example per row; set data.packing = false");
    s.model->set_soft_prompt(r.prompt_tuning.n_tokens);
    s.model->freeze({"*", "!embed.prompt"});
  } else if (r.prefix_tuning.enabled()) {
    LLMTK_CHECK(!from.empty(), r.file, "[prefix_tuning] trains keys and values for a base model: set finetune.from (or pass --init)");
    LLMTK_CHECK(!s.loader || !s.loader->packed(), r.file, "prefix tuning puts its keys before one example per row; set data.packing = false");
    s.model->set_prefix(r.prefix_tuning.n_tokens, r.prefix_tuning.projection);
    std::vector<std::string> frozen = {"*", "!*.attn.prefix_*"};
    if (r.prefix_tuning.projection > 0) frozen.push_back("!prefix.*");  // the MLP's shared parameters
    s.model->freeze(frozen);
  } else if (!r.train.freeze.empty()) {
    s.model->freeze(r.train.freeze);
  }
  if (s.seq == 0) s.seq = r.train.seq;
  s.model->plan(s.rows, s.seq, r.train.recompute == "blocks", s.source);
  check_memory(r, *s.model);
  if (lora) check_lora_targets(r.lora, *lora);
  s.model->init(r.train.seed);
  if (!from.empty() && resume_from.empty()) {
    std::string base_dir;
    if (tensor) {
      // Tensor parallel: the base goes into a whole model first (every check, a grown vocabulary),
      // and each rank takes its share of it, as a resumed checkpoint does.
      auto whole = make_model(r.model.arch, r.model.dims);
      if (!r.train.freeze.empty()) whole->freeze(r.train.freeze);
      whole->plan(1, 1);
      whole->allocate();
      base_dir = init_weights(r, from, *whole, *s.tok, log);
      const Arena host = whole->params().host_copy();
      for (std::size_t i = 0; i < host.entries().size(); ++i)
        LLMTK_CHECK(host.entries()[i].name == s.model->params().entries()[i].name, "tensor parallel", "the whole model's parameter ",
                    host.entries()[i].name, " is not the share's ", s.model->params().entries()[i].name);
      s.model->take_share(host, s.model->params());
    } else {
      base_dir = init_weights(r, from, *s.model, *s.tok, log);
    }
    if (r.prompt_tuning.enabled() && !is_peft_dir(from)) init_soft_prompt(*s.model, r.prompt_tuning, *s.tok, r.train.seed);
    // With part of the model frozen, checkpoints keep only what trains and name the base.
    if (s.model->params().trainable_numel() < s.model->params().numel()) s.base = identify_base(base_dir, r.finetune.base_vocab);
  }
  // Tensor parallel: each rank holds its columns of the logits; the loss is the parallel
  // cross-entropy (the only objective under it: check_distributed refuses the others).
  if (tensor) s.objective = std::make_unique<VocabParallelLoss>(*tensor), s.val_objective = std::make_unique<VocabParallelLoss>(*tensor);
  // ZeRO-1: each rank keeps the optimizer state of its shard of the parameters only.
  s.optimizer = std::make_unique<Optimizer>(r.optim, s.model->params(), zero);
  if (r.preference.enabled()) set_up_preference(r, from, s, log);
  if (r.rl.enabled()) set_up_rl(r, from, s, log);
  if (r.reward.enabled()) set_up_reward(r, s, log);
  if (r.classify.enabled()) set_up_classify(r, s, log);
  if (world > 1 && aligned)
    for (BatchSource* b : {s.batches.get(), s.val_batches.get()}) {
      if (auto* pairs = dynamic_cast<PreferenceBatches*>(b)) pairs->split(rank, world);
      if (auto* examples = dynamic_cast<ClassifyBatches*>(b)) examples->split(rank, world);
      if (auto* rollouts = dynamic_cast<RolloutBatches*>(b)) rollouts->split(rank, world);
    }
  if (resume_from.empty()) return s;
  const std::string& ck = resume_from;
  const CheckpointState st = read_checkpoint_state(ck);
  LLMTK_CHECK(st.arch == r.model.arch, "resume", "checkpoint ", ck, " is a ", st.arch, " model, the recipe asks for ",
              r.model.arch);
  LLMTK_CHECK(st.tokenizer_hash == std::to_string(s.tok->hash()), "resume", "checkpoint ", ck,
              " was trained with another tokenizer than ", s.tok_path);
  load_checkpoint(ck, *s.model, s.optimizer.get());
  s.batches->load(ck);
  s.base = st.base;
  s.step = st.step;
  s.best_val = std::isfinite(st.best_val_loss) ? st.best_val_loss : INFINITY;
  s.batches->seek({std::uint64_t(st.data_epoch), std::uint64_t(st.data_step)});
  log("resumed from " + ck + " at step " + std::to_string(s.step));
  return s;
}

// ---- what runs after each step: the hooks -----------------------------------------------------

// What hooks see and change: the run's state between steps.
struct Run {
  Run(const Recipe& recipe, const TrainOptions& options, Setup& setup, std::string run_dir,
      std::function<void(const std::string&)> logger)
      : r(recipe), opt(options), s(setup), dir(std::move(run_dir)), log(std::move(logger)) {}
  const Recipe& r;
  const TrainOptions& opt;
  Setup& s;
  std::string dir;
  std::function<void(const std::string&)> log;
  std::int64_t total = 0;
  double val_loss = NAN, last_loss = NAN;
  std::string history;     // resuming: the metrics.jsonl whose lines up to the resumed step continue
  std::string checkpoint;  // the last one written
  bool stop = false, interrupted = false;
  int signal = 0;  // the signal that stopped the run
  std::int64_t skipped = 0;  // non-finite steps skipped since this process started the run
  // Data parallel: the ranks, and whether this one writes the run's files (rank 0; the others
  // hold the same weights and write nothing).
  Communicator* comm = nullptr;
  bool writer = true;
  int world() const { return comm ? comm->size() : 1; }
  // The ranks that each read a part of every batch (data parallel), or null: one process, or
  // tensor parallel alone (every rank reads the whole batch and holds a share of the model). In
  // tensor parallel's 2-D layout, the ranks that hold this rank's share in the other groups.
  Communicator* data = nullptr;
  bool tensor = false;  // this rank holds a share of the model (AnyModel::tensor_parallel)
  bool writer_group = false;  // tensor parallel: this rank is in rank 0's group (whose shares it writes)
  int data_ranks() const { return data ? data->size() : 1; }
  // Data parallel: each rank measured its rows; `m` becomes the means over the ranks (a collective).
  void mean_over_data_ranks(Metrics& m, const std::string& what) const {
    if (data_ranks() < 2 || m.empty()) return;
    std::vector<double> v;
    for (const auto& kv : m) v.push_back(kv.second);
    data->all_reduce_sum(v.data(), std::int64_t(v.size()), what);
    for (std::size_t i = 0; i < v.size(); ++i) m[i].second = v[i] / data_ranks();
  }
  // Tensor parallel: the whole model's weights gathered from the ranks' shares (a collective),
  // for what runs a whole copy of the model on rank 0 (samples, tasks); weights() is what to copy.
  Arena whole{"whole parameters"};
  void gather_whole() {
    whole = s.model->whole_like(s.model->params(), "whole parameters");
    whole.allocate(host_memory());
    s.model->gather_whole(s.model->params(), whole);
  }
  const Arena& weights() const { return tensor ? whole : s.model->params(); }

  // Every rank calls it (ZeRO-1 gathers the optimizer's moments, a collective); rank 0 writes.
  std::string save(const std::string& name) {
    s.optimizer->gather_state();
    // Tensor parallel: the whole parameters and moments, gathered from every rank's share, so that
    // the checkpoint is the one a single process writes (and loads with any number of ranks).
    std::vector<Arena> moments;
    std::vector<Arena*> state = s.optimizer->state();
    if (tensor) {
      gather_whole();
      for (Arena* a : state) {
        moments.push_back(s.model->whole_like(*a, a->name()));
        moments.back().allocate(host_memory());
        s.model->gather_whole(*a, moments.back());
      }
      state.clear();
      for (Arena& a : moments) state.push_back(&a);
    }
    const std::string path = (fs::path(dir) / "checkpoints" / name).string();
    std::string written = path;
    std::exception_ptr error;
    if (writer) {
      try {
        const auto pos = s.batches->position();
        CheckpointState st{s.step, r.model.arch, r.model.dims, s.model->frozen_patterns(), r.lora, r.prompt_tuning.n_tokens, r.prefix_tuning.n_tokens, r.prefix_tuning.projection, std::int64_t(pos.epoch),
                           std::int64_t(pos.step), r.data.dir, s.tok_path, std::to_string(s.tok->hash()), val_loss,
                           s.best_val, to_toml(r), s.base, r.classify.labels};
        written = save_checkpoint(path, weights(), state, st, [this](const std::string& d) { s.batches->save(d); });
      } catch (...) {
        error = std::current_exception();
      }
    }
    s.optimizer->release_state();
    if (error) std::rethrow_exception(error);
    return written;
  }

  // save(), where a checkpoint that cannot be written (a full disk, the file size limit) is not the
  // end of the process: the checkpoints already written are intact (save_checkpoint publishes whole
  // directories only), and checkpoint.on_error says whether the run stops ("stop": `failed` holds
  // the error, which train() reports once the run has ended) or trains on, trying again at the
  // next checkpoint ("continue"). Returns whether the checkpoint was written.
  bool try_save(const std::string& name) {
    std::string why;
    try {
      const std::string written = save(name);
      if (name != "best") checkpoint = written;
    } catch (const std::exception& e) {
      why = e.what();
      if (why.empty()) why = "unknown error";
    }
    // Every rank learns whether rank 0 wrote it, so that all stop together or all go on.
    if (world() > 1) {
      double failed_here = why.empty() ? 0 : 1;
      comm->broadcast(&failed_here, sizeof failed_here, Device::host, 0, "whether checkpoint " + name + " was written");
      if (failed_here != 0 && why.empty()) why = "rank 0 could not write it (its log says why)";
    }
    if (why.empty()) return true;
    {
      if (r.checkpoint.on_error == "continue") {
        log("warning: the checkpoint " + name + " could not be written: " + why + "; training continues without it "
            "(checkpoint.on_error = \"continue\"), and the next checkpoint is tried at its time");
        return false;
      }
      failed = "the checkpoint " + name + " at step " + std::to_string(s.step) + " could not be written: " + why;
      stop = true;
      return false;
    }
  }
  std::string failed;  // why the run stopped early, when it did (a checkpoint that could not be written)
};

// A hook acts after every step (`stats.finite` false: the step was skipped) and at the end.
// Strategies (fine-tuning, data parallel, RL) add their own.
class Hook {
 public:
  virtual ~Hook() = default;
  virtual void after_step(Run&, const StepStats&, double /*lr*/) {}
  virtual void at_end(Run&) {}
};

// Non-finite steps are skipped; max_bad_steps in a row stop the run with the last good state.
class BadStepGuard final : public Hook {
 public:
  void after_step(Run& run, const StepStats& st, double) override {
    if (st.finite) {
      bad_ = 0;
      return;
    }
    ++bad_, ++run.skipped;
    run.log("warning: step " + std::to_string(run.s.step + 1) + " has a non-finite " +
            (std::isfinite(st.loss) ? "gradient" : "loss") + "; skipped (" + std::to_string(bad_) + " in a row)");
    if (bad_ < run.r.train.max_bad_steps) return;
    // The weights can be what went wrong: a huge update in the last finite step leaves them
    // infinite, and every later loss NaN. Only finite weights are saved and called good.
    std::string good, from;
    if (all_finite(run.s.model->params())) {
      from = run.checkpoint = run.save(step_checkpoint_name(run.s.step));
      good = "the last good state (step " + std::to_string(run.s.step) + ") is saved in " + from;
    } else {
      from = newest_finite_checkpoint(run.dir, run.s.model->params());
      good = "the weights themselves are no longer finite, so nothing was saved; " +
             (from.empty() ? std::string("no checkpoint of this run holds finite weights")
                           : "the newest checkpoint with finite weights is " + from);
    }
    fail("train", bad_, " steps in a row had non-finite values at step ", run.s.step + 1, "; ", good,
         ". Lower optim.lr, raise schedule.warmup or set optim.grad_clip, then ",
         from.empty() ? std::string("train again") : "resume with --resume " + from);
  }

 private:
  int bad_ = 0;
};

bool eval_due(const Run& run) {
  return (run.r.eval.every > 0 && run.s.step % run.r.eval.every == 0) || run.s.step == run.total;
}

// A resumed run keeps the history up to the resumed step, from the run it continues: the lines of
// `path` (a metrics.jsonl or internals.jsonl) whose step is at most `step`.
std::string history_up_to(const std::string& path, std::int64_t step) {
  std::string kept;
  if (path.empty() || !fs::exists(path)) return kept;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    const json m = json::parse(line, nullptr, false);  // a torn last line (a crash mid-write) is dropped
    if (!m.is_discarded() && m.is_object() && m.value("step", std::int64_t(0)) <= step) kept += line + "\n";
  }
  return kept;
}

// [log] internals: every internals_every steps (and the last), what each layer is doing, one line
// of internals.jsonl (train/internals.hpp).
class InternalsLog {
 public:
  InternalsLog(Run& run, TrainStep& stepper) : run_(run) {
    const std::string path = (fs::path(run.dir) / "internals.jsonl").string();
    const std::string from = run.history.empty() ? "" : (fs::path(run.history).parent_path() / "internals.jsonl").string();
    // A resumed run keeps the records up to the resumed step (none of an abandoned later part),
    // whether or not it records more.
    // Rank 0 records its rows' activations and the averaged gradients. Under tensor parallel every
    // rank measures its shares of the layers, and the record gathers them (Internals::end).
    if (run.writer && (run.r.log.internals || (!from.empty() && fs::exists(from)))) write_text(path, history_up_to(from, run.s.step));
    if (!run.r.log.internals) return;
    if (run.writer) out_.open(path, std::ios::app);
    stepper.set_gradient_observer([this, &stepper] {
      if (!recording_) return;
      // ZeRO-2: no rank holds the whole gradient; each parameter's Σg² is summed across the ranks.
      if (DataParallel* dp = stepper.data_parallel(); dp && dp->shards_gradients()) {
        const std::vector<double> squares = dp->gradient_squares();
        if (measures()) internals_.gradients(*run_.s.model, &squares);
      } else if (measures()) {
        internals_.gradients(*run_.s.model);
      }
    });
  }
  // Before the step that will be step `next`.
  void before(std::int64_t next) {
    const auto& l = run_.r.log;
    recording_ = l.internals && (next % l.internals_every == 0 || next == run_.total);
    if (recording_ && measures()) internals_.begin(*run_.s.model);
  }
  void after(const StepStats& st) {
    if (!recording_) return;
    recording_ = false;
    if (!measures()) return;
    const std::string line = internals_.end(*run_.s.model, run_.s.step);
    if (run_.writer && st.finite) out_ << line << "\n" << std::flush;  // a skipped step changed nothing to measure
  }

 private:
  // Rank 0, and under tensor parallel the other ranks of its group, whose shares its record gathers.
  bool measures() const { return run_.writer || run_.writer_group; }
  Run& run_;
  Internals internals_;
  std::ofstream out_;
  bool recording_ = false;
};

// metrics.jsonl and the progress line (a redrawn bar on a terminal, else one line per interval).
class Logger final : public Hook {
 public:
  Logger(Run& run, double fwd_flops, double peak) : fwd_flops_(fwd_flops), peak_(peak), writer_(run.writer) {
    if (!writer_) return;
    const std::string path = (fs::path(run.dir) / "metrics.jsonl").string();
    write_text(path, history_up_to(run.history, run.s.step));
    metrics_.open(path, std::ios::app);
  }
  void write(const json& m) {
    if (writer_) metrics_ << m.dump() << "\n" << std::flush;
  }
  void after_step(Run& run, const StepStats& st, double lr) override {
    if (!st.finite) return;
    const Recipe& r = run.r;
    // The global batch: every rank's rows.
    const std::int64_t step = run.s.step, tokens_per_step = run.s.rows * run.data_ranks() * r.train.seq * r.train.grad_accum;
    tokens_ += tokens_per_step;
    if (!writer_ || !(step % r.log.every == 0 || step == run.total || eval_due(run))) return;
    const auto now = clock_type::now();
    const double tps = double(tokens_) / std::max(std::chrono::duration<double>(now - t_log_).count(), 1e-9);
    json m = {{"step", step}, {"loss", st.loss}};
    for (const auto& [name, value] : st.metrics) m[name] = value;
    if (run.skipped > 0) m["skipped_steps"] = run.skipped;
    // MFU against the ranks' peaks together (each rank measured its own).
    m.update(json{{"lr", lr}, {"grad_norm", st.grad_norm}, {"tokens_per_s", tps}, {"mfu", 3 * fwd_flops_ * tps / (peak_ * run.world())},
                  {"peak_memory_bytes", peak_rss_bytes()}, {"elapsed_s", std::chrono::duration<double>(now - t_start_).count()}});
    write(m);
    const double eta = double(run.total - step) * double(tokens_per_step) / std::max(tps, 1e-9);
    // The objective's first two measurements (a preference loss's reward accuracy and margin).
    std::string extra;
    for (std::size_t i = 0; i < std::min<std::size_t>(2, st.metrics.size()); ++i) {
      char v[64];
      std::snprintf(v, sizeof v, "  %s %.3f", st.metrics[i].first.c_str(), st.metrics[i].second);
      extra += v;
    }
    char line[384];
    std::snprintf(line, sizeof line, "step %6lld/%lld  loss %.4f%s  lr %.2e  grad %.3f  %.0f tok/s  eta %.0fs",
                  static_cast<long long>(step), static_cast<long long>(run.total), st.loss, extra.c_str(), lr, st.grad_norm, tps, eta);
    if (run.opt.progress_bar) {
      const int width = 24, done = int(double(width) * double(step) / double(run.total));
      std::printf("\r[%s%s] %s", std::string(std::size_t(done), '#').c_str(),
                  std::string(std::size_t(width - done), '.').c_str(), line);
      std::fflush(stdout);
    } else {
      run.log(line);
    }
    t_log_ = now, tokens_ = 0;
  }

 private:
  std::ofstream metrics_;
  double fwd_flops_, peak_;
  bool writer_;
  const clock_type::time_point t_start_ = clock_type::now();
  clock_type::time_point t_log_ = clock_type::now();
  std::int64_t tokens_ = 0;
};

// Validation loss, samples and the best checkpoint at every eval.every steps and at the end.
class Evaluator final : public Hook {
 public:
  explicit Evaluator(Logger& logger) : logger_(logger) {}
  void after_step(Run& run, const StepStats& st, double) override {
    if (!st.finite || !eval_due(run)) return;
    const Recipe& r = run.r;
    if (!run.s.validate && !run.s.val_batches) return run.writer ? sample(run) : void();  // nothing held out to measure
    // Each rank measured its rows of the validation batches: the mean over ranks is the batches'.
    Communicator* ranks = run.data_ranks() > 1 ? run.data : nullptr;  // evaluate() then weighs the ranks' losses itself
    EvalStats e = run.s.validate      ? run.s.validate(*run.s.model)
                  : run.s.val_batches ? evaluate(*run.s.model, *run.s.val_objective, *run.s.val_batches, r.eval.batches, ranks)
                                      : EvalStats{};
    if (run.data_ranks() > 1) {
      if (!run.s.val_batches || run.s.validate) e.loss = all_reduce_sum(*run.data, e.loss, "the validation loss") / run.data_ranks();
      run.mean_over_data_ranks(e.metrics, "the validation metrics");
    }
    run.val_loss = e.loss;
    // Tensor parallel: samples and tasks run a whole copy of the model on rank 0.
    if (run.tensor && (!r.log.sample_prompt.empty() || !r.eval.tasks.empty())) run.gather_whole();
    if (!run.writer) {
      // The best checkpoint: rank 0 writes it; every rank keeps the same best loss.
      if (r.checkpoint.keep_best && std::isfinite(run.val_loss) && run.val_loss < run.s.best_val) {
        run.s.best_val = run.val_loss;
        run.try_save("best");
      }
      return;
    }
    // Perplexity is the exponential of a next-token loss only; a preference loss reports its measurements.
    const bool lm = e.metrics.empty();
    json m = {{"step", run.s.step}};
    if (lm || std::isfinite(run.val_loss)) m["val_loss"] = run.val_loss;
    if (lm) m["val_ppl"] = std::exp(run.val_loss);
    std::string extra;
    for (const auto& [name, value] : e.metrics) {
      m["val_" + name] = value;
      char v[64];
      std::snprintf(v, sizeof v, "  %s %.3f", name.c_str(), value);
      extra += v;
    }
    std::string tasks;
    for (const auto& [name, accuracy] : score_tasks(run)) {
      m["task_" + name] = accuracy;
      char v[160];
      std::snprintf(v, sizeof v, "  task %s %.3f", name.c_str(), accuracy);
      tasks += v;
    }
    logger_.write(m);
    if (run.opt.progress_bar) std::printf("\n");
    char line[512];
    if (lm)
      std::snprintf(line, sizeof line, "eval  step %lld  val loss %.4f  perplexity %.1f", static_cast<long long>(run.s.step),
                    run.val_loss, std::exp(run.val_loss));
    else if (std::isfinite(run.val_loss))
      std::snprintf(line, sizeof line, "eval  step %lld  val loss %.4f%s", static_cast<long long>(run.s.step), run.val_loss,
                    extra.c_str());
    else
      std::snprintf(line, sizeof line, "eval  step %lld%s", static_cast<long long>(run.s.step), extra.c_str());
    run.log(line + tasks);
    sample(run);
    if (r.checkpoint.keep_best && std::isfinite(run.val_loss) && run.val_loss < run.s.best_val) {
      run.s.best_val = run.val_loss;
      run.try_save("best");
    }
  }

 private:
  // [eval] tasks: each multiple-choice file's accuracy (the lowest mean loss per token) on a copy of
  // the model, named by the file's stem. The items are read once, at the first eval.
  std::vector<std::pair<std::string, double>> score_tasks(Run& run) {
    const Recipe& r = run.r;
    if (r.eval.tasks.empty()) return {};
    if (tasks_.empty()) {
      require_causal_lm(*run.s.model, r.model.arch, "eval.tasks");
      for (const auto& path : r.eval.tasks) {
        auto items = read_choices(path);
        std::vector<ChoiceItem> some;
        const auto n = std::int64_t(items.size()), k = std::min(n, r.eval.task_limit);
        for (std::int64_t i = 0; i < k; ++i) some.push_back(items[std::size_t(i * n / k)]);
        tasks_.emplace_back(fs::path(path).stem().string(), std::move(some));
      }
    }
    auto twin = make_twin(r, *run.s.model);
    twin->params().copy_from(run.weights());
    std::vector<std::pair<std::string, double>> out;
    for (const auto& [name, items] : tasks_)
      out.emplace_back(name, evaluate_choices(*twin, *run.s.tok, items, r.train.batch).accuracy_mean());
    return out;
  }
  std::vector<std::pair<std::string, std::vector<ChoiceItem>>> tasks_;

  void sample(Run& run) {
    const Recipe& r = run.r;
    if (r.log.sample_prompt.empty()) return;
    auto gen = make_twin(r, *run.s.model);
    gen->params().copy_from(run.weights());
    if (r.classify.enabled()) {  // each label's probability for the prompt
      std::ofstream f(fs::path(run.dir) / "samples.txt", std::ios::app);
      f << "--- step " << run.s.step << " ---\n" << r.log.sample_prompt << "\n ";
      for (const auto& [label, p] : classify_text(*gen, *run.s.tok, r.log.sample_prompt, r.classify.labels))
        f << " " << label << " " << std::fixed << std::setprecision(3) << p;
      f << "\n";
      return;
    }
    if (r.encoder) {  // the tokens it would put at each [MASK]
      std::ofstream f(fs::path(run.dir) / "samples.txt", std::ios::app);
      f << "--- step " << run.s.step << " ---\n" << fill_mask(*gen, *run.s.tok, r.log.sample_prompt).describe() << "\n";
      return;
    }
    GenerateOptions g;
    g.max_tokens = r.log.sample_tokens, g.seed = r.train.seed;
    if (r.seq2seq) {  // what it writes for each sentinel, greedily
      g.temperature = 0;
      const SpanFill fill = fill_spans(*gen, *run.s.tok, r.log.sample_prompt, g);
      std::ofstream f(fs::path(run.dir) / "samples.txt", std::ios::app);
      f << "--- step " << run.s.step << " ---\n" << r.log.sample_prompt << "\n  target: " << fill.target << "\n  filled: "
        << fill.filled << "\n";
      return;
    }
    const auto out = generate(*gen, run.s.tok->encode(r.log.sample_prompt), g);
    std::ofstream f(fs::path(run.dir) / "samples.txt", std::ios::app);
    f << "--- step " << run.s.step << " ---\n" << r.log.sample_prompt << run.s.tok->decode(out) << "\n";
  }
  Logger& logger_;
};

// Checkpoints every checkpoint.every steps, at the end, and when asked to stop (a signal or
// TrainOptions::stop_after), which ends the run.
class Checkpointer final : public Hook {
 public:
  void after_step(Run& run, const StepStats& st, double) override {
    if (!st.finite) return;
    const Recipe& r = run.r;
    const std::int64_t step = run.s.step;
    if (run.opt.stop_after > 0 && step >= run.opt.stop_after && !g_stop) g_stop = 1;
    // A signal may reach the ranks at different steps: they stop at the same one.
    if (run.world() > 1) g_stop = std::sig_atomic_t(all_reduce_max(*run.comm, double(g_stop), "whether to stop"));
    if ((r.checkpoint.every > 0 && step % r.checkpoint.every == 0) || step == run.total || g_stop) {
      if (run.try_save(step_checkpoint_name(step)) && run.writer) prune_checkpoints(run.dir, r.checkpoint.keep, run.checkpoint);
    }
    if (!g_stop || !run.failed.empty()) return;
    if (run.opt.progress_bar) std::printf("\n");
    run.log("interrupted: checkpoint written to " + run.checkpoint + "; continue with --resume " + run.dir);
    run.stop = run.interrupted = true;
    run.signal = g_stop > 1 ? int(g_stop) : 0;
  }
};

// What data parallel covers so far, checked on every rank before any work (each rank refuses with
// the same message, and the launcher ends the job).
void check_distributed(const Recipe& r, const Communicator& comm) {
  const int n = comm.size();
  const bool tensor = r.distributed.tensor_parallel();
  const std::string strategy = cat("distributed.strategy = \"", r.distributed.strategy, "\"");
  const int tp = tensor && r.distributed.tp_size > 0 ? r.distributed.tp_size : tensor ? n : 1;
  LLMTK_CHECK(n % tp == 0, r.file, "distributed.tp_size = ", tp, " does not divide the ", n, " processes: they form groups of ",
              "tp_size ranks that each split the model, data-parallel across the groups; launch a multiple of ", tp,
              " processes, or set tp_size to a divisor of ", n, " (0: all of them)");
  LLMTK_CHECK(!tensor || r.distributed.zero() == 0 || n / tp > 1, r.file, strategy, " shards ",
              r.distributed.zero() == 1 ? "the optimizer state" : "the optimizer state and the gradients",
              " across tensor parallel's data-parallel groups, but tp_size = ", tp, " puts all ", n,
              " processes in one group; set distributed.tp_size to a divisor of ", n, " below it (", n,
              " / tp_size groups of tp_size ranks), or use strategy = \"tp\"");
  LLMTK_CHECK(!tensor || (!r.lora.enabled() && !r.prompt_tuning.enabled() && !r.prefix_tuning.enabled() &&
                          !is_peft_dir(r.finetune.from)),
              r.file, strategy, " trains whole models (from their initialisation or finetune.from) so far; ",
              "a parameter-efficient method is not built under it yet: run it with data parallel (\"ddp\", \"zero1\" or \"zero2\")");
  LLMTK_CHECK(!tensor || r.train.batch % (n / tp) == 0, r.file, "train.batch = ", r.train.batch, " is the global batch and does not ",
              "divide among the ", n / tp, " data-parallel groups of ", tp, " tensor-parallel ranks; set train.batch to a multiple of ",
              n / tp, ", or change distributed.tp_size");
  LLMTK_CHECK(tensor || r.train.batch % n == 0, r.file, "train.batch = ", r.train.batch, " is the global batch and does not divide among the ",
              n, " processes of this run; set train.batch to a multiple of ", n, " (each process then reads train.batch / ", n,
              " rows of every batch), or launch another number of processes");
  LLMTK_CHECK(!tensor || !(r.preference.enabled() || r.reward.enabled() || r.classify.enabled() || r.rl.enabled()), r.file,
              strategy, " trains language models on token shards so far; run [preference], [reward], ",
              "[classify] and [rl] with data parallel (\"ddp\", \"zero1\" or \"zero2\")");
}

void log_plan(const Run& run, double fwd_flops, double peak) {
  const Recipe& r = run.r;
  const AnyModel& m = *run.s.model;
  std::ostringstream s;
  s << "model " << r.model.arch << ": " << m.param_count() << " parameters";
  if (m.trainable_count() != m.param_count()) {
    // Frozen parameters have no gradient and no optimizer state: 4 bytes each per arena saved.
    const std::int64_t frozen = m.param_count() - m.trainable_count();
    const double saved = double(frozen) * 4.0 * double(1 + run.s.optimizer->state().size());
    s << " (" << m.trainable_count() << " trainable, " << frozen << " frozen: " << saved / (1 << 20)
      << " MiB of gradients and optimizer state saved)";
  }
  s << ", " << (m.params().bytes() + m.grads_bytes() + run.s.optimizer->state_bytes() + m.acts().bytes()) / (1 << 20)
    << " MiB (parameters, gradients, optimizer state, activations), " << 3 * fwd_flops / 1e6
    << " MFLOP per token to train\n"
    << "data: " << run.s.batches->tokens() << " training tokens, " << run.s.batches->batches_per_epoch()
    << " batches per epoch; " << run.total << " steps of " << run.s.rows * run.data_ranks() * r.train.seq * r.train.grad_accum
    << " tokens on " << r.train.device << " (" << ops::backend_info() << "); matmul peak here " << peak / 1e9
    << " GFLOP/s";
  if (r.train.precision == "bf16")  // which of the two bf16 paths (docs/bf16.md)
    s << "; bf16 matmuls, " << (m.precision() == DType::bf16 ? "bf16" : "f32") << " activations";
  run.log(s.str());
}

}  // namespace

TrainResult train(const Recipe& r, const TrainOptions& opt) {
  // The processes of this run: one, or the ranks an MPI launcher started (docs/distributed.md).
  Communicator& comm = world({r.distributed.timeout_s});
  const int ranks = comm.size();
  const bool writer = comm.rank() == 0;
  if (ranks > 1) check_distributed(r, comm);
  // On GPUs the gradients travel over NCCL, which runs over the launcher's communicator (each
  // rank on the GPU of its local rank, chosen before anything is allocated on one).
  std::unique_ptr<Communicator> nccl;
  if (ranks > 1 && r.train.device == "cuda") nccl = open_nccl(comm);
  Communicator& link = nccl ? *nccl : comm;
  auto log = opt.log ? opt.log : [](const std::string& s) { std::printf("%s\n", s.c_str()); std::fflush(stdout); };
  if (!writer) log = [](const std::string&) {};  // rank 0 speaks for the run
  StopOnSignals signals;  // from here on, even during set-up
  const RunDirPlan where = plan_run_dir(r, opt);  // refuses before anything is read or written
  // Tensor parallel: every rank reads the whole batch (data rank 0 of 1) and holds a share of the model.
  // Tensor parallel: groups of tp_size consecutive ranks each split the model (rank = group ×
  // tp_size + share); the ranks holding the same share in each group are data-parallel (a 2-D
  // layout), reading their group's part of every batch. Alone (tp_size = every process), every
  // rank reads the whole batch.
  const bool tensor = ranks > 1 && r.distributed.tensor_parallel();
  const int tp_size = tensor ? (r.distributed.tp_size > 0 ? r.distributed.tp_size : ranks) : 1;
  std::unique_ptr<Communicator> tp_group, data_group;
  if (tensor) {
    // (On GPUs splits of the NCCL communicator: NCCL over each group's split of MPI.)
    tp_group = link.split(comm.rank() / tp_size, comm.rank(), cat("tensor-parallel group ", comm.rank() / tp_size));
    if (ranks > tp_size) data_group = link.split(comm.rank() % tp_size, comm.rank(), cat("data-parallel group ", comm.rank() % tp_size));
  }
  Communicator* data = tensor ? data_group.get() : ranks > 1 ? &link : nullptr;
  // ZeRO: the optimizer state sharded among the data-parallel ranks (under tensor parallel, those
  // holding the same share of the model in each group: each shards its share's state).
  Setup s = set_up(r, opt, where.checkpoint, log, data ? data->rank() : 0, data ? data->size() : 1,
                   data && r.distributed.zero() > 0 ? data : nullptr, tp_group.get());
  if (ranks > 1 && r.train.threads == 0) ops::set_threads(threads_per_rank(comm));
  if (auto* rollouts = dynamic_cast<RolloutBatches*>(s.batches.get()); rollouts && data)
    rollouts->set_data_parallel(*data, r.distributed.bucket_mb);
  Run run{r, opt, s, where.dir, log};
  run.history = where.history;
  run.total = r.total_steps();
  run.comm = &comm, run.writer = writer, run.tensor = tensor, run.data = data;
  run.writer_group = tensor && comm.rank() < tp_size && s.model->tensor_parallel();
  std::optional<durable::DirLock> lock;
  if (writer) {
    // One trainer per run directory: a second one (another terminal, a scheduler's retry) is refused
    // here, before it writes anything, instead of interleaving its checkpoints with this one's.
    fs::create_directories(run.dir);
    lock.emplace(run.dir, "train", "training a run");
    for (const auto& p : where.discard)  // --overwrite, now that set-up succeeded
      if (p.parent_path().filename() == "checkpoints") remove_checkpoint(p.string());
      else fs::remove_all(p);
    if (auto* rollouts = dynamic_cast<RolloutBatches*>(s.batches.get()))
      rollouts->set_samples_file((fs::path(run.dir) / "samples.txt").string());
    fs::create_directories(fs::path(run.dir) / "checkpoints");
    write_text((fs::path(run.dir) / "recipe.toml").string(), to_toml(r));
  }

  const double fwd_flops = s.model->forward_flops_per_token(r.train.seq), peak = measure_matmul_peak_flops();
  log_plan(run, fwd_flops, peak);
  if (faults::any()) log(std::string("LLMTK_FAULTS=") + std::getenv("LLMTK_FAULTS") + ": injecting faults (a reliability test)");
  Logger logger(run, fwd_flops, peak);
  BadStepGuard guard;
  Evaluator evaluator(logger);
  Checkpointer checkpointer;
  Hook* hooks[] = {&guard, &logger, &evaluator, &checkpointer};

  TrainStep stepper(*s.model, *s.objective, *s.optimizer, {r.optim.grad_clip, true, r.train.seed});
  std::optional<DataParallel> dp;
  const int threads = r.train.threads > 0 ? r.train.threads : threads_per_rank(comm);
  const std::string threads_each = cat(threads, threads == 1 ? " thread each" : " threads each");
  if (tensor) {
    const Dims& d = s.model->run_dims();
    const std::size_t share_grads = s.model->grads().bytes();
    if (data) {
      // The groups' sums stay on the main thread, in the backward's order: the backward's own
      // tensor-parallel sums run there too, and two threads may not call MPI at once (it is
      // started MPI_THREAD_SERIALIZED), while NCCL's kernels wait for their peers, so the two
      // groups' collectives must be issued in one order on every rank, which a communication
      // thread racing the main one cannot promise (on NCCL it deadlocked 2 x 2 emulated ranks).
      const bool overlap = false;
      const ShardRange shard = s.optimizer->shard();
      dp.emplace(*data, s.model->grads(), r.distributed.bucket_mb, overlap, r.distributed.zero() == 2 ? &shard : nullptr);
      stepper.set_data_parallel(&*dp);
    }
    log(cat("distributed: ", ranks, " processes (", link.name(), "), tensor parallel", data ? cat(" in ", data->size(), " groups of ", tp_size) : std::string(),
            ": each holds ", d.n_heads, " of the ", s.model->dims().n_heads, " attention heads and ", d.d_ff, " of the ",
            s.model->dims().d_ff, " feed-forward units of every layer and ", d.vocab / d.tp, " of the ", d.vocab,
            " vocabulary rows of the embedding and the head (", s.model->param_count(), " of the model's ",
            s.model->whole_like(s.model->params(), "whole").numel(), " parameters), reads ",
            data ? cat(s.rows, " rows of each batch of ", r.train.batch, " (its group's)") : std::string("the whole batch"),
            ", and sums each sublayer's output and input gradient with ", tp_size > 2 ? cat("the ", tp_size - 1, " others") : "the other",
            data ? " of its group; the groups average their gradients (data parallel" : "",
            !data ? ""
            : dp->shards_gradients() ? ", each bucket summed on the main thread as its layers' backward is done"
                                     : ", summed on the main thread after the backward",
            data ? ")" : "",
            !dp ? ""
            : dp->shards_gradients()
                ? cat(", each rank keeping its part of its share's gradients and optimizer state (ZeRO-2: ", dp->gradient_bytes() >> 20,
                      " MiB of gradients and ", s.optimizer->state_bytes() >> 20, " MiB of optimizer state per process, against ",
                      share_grads >> 20, " MiB of its share's gradients)")
            : s.optimizer->sharded() ? cat(", each rank keeping its part of its share's optimizer state (ZeRO-1: ",
                                           s.optimizer->state_bytes() >> 20, " MiB of it per process)")
                                     : std::string(),
            "; the loss is a parallel cross-entropy over the vocabulary's shares; ",
            threads_each));
  } else if (ranks > 1) {
    const std::size_t whole_grads = s.model->grads().bytes();
    const ShardRange shard = s.optimizer->shard();
    dp.emplace(link, s.model->grads(), r.distributed.bucket_mb, r.distributed.overlap,
               r.distributed.zero() == 2 ? &shard : nullptr);
    stepper.set_data_parallel(&*dp);
    log(cat("distributed: ", ranks, " processes (", link.name(), "), data parallel",
            dp->shards_gradients()
                ? cat(" with the optimizer state and the gradients sharded (ZeRO-2: ", s.optimizer->state_bytes() >> 20,
                      " MiB of optimizer state and ", dp->gradient_bytes() >> 20, " MiB of gradients per process, against ",
                      whole_grads >> 20, " MiB unsharded)")
            : s.optimizer->sharded() ? cat(" with the optimizer state sharded (ZeRO-1: ", s.optimizer->state_bytes() >> 20,
                                           " MiB of it per process)")
                                     : std::string(),
            ": ", s.rows, " rows of each batch of ",
            r.rows(), " per process, ", threads_each, "; gradients averaged in ", dp->buckets(),
            " bucket", dp->buckets() > 1 ? "s" : "", " of up to ", r.distributed.bucket_mb, " MB",
            dp->overlaps()           ? ", each as soon as its layers' backward is done"
            : dp->shards_gradients() ? ", each as soon as its layers' backward is done, before the backward goes on"
                                     : " after the backward"));
  }
  InternalsLog internals(run, stepper);
  const Schedule sched{r.schedule.name, r.optim.lr, r.schedule.min_lr, r.schedule.warmup, run.total, r.schedule.decay_fraction};
  while (s.step < run.total && !run.stop) {
    const double lr = sched.at(s.step);
    internals.before(s.step + 1);
    StepStats st = stepper.run([&] { return s.batches->next(); }, r.train.grad_accum, lr, s.step + 1);
    // What making the batches measured (RL: the rewards) goes first, the objective's after it.
    if (Metrics made = s.batches->take_metrics(); !made.empty()) {
      run.mean_over_data_ranks(made, "the batches' measurements");  // its prompts' rewards, per rank
      Metrics all = {made.front()};
      all.insert(all.end(), st.metrics.begin(), st.metrics.end());
      all.insert(all.end(), made.begin() + 1, made.end());
      st.metrics = std::move(all);
    }
    if (st.finite) ++s.step, run.last_loss = st.loss;
    internals.after(st);
    for (Hook* h : hooks) h->after_step(run, st, lr);
  }
  for (Hook* h : hooks) h->at_end(run);
  if (opt.progress_bar) std::printf("\n");
  // LLMTK_PROFILE=1: the run's time per op (set-up and evaluations included) as profile.json,
  // where llmtk doctor finds which op a slow run spends its time in.
  if (ops::profiling() && writer) {
    json table = json::array();
    for (const auto& t : ops::profile_table()) table.push_back({{"op", t.op}, {"seconds", t.seconds}, {"calls", t.calls}});
    write_text((fs::path(run.dir) / "profile.json").string(),
               json{{"backend", ops::active().backend}, {"steps", s.step}, {"ops", table}}.dump(2) + "\n");
  }
  if (!run.failed.empty()) {
    std::string newest;
    try {
      newest = "; the newest complete checkpoint is " + find_checkpoint(run.dir) + " (continue with --resume " + run.dir +
               " once there is room)";
    } catch (const Error&) {
      newest = "; no checkpoint of this run was written";
    }
    fail("train", run.failed, ". The run stopped at step ", s.step, " (checkpoint.on_error = \"stop\")", newest,
         "; set checkpoint.on_error = \"continue\" to train on without checkpoints when one cannot be written");
  }
  if (ranks > 1) comm.barrier("the end of training");  // rank 0's files are complete when every rank returns
  TrainResult res{s.step, run.last_loss, run.val_loss, run.dir, run.checkpoint, run.interrupted, run.signal};
  res.writer = writer;
  if (res.checkpoint.empty()) {
    try {
      res.checkpoint = find_checkpoint(run.dir);
    } catch (const Error&) {  // none could be written (checkpoint.on_error = "continue" on a full disk)
    }
  }
  return res;
}

}  // namespace llmtk::train
