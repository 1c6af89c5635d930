// `llmtk data prepare` with kind = "sft": instruction JSONL (Alpaca or chat messages) through the
// chat template into shards whose loss mask marks the assistant's tokens (docs/sft.md).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "chat.hpp"
#include "prepare.hpp"
#include "shard.hpp"

namespace llmtk::data {

namespace fs = std::filesystem;

PrepareSummary prepare_sft(const PrepareConfig& c, const std::function<void(const std::string&)>& log) {
  LLMTK_CHECK(!c.input.paths.empty(), "data prepare", "no input: set input.paths (JSONL files of instructions)");
  LLMTK_CHECK(!c.output.dir.empty(), "data prepare", "no output directory: set output.dir");
  LLMTK_CHECK(!c.tokenizer.path.empty(), "data prepare", "kind = \"sft\" needs the base model's tokenizer: set ",
              "[tokenizer] path (e.g. \"data/kjv/tokenizer.json\" for the quickstart model)");
  const ChatTemplate tmpl = ChatTemplate::named(c.sft.chat_template);

  // 1. Every record, parsed before anything is written: a bad line stops here, naming FILE:LINE.
  struct Example {
    EncodedChat enc;
    std::string source;
  };
  std::vector<Conversation> convs;
  std::vector<std::string> sources;
  for (const auto& file : input_files(c.input.paths)) {
    auto got = read_conversations(file);
    for (std::size_t i = 0; i < got.size(); ++i) sources.push_back(file + " record " + std::to_string(i + 1));
    std::move(got.begin(), got.end(), std::back_inserter(convs));
  }
  LLMTK_CHECK(!convs.empty(), "data prepare", "the inputs hold no records: ", c.input.paths.front(), "...");

  // 2. The tokenizer: the base's, with the template's markers added (the model grows by as many
  // rows when it is fine-tuned: docs/sft.md).
  auto tok = load_tokenizer(c.tokenizer.path);
  const int base_vocab = tok->vocab_size();
  for (const auto& s : tmpl.special_tokens()) tok->add_special(s);
  for (const auto& s : c.tokenizer.special) tok->add_special(s);
  fs::create_directories(c.output.dir);
  const std::string tok_path = (fs::path(c.output.dir) / "tokenizer.json").string();
  tok->save(tok_path);
  tmpl.save_beside(c.output.dir);
  log(cat("tokenizer ", c.tokenizer.path, " (vocab ", base_vocab, ") + the ", tmpl.name(), " markers -> ", tok_path,
          " (vocab ", tok->vocab_size(), ")"));

  // 3. Render, drop exact duplicates and over-long examples (counted), split by a seeded hash of
  // the rendered ids, so the split does not depend on the order of the inputs.
  std::map<std::string, std::int64_t> dropped;
  std::set<std::uint64_t> seen;
  std::vector<Example> train, val;
  std::int64_t loss_tokens = 0, max_len = 0;
  for (std::size_t i = 0; i < convs.size(); ++i) {
    Example e{tmpl.encode(*tok, convs[i], c.sft.train_on_prompt), sources[i]};
    Fnv1a h;
    for (TokenId id : e.enc.ids) h.add(std::to_string(id) + ",");
    if (!seen.insert(h.h).second) {
      ++dropped["duplicate"];
      continue;
    }
    if (c.sft.max_tokens > 0 && std::int64_t(e.enc.ids.size()) + 1 > c.sft.max_tokens) {
      ++dropped["longer_than_max_tokens"];
      continue;
    }
    if (std::count(e.enc.mask.begin(), e.enc.mask.end(), 1) == 0) {
      ++dropped["empty_answer"];
      continue;
    }
    const double u = Rng(h.h ^ (c.split.seed * 0x9e3779b97f4a7c15ull)).uniform();  // mixed: see synth.cpp
    max_len = std::max<std::int64_t>(max_len, std::int64_t(e.enc.ids.size()) + 1);
    (u < c.split.val_fraction ? val : train).push_back(std::move(e));
  }
  if (val.empty() && c.split.val_fraction > 0 && train.size() > 1) val.push_back(std::move(train.back())), train.pop_back();
  LLMTK_CHECK(!train.empty(), "data prepare", "no examples left (", convs.size(), " read; dropped as duplicates: ",
              dropped["duplicate"], ", longer than sft.max_tokens: ", dropped["longer_than_max_tokens"], ")");

  // 4. Shards: this run's alone (earlier ones removed first).
  for (const auto& e : fs::directory_iterator(c.output.dir)) {
    const std::string f = e.path().filename().string();
    if (e.path().extension() == ".bin" && (f.starts_with("train_") || f.starts_with("val_"))) fs::remove(e.path());
  }
  PrepareSummary sum;
  sum.docs_in = std::int64_t(convs.size());
  sum.docs_kept = std::int64_t(train.size() + val.size());
  auto write_split = [&](const std::string& name, const std::vector<Example>& set, std::vector<std::string>& paths) {
    std::int64_t tokens = 0;
    std::unique_ptr<ShardWriter> w;
    auto finish = [&] {
      if (w) w->close(), paths.push_back(w->path()), w.reset();
    };
    for (const auto& e : set) {
      if (!w || std::int64_t(w->tokens()) >= c.output.shard_tokens) {
        finish();
        char nm[64];
        std::snprintf(nm, sizeof nm, "%s_%03zu.bin", name.c_str(), paths.size());
        w = std::make_unique<ShardWriter>((fs::path(c.output.dir) / nm).string(), *tok);
      }
      w->add_example(e.enc.ids, e.enc.mask);
      tokens += std::int64_t(e.enc.ids.size()) + 1;
      loss_tokens += std::count(e.enc.mask.begin(), e.enc.mask.end(), 1);
    }
    finish();
    return tokens;
  };
  sum.train_tokens = write_split("train", train, sum.train_shards);
  sum.val_tokens = write_split("val", val, sum.val_shards);

  // 5. The report: counts, and the first example as the model will see it (masked tokens marked).
  nlohmann::ordered_json r;
  r["kind"] = "sft";
  r["config"] = {{"inputs", c.input.paths}, {"template", tmpl.name()}, {"train_on_prompt", c.sft.train_on_prompt},
                 {"max_tokens", c.sft.max_tokens}, {"val_fraction", c.split.val_fraction}};
  r["tokenizer"] = {{"path", tok_path}, {"base", c.tokenizer.path}, {"base_vocab", base_vocab}, {"vocab_size", tok->vocab_size()}};
  r["examples"] = {{"read", convs.size()}, {"train", train.size()}, {"val", val.size()}, {"dropped", dropped}};
  r["tokens"] = {{"train", sum.train_tokens}, {"val", sum.val_tokens}, {"in_loss", loss_tokens}, {"longest_example", max_len}};
  std::string shown;
  for (std::size_t i = 0; i < train.front().enc.ids.size(); ++i) {
    const TokenId id = train.front().enc.ids[i];
    const bool learned = train.front().enc.mask[i] != 0;
    if (learned) shown.push_back('[');
    shown.append(tok->token_bytes(id));
    if (learned) shown.push_back(']');
  }
  r["first_example"] = {{"source", train.front().source}, {"rendered_loss_tokens_in_brackets", shown}};
  sum.report_json = (fs::path(c.output.dir) / "report.json").string();
  {
    std::ofstream out(sum.report_json);
    out << r.dump(2) << "\n";
  }
  sum.tokenizer_path = tok_path;
  log(cat("sft: ", convs.size(), " records -> ", train.size(), " training and ", val.size(), " validation examples (",
          dropped["duplicate"], " duplicates, ", dropped["longer_than_max_tokens"], " longer than sft.max_tokens, ",
          dropped["empty_answer"], " with an empty answer dropped); ", loss_tokens, " of ",
          sum.train_tokens + sum.val_tokens, " tokens count in the loss; longest example ", max_len,
          " tokens; report: ", sum.report_json));
  return sum;
}

}  // namespace llmtk::data
