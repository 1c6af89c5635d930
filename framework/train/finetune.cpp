#include "finetune.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../data/tokenizer.hpp"
#include "../layers/lora.hpp"
#include "../models/model.hpp"
#include "../models/registry.hpp"
#include "checkpoint.hpp"
#include "hf.hpp"
#include "peft.hpp"
#include "safetensors.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;

bool lora_target_matches(const std::string& target, const std::string& weight) {
  return Planner::glob(target, weight) || Planner::glob("*." + target, weight);
}

void init_soft_prompt(AnyModel& model, const PromptTuningConfig& config, const data::Tokenizer& tok, std::uint64_t seed) {
  const int id = model.params().find("embed.prompt");
  LLMTK_CHECK(id >= 0, "prompt_tuning", "the model has no soft prompt (embed.prompt)");
  if (config.init == "random") return;  // as planned: N(0, 0.02²)
  const std::int64_t n = config.n_tokens, C = model.dims().d_model, V = model.dims().vocab;
  std::vector<std::int32_t> rows;
  if (config.init == "vocab") {
    Rng rng(seed);
    for (std::int64_t i = 0; i < n; ++i) rows.push_back(std::int32_t(rng.next() % std::uint64_t(std::min<std::int64_t>(V, tok.vocab_size()))));
  } else {
    const std::string text = config.init.substr(5);
    for (auto t : tok.encode(text)) rows.push_back(std::int32_t(t));
    LLMTK_CHECK(!rows.empty(), "prompt_tuning", "prompt_tuning.init = \"", config.init, "\" has no text to embed");
    const std::size_t words = rows.size();
    while (std::int64_t(rows.size()) < n) rows.push_back(rows[rows.size() % words]);
    rows.resize(std::size_t(n));
  }
  const Arena host = model.params().host_copy();
  const float* table = host["embed.tokens"].f32();
  std::vector<float> values(std::size_t(n * C));
  for (std::int64_t i = 0; i < n; ++i) std::copy_n(table + rows[std::size_t(i)] * C, C, values.begin() + i * C);
  model.params().write(id, values.data());
}

std::int64_t LoraConfig::rank_of(const std::string& weight) const {
  for (const auto& [pattern, r] : rank_pattern)
    if (lora_target_matches(pattern, weight)) return r;
  return rank;
}

double LoraConfig::scale_of(const std::string& weight) const {
  double a = alpha;
  for (const auto& [pattern, v] : alpha_pattern)
    if (lora_target_matches(pattern, weight)) a = v;
  return scale_for(rank_of(weight), a);
}

std::shared_ptr<LoraTargets> apply_lora(AnyModel& model, const LoraConfig& lora) {
  auto seen = std::make_shared<LoraTargets>();
  seen->hits.assign(lora.targets.size(), 0);
  model.set_adapters([seen, lora](std::string_view name, std::int64_t out, std::int64_t in) -> std::shared_ptr<LinearAdapter> {
    const std::string weight(name);
    seen->weights.push_back(weight);
    bool hit = false;
    for (std::size_t t = 0; t < lora.targets.size(); ++t)
      if (lora_target_matches(lora.targets[t], weight)) ++seen->hits[t], hit = true;
    if (!hit) return nullptr;
    const std::int64_t rank = lora.rank_of(weight);
    LLMTK_CHECK(rank <= std::min(out, in), "lora", "lora.rank = ", rank, " is larger than ", weight, " [", out,
                ", ", in, "] can use (at most ", std::min(out, in), "); lower lora.rank or drop the target");
    return std::make_shared<LoRA>(out, in, rank, float(lora.scale_of(weight)), float(lora.dropout));
  });
  // The model's own parameters, but for modules_to_save; adapters always train (Planner::adapter_for).
  std::vector<std::string> frozen = {"*"};
  for (const auto& m : lora.modules_to_save) frozen.push_back("!" + m);
  model.freeze(frozen);
  return seen;
}

void check_lora_targets(const LoraConfig& lora, const LoraTargets& seen) {
  for (std::size_t t = 0; t < lora.targets.size(); ++t) {
    if (seen.hits[t] > 0) continue;
    // The names a target could match: the linear weights, with their layer index generalised.
    std::vector<std::string> names;
    for (const auto& w : seen.weights) {
      std::string g;
      for (std::size_t i = 0; i < w.size(); ++i) {
        if (std::isdigit(static_cast<unsigned char>(w[i])) && i > 0 && w[i - 1] == '.') {
          while (i + 1 < w.size() && std::isdigit(static_cast<unsigned char>(w[i + 1]))) ++i;
          g += '*';
        } else {
          g += w[i];
        }
      }
      if (std::find(names.begin(), names.end(), g) == names.end()) names.push_back(g);
    }
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    fail("lora", "target '", lora.targets[t], "' matches no linear map; this model's are: ", list,
         " (a target matches a full name or its tail, e.g. \"attn.wq\" or \"mlp.*\")");
  }
}

std::unique_ptr<AnyModel> merge_lora(const std::string& arch, const Dims& dims, const LoraConfig& lora,
                                     const AnyModel& lora_model) {
  auto base = make_model(arch, dims);
  base->plan(1, 1);
  base->allocate();
  const Arena src = lora_model.params().host_copy();
  Arena dst = base->params().host_copy();
  for (const auto& e : dst.entries()) {
    const int from = src.find(e.name);
    LLMTK_CHECK(from >= 0, "merge", "the LoRA model has no parameter '", e.name, "'");
    std::copy_n(src[from].f32(), e.numel, dst[e.name].f32());
    const int a = src.find(e.name + "_adapter.lora_A"), b = src.find(e.name + "_adapter.lora_B");
    if (a < 0 || b < 0) continue;
    const double s = lora.scale_of(e.name);
    // W[o, i] += s · Σ_r B[o, r] · A[r, i], in double: the merged weight is rounded once.
    const std::int64_t O = e.shape[0], I = e.shape[1], R = src.entries()[std::size_t(a)].shape[0];
    const float* A = src[a].f32();
    const float* B = src[b].f32();
    float* W = dst[e.name].f32();
    for (std::int64_t o = 0; o < O; ++o)
      for (std::int64_t i = 0; i < I; ++i) {
        double acc = 0;
        for (std::int64_t r = 0; r < R; ++r) acc += double(B[o * R + r]) * double(A[r * I + i]);
        W[o * I + i] = float(double(W[o * I + i]) + s * acc);
      }
  }
  base->params().copy_from(dst);
  return base;
}

FinetuneBase read_finetune_base(const std::string& from) {
  LLMTK_CHECK(fs::is_directory(from), "finetune.from", "'", from,
              "' does not exist; name an llmtk run (runs/NAME), a checkpoint, a Transformers directory or PEFT adapters");
  if (is_peft_dir(from)) {
    FinetuneBase b = read_finetune_base(peft_base(from));
    LLMTK_CHECK(b.peft.empty(), "finetune.from", from, " names as its base other adapters (", b.peft, ")");
    b.peft = from;
    return b;
  }
  FinetuneBase b;
  if (fs::exists(fs::path(from) / "config.json")) {
    std::string family;
    b.dims = hf_dims(from, family);
    std::ifstream in(fs::path(from) / "config.json");
    const nlohmann::json cfg = nlohmann::json::parse(in);
    const std::string act = cfg.value("hidden_act", "silu");
    // Mixtral: the preset with the checkpoint's head (MixtralConfig ties no embeddings by default).
    const std::string mixtral = cfg.value("tie_word_embeddings", false) ? "moe-tiny" : "mixtral-8x7b";
    b.arch = family == "t5" ? "t5-tiny" : family == "gpt2" ? "gpt2" : family == "bert" ? (b.dims.has("n_labels") ? "bert-tiny+classify" : "bert-tiny") : family == "mixtral" ? mixtral : act == "silu" ? "llama-tiny" : "llama-geglu-tiny";
    Dims preset = find_arch(b.arch).dims;  // keys a Transformers config does not carry keep the preset's
    b.dims.window = preset.window;
    for (const auto& pv : preset.part)  // and so do part keys it lacks (moe_z_coef...)
      if (pv.name[0] != 0 && !b.dims.has(pv.name)) b.dims.set(pv.name, pv.value);
    return b;
  }
  LLMTK_CHECK(fs::exists(fs::path(from) / "state.json") || fs::is_directory(fs::path(from) / "checkpoints"), "finetune.from",
              "'", from, "' is neither an llmtk run or checkpoint (state.json) nor a Transformers directory (config.json)");
  b.checkpoint = best_or_newest_checkpoint(from);
  const CheckpointState st = read_checkpoint_state(b.checkpoint);
  LLMTK_CHECK(!st.lora.enabled(), "finetune.from", b.checkpoint,
              " holds LoRA adapters; export it merged first (llmtk export RUN --hf DIR --merge) and start from DIR");
  b.arch = st.arch, b.dims = st.dims, b.tokenizer_hash = st.tokenizer_hash;
  return b;
}

namespace {
std::string file_fingerprint(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  LLMTK_CHECK(in.good(), "finetune", "cannot read '", file.string(), "'");
  data::Fnv1a h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    h.add(std::string_view(buf.data(), std::size_t(in.gcount())));
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h.h));
  return hex;
}
}  // namespace

BaseIdentity identify_base(const std::string& from, int base_vocab) {
  BaseIdentity b;
  b.path = fs::exists(fs::path(from) / "config.json") ? from : best_or_newest_checkpoint(from);
  b.hash = file_fingerprint(fs::path(b.path) / "model.safetensors");
  b.vocab = base_vocab;
  return b;
}

Arena read_base_weights(const std::string& arch, const Dims& dims, const std::string& dir) {
  auto base = make_model(arch, dims);
  base->plan(1, 1);
  base->allocate();
  if (fs::exists(fs::path(dir) / "config.json"))
    import_hf(*base, dir);
  else
    load_checkpoint(dir, *base, nullptr);
  return base->params().host_copy();
}

void load_base(const BaseIdentity& base, const std::string& arch, const Dims& dims, AnyModel& model,
               const std::string& who) {
  const fs::path file = fs::path(base.path) / "model.safetensors";
  LLMTK_CHECK(fs::exists(file), "checkpoint", who, " holds only the parameters that trained; the rest are its base's, in ",
              base.path, ", which is gone. Put the base back there (or link it) to use this checkpoint");
  LLMTK_CHECK(file_fingerprint(file) == base.hash, "checkpoint", who, " was trained on the base in ", base.path,
              ", whose weights have changed since (", file.string(), " fingerprint ", file_fingerprint(file),
              ", expected ", base.hash, "); restore that base, or fine-tune again from the new one");
  Dims base_dims = dims;
  if (base.vocab > 0) base_dims.vocab = base.vocab;
  const Arena weights = read_base_weights(arch, base_dims, base.path);
  load_weights(weights, model, base.vocab);
}

std::vector<std::string> load_weights(const Arena& weights, AnyModel& model, int base_vocab, std::string_view skip) {
  std::vector<std::string> grown;
  const std::int64_t vocab = model.dims().vocab;
  for (const auto& e : weights.entries()) {
    if (!skip.empty() && std::string_view(e.name).starts_with(skip)) continue;
    const int id = model.params().find(e.name);
    LLMTK_CHECK(id >= 0, "--init", "the model has no parameter '", e.name, "'");
    const auto& shape = model.params().entries()[std::size_t(id)].shape;
    if (shape == e.shape) {
      model.params().write(id, weights[e.name].data);
      continue;
    }
    // A row per token: the base's rows, then one per added token, each the mean of the base's
    // rows, which gives the new tokens no preference the base's output would single out (Hewitt
    // 2021, "Initializing new word embeddings for pretrained language models").
    LLMTK_CHECK(base_vocab > 0 && !shape.empty() && e.shape[0] == base_vocab && shape[0] == vocab &&
                    std::equal(shape.begin() + 1, shape.end(), e.shape.begin() + 1, e.shape.end()),
                "--init", "parameter '", e.name, "' has ", e.shape[0], " rows in the base and ", shape[0],
                " here; only a vocabulary that grows (a chat template's tokens) may change a shape");
    const std::int64_t rows = e.shape[0], width = e.numel / rows;
    const float* src = static_cast<const float*>(weights[e.name].data);
    std::vector<float> out(std::size_t(shape[0] * width));
    std::copy_n(src, e.numel, out.begin());
    std::vector<double> mean(std::size_t(width), 0.0);
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < width; ++j) mean[std::size_t(j)] += src[i * width + j];
    for (std::int64_t i = rows; i < shape[0]; ++i)
      for (std::int64_t j = 0; j < width; ++j) out[std::size_t(i * width + j)] = float(mean[std::size_t(j)] / double(rows));
    model.params().write(id, out.data());
    grown.push_back(e.name);
  }
  return grown;
}

}  // namespace llmtk::train
