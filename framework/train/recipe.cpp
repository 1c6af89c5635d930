#include "recipe.hpp"

#include <algorithm>
#include <charconv>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <optional>
#include <filesystem>
#include <sstream>

#include "../config/config.hpp"
#include "../data/tokenizer.hpp"
#include "../core/error.hpp"
#include "../models/registry.hpp"
#include "../ops/ops.hpp"
#include "classify.hpp"
#include "hf.hpp"
#include "lm_eval.hpp"
#include "peft.hpp"

namespace llmtk::train {

std::int64_t Recipe::rows() const {
  return preference.enabled() || reward.enabled() ? 2 * train.batch : rl.enabled() ? train.batch * rl.group : train.batch;
}

std::int64_t Recipe::total_steps() const {
  if (train.steps > 0) return train.steps;
  const std::int64_t per_step = rows() * train.seq * train.grad_accum;
  return (train.tokens + per_step - 1) / per_step;
}

namespace fs = std::filesystem;

namespace {
Recipe read(const std::string& path, const std::vector<std::string>& sets) {
  ConfigFile file(path);
  for (const auto& s : sets) file.set(s);
  Recipe r;
  r.file = path;
  auto root = file.root();

  // [finetune] from: the base decides the architecture and sizes; [model] may only repeat them.
  auto ft = root.table("finetune");
  r.finetune.from = ft.string("from", "");
  std::optional<FinetuneBase> base;
  if (!r.finetune.from.empty()) {
    try {
      base = read_finetune_base(r.finetune.from);
    } catch (const Error& e) {
      fail(path, e.what());  // "[finetune.from] ..." after the file
    }
  }

  // [reward]: the base's architecture with a score head in place of its LM head ("NAME+score").
  auto rw = root.table("reward");
  r.reward.train = rw.string("train", "");
  r.reward.test = rw.string("test", "");
  if (r.reward.enabled()) {
    LLMTK_CHECK(base, path, "[reward] trains a reward model from a trained one: set finetune.from (an instruction-tuned run)");
    for (const auto& [key, f] : {std::pair{"train", r.reward.train}, std::pair{"test", r.reward.test}})
      LLMTK_CHECK(f.empty() || fs::exists(f), path, "reward.", key, " = \"", f, "\" does not exist; llmtk data synth ",
                  "kjv-book-pref --out FILE writes an example set (recipes/align/run.sh makes them)");
  } else {
    LLMTK_CHECK(!rw.has("test"), path, "reward.test without reward.train: name the pairs to train on");
  }
  // [classify]: an encoder with a classification head in place of its MLM head ("NAME+classify").
  auto cl = root.table("classify");
  r.classify.train = cl.string("train", "");
  r.classify.test = cl.string("test", "");
  r.classify.labels = cl.strings("labels", {});
  if (r.classify.enabled()) {
    LLMTK_CHECK(!r.reward.enabled(), path, "[classify] and [reward] together: choose one objective");
    for (const auto& [key, f] : {std::pair{"train", r.classify.train}, std::pair{"test", r.classify.test}})
      LLMTK_CHECK(f.empty() || fs::exists(f), path, "classify.", key, " = \"", f, "\" does not exist; llmtk data synth ",
                  "kjv-testament --out FILE writes an example set (recipes/finetune/bert-classify.toml names them)");
    if (r.classify.labels.empty()) {
      std::string found;
      try {
        for (const auto& l : labels_in(read_labelled(r.classify.train))) found += (found.empty() ? "\"" : ", \"") + l + "\"";
      } catch (const Error& e) {
        fail(path, e.what());
      }
      fail(path, "[classify] needs labels, the class names in the order of their ids: ", r.classify.train, " has labels = [", found, "]");
    }
    for (const auto& l : r.classify.labels) LLMTK_CHECK(!l.empty(), path, "classify.labels holds an empty name; name every class");
    LLMTK_CHECK(r.classify.labels.size() >= 2, path, "classify.labels names one class; a classifier tells at least two apart");
    for (std::size_t i = 0; i < r.classify.labels.size(); ++i)
      for (std::size_t j = 0; j < i; ++j)
        LLMTK_CHECK(r.classify.labels[i] != r.classify.labels[j], path, "classify.labels names \"", r.classify.labels[i], "\" twice");
  } else {
    for (const char* key : {"test", "labels"})
      LLMTK_CHECK(!cl.has(key), path, "classify.", key, " without classify.train: name the examples to learn from");
  }
  const auto with_head = [&](const std::string& arch) {
    if (r.reward.enabled() && !arch.ends_with(kScoreSuffix)) return arch + std::string(kScoreSuffix);
    if (r.classify.enabled() && !arch.ends_with(kClassifySuffix)) return arch + std::string(kClassifySuffix);
    return arch;
  };
  const std::string base_arch = !base ? r.model.arch : with_head(base->arch);

  auto m = root.table("model");
  std::string known;
  for (const auto& a : architectures()) known += (known.empty() ? "" : ", ") + a.name;
  r.model.arch = m.string("arch", base_arch);
  if (!base) r.model.arch = with_head(r.model.arch);  // [classify] from scratch: model.arch = "bert-tiny" is enough
  LLMTK_CHECK(!base || r.model.arch == base_arch, path, "model.arch = \"", r.model.arch, "\" but the base ",
              r.finetune.from, " is a ", base ? base->arch : "", " model",
              r.reward.enabled() ? " (a reward model: " + base_arch + ")" : r.classify.enabled() ? " (a classifier: " + base_arch + ")" : "",
              "; remove model.arch (a fine-tuned model keeps its base's)");
  LLMTK_CHECK(!r.model.arch.ends_with(kScoreSuffix) || r.reward.enabled(), path, "model.arch = \"", r.model.arch,
              "\" is a reward model (a score head): it scores replies and is trained with [reward] on pairs, not as a language model",
              base ? "; to use it in RL name it as rl.reward_model" : "");
  const ArchInfo* arch = nullptr;
  for (const auto& a : architectures())
    if (a.name == lm_arch(r.model.arch)) arch = &a;
  if (!arch) fail(path, "model.arch = \"", r.model.arch, "\" is not a registered architecture; registered: ", known);
  r.model.dims = base ? base->dims : arch->dims;
  if (r.classify.enabled()) {
    LLMTK_CHECK(std::find(arch->tags.begin(), arch->tags.end(), "encoder") != arch->tags.end(), path,
                "[classify] fine-tunes an encoder (bert-tiny, a masked language model's run) and ", arch->name,
                " is a decoder; start from an encoder");
    r.model.dims.set("n_labels", double(r.classify.labels.size()));  // ClassHead's classes
  }
  const auto base_keys = dims_as_keys(r.model.dims);
  for (const auto& [key, value] : base_keys) {
    if (!m.has(key)) {
      m.string(key, "");  // marks it known for the unknown-key check; absent, so nothing is read
      continue;
    }
    // Read with the type the key has; set_dim validates and converts.
    std::string text;
    const KeyKind kind = dim_kind(key);
    if (kind == KeyKind::real) {
      char buf[32];
      auto res = std::to_chars(buf, buf + sizeof buf, m.number(key, 0, -1e300, 1e300));  // shortest round trip
      text.assign(buf, res.ptr);
    }
    else if (kind == KeyKind::boolean) text = m.boolean(key, false) ? "true" : "false";
    else text = std::to_string(m.integer(key, 0, INT32_MIN, INT32_MAX));
    if (base) {
      Dims probe = r.model.dims;
      set_dim(probe, key, text);
      LLMTK_CHECK(probe == r.model.dims, path, "model.", key, " = ", text, " but the base ", r.finetune.from, " has model.",
                  key, " = ", value, "; remove the key (a fine-tuned model keeps its base's sizes)");
    }
    set_dim(r.model.dims, key, text);
    r.model.set_keys.push_back(key);
  }
  // A key another architecture's part owns (model.moe_experts for a dense model): say whose it is.
  for (const auto& k : registered_part_keys())
    if (m.has(k.name)) {
      Dims probe = r.model.dims;
      probe.set(k.name, 0);
      check_part_keys(*arch, probe, path);
    }
  if (!base) arch->resolve(r.model.dims, r.model.set_keys);
  auto broken = check_dims(r.model.dims, arch->rules);
  if (!broken.empty())
    fail(path, "[model] breaks rule ", broken[0].rule, ": ", broken[0].message, " (", broken[0].keys, ")");

  // [lora]: adapters on the linear maps `targets` names; the base is frozen.
  auto lo = root.table("lora");
  r.lora.rank = lo.integer("rank", 0, 0, 1 << 16);
  r.lora.alpha = lo.number("alpha", r.lora.alpha, 1e-6, 1e6);
  r.lora.rslora = lo.boolean("rslora", r.lora.rslora);
  r.lora.targets = lo.strings("targets", r.lora.targets);
  r.lora.modules_to_save = lo.strings("modules_to_save", {});
  for (const auto& module : r.lora.modules_to_save)
    LLMTK_CHECK(!module.empty() && module[0] != '!', path, "lora.modules_to_save: '", module, "' must be a parameter name pattern, e.g. \"embed.tokens\"");
  for (const auto& [pattern, v] : lo.numbers_by_name("rank_pattern", 1, 1 << 16)) r.lora.rank_pattern[pattern] = std::int64_t(v);
  for (const auto& [pattern, v] : lo.numbers_by_name("alpha_pattern", 1e-6, 1e6)) r.lora.alpha_pattern[pattern] = v;
  r.lora.dropout = lo.number("dropout", r.lora.dropout, 0, 0.99);
  const std::string peft = base && !base->peft.empty() ? peft_type(base->peft) : "";
  if (peft == "LORA") {
    // PEFT adapters to continue from decide [lora]: their maps, ranks and scales (dropout, how
    // they train on, is the recipe's when it says, else the adapter's lora_dropout).
    LoraConfig adapters;
    try {
      adapters = read_peft(base->peft, hf_family(*make_model(r.model.arch, r.model.dims)), r.model.dims.n_layers).lora;
    } catch (const Error& e) {
      fail(path, e.what());
    }
    if (lo.has("dropout")) adapters.dropout = r.lora.dropout;
    LLMTK_CHECK(!lo.has("rank") || r.lora == adapters, path, "[lora] differs from the adapters in ", base->peft,
                ", which decide it; remove [lora] from the recipe");
    r.lora = adapters;
  }
  LLMTK_CHECK(!lo.has("alpha") || r.lora.enabled(), path, "[lora] without rank: set lora.rank (e.g. 8) to train adapters");
  LLMTK_CHECK(!r.lora.enabled() || !r.lora.targets.empty(), path, "lora.targets is empty: name the linear maps to adapt, e.g. [\"attn.wq\", \"attn.wv\"]");

  // [prompt_tuning]: n trainable vectors before every row; the base is frozen.
  auto pt = root.table("prompt_tuning");
  r.prompt_tuning.n_tokens = pt.integer("n_tokens", 0, 0, r.model.dims.max_seq - 1);
  r.prompt_tuning.init = pt.string("init", r.prompt_tuning.init, [](const std::string& v) {
    return v == "vocab" || v == "random" || v.starts_with("text:") ? std::string()
                                                                   : "is not \"vocab\", \"random\" or \"text:...\" (the text whose token embeddings start the prompt)";
  });
  LLMTK_CHECK(!pt.has("init") || r.prompt_tuning.enabled(), path, "[prompt_tuning] without n_tokens: set prompt_tuning.n_tokens (e.g. 20)");
  LLMTK_CHECK(!r.prompt_tuning.enabled() || !r.lora.enabled(), path, "[prompt_tuning] and [lora] together: choose one strategy");
  // [prefix_tuning]: n trainable keys and values per attention layer; the base is frozen.
  auto px = root.table("prefix_tuning");
  r.prefix_tuning.n_tokens = px.integer("n_tokens", 0, 0, r.model.dims.max_seq - 1);
  r.prefix_tuning.projection = px.integer("projection", 0, 0, 1 << 16);
  LLMTK_CHECK(!px.has("projection") || r.prefix_tuning.enabled(), path, "[prefix_tuning] without n_tokens: set prefix_tuning.n_tokens (e.g. 20)");
  if (peft == "PROMPT_TUNING" || peft == "PREFIX_TUNING") {
    // A PEFT soft prompt or prefix to continue from decides how many positions it has.
    PeftVirtualTokens t;
    try {
      t = read_peft_virtual_tokens(base->peft);
    } catch (const Error& e) {
      fail(path, e.what());
    }
    auto& n = peft == "PROMPT_TUNING" ? r.prompt_tuning.n_tokens : r.prefix_tuning.n_tokens;
    const char* table = peft == "PROMPT_TUNING" ? "prompt_tuning" : "prefix_tuning";
    LLMTK_CHECK(n == 0 || n == t.n, path, table, ".n_tokens = ", n, " but the ", table, " in ", base->peft, " has ", t.n,
                " (num_virtual_tokens); remove the key");
    n = t.n;
  }
  LLMTK_CHECK(!r.prefix_tuning.enabled() || (!r.lora.enabled() && !r.prompt_tuning.enabled()), path,
              "[prefix_tuning] with ", r.lora.enabled() ? "[lora]" : "[prompt_tuning]", ": choose one strategy");

  // [preference]: pairs of replies and the loss that learns from them; the model starts from the base.
  auto pf = root.table("preference");
  r.preference.train = pf.string("train", "");
  r.preference.test = pf.string("test", "");
  r.preference.reference = pf.string("reference", "");
  r.preference.loss.loss = pf.string("loss", r.preference.loss.loss, {"dpo", "ipo", "simpo"});
  r.preference.loss.beta = pf.number("beta", r.preference.loss.beta, 1e-6, 1e6);
  r.preference.loss.label_smoothing = pf.number("label_smoothing", r.preference.loss.label_smoothing, 0, 0.499);
  r.preference.loss.simpo_gamma = pf.number("simpo_gamma", r.preference.loss.simpo_gamma, -1e6, 1e6);
  if (r.preference.enabled()) {
    LLMTK_CHECK(!r.finetune.from.empty(), path, "[preference] aligns a trained model: set finetune.from (an instruction-tuned run)");
    LLMTK_CHECK(!r.reward.enabled(), path, "[preference] and [reward] together: choose one objective");
    LLMTK_CHECK(r.preference.loss.needs_reference() || r.preference.reference.empty(), path,
                "preference.loss = \"simpo\" compares with no reference model; remove preference.reference");
    LLMTK_CHECK(!r.prompt_tuning.enabled() && !r.prefix_tuning.enabled(), path,
                "[preference] with [", r.prompt_tuning.enabled() ? "prompt_tuning" : "prefix_tuning",
                "]: preference training supports full training and [lora] so far");
    for (const auto& [key, f] : {std::pair{"train", r.preference.train}, std::pair{"test", r.preference.test}})
      LLMTK_CHECK(f.empty() || fs::exists(f), path, "preference.", key, " = \"", f, "\" does not exist; llmtk data synth ",
                  "kjv-book-pref --out FILE writes an example set (recipes/align/run.sh makes them)");
  } else {
    for (const char* key : {"test", "reference", "loss", "beta", "label_smoothing", "simpo_gamma"})
      LLMTK_CHECK(!pf.has(key), path, "preference.", key, " without preference.train: name the pairs to train on");
  }

  // [rl]: prompts with verifiable answers; the policy samples, a reward scores, GRPO learns.
  auto rl = root.table("rl");
  r.rl.task = rl.string("task", "");
  r.rl.test = rl.string("test", "");
  r.rl.algorithm = rl.string("algorithm", r.rl.algorithm, {"grpo", "ppo"});
  r.rl.reward = rl.string("reward", r.rl.reward, {"exact_match", "contains", "model"});
  r.rl.reward_model = rl.string("reward_model", "");
  r.rl.gamma = rl.number("gamma", r.rl.gamma, 0, 1);
  r.rl.lambda = rl.number("lambda", r.rl.lambda, 0, 1);
  r.rl.critic_lr = rl.number("critic_lr", r.rl.critic_lr, 0, 10);
  r.rl.reference = rl.string("reference", "");
  r.rl.group = rl.integer("group", r.rl.algorithm == "ppo" ? 1 : r.rl.group, r.rl.algorithm == "ppo" ? 1 : 2, 1 << 12);
  r.rl.max_tokens = int(rl.integer("max_tokens", r.rl.max_tokens, 1, 1 << 16));
  r.rl.temperature = rl.number("temperature", r.rl.temperature, 1e-3, 100);
  r.rl.top_p = rl.number("top_p", r.rl.top_p, 1e-3, 1);
  r.rl.loss.beta = rl.number("beta", r.rl.loss.beta, 0, 1e3);
  r.rl.loss.clip = rl.number("clip", r.rl.loss.clip, 1e-3, 0.999);
  r.rl.sample_every = rl.integer("sample_every", r.rl.sample_every, 0, std::int64_t(1) << 40);
  if (r.rl.enabled()) {
    LLMTK_CHECK(!r.finetune.from.empty(), path, "[rl] improves a trained model: set finetune.from (an instruction-tuned run)");
    LLMTK_CHECK(!r.preference.enabled() && !r.reward.enabled(), path, "[rl] and [", r.reward.enabled() ? "reward" : "preference",
                "] together: choose one objective");
    LLMTK_CHECK(!r.prompt_tuning.enabled() && !r.prefix_tuning.enabled(), path,
                "[rl] with [", r.prompt_tuning.enabled() ? "prompt_tuning" : "prefix_tuning", "]: RL supports full training and [lora] so far");
    for (const auto& [key, f] : {std::pair{"task", r.rl.task}, std::pair{"test", r.rl.test}})
      LLMTK_CHECK(f.empty() || fs::exists(f), path, "rl.", key, " = \"", f, "\" does not exist; llmtk data synth kjv-book --out FILE ",
                  "writes an example task (recipes/align/run.sh makes them)");
    LLMTK_CHECK(r.rl.reward != "model" || !r.rl.reward_model.empty(), path, "rl.reward = \"model\" needs rl.reward_model: ",
                "a reward model's run (train one with [reward]: recipes/align/reward.toml)");
    LLMTK_CHECK(r.rl.reward_model.empty() || r.rl.reward == "model" || r.rl.algorithm == "ppo", path, "rl.reward_model with rl.reward = \"",
                r.rl.reward, "\": set rl.reward = \"model\" to use it");
    LLMTK_CHECK(r.rl.reward_model.empty() || fs::is_directory(r.rl.reward_model), path, "rl.reward_model = \"", r.rl.reward_model,
                "\" does not exist; train one with [reward] (recipes/align/reward.toml)");
    for (const char* key : {"gamma", "lambda", "critic_lr"})
      LLMTK_CHECK(r.rl.algorithm == "ppo" || !rl.has(key), path, "rl.", key, " is PPO's (the critic's); GRPO has no critic: remove it");
  } else {
    for (const char* key : {"test", "algorithm", "reward", "reward_model", "reference", "group", "max_tokens", "temperature", "top_p",
                            "beta", "clip", "sample_every", "gamma", "lambda", "critic_lr"})
      LLMTK_CHECK(!rl.has(key), path, "rl.", key, " without rl.task: name the prompts to learn from");
  }

  // [objective]: an encoder learns to fill in masked tokens; the rates of BERT by default.
  r.encoder = std::find(arch->tags.begin(), arch->tags.end(), "encoder") != arch->tags.end();
  r.seq2seq = std::find(arch->tags.begin(), arch->tags.end(), "encoder_decoder") != arch->tags.end();
  auto ob = root.table("objective");
  if (r.encoder) {
    r.masking.rate = ob.number("mask_rate", r.masking.rate, 1e-6, 1);
    r.masking.mask = ob.number("mask_token", r.masking.mask, 0, 1);
    r.masking.random = ob.number("random_token", r.masking.random, 0, 1);
    LLMTK_CHECK(r.masking.mask + r.masking.random <= 1 + 1e-12, path, "objective.mask_token + objective.random_token = ",
                r.masking.mask + r.masking.random, " is above 1: they are shares of the selected tokens (BERT: 0.8 and "
                "0.1, the other 0.1 stay as they are)");
    for (const char* key : {"mask_rate", "mask_token", "random_token"})
      LLMTK_CHECK(!r.classify.enabled() || !ob.has(key), path, "objective.", key, " with [classify]: a classifier learns "
                  "from labels, not masked tokens; remove the key");
    const char* other = r.preference.enabled() ? "[preference]" : r.rl.enabled() ? "[rl]" : r.reward.enabled() ? "[reward]" : nullptr;
    LLMTK_CHECK(!other, path, other ? other : "", " with model.arch = \"", r.model.arch, "\", an encoder: alignment "
                "trains a decoder that writes replies; choose a decoder architecture");
  } else {
    for (const char* key : {"mask_rate", "mask_token", "random_token"})
      LLMTK_CHECK(!ob.has(key), path, "objective.", key, " is for encoders (masked language models, e.g. bert-tiny) and ",
                  r.model.arch, " is ", r.seq2seq ? "an encoder-decoder, trained on corrupted spans" : "a decoder, trained on next tokens",
                  "; remove the key");
  }
  // An encoder-decoder learns to restore dropped spans; T5's rates by default.
  if (r.seq2seq) {
    r.span.noise_density = ob.number("noise_density", r.span.noise_density, 1e-6, 0.9);
    r.span.mean_span_length = ob.number("mean_span_length", r.span.mean_span_length, 1, 1e6);
    const char* other = r.preference.enabled() ? "[preference]" : r.rl.enabled() ? "[rl]" : r.reward.enabled() ? "[reward]"
                        : r.classify.enabled() ? "[classify]" : nullptr;
    LLMTK_CHECK(!other, path, other ? other : "", " with model.arch = \"", r.model.arch, "\", an encoder-decoder: ",
                other && std::string_view(other) == "[classify]" ? "classification fine-tunes an encoder (bert-tiny)"
                                                                 : "alignment trains a decoder that writes replies",
                "; choose ", other && std::string_view(other) == "[classify]" ? "an encoder" : "a decoder", " architecture");
    LLMTK_CHECK(!r.prompt_tuning.enabled() && !r.prefix_tuning.enabled(), path, "prompt and prefix tuning are for decoders; "
                "tune the encoder-decoder ", r.model.arch, " in full or with [lora]");
  } else {
    for (const char* key : {"noise_density", "mean_span_length"})
      LLMTK_CHECK(!ob.has(key), path, "objective.", key, " is for encoder-decoders (span corruption, e.g. t5-tiny) and ",
                  r.model.arch, " is ", r.encoder ? "an encoder, trained on masked tokens" : "a decoder, trained on next tokens",
                  "; remove the key");
  }

  auto d = root.table("data");
  r.data.dir = d.string("dir", "");
  r.data.order = d.string("order", r.data.order, {"shuffled", "sequential", "by_length", "random"});
  if (r.preference.enabled() || r.rl.enabled() || r.reward.enabled() || r.classify.enabled())
    LLMTK_CHECK(r.data.order == "shuffled" || r.data.order == "sequential", path, "data.order = \"", r.data.order,
                "\": pairs, prompts and labelled examples are read \"shuffled\" (every epoch) or \"sequential\"");
  r.data.packing = d.boolean("packing", r.data.packing);
  // Instruction data adds a chat template's tokens to the base's tokenizer: the fine-tuned model
  // has as many more rows in its embedding (and head), initialised when the base is loaded.
  if (base && !r.data.dir.empty() && fs::exists(fs::path(r.data.dir) / "tokenizer.json")) {
    const int grown = (data::load_tokenizer((fs::path(r.data.dir) / "tokenizer.json").string())->vocab_size());
    if (grown > r.model.dims.vocab) r.finetune.base_vocab = r.model.dims.vocab, r.model.dims.vocab = grown;
  }

  auto t = root.table("train");
  r.train.batch = t.integer("batch", r.train.batch, 1, 1 << 20);
  r.train.seq = t.integer("seq", r.train.seq, 1, r.model.dims.max_seq);
  r.train.steps = t.integer("steps", 0, 0, std::int64_t(1) << 40);
  r.train.tokens = t.integer("tokens", 0, 0, std::int64_t(1) << 50);
  r.train.grad_accum = t.integer("grad_accum", r.train.grad_accum, 1, 1 << 16);
  r.train.precision = t.string("precision", r.train.precision, {"fp32", "bf16"});
  r.train.seed = std::uint64_t(t.integer("seed", 1, 0, INT64_MAX));
  // The backends this build registered (backends/), checked where the value is written.
  r.train.device = t.string("device", r.train.device, [](const std::string& v) {
    return ops::find_backend(v) ? std::string() : "is an " + ops::unknown_backend(v);
  });
  r.train.threads = int(t.integer("threads", 0, 0, 4096));
  r.train.recompute = t.string("recompute", r.train.recompute, {"none", "blocks"});
  r.train.max_bad_steps = int(t.integer("max_bad_steps", r.train.max_bad_steps, 1, 1000));
  r.train.freeze = t.strings("freeze", {});
  LLMTK_CHECK(r.train.freeze.empty() || !r.lora.enabled(), path,
              "train.freeze and [lora] together: LoRA already freezes the whole base; remove train.freeze");
  LLMTK_CHECK(r.train.freeze.empty() || !r.prompt_tuning.enabled(), path,
              "train.freeze and [prompt_tuning] together: prompt tuning already freezes the whole base; remove train.freeze");
  LLMTK_CHECK(r.train.freeze.empty() || !r.prefix_tuning.enabled(), path,
              "train.freeze and [prefix_tuning] together: prefix tuning already freezes the whole base; remove train.freeze");
  for (const auto& [key, n] : {std::pair{"prompt_tuning", r.prompt_tuning.n_tokens}, std::pair{"prefix_tuning", r.prefix_tuning.n_tokens}})
    LLMTK_CHECK(r.train.seq + n <= r.model.dims.max_seq, path, "train.seq = ", r.train.seq, " plus ", key, ".n_tokens = ", n,
                " exceeds model.max_seq = ", r.model.dims.max_seq, "; lower train.seq to ", r.model.dims.max_seq - n);

  auto o = root.table("optim");
  r.optim.name = o.string("name", r.optim.name, {"adamw", "sgd", "lion"});
  r.optim.lr = o.number("lr", r.optim.lr, 0, 10);
  r.optim.beta1 = o.number("beta1", r.optim.beta1, 0, 1);
  r.optim.beta2 = o.number("beta2", r.optim.beta2, 0, 1);
  r.optim.eps = o.number("eps", r.optim.eps, 0, 1);
  r.optim.weight_decay = o.number("weight_decay", r.optim.weight_decay, 0, 10);
  r.optim.momentum = o.number("momentum", r.optim.momentum, 0, 1);
  r.optim.nesterov = o.boolean("nesterov", r.optim.nesterov);
  r.optim.decay_embeddings = o.boolean("decay_embeddings", r.optim.decay_embeddings);
  r.optim.grad_clip = o.number("grad_clip", r.optim.grad_clip, 0, 1e9);
  r.optim.lr_scale = o.numbers_by_name("lr_scale", 0, 1e3);

  auto s = root.table("schedule");
  r.schedule.name = s.string("name", r.schedule.name, {"constant", "cosine", "linear", "wsd"});
  r.schedule.warmup = s.integer("warmup", r.schedule.warmup, 0, std::int64_t(1) << 40);
  r.schedule.min_lr = s.number("min_lr", r.schedule.min_lr, 0, 10);
  r.schedule.decay_fraction = s.number("decay_fraction", r.schedule.decay_fraction, 0, 1);

  auto e = root.table("eval");
  r.eval.every = e.integer("every", r.eval.every, 0, std::int64_t(1) << 40);
  r.eval.batches = e.integer("batches", r.eval.batches, 1, 1 << 20);
  r.eval.tasks = e.strings("tasks", {});
  r.eval.task_limit = e.integer("task_limit", r.eval.task_limit, 1, std::int64_t(1) << 30);
  LLMTK_CHECK(r.eval.tasks.empty() || !(r.encoder || r.seq2seq || r.classify.enabled() || r.reward.enabled()), path,
              "eval.tasks scores a language model's next-token probabilities, and this run trains ",
              r.encoder ? "an encoder" : r.seq2seq ? "an encoder-decoder" : r.classify.enabled() ? "a classifier" : "a reward model",
              "; remove eval.tasks (evaluate with llmtk eval RUN after training, docs/evaluation.md)");
  for (const auto& task : r.eval.tasks) {
    LLMTK_CHECK(fs::is_regular_file(task), path, "eval.tasks: cannot read '", task, "'; make one with llmtk data synth kjv-next-verse "
                "--split test --out FILE.jsonl (docs/evaluation.md)");
    LLMTK_CHECK(is_choice_file(task), path, "eval.tasks: '", task, "' is not a multiple-choice file (JSONL {\"context\", "
                "\"endings\", \"label\"}); instruction tasks are evaluated after training with llmtk eval RUN --task FILE");
    read_choices(task);  // every line checked now, not at the first eval
  }
  auto c = root.table("checkpoint");
  r.checkpoint.every = c.integer("every", r.checkpoint.every, 0, std::int64_t(1) << 40);
  r.checkpoint.keep = int(c.integer("keep", r.checkpoint.keep, 1, 1000));
  r.checkpoint.keep_best = c.boolean("keep_best", r.checkpoint.keep_best);
  r.checkpoint.on_error = c.string("on_error", r.checkpoint.on_error, {"stop", "continue"});
  if (r.rl.enabled()) {
    // The best checkpoint is the one with the lowest validation loss, which RL does not measure.
    LLMTK_CHECK(!c.has("keep_best") || !r.checkpoint.keep_best, path, "checkpoint.keep_best ranks checkpoints by validation loss, "
                "which [rl] does not measure (it reports exact match); remove the key or set it to false");
    r.checkpoint.keep_best = false;
  }
  auto l = root.table("log");
  r.log.every = l.integer("every", r.log.every, 1, std::int64_t(1) << 40);
  r.log.sample_prompt = l.string("sample_prompt", "");
  LLMTK_CHECK(r.log.sample_prompt.empty() || !r.reward.enabled(), path,
              "log.sample_prompt with [reward]: a reward model scores text and cannot write any; remove the key");
  r.log.sample_tokens = int(l.integer("sample_tokens", r.log.sample_tokens, 1, 1 << 16));
  r.log.internals = l.boolean("internals", r.log.internals);
  r.log.internals_every = l.integer("internals_every", r.log.internals_every, 1, std::int64_t(1) << 40);
  LLMTK_CHECK(!r.seq2seq || r.log.sample_prompt.empty() || r.log.sample_prompt.find("<extra_id_0>") != std::string::npos, path,
              "log.sample_prompt = \"", r.log.sample_prompt, "\": an encoder-decoder trained on spans restores what sentinels "
              "stand for; write <extra_id_0> (then <extra_id_1>...) where it should fill in (\"In the beginning <extra_id_0> the "
              "heaven\")");
  LLMTK_CHECK(!r.encoder || r.classify.enabled() || r.log.sample_prompt.empty() || r.log.sample_prompt.find("[MASK]") != std::string::npos, path,
              "log.sample_prompt = \"", r.log.sample_prompt, "\": an encoder fills in [MASK] tokens rather than "
              "continuing text; write [MASK] where it should predict one (\"And God [MASK] unto Moses\")");

  auto dist = root.table("distributed");
  r.distributed.strategy = dist.string("strategy", r.distributed.strategy, [](const std::string& v) {
    if (v == "ddp" || v == "zero1" || v == "zero2" || v == "tp" || v == "tp+zero1" || v == "tp+zero2") return std::string();
    return "= \"" + v + "\" is not a strategy; use \"ddp\" (data parallel), \"zero1\" (its optimizer state sharded), "
           "\"zero2\" (the optimizer state and the gradients sharded), \"tp\" (tensor parallel: each layer split), "
           "or \"tp+zero1\" / \"tp+zero2\" (tensor parallel in groups of tp_size, the groups sharding as zero1 / zero2 do)";
  });
  r.distributed.tp_size = int(dist.integer("tp_size", r.distributed.tp_size, 0, 1 << 16));
  r.distributed.bucket_mb = dist.number("bucket_mb", r.distributed.bucket_mb, 0.001, 1024);
  r.distributed.overlap = dist.boolean("overlap", r.distributed.overlap);
  r.distributed.timeout_s = dist.number("timeout_s", r.distributed.timeout_s, 0.1, 1e7);

  file.reject_unknown_keys();

  // Rules across keys.
  LLMTK_CHECK(!r.data.dir.empty(), path, "data.dir is required: the output directory of llmtk data prepare");
  LLMTK_CHECK((r.train.steps > 0) != (r.train.tokens > 0), path,
              "set exactly one of train.steps and train.tokens (the run length)");
  LLMTK_CHECK(r.schedule.warmup < r.total_steps(), path, "schedule.warmup (", r.schedule.warmup,
              ") must be shorter than the run (", r.total_steps(), " steps)");
  LLMTK_CHECK(r.schedule.min_lr <= r.optim.lr, path, "schedule.min_lr (", r.schedule.min_lr,
              ") must not exceed optim.lr (", r.optim.lr, ")");
  return r;
}
}  // namespace

Recipe read_recipe(const std::string& path, const std::vector<std::string>& sets) {
  return reading_file("recipe", path, [&] { return read(path, sets); });
}

std::string to_toml(const Recipe& r) {
  std::ostringstream o;
  o << "# resolved from " << r.file << "\n";
  if (!r.finetune.from.empty()) o << "[finetune]\nfrom = \"" << r.finetune.from << "\"\n\n";
  o << "[model]\narch = \"" << r.model.arch << "\"\n";
  for (const auto& [k, v] : dims_as_keys(r.model.dims)) o << k << " = " << v << "\n";
  o << "\n[data]\ndir = \"" << r.data.dir << "\"\norder = \"" << r.data.order << "\"\n";
  if (!r.data.packing) o << "packing = false\n";
  o << "\n[train]\nbatch = " << r.train.batch << "\nseq = " << r.train.seq << "\n";
  if (r.train.steps) o << "steps = " << r.train.steps << "\n";
  else o << "tokens = " << r.train.tokens << "\n";
  o << "grad_accum = " << r.train.grad_accum << "\nprecision = \"" << r.train.precision << "\"\nseed = " << r.train.seed
    << "\ndevice = \"" << r.train.device << "\"\nthreads = " << r.train.threads << "\nrecompute = \""
    << r.train.recompute << "\"\nmax_bad_steps = " << r.train.max_bad_steps << "\n";
  auto list = [](const std::vector<std::string>& v) {
    std::string s = "[";
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", \"" : "\"") + v[i] + "\"";
    return s + "]";
  };
  if (!r.train.freeze.empty()) o << "freeze = " << list(r.train.freeze) << "\n";
  if (r.lora.enabled())
    o << "\n[lora]\nrank = " << r.lora.rank << "\nalpha = " << r.lora.alpha << "\ndropout = " << r.lora.dropout << "\nrslora = " << (r.lora.rslora ? "true" : "false")
      << "\ntargets = " << list(r.lora.targets) << "\n";
  if (r.lora.enabled() && !r.lora.modules_to_save.empty()) o << "modules_to_save = " << list(r.lora.modules_to_save) << "\n";
  auto pattern_table = [&](const char* key, const auto& map) {
    if (map.empty()) return;
    o << key << " = {";
    bool first = true;
    const auto precision = o.precision();
    for (const auto& [pattern, v] : map) {
      std::string quoted;  // a TOML basic string: quotes and backslashes escaped
      for (char ch : pattern) quoted += ch == '"' || ch == '\\' ? std::string("\\") + ch : std::string(1, ch);
      o << (first ? " \"" : ", \"") << quoted << "\" = " << std::setprecision(17) << v, first = false;
    }
    o << std::setprecision(int(precision)) << " }\n";
  };
  if (r.lora.enabled()) pattern_table("rank_pattern", r.lora.rank_pattern), pattern_table("alpha_pattern", r.lora.alpha_pattern);
  if (r.prompt_tuning.enabled()) {
    std::string init;
    for (char ch : r.prompt_tuning.init) init += ch == '"' || ch == '\\' ? std::string("\\") + ch : std::string(1, ch);
    o << "\n[prompt_tuning]\nn_tokens = " << r.prompt_tuning.n_tokens << "\ninit = \"" << init << "\"\n";
  }
  if (r.prefix_tuning.enabled())
    o << "\n[prefix_tuning]\nn_tokens = " << r.prefix_tuning.n_tokens << "\nprojection = " << r.prefix_tuning.projection << "\n";
  if (r.preference.enabled()) {
    o << "\n[preference]\ntrain = \"" << r.preference.train << "\"\n";
    if (!r.preference.test.empty()) o << "test = \"" << r.preference.test << "\"\n";
    if (!r.preference.reference.empty()) o << "reference = \"" << r.preference.reference << "\"\n";
    o << "loss = \"" << r.preference.loss.loss << "\"\nbeta = " << r.preference.loss.beta << "\nlabel_smoothing = "
      << r.preference.loss.label_smoothing << "\nsimpo_gamma = " << r.preference.loss.simpo_gamma << "\n";
  }
  if (r.reward.enabled()) {
    o << "\n[reward]\ntrain = \"" << r.reward.train << "\"\n";
    if (!r.reward.test.empty()) o << "test = \"" << r.reward.test << "\"\n";
  }
  if (r.classify.enabled()) {
    o << "\n[classify]\ntrain = \"" << r.classify.train << "\"\n";
    if (!r.classify.test.empty()) o << "test = \"" << r.classify.test << "\"\n";
    o << "labels = [";
    for (std::size_t i = 0; i < r.classify.labels.size(); ++i) o << (i ? ", " : "") << nlohmann::json(r.classify.labels[i]).dump();
    o << "]\n";
  } else if (r.encoder) {
    o << "\n[objective]\nmask_rate = " << r.masking.rate << "\nmask_token = " << r.masking.mask << "\nrandom_token = "
      << r.masking.random << "\n";
  } else if (r.seq2seq) {
    o << "\n[objective]\nnoise_density = " << r.span.noise_density << "\nmean_span_length = " << r.span.mean_span_length << "\n";
  }
  if (r.rl.enabled()) {
    o << "\n[rl]\nalgorithm = \"" << r.rl.algorithm << "\"\ntask = \"" << r.rl.task << "\"\n";
    if (!r.rl.test.empty()) o << "test = \"" << r.rl.test << "\"\n";
    if (!r.rl.reference.empty()) o << "reference = \"" << r.rl.reference << "\"\n";
    if (!r.rl.reward_model.empty()) o << "reward_model = \"" << r.rl.reward_model << "\"\n";
    if (r.rl.algorithm == "ppo") o << "gamma = " << r.rl.gamma << "\nlambda = " << r.rl.lambda << "\ncritic_lr = " << r.rl.critic_lr << "\n";
    o << "reward = \"" << r.rl.reward << "\"\ngroup = " << r.rl.group << "\nmax_tokens = " << r.rl.max_tokens
      << "\ntemperature = " << r.rl.temperature << "\ntop_p = " << r.rl.top_p << "\nbeta = " << r.rl.loss.beta
      << "\nclip = " << r.rl.loss.clip << "\nsample_every = " << r.rl.sample_every << "\n";
  }
  o << "\n[optim]\nname = \"" << r.optim.name << "\"\nlr = " << r.optim.lr << "\nbeta1 = " << r.optim.beta1
    << "\nbeta2 = " << r.optim.beta2 << "\neps = " << r.optim.eps << "\nweight_decay = " << r.optim.weight_decay
    << "\nmomentum = " << r.optim.momentum << "\nnesterov = " << (r.optim.nesterov ? "true" : "false")
    << "\ndecay_embeddings = " << (r.optim.decay_embeddings ? "true" : "false") << "\ngrad_clip = " << r.optim.grad_clip << "\n";
  if (!r.optim.lr_scale.empty()) {
    o << "lr_scale = {";
    for (std::size_t i = 0; i < r.optim.lr_scale.size(); ++i) {
      std::string pattern;  // a TOML basic string: quotes and backslashes escaped
      for (char ch : r.optim.lr_scale[i].first) {
        if (ch == '"' || ch == '\\') pattern.push_back('\\');
        pattern.push_back(ch);
      }
      o << (i ? ", " : " ") << "\"" << pattern << "\" = " << std::setprecision(17) << r.optim.lr_scale[i].second
        << std::setprecision(6);
    }
    o << " }\n";
  }
  o << "\n[schedule]\nname = \"" << r.schedule.name << "\"\nwarmup = " << r.schedule.warmup << "\nmin_lr = "
    << r.schedule.min_lr << "\ndecay_fraction = " << r.schedule.decay_fraction << "\n";
  o << "\n[eval]\nevery = " << r.eval.every << "\nbatches = " << r.eval.batches << "\n";
  if (!r.eval.tasks.empty()) o << "tasks = " << list(r.eval.tasks) << "\ntask_limit = " << r.eval.task_limit << "\n";
  o << "\n[checkpoint]\nevery = " << r.checkpoint.every << "\nkeep = " << r.checkpoint.keep << "\nkeep_best = "
    << (r.checkpoint.keep_best ? "true" : "false") << "\non_error = \"" << r.checkpoint.on_error << "\"\n";
  o << "\n[log]\nevery = " << r.log.every << "\nsample_prompt = \"" << r.log.sample_prompt << "\"\nsample_tokens = "
    << r.log.sample_tokens << "\ninternals = " << (r.log.internals ? "true" : "false") << "\ninternals_every = "
    << r.log.internals_every << "\n";
  o << "\n[distributed]\nstrategy = \"" << r.distributed.strategy << "\"\ntp_size = " << r.distributed.tp_size
    << "\nbucket_mb = " << r.distributed.bucket_mb
    << "\noverlap = " << (r.distributed.overlap ? "true" : "false") << "\ntimeout_s = " << r.distributed.timeout_s << "\n";
  return o.str();
}

}  // namespace llmtk::train
