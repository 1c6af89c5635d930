// llmtk train | recipe check | recipe show | generate | eval
#include <fmt/core.h>
#include <unistd.h>

#include <csignal>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "core/error.hpp"
#include "data/loader.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/masked.hpp"
#include "train/span.hpp"
#include "train/checkpoint.hpp"
#include "train/classify.hpp"
#include "train/finetune.hpp"
#include "train/generate.hpp"
#include "train/gguf.hpp"
#include "train/peft.hpp"
#include "train/hf.hpp"
#include "train/lm_eval.hpp"
#include "train/doctor.hpp"
#include "core/communicator.hpp"
#include "train/run_report.hpp"
#include "train/step.hpp"
#include "train/preference.hpp"
#include "train/task_eval.hpp"
#include "train/trainer.hpp"

namespace llmtk::cli {

namespace fs = std::filesystem;

namespace {

struct TrainArgs {
  std::string recipe, run_dir, resume, init, device;
  std::vector<std::string> sets;
  bool overwrite = false;
};

struct GenArgs {
  std::string run, prompt, device = "cpu", system;
  train::GenerateOptions o;
  bool json = false, chat = false;
};

struct EvalArgs {
  std::string run, device = "cpu";
  std::vector<std::string> shards;
  std::int64_t batch = 8, seq = 0, batches = 0;
  std::string task, pairs, chat_template, out, text;
  int max_tokens = 32, show = 3;
  std::int64_t limit = 0, stride = 0;
  bool json = false;
};

// The run's chat template (saved beside its tokenizer by data prepare, kind = "sft"). A base model
// trained without one gets `fallback`'s markers as fine-tuning would give them: new tokens whose
// embedding rows start at the mean of the base's (docs/sft.md) — the model at step 0 of SFT.
data::ChatTemplate chat_template_of(train::LoadedRun& l, const std::string& fallback, const char* command) {
  data::ChatTemplate tmpl = data::ChatTemplate::named("chatml");
  if (data::ChatTemplate::saved_beside(l.state.tokenizer, tmpl)) return tmpl;
  LLMTK_CHECK(!fallback.empty(), command, l.checkpoint, " was trained without a chat template (its tokenizer ", l.state.tokenizer,
              " has none beside it); fine-tune it on instruction data first (docs/sft.md)",
              std::string(command).starts_with("eval --") ? ", or pass --template chatml to add the template's tokens as fine-tuning "
                                                      "would (the base model before fine-tuning)" : "");
  LLMTK_CHECK(!l.state.lora.enabled(), command, "--template on a LoRA run: export it merged first (llmtk export --hf DIR --merge)");
  tmpl = data::ChatTemplate::named(fallback);
  const int base_vocab = l.tokenizer->vocab_size();
  for (const auto& sp : tmpl.special_tokens()) l.tokenizer->add_special(sp);
  if (l.tokenizer->vocab_size() > l.model->dims().vocab) {
    Dims dims = l.state.dims;
    dims.vocab = l.tokenizer->vocab_size();
    auto grown = make_model(l.state.arch, dims);
    grown->plan(1, 1);
    grown->allocate();
    train::load_weights(l.model->params().host_copy(), *grown, base_vocab);
    l.model = std::move(grown);
  }
  return tmpl;
}

// A run's model for a command that reads logits (generate, eval, export, chat): a reward model
// (a score head) is refused with what to use instead.
train::LoadedRun load_lm(const std::string& run, const std::string& device) {
  auto l = train::load_run(run, device);
  LLMTK_CHECK(!l.model->scorer(), run, "is a reward model (", l.state.arch, "): it scores replies and has no next-token "
              "probabilities; use llmtk reward ", run, " --data FILE");
  return l;
}

// `llmtk chat RUN`: one user turn per line of standard input (a prompt on a terminal), the
// model's reply after each, the whole conversation kept as context.
void chat(const GenArgs& a) {
  auto l = load_lm(a.run, a.device);
  const data::ChatTemplate tmpl = chat_template_of(l, "", "chat");
  data::Conversation conv;
  if (!a.system.empty()) conv.push_back({"system", a.system});
  train::GenerateOptions o = a.o;
  o.stop_token = tmpl.end_of_turn(*l.tokenizer);
  const bool tty = ::isatty(STDIN_FILENO) != 0;
  if (tty) fmt::print("chatting with {} (Ctrl-D ends)\n", l.checkpoint);
  for (std::string line;;) {
    if (tty) fmt::print("> "), std::fflush(stdout);
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    conv.push_back({"user", line});
    auto prompt = tmpl.prompt(*l.tokenizer, conv);
    prompt.insert(prompt.begin(), l.tokenizer->eot());
    const std::string reply = l.tokenizer->decode(train::generate(*l.model, prompt, o));
    fmt::print("{}\n", reply);
    std::fflush(stdout);
    conv.push_back({"assistant", reply});
  }
}

// Records evenly spaced through a file (--limit): sources are often sorted.
template <class T>
std::vector<T> evenly_spaced(std::vector<T> items, std::int64_t limit) {
  if (limit <= 0 || std::int64_t(items.size()) <= limit) return items;
  std::vector<T> some;
  for (std::int64_t i = 0; i < limit; ++i) some.push_back(items[std::size_t(i * std::int64_t(items.size()) / limit)]);
  return some;
}

// `eval --task` on a classifier: accuracy, loss and the confusion matrix over labelled examples.
void eval_classify(const EvalArgs& a, train::LoadedRun& l) {
  const auto examples = evenly_spaced(train::read_labelled(a.task), a.limit);
  const auto& labels = l.state.labels;
  LLMTK_CHECK(!labels.empty(), "eval --task", l.checkpoint, " is a classifier without label names in its state.json");
  const train::ClassifyResult r = train::evaluate_classifier(*l.model, *l.tokenizer, examples, labels, a.batch);
  fmt::print("checkpoint {}\n{} examples from {}{}\naccuracy {:.4f}  (always answering the most frequent label: {:.4f})\n"
             "loss {:.6f}\nconfusion (rows: the true label, columns: the model's)\n", l.checkpoint, r.examples, a.task,
             r.truncated ? fmt::format(" ({} cut to the model's {} tokens)", r.truncated, l.model->context()) : "", r.accuracy,
             r.majority, r.loss);
  std::size_t w = 6;
  for (const auto& x : labels) w = std::max(w, x.size() + 1);
  fmt::print("  {:>{}}", "", w);
  for (const auto& x : labels) fmt::print(" {:>{}}", x, w);
  fmt::print("\n");
  for (std::size_t i = 0; i < labels.size(); ++i) {
    fmt::print("  {:>{}}", labels[i], w);
    for (const auto c : r.confusion[i]) fmt::print(" {:>{}}", c, w);
    fmt::print("\n");
  }
}

// `llmtk eval RUN --task FILE.jsonl` with {"context", "endings", "label"} records: multiple choice
// (train/lm_eval.hpp), accuracy with its 95% Wilson interval.
void eval_choices(const EvalArgs& a, train::LoadedRun& l) {
  train::require_causal_lm(*l.model, l.checkpoint, "eval --task");
  const auto items = evenly_spaced(train::read_choices(a.task), a.limit);
  const auto r = train::evaluate_choices(*l.model, *l.tokenizer, items, a.batch);
  LLMTK_CHECK(r.scored > 0, "eval --task", "none of the ", items.size(), " items of '", a.task, "' fits the model's context of ",
              l.model->context(), " tokens");
  const auto ci_mean = train::wilson_interval(r.correct_mean, r.scored), ci_total = train::wilson_interval(r.correct_total, r.scored);
  if (a.json) {
    fmt::print("{}\n", nlohmann::ordered_json{{"checkpoint", l.checkpoint}, {"task", a.task}, {"items", r.scored}, {"skipped", r.skipped},
                                              {"accuracy", r.accuracy_mean()}, {"accuracy_ci95", {ci_mean.lo, ci_mean.hi}},
                                              {"accuracy_total", r.accuracy_total()}, {"accuracy_total_ci95", {ci_total.lo, ci_total.hi}},
                                              {"chance", r.chance}, {"seconds", r.seconds}}.dump());
  } else {
    for (int i = 0; i < a.show && i < int(items.size()); ++i) {
      const auto& c = r.items[std::size_t(i)];
      if (c.logp.empty()) continue;
      // One line each, line breaks shown as "\n".
      auto shown = [](std::string t) {
        for (std::size_t k; (k = t.find('\n')) != std::string::npos;) t.replace(k, 1, "\\n");
        return t;
      };
      fmt::print("--- {} ({})\ncontext: {}\n", i + 1, items[std::size_t(i)].where, shown(items[std::size_t(i)].context));
      for (std::size_t k = 0; k < c.logp.size(); ++k)
        fmt::print("  {} {} mean loss {:.4f}  total {:7.3f}  {}\n", int(k) == items[std::size_t(i)].label ? "right" : "     ",
                   int(k) == c.by_mean ? "<-" : "  ", -c.logp[k] / double(c.tokens[k]), -c.logp[k],
                   shown(items[std::size_t(i)].endings[k]));
    }
    fmt::print("checkpoint {}\ntask {}: {} items{}\naccuracy {:.4f}  95% interval [{:.4f}, {:.4f}]  (the ending with the lowest "
               "mean loss per token)\naccuracy_total {:.4f}  95% interval [{:.4f}, {:.4f}]  (the lowest total loss)\nchance {:.4f}\n"
               "{:.1f} s\n",
               l.checkpoint, a.task, r.scored,
               r.skipped ? fmt::format(" ({} with an ending longer than the model's context skipped)", r.skipped) : std::string(),
               r.accuracy_mean(), ci_mean.lo, ci_mean.hi, r.accuracy_total(), ci_total.lo, ci_total.hi, r.chance, r.seconds);
  }
  if (!a.out.empty()) {
    std::ofstream f(a.out);
    for (std::size_t i = 0; i < items.size(); ++i) {
      const auto& c = r.items[i];
      if (c.logp.empty()) continue;
      f << nlohmann::ordered_json{{"where", items[i].where}, {"label", items[i].label}, {"choice", c.by_mean},
                                  {"choice_total", c.by_total}, {"logp", c.logp}, {"tokens", c.tokens}}.dump() << "\n";
    }
    LLMTK_CHECK(f.good(), "eval --task", "writing '", a.out, "' failed");
  }
}

// `llmtk eval RUN --text FILE`: perplexity with a sliding window (train/lm_eval.hpp).
void eval_text(const EvalArgs& a) {
  auto l = load_lm(a.run, a.device);
  train::require_causal_lm(*l.model, l.checkpoint, "eval --text");
  const std::string text = train::read_text_file(a.text, "eval --text");
  std::vector<data::TokenId> ids = {l.tokenizer->eot()};  // the text starts as a document does in the shards
  const auto body = l.tokenizer->encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  train::PerplexityOptions o;
  o.window = a.seq, o.stride = a.stride, o.batch = a.batch;
  const auto r = train::perplexity(*l.model, ids, o);
  const double bytes_per_token = double(text.size()) / double(body.size());
  if (a.json) {
    fmt::print("{}\n", nlohmann::ordered_json{{"checkpoint", l.checkpoint}, {"text", a.text}, {"bytes", text.size()},
                                              {"tokens", r.tokens}, {"window", r.window}, {"stride", r.stride},
                                              {"windows", r.windows}, {"loss", r.loss()}, {"perplexity", r.perplexity()},
                                              {"bits_per_byte", r.nll / std::log(2.0) / double(text.size())},
                                              {"tokens_per_second", r.tokens_per_second()}, {"seconds", r.seconds}}.dump());
    return;
  }
  fmt::print("checkpoint {}\ntext {}: {} bytes, {} tokens ({:.2f} bytes/token)\nwindow {}, stride {}: {} windows\n"
             "loss {:.6f}\nperplexity {:.4f}\nbits_per_byte {:.4f}\n{:.0f} tokens/s ({:.1f} s)\n",
             l.checkpoint, a.text, text.size(), r.tokens, bytes_per_token, r.window, r.stride, r.windows, r.loss(), r.perplexity(),
             r.nll / std::log(2.0) / double(text.size()), r.tokens_per_second(), r.seconds);
}

void eval_task(const EvalArgs& a) {
  auto l = load_lm(a.run, a.device);
  if (l.model->classifier()) return eval_classify(a, l);
  if (train::is_choice_file(a.task)) return eval_choices(a, l);
  const data::ChatTemplate tmpl = chat_template_of(l, a.chat_template, "eval --task");
  auto records = data::read_conversations(a.task);
  LLMTK_CHECK(!records.empty(), "eval --task", "'", a.task, "' holds no records");
  records = evenly_spaced(std::move(records), a.limit);
  train::TaskEvalOptions o;
  o.max_tokens = a.max_tokens, o.batch = a.batch;
  const auto res = train::evaluate_task(*l.model, *l.tokenizer, tmpl, records, o);
  for (int i = 0; i < a.show && i < int(res.items.size()); ++i) {
    const auto& it = res.items[std::size_t(i)];
    fmt::print("--- {} ({})\nprompt:    {}\nreference: {}\noutput:    {}\n", i + 1, it.exact ? "exact" : "differs", it.prompt,
               it.reference, it.output);
  }
  fmt::print("checkpoint {}\ntask {}: {} records{}\nexact_match {:.4f}\ntoken_accuracy {:.4f}\nanswer_loss {:.4f}\n", l.checkpoint,
             a.task, res.items.size(),
             res.skipped ? fmt::format(" ({} longer than the model's max_seq skipped)", res.skipped) : std::string(),
             res.exact_match(), res.token_accuracy(), res.answer_loss());
  if (!a.out.empty()) {
    std::ofstream f(a.out);
    for (const auto& it : res.items)
      f << nlohmann::json{{"prompt", it.prompt}, {"reference", it.reference}, {"output", it.output}, {"exact", it.exact},
                          {"answer_tokens", it.tokens}, {"correct_tokens", it.correct}, {"answer_loss", it.loss}}
               .dump()
        << "\n";
    LLMTK_CHECK(f.good(), "eval --task", "writing '", a.out, "' failed");
  }
}

// `llmtk eval RUN --pairs FILE`: how often the model itself gives the chosen reply the higher
// log-probability (docs/alignment.md).
void eval_pairs(const EvalArgs& a) {
  auto l = load_lm(a.run, a.device);
  const data::ChatTemplate tmpl = chat_template_of(l, a.chat_template, "eval --pairs");
  const train::PreferenceFile f = train::read_preferences(a.pairs);
  const std::vector<train::PreferencePair> pairs = evenly_spaced(f.pairs, a.limit);
  const auto res = train::evaluate_pairs(*l.model, *l.tokenizer, tmpl, pairs, a.batch);
  fmt::print("checkpoint {}\npairs {}: {}{}{}\npreference_accuracy {:.4f}\nnormalized_accuracy {:.4f}\nlogp_margin {:.4f}\n"
             "logp_chosen {:.4f}\nlogp_rejected {:.4f}\n",
             l.checkpoint, a.pairs, res.pairs,
             res.skipped ? fmt::format(" ({} longer than the model's context skipped)", res.skipped) : std::string(),
             f.identical ? fmt::format(" ({} with chosen equal to rejected left out)", f.identical) : std::string(),
             res.accuracy, res.normalized_accuracy, res.margin, res.logp_chosen, res.logp_rejected);
}

// `llmtk reward RUN --data FILE`: a reward model's scores of pairs (accuracy) or of replies.
struct RewardArgs {
  std::string run, data, out, device = "cpu";
  std::int64_t batch = 8, limit = 0;
  int show = 5;
};

void reward(const RewardArgs& a) {
  auto l = train::load_run(a.run, a.device);
  LLMTK_CHECK(l.model->scorer(), "reward", l.checkpoint, " is a language model (", l.state.arch, "); score with a reward model, ",
              "trained with [reward] (recipes/align/reward.toml)");
  const data::ChatTemplate tmpl = chat_template_of(l, "", "reward");
  std::string first;
  {
    std::ifstream in(a.data);
    while (std::getline(in, first) && first.find_first_not_of(" \t\r") == std::string::npos) {}
  }
  auto some = [&](auto items) { return evenly_spaced(std::move(items), a.limit); };  // --limit, as eval --task
  if (first.find("\"chosen\"") != std::string::npos) {
    const train::PreferenceFile f = train::read_preferences(a.data);
    const auto res = train::evaluate_reward_pairs(*l.model, *l.tokenizer, tmpl, some(f.pairs), a.batch);
    fmt::print("checkpoint {}\npairs {}: {}{}{}\nreward_accuracy {:.4f}\nreward_margin {:.4f}\nreward_chosen {:.4f}\n"
               "reward_rejected {:.4f}\n",
               l.checkpoint, a.data, res.pairs,
               res.skipped ? fmt::format(" ({} longer than the model's context skipped)", res.skipped) : std::string(),
               f.identical ? fmt::format(" ({} with chosen equal to rejected left out)", f.identical) : std::string(),
               res.accuracy, res.margin, res.chosen, res.rejected);
    return;
  }
  const auto replies = some(train::read_replies(a.data));
  const auto scores = train::score_replies(*l.model, *l.tokenizer, tmpl, replies, a.batch);
  double sum = 0;
  std::int64_t n = 0;
  std::ofstream out;
  if (!a.out.empty()) out.open(a.out);
  for (std::size_t i = 0; i < replies.size(); ++i) {
    const std::string prompt = replies[i].prompt.back().content;
    if (int(i) < a.show) {  // one line each: the prompt's line breaks shown as " / "
      std::string line = prompt + " -> " + replies[i].text;
      for (std::size_t k; (k = line.find('\n')) != std::string::npos;) line.replace(k, line.find_first_not_of('\n', k) - k, " / ");
      fmt::print("{:>9.4f}  {}\n", scores[i], line);
    }
    if (!std::isnan(scores[i])) sum += scores[i], ++n;
    if (out.is_open())
      out << nlohmann::json{{"prompt", prompt}, {"completion", replies[i].text},
                            {"score", std::isnan(scores[i]) ? nlohmann::json() : nlohmann::json(scores[i])}}.dump() << "\n";
  }
  LLMTK_CHECK(a.out.empty() || out.good(), "reward", "writing '", a.out, "' failed");
  fmt::print("checkpoint {}\nreplies {}: {}{}\nmean_score {:.4f}\n", l.checkpoint, a.data, n,
             std::int64_t(replies.size()) > n ? fmt::format(" ({} longer than the model's context skipped)", std::int64_t(replies.size()) - n)
                                             : std::string(),
             n ? sum / double(n) : NAN);
}

}  // namespace

void add_train_commands(CLI::App& app) {
  auto ta = std::make_shared<TrainArgs>();
  auto* tr = app.add_subcommand("train", "Train a model from a recipe");
  tr->add_option("recipe", ta->recipe, "A recipe TOML file (see recipes/)")->required()->check(CLI::ExistingFile);
  tr->add_option("--run-dir", ta->run_dir, "Where the run goes (default: runs/<recipe name>/)");
  tr->add_option("--resume", ta->resume,
                 "Continue exactly from a run or checkpoint directory (in that run's directory unless --run-dir says otherwise)");
  tr->add_flag("--overwrite", ta->overwrite,
               "Replace the run already in the run directory (or, resuming from an earlier checkpoint, the later ones)");
  tr->add_option("--set", ta->sets, "Override a recipe key: --set optim.lr=3e-4 (repeatable)");
  tr->add_option("--device", ta->device, device_list() + ": the recipe's train.device (--set train.device=...)")
      ->check(device_names());
  tr->add_option("--init", ta->init, "Start from these weights: a Transformers directory, or an llmtk run or checkpoint (a new run at step 0)")->check(CLI::ExistingDirectory);
  tr->callback([ta] {
    std::vector<std::string> sets = ta->sets;
    if (!ta->device.empty()) sets.push_back("train.device=" + ta->device);  // after the --set entries: it wins
    const auto recipe = train::read_recipe(ta->recipe, sets);
    train::TrainOptions o;
    o.run_dir = ta->run_dir, o.resume = ta->resume, o.init = ta->init, o.overwrite = ta->overwrite;
    // Under an MPI launcher stdout is its pseudo-terminal, shared by the ranks: lines, not a redrawn bar.
    o.progress_bar = ::isatty(STDOUT_FILENO) && !launched_by_mpi();
    const auto r = train::train(recipe, o);
    if (!r.writer) return;  // a distributed run's other ranks: rank 0 reports
    std::string report = (fs::path(r.run_dir) / "report.html").string();
    try {
      train::write_run_report({r.run_dir}, report);
    } catch (const Error& e) {  // a full disk: the run itself is done; the report can be made later
      fmt::print(stderr, "warning: {}; make the report later with llmtk report {}\n", e.what(), r.run_dir);
      report = "(not written)";
    }
    fmt::print("\nrun:        {}\ncheckpoint: {}\nmetrics:    {}/metrics.jsonl\nreport:     {}\n", r.run_dir,
               r.checkpoint.empty() ? "(none could be written)" : r.checkpoint, r.run_dir, report);
    if (fs::exists(fs::path(r.run_dir) / "samples.txt")) fmt::print("samples:    {}/samples.txt\n", r.run_dir);
    std::string prompt;  // the recipe's sample prompt, quoted for a shell
    for (char c : recipe.log.sample_prompt) prompt += (c == '"' || c == '\\' || c == '$' || c == '`') ? std::string{'\\', c} : std::string{c};
    if (r.interrupted) {
      fmt::print("continue:   build/bin/llmtk train {} --resume {}\n", ta->recipe, r.run_dir);
      throw ExitStatus{128 + (r.signal ? r.signal : SIGINT)};  // 130 after SIGINT, 143 after SIGTERM
    }
    if (recipe.reward.enabled())
      fmt::print("try:        build/bin/llmtk reward {} --data {}\n", r.run_dir, recipe.reward.test.empty() ? recipe.reward.train : recipe.reward.test);
    else if (recipe.encoder && prompt.empty())  // an encoder fills in masks: it needs a prompt with one
      fmt::print("try:        build/bin/llmtk generate {} --prompt \"And God [MASK] unto Moses\"\n", r.run_dir);
    else
      fmt::print("try:        build/bin/llmtk generate {}{}\n", r.run_dir, prompt.empty() ? "" : " --prompt \"" + prompt + "\"");
  });

  auto* rc = app.add_subcommand("recipe", "Validate or print a recipe");
  rc->require_subcommand(1);
  auto rca = std::make_shared<TrainArgs>();
  auto* check = rc->add_subcommand("check", "Validate a recipe without running it");
  check->add_option("recipe", rca->recipe, "A recipe TOML file")->required()->check(CLI::ExistingFile);
  check->add_option("--set", rca->sets, "Override a recipe key");
  check->callback([rca] {
    const auto r = train::read_recipe(rca->recipe, rca->sets);
    fmt::print("{}: ok ({} {}, {} steps of {} tokens)\n", rca->recipe, r.model.arch, r.train.device, r.total_steps(),
               r.train.batch * r.train.seq * r.train.grad_accum);
  });
  auto* show = rc->add_subcommand("show", "Print the fully resolved recipe");
  show->add_option("recipe", rca->recipe, "A recipe TOML file")->required()->check(CLI::ExistingFile);
  show->add_option("--set", rca->sets, "Override a recipe key");
  show->callback([rca] { fmt::print("{}", train::to_toml(train::read_recipe(rca->recipe, rca->sets))); });

  auto ga = std::make_shared<GenArgs>();
  auto* gen = app.add_subcommand("generate", "Sample text from a trained run");
  gen->add_option("run", ga->run, "A run directory (runs/NAME), a checkpoint directory, a Transformers directory "
                  "(config.json, model.safetensors, tokenizer.json) or a GGUF file (llmtk export --gguf)")->required()->check(CLI::ExistingPath);
  gen->add_option("--prompt", ga->prompt, "Text to continue (default: start of a document)");
  gen->add_option("--max-tokens", ga->o.max_tokens, "Tokens to generate")->check(CLI::Range(1, 1 << 20));
  gen->add_option("--temperature", ga->o.temperature, "0 is greedy")->check(CLI::Range(0.0, 100.0));
  gen->add_option("--top-k", ga->o.top_k, "Keep the k most likely tokens (0: all)")->check(CLI::Range(0, 1 << 24));
  gen->add_option("--top-p", ga->o.top_p, "Keep the smallest set with this much probability (1: all)")
      ->check(CLI::Range(0.0, 1.0));
  gen->add_option("--seed", ga->o.seed, "Random seed");
  gen->add_option("--device", ga->device, device_list())->check(device_names());
  gen->add_flag("--json", ga->json,
                "Print one JSON object: the prompt's token ids, the log-probabilities of every next token after it, "
                "and exactly --max-tokens generated ids (no stop at end of text): for comparing with other runtimes. "
                "On an encoder: the top guesses per [MASK], the row's ids, each [MASK]'s position and its log-probabilities");
  gen->add_flag("--chat", ga->chat, "The prompt is a user's message: render it with the run's chat template and stop "
                "at the end of the reply");
  gen->add_option("--system", ga->system, "--chat: a system message first");
  gen->callback([ga, gen] {
    auto l = load_lm(ga->run, ga->device);
    const data::Tokenizer& tok = *l.tokenizer;
    if (l.model->classifier()) {  // a classifier: each label's probability for the text
      LLMTK_CHECK(!ga->chat, "generate", l.model->name(), " is a classifier: it labels a text and has no chat; drop --chat");
      LLMTK_CHECK(!ga->prompt.empty(), "generate", l.model->name(), " is a classifier: give it the text to label with --prompt TEXT");
      std::vector<std::int32_t> row;
      const auto probs = train::classify_text(*l.model, tok, ga->prompt, l.state.labels, &row);
      if (ga->json) {  // ids: the row the model read, for comparing with other implementations
        nlohmann::json j = {{"label", probs.front().first}, {"probabilities", nlohmann::json::object()}, {"ids", row}};
        for (const auto& [label, p] : probs) j["probabilities"][label] = p;
        return fmt::print("{}\n", j.dump());
      }
      std::string line;
      for (const auto& [label, p] : probs) line += fmt::format("  {} {:.3f}", label, p);
      return fmt::print("{}\n{}\n", probs.front().first, line);
    }
    if (l.model->has_tag("encoder")) {  // a masked language model: what it puts at each [MASK]
      LLMTK_CHECK(!ga->chat, "generate", l.model->name(), " is an encoder: it fills in [MASK] tokens and has no chat; drop --chat");
      const train::MaskFill fill = train::fill_mask(*l.model, tok, ga->prompt,
                                                        gen->count("--top-k") && ga->o.top_k > 0 ? ga->o.top_k : 5);
      if (!ga->json) return fmt::print("{}\n", fill.describe());
      // masks: the top-k per [MASK]; ids, positions and logprobs (over the whole vocabulary) let
      // another implementation check the model (tests/golden/check_hf_export.py does).
      nlohmann::json j = {{"text", fill.text}, {"masks", nlohmann::json::array()}, {"ids", fill.ids},
                          {"positions", fill.positions}, {"logprobs", fill.logprobs}};
      for (const auto& guesses : fill.guesses) {
        nlohmann::json g = nlohmann::json::array();
        for (const auto& x : guesses) g.push_back({{"token", x.token}, {"id", x.id}, {"probability", x.probability}});
        j["masks"].push_back(g);
      }
      // A token may be part of a character's bytes: such bytes print as U+FFFD.
      return fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    if (l.model->encoder_decoder()) {  // the spans it writes for the prompt's sentinels
      LLMTK_CHECK(!ga->chat, "generate", l.model->name(), " is an encoder-decoder trained on spans and has no chat; drop --chat");
      LLMTK_CHECK(!ga->prompt.empty(), "generate", l.model->name(), " is an encoder-decoder: give the encoder a text with "
                  "--prompt, with <extra_id_0> (then <extra_id_1>...) where it should fill in");
      const train::SpanFill fill = train::fill_spans(*l.model, tok, ga->prompt, ga->o);
      if (ga->json) {
        // decoder_ids and logprobs (teacher-forced, the whole vocabulary) let another
        // implementation check the model (tests/golden/check_hf_export.py does).
        std::vector<data::TokenId> decoder_ids{train::span_tokens(tok, "generate").pad};
        decoder_ids.insert(decoder_ids.end(), fill.output.begin(), fill.output.end());
        nlohmann::json j = {{"target", fill.target}, {"filled", fill.filled}, {"source_ids", fill.source}, {"output_ids", fill.output},
                            {"decoder_ids", decoder_ids}, {"logprobs", train::seq2seq_logprobs(*l.model, fill.source, decoder_ids)}};
        return fmt::print("{}\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      }
      return fmt::print("{}\n  {}\n", fill.filled, fill.target);
    }
    std::vector<data::TokenId> prompt = ga->prompt.empty() ? std::vector<data::TokenId>{tok.eot()} : tok.encode(ga->prompt);
    train::GenerateOptions o = ga->o;
    o.stop_token = tok.eot();
    if (ga->chat) {
      LLMTK_CHECK(!ga->json, "generate", "--chat and --json do not go together");
      LLMTK_CHECK(!ga->prompt.empty(), "generate --chat", "give the user's message with --prompt");
      const data::ChatTemplate tmpl = chat_template_of(l, "", "generate --chat");
      data::Conversation conv;
      if (!ga->system.empty()) conv.push_back({"system", ga->system});
      conv.push_back({"user", ga->prompt});
      prompt = tmpl.prompt(tok, conv);
      prompt.insert(prompt.begin(), tok.eot());
      o.stop_token = tmpl.end_of_turn(tok);
      fmt::print("{}\n", tok.decode(train::generate(*l.model, prompt, o)));
      return;
    }
    if (ga->json) {
      // log softmax of the logits after the whole prompt, in double
      // No context shift in this mode: what it prints must be plain decoding of the prompt.
      LLMTK_CHECK(std::int64_t(prompt.size()) + o.max_tokens <= l.model->context(), "generate --json",
                  "the prompt's ", prompt.size(), " tokens and --max-tokens ", o.max_tokens,
                  " exceed the model's context of ", l.model->context(), " positions; shorten one of them");
      l.model->plan_decode(std::int64_t(prompt.size()));
      l.model->allocate();
      const float* z = nullptr;
      for (std::size_t i = 0; i < prompt.size(); ++i) {  // one token at a time through the KV cache
        std::int32_t id = prompt[i];
        z = l.model->decode(TensorRef(&id, DType::i32, {1, 1}), std::int64_t(i));
      }
      const std::int64_t V = l.model->dims().vocab;
      double mx = -INFINITY, sum = 0;
      for (std::int64_t v = 0; v < V; ++v) mx = std::max(mx, double(z[v]));
      for (std::int64_t v = 0; v < V; ++v) sum += std::exp(double(z[v]) - mx);
      std::vector<double> logprobs(static_cast<std::size_t>(V));
      for (std::int64_t v = 0; v < V; ++v) logprobs[std::size_t(v)] = double(z[v]) - mx - std::log(sum);
      o.stop_token = -1;
      const auto out = train::generate(*l.model, prompt, o);
      nlohmann::json j = {{"prompt_ids", prompt}, {"next_logprobs", logprobs}, {"generated_ids", out}};
      fmt::print("{}\n", j.dump());
      return;
    }
    fmt::print("{}", ga->prompt);
    std::fflush(stdout);
    // Print as tokens arrive; a token can end mid-character, so print whole UTF-8 sequences only.
    std::string pending;
    train::generate(*l.model, prompt, o, [&](data::TokenId id) {
      pending += tok.token_bytes(id);
      std::size_t cut = pending.size();
      while (cut > 0 && (static_cast<unsigned char>(pending[cut - 1]) & 0xC0) == 0x80) --cut;
      if (cut > 0 && static_cast<unsigned char>(pending[cut - 1]) >= 0xC0) --cut;
      fmt::print("{}", pending.substr(0, cut));
      std::fflush(stdout);
      pending.erase(0, cut);
    });
    fmt::print("{}\n", pending);
  });

  auto ca = std::make_shared<GenArgs>();
  ca->o.temperature = 0;
  auto* ch = app.add_subcommand("chat", "Talk to an instruction-tuned run: one message per line (a prompt on a terminal)");
  ch->add_option("run", ca->run, "A run or checkpoint directory fine-tuned on instruction data (docs/sft.md)")
      ->required()
      ->check(CLI::ExistingDirectory);
  ch->add_option("--system", ca->system, "A system message first");
  ch->add_option("--max-tokens", ca->o.max_tokens, "Tokens per reply at most")->check(CLI::Range(1, 1 << 20));
  ch->add_option("--temperature", ca->o.temperature, "0 (the default) is greedy")->check(CLI::Range(0.0, 100.0));
  ch->add_option("--seed", ca->o.seed, "Random seed");
  ch->add_option("--device", ca->device, device_list())->check(device_names());
  ch->callback([ca] { chat(*ca); });

  auto ra = std::make_shared<std::pair<std::vector<std::string>, std::string>>();
  auto* rep = app.add_subcommand("report", "One HTML page with plots of one or more runs");
  rep->add_option("runs", ra->first, "Run directories (runs/NAME)")->required()->check(CLI::ExistingDirectory);
  rep->add_option("--out", ra->second, "Output file (default: report.html in the first run directory)");
  rep->callback([ra] {
    const std::string out = ra->second.empty() ? (fs::path(ra->first.front()) / "report.html").string() : ra->second;
    fmt::print("{}\n", train::write_run_report(ra->first, out));
  });

  struct DoctorArgs {
    std::string run;
    bool json = false;
  };
  auto da = std::make_shared<DoctorArgs>();
  auto* doc = app.add_subcommand("doctor", "Say what went wrong in a run and what to try, with the evidence "
                                           "(docs/learn/07-diagnose.md)");
  doc->add_option("run", da->run, "A run directory (runs/NAME)")->required()->check(CLI::ExistingDirectory);
  doc->add_flag("--json", da->json, "One JSON object: findings (id, title, evidence, advice, page), checked, not_checked");
  doc->callback([da] {
    const train::Diagnosis d = train::diagnose(da->run);
    fmt::print("{}\n", da->json ? train::to_json(d) : train::to_text(d));
  });

  struct ExportArgs {
    std::string run, hf, gguf, peft, base, type = "f32";
    bool merge = false;
  };
  auto xa = std::make_shared<ExportArgs>();
  auto* ex = app.add_subcommand("export", "Write a trained run in another format");
  ex->add_option("run", xa->run, "A run or checkpoint directory, a Transformers directory or a GGUF file (to convert "
                 "one to the other)")->required()->check(CLI::ExistingPath);
  auto* hf = ex->add_option("--hf", xa->hf, "Directory for a Hugging Face Transformers checkpoint "
                                            "(config.json, model.safetensors, tokenizer.json)");
  auto* gguf = ex->add_option("--gguf", xa->gguf, "File for llama.cpp (GGUF, the llama architecture, tokenizer included)");
  ex->add_option("--type", xa->type, "GGUF tensor type: f32, f16, bf16 or q8_0 (norms stay f32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}))
      ->needs(gguf);
  auto* peft = ex->add_option("--peft", xa->peft, "A LoRA run: directory for its adapters in PEFT's layout "
                                                "(adapter_config.json, adapter_model.safetensors, the tokenizer)");
  ex->add_option("--base", xa->base, "With --peft: the base_model_name_or_path to record (default: the run's base, "
                                     "e.g. the directory of `llmtk export BASE --hf DIR`)")
      ->needs(peft);
  hf->excludes(gguf);
  peft->excludes(hf)->excludes(gguf);
  ex->add_flag("--merge", xa->merge, "A LoRA run: write W + s·B·A, the base with its adapters merged in");
  ex->callback([xa] {
    LLMTK_CHECK(!xa->hf.empty() || !xa->gguf.empty() || !xa->peft.empty(), "export",
                "say where: --hf DIR (Transformers), --gguf FILE (llama.cpp) or --peft DIR (LoRA adapters for PEFT)");
    if (!xa->peft.empty()) {
      auto l = load_lm(xa->run, "cpu");
      LLMTK_CHECK(l.state.lora.enabled() || l.state.soft_prompt > 0 || l.state.prefix > 0, "export --peft", l.checkpoint,
                  " holds no LoRA adapters, soft prompt or prefix; export the whole model with --hf DIR");
      data::ChatTemplate tmpl = data::ChatTemplate::named("chatml");
      const data::ChatTemplate* chat = data::ChatTemplate::saved_beside(l.state.tokenizer, tmpl) ? &tmpl : nullptr;
      const std::string base = xa->base.empty() ? l.state.base.path : xa->base;
      if (l.state.soft_prompt > 0) train::export_peft_prompt(*l.model, xa->peft, base, l.tokenizer.get(), chat);
      else if (l.state.prefix > 0) train::export_peft_prefix(*l.model, xa->peft, base, l.tokenizer.get(), chat);
      else train::export_peft(*l.model, l.state.lora, xa->peft, base, l.tokenizer.get(), chat);
      fmt::print("exported the {} of {} (checkpoint {}) to {} (PEFT, base_model_name_or_path \"{}\")\n",
                 l.state.soft_prompt > 0 ? "soft prompt" : l.state.prefix > 0 ? "prefix" : "LoRA adapters", l.model->name(),
                 l.checkpoint, xa->peft, base);
      return;
    }
    const char* command = xa->hf.empty() ? "export --gguf" : "export --hf";
    auto l = load_lm(xa->run, "cpu");
    std::unique_ptr<AnyModel> merged;
    if (l.state.lora.enabled()) {
      if (!xa->merge)
        fail(command, l.checkpoint, " holds LoRA adapters (rank ", l.state.lora.rank,
             "), which the format has no place for; pass --merge to write the base with the adapters merged in");
      merged = train::merge_lora(l.state.arch, l.state.dims, l.state.lora, *l.model);
    }
    const AnyModel& model = merged ? *merged : *l.model;
    data::ChatTemplate tmpl = data::ChatTemplate::named("chatml");
    const data::ChatTemplate* chat = data::ChatTemplate::saved_beside(l.state.tokenizer, tmpl) ? &tmpl : nullptr;
    if (!xa->hf.empty()) {
      train::export_hf(model, xa->hf, l.tokenizer.get(), chat, model.classifier() ? &l.state.labels : nullptr);
      fmt::print("exported {} ({} checkpoint {}{}) to {}\n", l.model->name(), train::hf_family(model), l.checkpoint,
                 merged ? ", LoRA merged" : "", xa->hf);
    } else {
      train::export_gguf(model, xa->gguf, *l.tokenizer, xa->type, chat);
      fmt::print("exported {} (checkpoint {}{}) to {} (GGUF, llama architecture, {})\n", l.model->name(), l.checkpoint,
                 merged ? ", LoRA merged" : "", xa->gguf, xa->type);
    }
  });

  auto wa = std::make_shared<RewardArgs>();
  auto* rw = app.add_subcommand("reward", "A reward model's scores: its accuracy on preference pairs, or each reply's score");
  rw->add_option("run", wa->run, "A reward model's run or checkpoint directory (trained with [reward])")->required()->check(CLI::ExistingDirectory);
  rw->add_option("--data", wa->data, "JSONL of pairs ({prompt, chosen, rejected}: accuracy) or replies ({prompt, completion}, or "
                 "instruction records: the last assistant turn is scored)")->required()->check(CLI::ExistingFile);
  rw->add_option("--limit", wa->limit, "N records, evenly spaced through the file")->check(CLI::Range(std::int64_t(1), std::int64_t(1) << 40));
  rw->add_option("--show", wa->show, "Replies: print the first N scores")->check(CLI::Range(0, 1 << 20));
  rw->add_option("--out", wa->out, "Replies: write every score as JSONL {prompt, completion, score}");
  rw->add_option("--batch", wa->batch, "Batch size")->check(CLI::Range(1, 1 << 16));
  rw->add_option("--device", wa->device, device_list())->check(device_names());
  rw->callback([wa] { reward(*wa); });

  auto ea = std::make_shared<EvalArgs>();
  auto* ev = app.add_subcommand("eval", "Loss and perplexity of a trained run on shards or a text, its answers to a task "
                                "(generated, or multiple choice), or its preferences");
  ev->add_option("run", ea->run, "A run or checkpoint directory, a Transformers directory (config.json, model.safetensors, "
                 "tokenizer.json) or a GGUF file (llmtk export --gguf)")->required()->check(CLI::ExistingPath);
  auto* data_opt = ev->add_option("--data", ea->shards, "Shard files (.bin)")->check(CLI::ExistingFile);
  auto* task_opt = ev->add_option("--task", ea->task, "Instruction JSONL (llmtk data synth ... --split test): exact match, "
                                  "token accuracy and loss of the answers")->check(CLI::ExistingFile);
  auto* pairs_opt = ev->add_option("--pairs", ea->pairs, "Preference JSONL ({prompt, chosen, rejected}): how often the model "
                                    "gives the chosen reply the higher log-probability")->check(CLI::ExistingFile);
  auto* text_opt = ev->add_option("--text", ea->text, "A UTF-8 text file: perplexity with a sliding window of --seq tokens "
                                  "(default: the model's context) moved by --stride")->check(CLI::ExistingFile);
  data_opt->excludes(task_opt);
  pairs_opt->excludes(task_opt)->excludes(data_opt);
  text_opt->excludes(task_opt)->excludes(data_opt)->excludes(pairs_opt);
  ev->add_option("--stride", ea->stride, "--text: tokens between window starts (default: half the window); each window "
                 "scores only the tokens no earlier one did")->check(CLI::Range(std::int64_t(1), std::int64_t(1) << 24));
  ev->add_flag("--json", ea->json, "--text, multiple-choice --task: print one JSON object");
  ev->add_option("--max-tokens", ea->max_tokens, "--task: tokens generated per answer")->check(CLI::Range(1, 1 << 16));
  ev->add_option("--limit", ea->limit, "--task, --pairs: N records, evenly spaced through the file")->check(CLI::Range(std::int64_t(1), std::int64_t(1) << 40));
  ev->add_option("--show", ea->show, "--task: print the first N answers")->check(CLI::Range(0, 1 << 20));
  ev->add_option("--out", ea->out, "--task: write every answer as JSONL");
  ev->add_option("--template", ea->chat_template, "--task on a model trained without a chat template: add this one's "
                 "tokens as fine-tuning would (chatml)")->check(CLI::IsMember({"chatml"}));
  ev->add_option("--batch", ea->batch, "Batch size")->check(CLI::Range(1, 1 << 16));
  ev->add_option("--seq", ea->seq, "Sequence length (default: the model's max_seq)")->check(CLI::Range(1, 1 << 24));
  ev->add_option("--batches", ea->batches, "Batches to evaluate (default: all)")->check(CLI::Range(1, 1 << 30));
  ev->add_option("--device", ea->device, device_list())->check(device_names());
  ev->callback([ea] {
    LLMTK_CHECK(ea->stride == 0 || !ea->text.empty(), "eval", "--stride is for --text (the sliding window's step)");
    LLMTK_CHECK(!ea->json || !ea->text.empty() || (!ea->task.empty() && train::is_choice_file(ea->task)), "eval",
                "--json is for --text and multiple-choice --task files");
    if (!ea->text.empty()) return eval_text(*ea);
    if (!ea->task.empty()) return eval_task(*ea);
    if (!ea->pairs.empty()) return eval_pairs(*ea);
    LLMTK_CHECK(!ea->shards.empty(), "eval", "say what to evaluate on: --data SHARDS (loss), --text FILE (perplexity), "
                "--task FILE.jsonl (answers, or multiple choice) or --pairs FILE.jsonl (preferences)");
    auto l = load_lm(ea->run, ea->device);
    LLMTK_CHECK(!l.model->classifier(), "eval", l.checkpoint, " is a classifier (", l.state.arch, "): it has no token "
                "probabilities to measure on shards; evaluate it on labelled examples with --task FILE.jsonl");
    const std::int64_t T = ea->seq ? ea->seq : l.model->context();
    const bool encoder = l.model->has_tag("encoder");
    if (l.model->encoder_decoder()) {  // the span loss and recovery, corrupted as validation in training is
      const SpanOptions rates;  // T5's: 15% dropped in spans of 3
      const train::SpanLengths sl = train::span_lengths_for_source(T, rates);
      data::DataLoader loader(ea->shards, l.tokenizer->hash(),
                              data::LoaderOptions{ea->batch, sl.raw, data::DataOrder::sequential, 0, 0, 1});
      const std::int64_t n = ea->batches ? std::min<std::int64_t>(ea->batches, std::int64_t(loader.batches_per_epoch()))
                                         : std::int64_t(loader.batches_per_epoch());
      const train::SpanTokens st = train::span_tokens(*l.tokenizer, "eval");
      train::SpanBatches batches(loader, st, rates, train::kValidationSpanSeed);
      train::SpanLoss objective(st.is_sentinel);
      l.model->plan(ea->batch, sl.target, false, sl.source);
      const train::EvalStats e = train::evaluate(*l.model, objective, batches, n);
      auto metric = [&](const char* name) {
        for (const auto& [k, v] : e.metrics)
          if (k == name) return v;
        return 0.0;
      };
      fmt::print("checkpoint {}\n{} rows in {} batches: sources of {} tokens, targets of {} ({} spans each)\nspan loss {:.6f}\n"
                 "target-token accuracy {:.4f}\nexact spans {:.4f}\n", l.checkpoint, n * ea->batch, n, sl.source, sl.target,
                 sl.spans, e.loss, metric("accuracy"), metric("span_exact"));
      return;
    }
    LLMTK_CHECK(!encoder || T >= 3, "eval", "--seq ", T, " leaves an encoder no room for text between [CLS] and [SEP]");
    data::DataLoader loader(ea->shards, l.tokenizer->hash(),
                            data::LoaderOptions{ea->batch, encoder ? train::mlm_loader_seq(T) : T, data::DataOrder::sequential, 0, 0, 1});
    const std::int64_t n = ea->batches ? std::min<std::int64_t>(ea->batches, std::int64_t(loader.batches_per_epoch()))
                                       : std::int64_t(loader.batches_per_epoch());
    l.model->plan(ea->batch, T);
    if (encoder) {  // the masked-token loss and accuracy, masked as validation in training is
      const MaskingOptions rates;  // BERT's: 15% selected; 80% [MASK], 10% random, 10% unchanged
      train::MaskedBatches batches(loader, train::mlm_tokens(*l.tokenizer, "eval"), rates, train::kValidationMaskSeed);
      train::MaskedTokenLoss objective;
      const train::EvalStats e = train::evaluate(*l.model, objective, batches, n);
      fmt::print("checkpoint {}\n{} rows in {} batches, {:.0f}% of their tokens masked\nmasked-token loss {:.6f}\n"
                 "masked-token accuracy {:.4f}\n", l.checkpoint, n * ea->batch, n, rates.rate * 100, e.loss,
                 e.metrics.empty() ? 0.0 : e.metrics[0].second);
      return;
    }
    NextTokenLoss objective;
    const double loss = train::evaluate(*l.model, objective, loader, n);
    fmt::print("checkpoint {}\n{} tokens in {} batches\nloss {:.6f}\nperplexity {:.2f}\n", l.checkpoint, n * ea->batch * T, n,
               loss, std::exp(loss));
  });
}

}  // namespace llmtk::cli
