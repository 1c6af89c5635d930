#include "peft.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "hf.hpp"
#include "safetensors.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

constexpr const char* kPrefix = "base_model.model.";

// Where an llmtk linear weight lives in Transformers: the module, and for GPT-2's fused c_attn
// which third of it (0 q, 1 k, 2 v; -1 for an unfused module).
struct Site {
  std::string module;
  int part = -1;
};

// "blocks.3.attn.wq" → layer 3 and the tail "attn.wq"; a name outside the blocks → -1.
int layer_of(const std::string& name, std::string& tail) {
  if (!name.starts_with("blocks.")) return tail = name, -1;
  const std::size_t dot = name.find('.', 7);
  tail = name.substr(dot + 1);
  return std::stoi(name.substr(7, dot - 7));
}

const std::map<std::string, std::pair<std::string, int>>& block_sites(const std::string& family) {
  static const std::map<std::string, std::pair<std::string, int>> gpt2 = {
      {"attn.wq", {"attn.c_attn", 0}}, {"attn.wk", {"attn.c_attn", 1}}, {"attn.wv", {"attn.c_attn", 2}},
      {"attn.wo", {"attn.c_proj", -1}}, {"mlp.w_fc", {"mlp.c_fc", -1}}, {"mlp.w_proj", {"mlp.c_proj", -1}}};
  static const std::map<std::string, std::pair<std::string, int>> llama = {
      {"attn.wq", {"self_attn.q_proj", -1}}, {"attn.wk", {"self_attn.k_proj", -1}}, {"attn.wv", {"self_attn.v_proj", -1}},
      {"attn.wo", {"self_attn.o_proj", -1}}, {"mlp.w_gate", {"mlp.gate_proj", -1}}, {"mlp.w_up", {"mlp.up_proj", -1}},
      {"mlp.w_down", {"mlp.down_proj", -1}}};
  return family == "gpt2" ? gpt2 : llama;
}
std::string layer_prefix(const std::string& family, int layer) {
  return (family == "gpt2" ? "transformer.h." : "model.layers.") + std::to_string(layer) + ".";
}
// Parameters that train in full (modules_to_save) and their Transformers modules.
std::string saved_module(const std::string& family, const std::string& param) {
  if (param == "embed.tokens") return family == "gpt2" ? "transformer.wte" : "model.embed_tokens";
  if (param == "head.weight") return "lm_head";
  return "";
}

Site site_of(const std::string& family, const std::string& weight) {
  if (weight == "head.weight" && family == "llama") return {"lm_head", -1};
  std::string tail;
  const int layer = layer_of(weight, tail);
  const auto& sites = block_sites(family);
  const auto it = sites.find(tail);
  LLMTK_CHECK(layer >= 0 && it != sites.end(), "export --peft", "the adapter on ", weight,
              " has no place in PEFT's layout for ", family, " (adapters on ", family == "gpt2" ? "attn.w[qkvo], mlp.w_fc, mlp.w_proj" :
              "attn.w[qkvo], mlp.w_gate, mlp.w_up, mlp.w_down, head.weight", " export); nothing was written");
  return {layer_prefix(family, layer) + it->second.first, it->second.second};
}

// The module's name without its layer ("transformer.h.3.attn.c_attn" → "attn.c_attn"), or the
// name itself outside the layers.
std::string module_tail(const std::string& module) {
  for (const char* p : {"transformer.h.", "model.layers."})
    if (module.starts_with(p)) return module.substr(module.find('.', std::string(p).size()) + 1);
  return module;
}

// Values per module (or per llmtk weight) written as PEFT-style patterns: one key per tail when
// every module with that tail has the same value, else one per full name; entries equal to
// `common` are left out.
template <class V, class Tail>
std::map<std::string, V> as_patterns(const std::map<std::string, V>& by_name, const V& common, Tail tail_of) {
  std::map<std::string, std::vector<std::pair<std::string, V>>> by_tail;
  for (const auto& [name, v] : by_name) by_tail[tail_of(name)].emplace_back(name, v);
  std::map<std::string, V> out;
  for (const auto& entry : by_tail) {
    const auto& [tail, items] = entry;
    const auto& first = items[0].second;  // named: clang before 16 cannot capture a structured binding
    const bool uniform = std::all_of(items.begin(), items.end(), [&](const auto& it) { return it.second == first; });
    if (uniform) {
      if (!(items[0].second == common)) out[tail] = items[0].second;
    } else {
      for (const auto& [name, v] : items)
        if (!(v == common)) out[name] = v;
    }
  }
  return out;
}

template <class V>
V most_common(const std::map<std::string, V>& by_name) {
  std::map<V, int> count;
  for (const auto& [name, v] : by_name) ++count[v];
  return std::max_element(count.begin(), count.end(), [](const auto& a, const auto& b) { return a.second < b.second; })->first;
}

// Target names: the tails present in every layer, and full names for the rest.
template <class Tail>
std::vector<std::string> as_targets(const std::vector<std::string>& names, Tail tail_of, int layers_with_tails) {
  std::map<std::string, std::vector<std::string>> by_tail;
  for (const auto& n : names) by_tail[tail_of(n)].push_back(n);
  std::vector<std::string> out;
  for (const auto& [tail, items] : by_tail) {
    if (tail != items[0] && int(items.size()) == layers_with_tails) out.push_back(tail);
    else out.insert(out.end(), items.begin(), items.end());
  }
  return out;
}

std::string llmtk_tail(const std::string& weight) {
  std::string tail;
  layer_of(weight, tail);
  return tail;
}

// PEFT's pattern keys match a module whose name is the key or ends with "." + key.
bool key_matches(const std::string& key, const std::string& module) {
  return module == key || (module.size() > key.size() && module.ends_with(key) && module[module.size() - key.size() - 1] == '.');
}

}  // namespace

bool is_peft_dir(const std::string& dir) { return fs::exists(fs::path(dir) / "adapter_config.json"); }

namespace {
json read_adapter_config(const std::string& dir) {
  const fs::path path = fs::path(dir) / "adapter_config.json";
  std::ifstream in(path);
  LLMTK_CHECK(in.good(), "finetune.from", "cannot read '", path.string(), "'");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    fail("finetune.from", path.string(), " is not valid JSON: ", e.what());
  }
}
}  // namespace

std::string peft_type(const std::string& dir) {
  const json cfg = read_adapter_config(dir);
  const std::string type = cfg.value("peft_type", "");
  const std::string path = (fs::path(dir) / "adapter_config.json").string();
  LLMTK_CHECK(type == "LORA" || type == "PROMPT_TUNING" || type == "PREFIX_TUNING", "finetune.from", path, " has peft_type \"",
              type, "\"; llmtk reads LoRA adapters (\"LORA\"), soft prompts (\"PROMPT_TUNING\") and prefixes (\"PREFIX_TUNING\")");
  LLMTK_CHECK(type != "PREFIX_TUNING" || !cfg.value("prefix_projection", false), "finetune.from", path, " is prefix tuning "
              "with prefix_projection = true (an MLP makes the prefix), which llmtk does not implement");
  return type;
}

std::string peft_base(const std::string& dir) {
  const json cfg = read_adapter_config(dir);
  const fs::path path = fs::path(dir) / "adapter_config.json";
  (void)peft_type(dir);  // refuses, by name, what llmtk cannot read
  const std::string base = cfg.contains("base_model_name_or_path") && cfg["base_model_name_or_path"].is_string()
                               ? cfg["base_model_name_or_path"].get<std::string>()
                               : "";
  LLMTK_CHECK(!base.empty(), "finetune.from", path.string(), " names no base (base_model_name_or_path); set it to the "
              "directory of the base model (a Transformers directory or an llmtk run)");
  // As written (relative to the working directory), else relative to the adapter's directory.
  if (fs::is_directory(base)) return base;
  const fs::path beside = fs::path(dir) / base;
  if (fs::is_directory(beside)) return beside.lexically_normal().string();
  fail("finetune.from", path.string(), " names the base \"", base, "\", which is not a directory here (nor beside the "
       "adapter); put the base model there or change base_model_name_or_path to its directory");
}

PeftVirtualTokens read_peft_virtual_tokens(const std::string& dir) {
  PeftVirtualTokens out;
  out.type = peft_type(dir);
  LLMTK_CHECK(out.type != "LORA", "finetune.from", dir, " holds LoRA adapters, not virtual tokens");
  const json cfg = read_adapter_config(dir);
  out.n = cfg.value("num_virtual_tokens", std::int64_t(0));
  const std::string file = (fs::path(dir) / "adapter_model.safetensors").string();
  LLMTK_CHECK(fs::exists(file), "finetune.from", "'", dir, "' has no adapter_model.safetensors");
  SafetensorsFile f(file);
  LLMTK_CHECK(f.has("prompt_embeddings"), "finetune.from", file, " has no tensor 'prompt_embeddings'");
  out.shape = f.shape("prompt_embeddings");
  LLMTK_CHECK(out.shape.size() == 2 && out.shape[0] == out.n && out.n > 0, "finetune.from", file, ": prompt_embeddings is [",
              out.shape.size() ? out.shape[0] : 0, ", ...] but num_virtual_tokens is ", out.n);
  out.values.resize(std::size_t(out.shape[0] * out.shape[1]));
  f.read("prompt_embeddings", out.values.data(), out.shape);
  return out;
}

void load_peft_virtual_tokens(const PeftVirtualTokens& t, AnyModel& model) {
  if (t.type == "PROMPT_TUNING") {
    const int id = model.params().find("embed.prompt");
    LLMTK_CHECK(id >= 0 && model.soft_prompt() == t.n && t.shape[1] == model.dims().d_model, "finetune.from",
                "the soft prompt [", t.n, ", ", t.shape[1], "] does not fit this model's [", model.soft_prompt(), ", ",
                model.dims().d_model, "]");
    return model.params().write(id, t.values.data());
  }
  const std::int64_t L = model.dims().n_layers, KD = model.dims().kv_dim();
  LLMTK_CHECK(model.prefix_projection() == 0, "finetune.from", "a PEFT prefix holds the prefixes' values, and this model "
              "makes them with an MLP (prefix_tuning.projection); remove prefix_tuning.projection to continue from it");
  LLMTK_CHECK(model.prefix() == t.n && t.shape[1] == L * 2 * KD, "finetune.from", "the prefix [", t.n, ", ", t.shape[1],
              "] does not fit this model's [", model.prefix(), ", ", L * 2 * KD, "] (", L, " layers × key and value × ", KD, ")");
  std::vector<float> layer(std::size_t(t.n * KD));
  for (std::int64_t l = 0; l < L; ++l)
    for (int kv = 0; kv < 2; ++kv) {
      for (std::int64_t i = 0; i < t.n; ++i)
        std::copy_n(t.values.begin() + (i * L * 2 + 2 * l + kv) * KD, KD, layer.begin() + i * KD);
      model.params().write(model.params().find("blocks." + std::to_string(l) + ".attn.prefix_" + (kv ? "v" : "k")), layer.data());
    }
}

PeftAdapter read_peft(const std::string& dir, const std::string& family, int n_layers) {
  PeftAdapter out;
  out.dir = dir;
  out.base = peft_base(dir);
  const json cfg = read_adapter_config(dir);
  const std::string cfg_path = (fs::path(dir) / "adapter_config.json").string();
  LLMTK_CHECK(family == "gpt2" || family == "llama", "finetune.from", cfg_path, " adapts a ", family, " model; llmtk reads "
              "LoRA adapters of GPT-2 and Llama bases");
  LLMTK_CHECK(peft_type(dir) == "LORA", "finetune.from", cfg_path, " is ", peft_type(dir), ", not LoRA adapters");
  LLMTK_CHECK(!cfg.value("use_dora", false), "finetune.from", cfg_path, " is a DoRA adapter (use_dora = true), which llmtk "
              "does not implement");
  const bool rslora = cfg.value("use_rslora", false);
  const std::int64_t r = cfg.value("r", 8);
  const double alpha = cfg.value("lora_alpha", 8.0);
  std::map<std::string, std::int64_t> rank_pattern;
  std::map<std::string, double> alpha_pattern;
  if (cfg.contains("rank_pattern") && cfg["rank_pattern"].is_object()) rank_pattern = cfg["rank_pattern"].get<std::map<std::string, std::int64_t>>();
  if (cfg.contains("alpha_pattern") && cfg["alpha_pattern"].is_object()) alpha_pattern = cfg["alpha_pattern"].get<std::map<std::string, double>>();
  const fs::path file = fs::path(dir) / "adapter_model.safetensors";
  LLMTK_CHECK(fs::exists(file), "finetune.from", "'", dir, "' has no adapter_model.safetensors",
              fs::exists(fs::path(dir) / "adapter_model.bin") ? " (only the pickle adapter_model.bin, which llmtk does not read: "
                                                                "save it with safe_serialization=True)" : "");
  SafetensorsFile f(file.string());

  // The inverse of the sites: a module → the llmtk weights it holds, with their parts.
  const auto weights_of = [&](const std::string& module) {
    std::vector<std::pair<std::string, int>> ws;
    if (module == "lm_head" && family == "llama") ws.emplace_back("head.weight", -1);
    for (const char* lp : {"transformer.h.", "model.layers."}) {
      if (!module.starts_with(lp)) continue;
      const std::size_t a = std::string(lp).size(), b = module.find('.', a);
      if (b == std::string::npos || module.substr(0, a) != layer_prefix(family, 0).substr(0, a)) continue;
      const std::string layer = module.substr(a, b - a);
      if (layer.empty() || !std::all_of(layer.begin(), layer.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
      for (const auto& [tail, site] : block_sites(family))
        if (module.substr(b + 1) == site.first) ws.emplace_back("blocks." + layer + "." + tail, site.second);
    }
    return ws;
  };
  std::map<std::string, std::string> saved_param;  // module → parameter
  for (const char* p : {"embed.tokens", "head.weight"})
    if (const std::string mod = saved_module(family, p); !mod.empty()) saved_param[mod] = p;

  std::map<std::string, std::int64_t> ranks;
  std::map<std::string, double> scales;
  std::vector<std::string> targets;
  std::vector<std::string> unknown;
  for (const auto& n : f.names()) {
    LLMTK_CHECK(n.starts_with(kPrefix), "finetune.from", file.string(), " holds '", n, "', which is not a PEFT model tensor "
                "(names start with base_model.model.); it is not an adapter llmtk can read");
    const std::string rest = n.substr(std::string(kPrefix).size());
    if (rest.ends_with(".lora_B.weight")) continue;  // read with its lora_A
    if (rest.ends_with(".weight") && saved_param.count(rest.substr(0, rest.size() - 7))) {
      const std::string param = saved_param[rest.substr(0, rest.size() - 7)];
      const auto shape = f.shape(n);
      std::int64_t numel = 1;
      for (auto s : shape) numel *= s;
      std::vector<float> v(static_cast<std::size_t>(numel));
      f.read(n, v.data(), shape);
      out.tensors.emplace_back(param, std::move(v));
      out.lora.modules_to_save.push_back(param);
      continue;
    }
    if (!rest.ends_with(".lora_A.weight")) {
      unknown.push_back(n);
      continue;
    }
    const std::string module = rest.substr(0, rest.size() - 14);
    const auto ws = weights_of(module);
    if (ws.empty()) {
      unknown.push_back(n);
      continue;
    }
    const std::string bname = std::string(kPrefix) + module + ".lora_B.weight";
    LLMTK_CHECK(f.has(bname), "finetune.from", file.string(), " has ", n, " but no ", bname);
    const auto ash = f.shape(n), bsh = f.shape(bname);
    LLMTK_CHECK(ash.size() == 2 && bsh.size() == 2 && ash[0] == bsh[1], "finetune.from", file.string(), ": ", n, " [",
                ash.size() ? ash[0] : 0, ", ...] and ", bname, " [..., ", bsh.size() > 1 ? bsh[1] : 0, "] disagree on the rank");
    const std::int64_t R = ash[0], I = ash[1], O = bsh[0];
    std::vector<float> A(std::size_t(R * I)), B(std::size_t(O * R));
    f.read(n, A.data(), ash), f.read(bname, B.data(), bsh);
    // PEFT's scale for this module: the first rank_pattern / alpha_pattern key that is the module's
    // name or its tail (keys in sorted order: JSON objects carry no order llmtk keeps).
    std::int64_t mr = r;
    double ma = alpha;
    for (const auto& [k, v] : rank_pattern)
      if (key_matches(k, module)) {
        mr = v;
        break;
      }
    for (const auto& [k, v] : alpha_pattern)
      if (key_matches(k, module)) {
        ma = v;
        break;
      }
    LLMTK_CHECK(mr == R, "finetune.from", cfg_path, " gives ", module, " rank ", mr, " but its tensors have rank ", R);
    const double s = rslora ? ma / std::sqrt(double(mr)) : ma / double(mr);
    if (ws.size() == 1 && ws[0].second < 0) {
      out.tensors.emplace_back(ws[0].first + "_adapter.lora_A", std::move(A));
      out.tensors.emplace_back(ws[0].first + "_adapter.lora_B", std::move(B));
      ranks[ws[0].first] = R, scales[ws[0].first] = s;
      targets.push_back(ws[0].first);
      continue;
    }
    // c_attn: B [3C, R]; each of q, k, v keeps the columns that are not zero in its rows (all of
    // them when B is zero everywhere, as in an adapter that never trained).
    LLMTK_CHECK(O % 3 == 0, "finetune.from", bname, " has ", O, " rows; c_attn's are 3 × n_embd");
    const std::int64_t C = O / 3;
    const bool all_zero = std::all_of(B.begin(), B.end(), [](float v) { return v == 0; });
    for (const auto& [weight, part] : ws) {
      std::vector<std::int64_t> cols;
      for (std::int64_t j = 0; j < R; ++j) {
        bool used = all_zero;
        for (std::int64_t o = 0; o < C && !used; ++o) used = B[std::size_t((part * C + o) * R + j)] != 0;
        if (used) cols.push_back(j);
      }
      if (cols.empty()) continue;
      const std::int64_t rr = std::int64_t(cols.size());
      std::vector<float> pa(std::size_t(rr * I)), pb(std::size_t(C * rr));
      for (std::int64_t k = 0; k < rr; ++k) std::copy_n(A.data() + cols[std::size_t(k)] * I, I, pa.data() + k * I);
      for (std::int64_t o = 0; o < C; ++o)
        for (std::int64_t k = 0; k < rr; ++k) pb[std::size_t(o * rr + k)] = B[std::size_t((part * C + o) * R + cols[std::size_t(k)])];
      out.tensors.emplace_back(weight + "_adapter.lora_A", std::move(pa));
      out.tensors.emplace_back(weight + "_adapter.lora_B", std::move(pb));
      ranks[weight] = rr, scales[weight] = s;
      targets.push_back(weight);
    }
  }
  if (!unknown.empty()) {
    std::string list;
    for (std::size_t i = 0; i < unknown.size() && i < 3; ++i) list += (i ? ", " : "") + unknown[i];
    fail("finetune.from", file.string(), " holds tensors llmtk has no place for in a ", family, " model (", list,
         unknown.size() > 3 ? ", ..." : "", "); adapters on attention and MLP projections and modules_to_save on the "
         "embedding are read");
  }
  LLMTK_CHECK(!targets.empty(), "finetune.from", file.string(), " holds no LoRA tensors (…lora_A.weight)");
  // A head saved beside the embedding with the same rows is a tied head (export_peft saves both).
  const auto find = [&](const char* name) {
    return std::find_if(out.tensors.begin(), out.tensors.end(), [&](const auto& t) { return t.first == name; });
  };
  if (const auto head = find("head.weight"), emb = find("embed.tokens");
      head != out.tensors.end() && emb != out.tensors.end() && head->second == emb->second) {
    out.tensors.erase(head);
    out.lora.modules_to_save.erase(std::find(out.lora.modules_to_save.begin(), out.lora.modules_to_save.end(), "head.weight"));
  }
  // As an llmtk [lora] table: targets by tail where every layer has one, the commonest rank, and
  // the scale of each map as alpha = s · rank (rsLoRA folded into alpha).
  std::map<std::string, double> alphas;
  for (const auto& [w, rr] : ranks) alphas[w] = scales[w] * double(rr);
  out.lora.targets = as_targets(targets, llmtk_tail, n_layers);
  out.lora.rank = most_common(ranks);
  out.lora.alpha = most_common(alphas);
  out.lora.rslora = false;
  out.lora.dropout = cfg.value("lora_dropout", 0.0);
  out.lora.rank_pattern = as_patterns(ranks, out.lora.rank, llmtk_tail);
  out.lora.alpha_pattern = as_patterns(alphas, out.lora.alpha, llmtk_tail);
  return out;
}

void load_peft(const PeftAdapter& adapter, AnyModel& model) {
  Arena host = model.params().host_copy();
  for (const auto& [name, values] : adapter.tensors) {
    const int id = model.params().find(name);
    LLMTK_CHECK(id >= 0, "finetune.from", "the model has no parameter '", name, "' for the adapter in ", adapter.dir);
    const auto& e = model.params().entries()[std::size_t(id)];
    LLMTK_CHECK(std::int64_t(values.size()) == e.numel, "finetune.from", adapter.dir, ": ", name, " has ", values.size(),
                " values and the model's has ", e.numel, " (the adapter was trained on a base of another shape)");
    model.params().write(id, values.data());
  }
}

namespace {
// Writes DIR whole or not at all (DIR.tmp, renamed); in an existing DIR only these files change.
void write_peft_dir(const std::string& out_dir, const json& cfg, const Arena& tensors, const AnyModel& m,
                    const data::Tokenizer* tok, const data::ChatTemplate* chat) {
  const fs::path target = fs::path(out_dir).lexically_normal();
  const fs::path final_dir = target.filename().empty() ? target.parent_path() : target;
  LLMTK_CHECK(!fs::exists(final_dir) || fs::is_directory(final_dir), "export --peft", "'", out_dir, "' is a file, not a directory");
  const fs::path tmp = final_dir.string() + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  {
    std::ofstream f(tmp / "adapter_config.json");
    LLMTK_CHECK(f.good(), "export --peft", "cannot write '", (tmp / "adapter_config.json").string(), "'");
    f << cfg.dump(2) << "\n";
  }
  save_safetensors((tmp / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  if (tok) write_hf_tokenizer(tmp.string(), *tok, chat, m.dims().max_seq);
  if (!fs::exists(final_dir)) {
    if (final_dir.has_parent_path()) fs::create_directories(final_dir.parent_path());
    fs::rename(tmp, final_dir);
    return;
  }
  for (const auto& e : fs::directory_iterator(tmp)) {
    fs::remove(final_dir / e.path().filename());
    fs::rename(e.path(), final_dir / e.path().filename());
  }
  fs::remove_all(tmp);
}
}  // namespace

void export_peft_prompt(const AnyModel& m, const std::string& out_dir, const std::string& base_name,
                        const data::Tokenizer* tok, const data::ChatTemplate* chat) {
  LLMTK_CHECK(m.soft_prompt() > 0, "export --peft", "the model has no soft prompt");
  const Arena host = m.params().host_copy();
  Arena out("peft");
  out.add("prompt_embeddings", host.entries()[std::size_t(host.find("embed.prompt"))].shape);
  out.allocate(host_memory());
  std::copy_n(host["embed.prompt"].f32(), host["embed.prompt"].numel(), out["prompt_embeddings"].f32());
  const json cfg = {{"peft_type", "PROMPT_TUNING"},
                    {"task_type", "CAUSAL_LM"},
                    {"base_model_name_or_path", base_name.empty() ? json(nullptr) : json(base_name)},
                    {"revision", nullptr},
                    {"inference_mode", true},
                    {"num_virtual_tokens", m.soft_prompt()},
                    {"token_dim", m.dims().d_model},
                    {"num_transformer_submodules", 1},
                    {"num_attention_heads", m.dims().n_heads},
                    {"num_layers", m.dims().n_layers},
                    {"prompt_tuning_init", "RANDOM"},
                    {"prompt_tuning_init_text", nullptr},
                    {"tokenizer_name_or_path", nullptr}};
  write_peft_dir(out_dir, cfg, out, m, tok, chat);
}

void export_peft_prefix(const AnyModel& m, const std::string& out_dir, const std::string& base_name,
                        const data::Tokenizer* tok, const data::ChatTemplate* chat) {
  LLMTK_CHECK(m.prefix() > 0, "export --peft", "the model has no prefix keys and values");
  const std::string family = hf_family(m);  // the base must be one PEFT's models can be
  LLMTK_CHECK(family == "gpt2" || family == "llama", "export --peft", "model '", m.name(), "' is a ", family,
              " model; PEFT prefix tuning is written for GPT-2 and Llama bases; nothing was written");
  const Arena host = m.params().host_copy();
  const std::int64_t P = m.prefix(), L = m.dims().n_layers, KD = m.dims().kv_dim();
  Arena out("peft");
  out.add("prompt_embeddings", {P, L * 2 * KD});
  out.allocate(host_memory());
  float* dst = out["prompt_embeddings"].f32();
  // With the reparameterisation the prefixes are made, here as in layers/attention.hpp (in
  // double): h = tanh(E·W1ᵀ + b1), prefix = h·Wᵀ + b; PEFT gets the values (no projection).
  std::vector<double> h;
  if (m.prefix_projection() > 0) {
    const std::int64_t H = m.prefix_projection(), C = m.dims().d_model;
    const float *E = host["prefix.embedding"].f32(), *W1 = host["prefix.w1"].f32(), *b1 = host["prefix.b1"].f32();
    h.resize(std::size_t(P * H));
    for (std::int64_t i = 0; i < P; ++i)
      for (std::int64_t j = 0; j < H; ++j) {
        double u = b1[j];
        for (std::int64_t k = 0; k < C; ++k) u += double(E[i * C + k]) * double(W1[j * C + k]);
        h[std::size_t(i * H + j)] = std::tanh(u);
      }
  }
  std::vector<float> made(std::size_t(P * KD));
  for (std::int64_t l = 0; l < L; ++l)
    for (int kv = 0; kv < 2; ++kv) {
      const std::string layer = "blocks." + std::to_string(l) + ".attn.prefix_";
      const float* src = nullptr;
      if (h.empty()) {
        src = host[layer + (kv ? "v" : "k")].f32();
      } else {
        const std::int64_t H = m.prefix_projection();
        const float *W = host[layer + (kv ? "wv" : "wk")].f32(), *b = host[layer + (kv ? "bv" : "bk")].f32();
        for (std::int64_t i = 0; i < P; ++i)
          for (std::int64_t o = 0; o < KD; ++o) {
            double acc = b[o];
            for (std::int64_t j = 0; j < H; ++j) acc += h[std::size_t(i * H + j)] * double(W[o * H + j]);
            made[std::size_t(i * KD + o)] = float(acc);
          }
        src = made.data();
      }
      for (std::int64_t i = 0; i < P; ++i) std::copy_n(src + i * KD, KD, dst + (i * L * 2 + 2 * l + kv) * KD);
    }
  const json cfg = {{"peft_type", "PREFIX_TUNING"},
                    {"task_type", "CAUSAL_LM"},
                    {"base_model_name_or_path", base_name.empty() ? json(nullptr) : json(base_name)},
                    {"revision", nullptr},
                    {"inference_mode", true},
                    {"num_virtual_tokens", P},
                    {"token_dim", KD},  // grouped kv heads: the keys' width, as PEFT sets it for such models
                    {"num_transformer_submodules", 1},
                    {"num_attention_heads", m.dims().n_kv_heads},
                    {"num_layers", L},
                    {"encoder_hidden_size", m.dims().d_model},
                    {"prefix_projection", false}};
  write_peft_dir(out_dir, cfg, out, m, tok, chat);
}

void export_peft(const AnyModel& m, const LoraConfig& lora, const std::string& out_dir, const std::string& base_name,
                 const data::Tokenizer* tok, const data::ChatTemplate* chat) {
  const std::string family = hf_family(m);  // refuses, before anything is written, what the format cannot hold
  LLMTK_CHECK(family == "gpt2" || family == "llama", "export --peft", "model '", m.name(), "' is ",
              family == "mixtral" ? "a mixture of experts" : "a " + family + " model",
              "; PEFT adapters are written for GPT-2 and Llama bases; merge them instead (export --hf DIR --merge); nothing was written");
  const Arena host = m.params().host_copy();
  // Adapters grouped by the Transformers module they adapt.
  struct Part {
    std::string weight;
    int part;
    const float *A, *B;
    std::int64_t rank, in, out;
    double scale;
  };
  std::map<std::string, std::vector<Part>> modules;
  for (const auto& e : host.entries()) {
    if (!e.name.ends_with("_adapter.lora_A")) continue;
    const std::string w = e.name.substr(0, e.name.size() - 15);
    const auto& b = host.entries()[std::size_t(host.find(w + "_adapter.lora_B"))];
    const Site site = site_of(family, w);
    modules[site.module].push_back({w, site.part, host[e.name].f32(), host[b.name].f32(), e.shape[0], e.shape[1], b.shape[0],
                                    lora.scale_of(w)});
  }
  LLMTK_CHECK(!modules.empty(), "export --peft", "the model carries no LoRA adapters; export --peft writes adapters "
              "(use export --hf for a whole model)");
  Arena out("peft");
  std::map<std::string, std::int64_t> ranks;
  std::map<std::string, double> alphas;
  std::vector<std::function<void()>> fill;
  for (auto& entry : modules) {
    const std::string& module = entry.first;
    auto& parts = entry.second;  // a named reference, not a structured binding: lambdas capture it (clang < 16)
    std::sort(parts.begin(), parts.end(), [](const Part& a, const Part& b) { return a.part < b.part; });
    std::int64_t R = 0;
    for (const auto& p : parts) R += p.rank;
    const bool fused = parts[0].part >= 0;
    const std::int64_t I = parts[0].in, O = fused ? 3 * parts[0].out : parts[0].out;
    // One scale per module: the parts' own when they agree, else 1 with each part's folded into B.
    const bool same = std::all_of(parts.begin(), parts.end(), [&](const Part& p) { return p.scale == parts[0].scale; });
    const double s = same ? parts[0].scale : 1.0;
    ranks[module] = R, alphas[module] = s * double(R);
    const std::string a_name = kPrefix + module + ".lora_A.weight", b_name = kPrefix + module + ".lora_B.weight";
    out.add(a_name, {R, I});
    out.add(b_name, {O, R});
    fill.push_back([&out, parts, a_name, b_name, R, I, O, s, fused] {
      float* A = out[a_name].f32();
      float* B = out[b_name].f32();
      std::fill_n(B, O * R, 0.0f);
      std::int64_t col = 0;
      for (const auto& p : parts) {
        std::copy_n(p.A, p.rank * I, A + col * I);
        const std::int64_t row0 = fused ? p.part * p.out : 0;
        const float k = float(p.scale / s);
        for (std::int64_t o = 0; o < p.out; ++o)
          for (std::int64_t j = 0; j < p.rank; ++j) B[(row0 + o) * R + col + j] = k == 1.0f ? p.B[o * p.rank + j] : k * p.B[o * p.rank + j];
        col += p.rank;
      }
    });
  }
  std::vector<std::string> saved;
  for (const auto& pattern : lora.modules_to_save) {
    bool hit = false;
    for (const auto& e : host.entries()) {
      if (e.name.find("_adapter.") != std::string::npos || !Planner::glob(pattern, e.name)) continue;
      const std::string module = saved_module(family, e.name);
      LLMTK_CHECK(!module.empty(), "export --peft", "modules_to_save names ", e.name, ", which is not a whole Transformers "
                  "module PEFT can save (embed.tokens", family == "llama" ? ", head.weight" : "", "); nothing was written");
      out.add(kPrefix + module + ".weight", e.shape);
      const std::string name = e.name, to = kPrefix + module + ".weight";
      fill.push_back([&out, &host, name, to] { std::copy_n(host[name].f32(), host[name].numel(), out[to].f32()); });
      saved.push_back(module.substr(module.rfind('.') + 1));
      // A tied head reads the embedding; PEFT's wrapper trains a copy of the embedding module, so
      // the head must be saved too or it would keep the base's rows.
      if (e.name == "embed.tokens" && host.find("head.weight") < 0) {
        out.add(std::string(kPrefix) + "lm_head.weight", e.shape);
        fill.push_back([&out, &host, name] { std::copy_n(host[name].f32(), host[name].numel(), out[std::string(kPrefix) + "lm_head.weight"].f32()); });
        saved.push_back("lm_head");
      }
      hit = true;
    }
    LLMTK_CHECK(hit, "export --peft", "modules_to_save pattern '", pattern, "' names no parameter");
  }
  out.allocate(host_memory());
  for (auto& f : fill) f();

  const std::int64_t r = most_common(ranks);
  const double alpha = most_common(alphas);
  std::vector<std::string> names;
  for (const auto& [module, parts] : modules) names.push_back(module);
  json cfg = {{"peft_type", "LORA"},
              {"task_type", "CAUSAL_LM"},
              {"base_model_name_or_path", base_name.empty() ? json(nullptr) : json(base_name)},
              {"revision", nullptr},
              {"inference_mode", true},
              {"r", r},
              {"lora_alpha", alpha},
              {"lora_dropout", lora.dropout},
              {"target_modules", as_targets(names, module_tail, m.dims().n_layers)},
              {"rank_pattern", as_patterns(ranks, r, module_tail)},
              {"alpha_pattern", as_patterns(alphas, alpha, module_tail)},
              {"fan_in_fan_out", family == "gpt2"},  // GPT-2's Conv1D stores weights [in, out]
              {"bias", "none"},
              {"use_rslora", false},  // rsLoRA's scale is written into lora_alpha
              {"use_dora", false},
              {"init_lora_weights", true},
              {"modules_to_save", saved.empty() ? json(nullptr) : json(saved)},
              {"layers_to_transform", nullptr},
              {"layers_pattern", nullptr}};

  write_peft_dir(out_dir, cfg, out, m, tok, chat);
}

}  // namespace llmtk::train
