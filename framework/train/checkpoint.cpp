#include "checkpoint.hpp"

#include <algorithm>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/durable.hpp"
#include "../core/error.hpp"
#include "../core/json_number.hpp"
#include "../models/registry.hpp"
#include "../ops/ops.hpp"
#include "finetune.hpp"
#include "gguf.hpp"
#include "hf.hpp"
#include "safetensors.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

void write_file_atomically(const std::string& path, std::string_view text, const char* who) {
  durable::write_file(path, text, who);
}

namespace {
json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
}  // namespace

std::string step_checkpoint_name(std::int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::string save_checkpoint(const std::string& dir_name, const AnyModel& model, Optimizer* optimizer,
                            const CheckpointState& s, const std::function<void(const std::string&)>& extra) {
  LLMTK_CHECK(!model.tensor_parallel(), "checkpoint", "a tensor-parallel rank holds a share of the model: gather the whole "
              "(AnyModel::gather_whole) and save that");
  return save_checkpoint(dir_name, model.params(), optimizer ? optimizer->state() : std::vector<Arena*>{}, s, extra);
}

std::string save_checkpoint(const std::string& dir_name, const Arena& params, const std::vector<Arena*>& optimizer_state,
                            const CheckpointState& s, const std::function<void(const std::string&)>& extra) {
  const fs::path dir(dir_name), tmp = dir_name + ".tmp";
  fs::remove_all(tmp);  // what a killed writer left
  fs::create_directories(tmp);
  struct RemoveUnlessPublished {  // a failed write (a full disk) leaves no partial NAME.tmp behind
    const fs::path& p;
    bool done = false;
    ~RemoveUnlessPublished() {
      std::error_code ec;
      if (!done) fs::remove_all(p, ec);
    }
  } cleanup{tmp};
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"arch", s.arch}, {"step", std::to_string(s.step)}};
  if (s.base.empty()) {
    save_safetensors((tmp / "model.safetensors").string(), params, meta);
  } else {
    // Only what trains: the trainable tensors lie first, at the same offsets (Arena::trainable_like).
    const Arena all = params.host_copy();
    Arena trained = all.trainable_like("trained");
    trained.allocate(host_memory());
    std::memcpy(trained.data(), all.data(), trained.bytes());
    save_safetensors((tmp / "model.safetensors").string(), trained, meta);
  }
  for (Arena* a : optimizer_state) save_safetensors((tmp / ("optimizer." + a->name() + ".safetensors")).string(), *a);
  json st;
  st["step"] = s.step;
  st["arch"] = s.arch;
  st["dims"] = json::object();
  for (const auto& [k, v] : dims_as_keys(s.dims)) st["dims"][k] = v;
  if (!s.frozen.empty()) st["frozen"] = s.frozen;
  if (s.lora.enabled())
    st["lora"] = {{"rank", s.lora.rank}, {"alpha", s.lora.alpha}, {"rslora", s.lora.rslora}, {"targets", s.lora.targets}};
  if (s.lora.enabled() && !s.lora.modules_to_save.empty()) st["lora"]["modules_to_save"] = s.lora.modules_to_save;
  if (s.lora.enabled() && s.lora.dropout > 0) st["lora"]["dropout"] = s.lora.dropout;
  if (s.lora.enabled() && !s.lora.rank_pattern.empty()) st["lora"]["rank_pattern"] = s.lora.rank_pattern;
  if (s.lora.enabled() && !s.lora.alpha_pattern.empty()) st["lora"]["alpha_pattern"] = s.lora.alpha_pattern;
  if (s.soft_prompt > 0) st["prompt_tuning"] = {{"n_tokens", s.soft_prompt}};
  if (s.prefix > 0) st["prefix_tuning"] = {{"n_tokens", s.prefix}, {"projection", s.prefix_projection}};
  st["data"] = {{"epoch", s.data_epoch}, {"step", s.data_step}, {"dir", s.data_dir}};
  st["tokenizer"] = s.tokenizer;
  st["tokenizer_hash"] = s.tokenizer_hash;
  st["val_loss"] = number_or_null(s.val_loss);
  st["best_val_loss"] = number_or_null(s.best_val_loss);
  st["recipe"] = s.recipe;
  if (!s.labels.empty()) st["labels"] = s.labels;
  if (!s.base.empty()) st["base"] = {{"path", s.base.path}, {"hash", s.base.hash}, {"vocab", s.base.vocab}};
  if (extra) extra(tmp.string());
  {
    // state.json last: a directory holding it was written in full. Everything is synced to disk
    // before the one step that publishes it (an exchange with the old one when it is replaced,
    // as "best" is), so the checkpoint appears whole or not at all, even across a power cut.
    durable::OutFile out((tmp / "state.json").string(), "checkpoint");
    out.write(st.dump(2) + "\n");
    out.commit();
  }
  durable::sync_tree(tmp.string(), "checkpoint");
  durable::publish_dir(tmp.string(), dir.string(), "checkpoint");
  cleanup.done = true;
  return dir.string();
}

namespace {
CheckpointState read_state(const std::string& dir) {
  const fs::path path = fs::path(dir) / "state.json";
  std::ifstream in(path);
  LLMTK_CHECK(in.good(), "checkpoint", "cannot read '", path.string(), "'");
  json st;
  try {
    st = json::parse(in);
    CheckpointState s;
    s.step = whole<std::int64_t>(st.at("step"), "step");
    s.arch = st.at("arch");
    s.dims = find_arch(s.arch).dims;
    for (auto& [k, v] : st.at("dims").items()) set_dim(s.dims, k, v.get<std::string>());
    if (st.contains("frozen")) s.frozen = st["frozen"].get<std::vector<std::string>>();
    if (st.contains("lora")) {
      const auto& l = st["lora"];
      s.lora.rank = whole<std::int64_t>(l.at("rank"), "lora.rank"), s.lora.alpha = l.at("alpha"), s.lora.rslora = l.at("rslora");
      s.lora.targets = l.at("targets").get<std::vector<std::string>>();
      if (l.contains("modules_to_save")) s.lora.modules_to_save = l["modules_to_save"].get<std::vector<std::string>>();
      s.lora.dropout = l.value("dropout", 0.0);
      if (l.contains("rank_pattern"))
        for (const auto& [k, v] : l["rank_pattern"].items()) s.lora.rank_pattern[k] = whole<std::int64_t>(v, "lora.rank_pattern");
      if (l.contains("alpha_pattern")) s.lora.alpha_pattern = l["alpha_pattern"].get<std::map<std::string, double>>();
    }
    if (st.contains("prompt_tuning")) s.soft_prompt = whole<std::int64_t>(st["prompt_tuning"].at("n_tokens"), "prompt_tuning.n_tokens");
    if (st.contains("prefix_tuning"))
      s.prefix = whole<std::int64_t>(st["prefix_tuning"].at("n_tokens"), "prefix_tuning.n_tokens"),
      s.prefix_projection = whole<std::int64_t>(st["prefix_tuning"].value("projection", json(0)), "prefix_tuning.projection");
    s.data_epoch = whole<std::int64_t>(st.at("data").at("epoch"), "data.epoch");
    s.data_step = whole<std::int64_t>(st.at("data").at("step"), "data.step");
    s.data_dir = st.at("data").value("dir", "");
    s.tokenizer = st.at("tokenizer");
    s.tokenizer_hash = st.at("tokenizer_hash");
    // null when no evaluation ran before the checkpoint
    if (st.contains("val_loss") && st["val_loss"].is_number()) s.val_loss = st["val_loss"];
    if (st.contains("best_val_loss") && st["best_val_loss"].is_number()) s.best_val_loss = st["best_val_loss"];
    s.recipe = st.value("recipe", "");
    if (st.contains("labels")) s.labels = st["labels"].get<std::vector<std::string>>();
    if (st.contains("base"))
      s.base = {st["base"].at("path"), st["base"].at("hash"), whole<int>(st["base"].value("vocab", json(0)), "base.vocab")};
    return s;
  } catch (const json::exception& e) {
    fail("checkpoint", "'", path.string(), "' is not a checkpoint's state: ", e.what());
  }
}
}  // namespace

CheckpointState read_checkpoint_state(const std::string& dir) {
  return reading_file("checkpoint", (fs::path(dir) / "state.json").string(), [&] { return read_state(dir); });
}

void load_checkpoint(const std::string& dir, AnyModel& model, Optimizer* optimizer) {
  const std::string file = (fs::path(dir) / "model.safetensors").string();
  const CheckpointState st = read_checkpoint_state(dir);
  if (model.tensor_parallel()) {
    // Tensor parallel: the whole tensors, of which this rank keeps its share.
    LLMTK_CHECK(st.base.empty(), "checkpoint", dir, " holds only the trained part of a fine-tuned model; tensor parallel ",
                "resumes whole models only");
    Arena whole = model.whole_like(model.params(), "params");
    whole.allocate(host_memory());
    load_safetensors(file, whole);
    model.take_share(whole, model.params());
    if (!optimizer) return;
    optimizer->begin_load();  // ZeRO in the 2-D layout: the share's whole moments, this rank's shard kept after
    for (Arena* a : optimizer->state()) {
      Arena moments = model.whole_like(*a, a->name());
      moments.allocate(host_memory());
      load_safetensors((fs::path(dir) / ("optimizer." + a->name() + ".safetensors")).string(), moments);
      model.take_share(moments, *a);
    }
    optimizer->end_load();
    return;
  }
  if (st.base.empty()) {
    load_safetensors(file, model.params());
  } else {
    load_base(st.base, st.arch, model.dims(), model, dir);
    Arena trained = model.params().trainable_like("trained");
    trained.allocate(host_memory());
    load_safetensors(file, trained);
    for (const auto& e : trained.entries()) model.params().write(model.params().find(e.name), trained[e.name].data);
  }
  if (!optimizer) return;
  optimizer->begin_load();  // sharded (ZeRO-1): whole moments first, this rank's shard kept after
  for (Arena* a : optimizer->state())
    load_safetensors((fs::path(dir) / ("optimizer." + a->name() + ".safetensors")).string(), *a);
  optimizer->end_load();
}

std::string find_checkpoint(const std::string& dir) {
  LLMTK_CHECK(fs::is_directory(dir), "resume", "'", dir, "' is not a directory");
  if (fs::exists(fs::path(dir) / "state.json")) return dir;
  const fs::path ckpts = fs::path(dir) / "checkpoints";
  std::string newest;
  if (fs::is_directory(ckpts))
    for (const auto& e : fs::directory_iterator(ckpts)) {
      const auto name = e.path().filename().string();
      // NAME.tmp: a checkpoint being written when its writer stopped (or an old one being replaced).
      if (name.starts_with("step_") && !name.ends_with(".tmp") && fs::exists(e.path() / "state.json") &&
          name > fs::path(newest).filename().string())
        newest = e.path().string();
    }
  LLMTK_CHECK(!newest.empty(), "resume", "no checkpoint in '", dir, "' (looked for checkpoints/step_*/state.json)");
  return newest;
}

std::string best_or_newest_checkpoint(const std::string& dir) {
  const fs::path best = fs::path(dir) / "checkpoints" / "best";
  return fs::exists(best / "state.json") ? best.string() : find_checkpoint(dir);
}

void prune_checkpoints(const std::string& run_dir, std::int64_t keep, const std::string& newest) {
  // Only checkpoints older than the one just written count against `keep`: whatever else the
  // folder holds, the newest state is never the one deleted.
  const std::string newest_name = fs::path(newest).filename().string();
  std::vector<std::string> older;
  for (const auto& e : fs::directory_iterator(fs::path(run_dir) / "checkpoints")) {
    const auto name = e.path().filename().string();
    if (name.starts_with("step_") && !name.ends_with(".tmp") && name < newest_name) older.push_back(e.path().string());
  }
  std::sort(older.begin(), older.end());
  const std::size_t keep_older = std::size_t(std::max<std::int64_t>(keep - 1, 0));
  for (std::size_t i = 0; i + keep_older < older.size(); ++i) remove_checkpoint(older[i]);
}

void remove_checkpoint(const std::string& dir) {
  // Renamed to NAME.tmp first, in one step, then deleted: a kill during the deletion leaves a
  // directory readers skip, never a checkpoint with some of its files gone.
  const std::string doomed = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(doomed, ec);
  fs::rename(dir, doomed);
  fs::remove_all(doomed);
}

std::int64_t checkpoint_step(const std::string& dir) {
  const fs::path path = fs::path(dir) / "state.json";
  std::ifstream in(path);
  LLMTK_CHECK(in.good(), "checkpoint", "cannot read '", path.string(), "'");
  try {
    return whole<std::int64_t>(json::parse(in).at("step"), cat("checkpoint: ", path.string(), ", step"));
  } catch (const json::exception& e) {
    fail("checkpoint", "'", path.string(), "' is not a checkpoint's state (", e.what(),
         "); the checkpoint is damaged: resume from another one");
  }
}

bool all_finite(const Arena& arena) {
  const Arena host = arena.host_copy();
  for (const auto& e : host.entries()) {
    const std::byte* p = static_cast<const std::byte*>(host.data()) + e.offset;
    for (std::int64_t i = 0; i < e.numel; ++i) {
      float v = 0;
      if (e.dtype == DType::f32) {
        std::memcpy(&v, p + i * 4, 4);
      } else if (e.dtype == DType::bf16) {
        bf16 h;
        std::memcpy(&h, p + i * 2, 2);
        v = float(h);
      } else {
        break;  // integer tensors are always finite
      }
      if (!std::isfinite(v)) return false;
    }
  }
  return true;
}

std::string newest_finite_checkpoint(const std::string& run_dir, const Arena& params) {
  std::vector<fs::path> ckpts;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (fs::is_directory(root))
    for (const auto& e : fs::directory_iterator(root))
      if (fs::exists(e.path() / "state.json") && !e.path().filename().string().ends_with(".tmp")) ckpts.push_back(e.path());
  std::vector<std::pair<std::int64_t, fs::path>> by_step;
  for (const auto& c : ckpts) by_step.emplace_back(checkpoint_step(c.string()), c);
  std::sort(by_step.rbegin(), by_step.rend());
  Arena scratch = params.like("finite check");
  scratch.allocate(host_memory());
  Arena trained = params.trainable_like("finite check");
  trained.allocate(host_memory());
  for (const auto& [step, dir] : by_step) {
    // A checkpoint with a base holds the trained parameters only, and the base is finite.
    if (!read_checkpoint_state(dir.string()).base.empty()) {
      load_safetensors((dir / "model.safetensors").string(), trained);
      if (all_finite(trained)) return dir.string();
      continue;
    }
    load_safetensors((dir / "model.safetensors").string(), scratch);
    if (all_finite(scratch)) return dir.string();
  }
  return "";
}

namespace {
// A Transformers directory (config.json, model.safetensors, tokenizer.json) as llmtk's exports
// write them and read_finetune_base reads them: the architecture from config.json, the weights
// by import_hf, the tokenizer from the directory; a classifier's label names from id2label.
LoadedRun load_transformers_dir(const std::string& dir, const std::string& device) {
  LoadedRun l;
  l.checkpoint = dir;
  const FinetuneBase b = read_finetune_base(dir);
  l.state.arch = b.arch, l.state.dims = b.dims, l.state.tokenizer = dir;
  ops::require_backend(device);
  l.model = make_model(l.state.arch, l.state.dims);
  l.model->plan(1, 1);
  l.model->allocate();
  import_hf(*l.model, dir);
  LLMTK_CHECK(fs::exists(fs::path(dir) / "tokenizer.json"), "load", "'", dir, "' has config.json but no tokenizer.json; "
              "llmtk reads a Transformers directory with its byte-level BPE tokenizer.json (as llmtk export --hf writes it)");
  l.tokenizer = data::load_tokenizer(dir);
  l.state.tokenizer_hash = std::to_string(l.tokenizer->hash());
  if (l.model->classifier()) {
    std::ifstream in(fs::path(dir) / "config.json");
    const auto cfg = nlohmann::json::parse(in);
    if (cfg.contains("id2label") && cfg["id2label"].is_object()) {
      l.state.labels.assign(std::size_t(l.model->outputs()), "");
      for (const auto& [id, name] : cfg["id2label"].items()) {
        LLMTK_CHECK(!id.empty() && id.size() < 10 && id.find_first_not_of("0123456789") == std::string::npos, "load", dir,
                    "/config.json: id2label has the key '", id, "', which is not a label id");
        const auto k = std::stoll(id);
        LLMTK_CHECK(k >= 0 && k < std::int64_t(l.state.labels.size()) && name.is_string(), "load", dir,
                    "/config.json: id2label has '", id, "', but the model has ", l.state.labels.size(), " labels");
        l.state.labels[std::size_t(k)] = name.get<std::string>();
      }
    }
  }
  return l;
}
}  // namespace

LoadedRun load_run(const std::string& dir, const std::string& device) {
  if (fs::is_regular_file(dir)) {  // a GGUF file (llmtk export --gguf)
    LLMTK_CHECK(is_gguf_file(dir), "load", "'", dir, "' is a file but not GGUF; give an llmtk run or checkpoint directory, a "
                "Transformers directory or a GGUF file");
    ops::require_backend(device);
    GgufModel g = load_gguf(dir);
    LoadedRun l;
    l.checkpoint = dir, l.model = std::move(g.model), l.tokenizer = std::move(g.tokenizer);
    l.state.arch = g.arch, l.state.dims = g.dims, l.state.tokenizer_hash = std::to_string(l.tokenizer->hash());
    return l;
  }
  if (fs::exists(fs::path(dir) / "config.json") && !fs::exists(fs::path(dir) / "state.json") &&
      !fs::is_directory(fs::path(dir) / "checkpoints"))
    return load_transformers_dir(dir, device);
  LoadedRun l;
  l.checkpoint = best_or_newest_checkpoint(dir);
  l.state = read_checkpoint_state(l.checkpoint);
  ops::require_backend(device);
  l.model = make_model(l.state.arch, l.state.dims);
  if (l.state.lora.enabled()) apply_lora(*l.model, l.state.lora);
  if (l.state.soft_prompt > 0) l.model->set_soft_prompt(l.state.soft_prompt);
  if (l.state.prefix > 0) l.model->set_prefix(l.state.prefix, l.state.prefix_projection);
  if (!l.state.frozen.empty()) l.model->freeze(l.state.frozen);  // the layout the checkpoint was saved with
  l.model->plan(1, 1);
  l.model->allocate();
  load_checkpoint(l.checkpoint, *l.model, nullptr);
  l.tokenizer = data::load_tokenizer(l.state.tokenizer);
  LLMTK_CHECK(std::to_string(l.tokenizer->hash()) == l.state.tokenizer_hash, "checkpoint", "the tokenizer at ",
              l.state.tokenizer, " changed since the model was trained");
  return l;
}

}  // namespace llmtk::train
