#include "finetune.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../layers/lora.hpp"
#include "../models/registry.hpp"
#include "checkpoint.hpp"
#include "hf.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;

bool lora_target_matches(const std::string& target, const std::string& weight) {
  return Planner::glob(target, weight) || Planner::glob("*." + target, weight);
}

std::shared_ptr<LoraTargets> apply_lora(AnyModel& model, const LoraConfig& lora) {
  auto seen = std::make_shared<LoraTargets>();
  seen->hits.assign(lora.targets.size(), 0);
  const float scale = float(lora.scale());
  model.set_adapters([seen, lora, scale](std::string_view name, std::int64_t out, std::int64_t in) -> std::shared_ptr<LinearAdapter> {
    const std::string weight(name);
    seen->weights.push_back(weight);
    bool hit = false;
    for (std::size_t t = 0; t < lora.targets.size(); ++t)
      if (lora_target_matches(lora.targets[t], weight)) ++seen->hits[t], hit = true;
    if (!hit) return nullptr;
    LLMTK_CHECK(lora.rank <= std::min(out, in), "lora", "lora.rank = ", lora.rank, " is larger than ", weight, " [", out,
                ", ", in, "] can use (at most ", std::min(out, in), "); lower lora.rank or drop the target");
    return std::make_shared<LoRA>(out, in, lora.rank, scale);
  });
  model.freeze({"*"});  // the model's own parameters; adapters always train (Planner::adapter_for)
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
  const double s = lora.scale();
  for (const auto& e : dst.entries()) {
    const int from = src.find(e.name);
    LLMTK_CHECK(from >= 0, "merge", "the LoRA model has no parameter '", e.name, "'");
    std::copy_n(src[from].f32(), e.numel, dst[e.name].f32());
    const int a = src.find(e.name + "_adapter.lora_A"), b = src.find(e.name + "_adapter.lora_B");
    if (a < 0 || b < 0) continue;
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
              "' does not exist; name an llmtk run (runs/NAME), a checkpoint, or a Transformers directory");
  FinetuneBase b;
  if (fs::exists(fs::path(from) / "config.json")) {
    std::string family;
    b.dims = hf_dims(from, family);
    std::ifstream in(fs::path(from) / "config.json");
    const std::string act = nlohmann::json::parse(in).value("hidden_act", "silu");
    b.arch = family == "gpt2" ? "gpt2" : act == "silu" ? "llama-tiny" : "llama-geglu-tiny";
    Dims preset = find_arch(b.arch).dims;  // keys a Transformers config does not carry keep the preset's
    b.dims.window = preset.window;
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

}  // namespace llmtk::train
