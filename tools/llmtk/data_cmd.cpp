// llmtk data prepare | inspect | synth
#include <fmt/core.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "commands.hpp"
#include "config/config.hpp"
#include "core/error.hpp"
#include "data/prepare.hpp"
#include "data/shard.hpp"
#include "data/synth.hpp"

namespace llmtk::cli {

namespace {

struct PrepareArgs {
  std::string config;
  std::vector<std::string> inputs, sets;
  std::string out, tokenizer;
  int vocab_size = 0;
};

void prepare(const PrepareArgs& a) {
  data::PrepareConfig c;
  if (!a.config.empty() || !a.sets.empty()) {
    ConfigFile file = a.config.empty() ? ConfigFile::from_string("", "--set") : ConfigFile(a.config);
    for (const auto& s : a.sets) file.set(s);
    c = data::read_prepare_config(file);
    file.reject_unknown_keys();
    // Relative input and output paths in a config file are relative to the directory it runs from.
  }
  if (!a.inputs.empty()) c.input.paths = a.inputs;
  if (!a.out.empty()) c.output.dir = a.out;
  if (!a.tokenizer.empty()) c.tokenizer.path = a.tokenizer;
  if (a.vocab_size) c.tokenizer.vocab_size = a.vocab_size;
  data::prepare(c, [](const std::string& line) { fmt::print("{}\n", line); });
}

struct InspectArgs {
  std::string shard, tokenizer;
  int samples = 3;
  int chars = 400;
};

void inspect(const InspectArgs& a) {
  data::Shard s(a.shard);
  const auto& h = s.header();
  fmt::print("{}\n  format version {}, {}-bit tokens\n  tokens     {}\n  documents  {}\n  vocab      {}\n"
             "  eot        {}\n  tokenizer  hash {}\n",
             a.shard, h.version, h.token_bytes * 8, h.token_count, h.doc_count, h.vocab_size, h.eot, h.tokenizer_hash);
  if (s.has_mask()) {
    std::uint64_t learned = 0;
    for (std::uint64_t i = 0; i < s.size(); ++i) learned += s.counts(i);
    fmt::print("  loss mask  {} of {} tokens are learned (shown in [brackets] below)\n", learned, s.size());
  }
  // Document lengths from the EOT positions.
  std::vector<std::uint64_t> lengths;
  std::map<data::TokenId, std::uint64_t> freq;
  std::uint64_t start = 0;
  for (std::uint64_t i = 0; i <= s.size(); ++i) {
    if (i == s.size() || std::uint32_t(s[i]) == h.eot) {
      if (i > start) lengths.push_back(i - start - (start < s.size() && std::uint32_t(s[start]) == h.eot));
      start = i;
    }
    if (i < s.size()) ++freq[s[i]];
  }
  if (!lengths.empty()) {
    auto sorted = lengths;
    std::sort(sorted.begin(), sorted.end());
    std::uint64_t sum = 0;
    for (auto l : sorted) sum += l;
    fmt::print("  doc tokens min {} / median {} / mean {:.1f} / max {}\n  distinct tokens used {} of {}\n",
               sorted.front(), sorted[sorted.size() / 2], double(sum) / double(sorted.size()), sorted.back(),
               freq.size(), h.vocab_size);
  }
  std::string tok_path = a.tokenizer;
  if (tok_path.empty()) {
    auto beside = std::filesystem::path(a.shard).parent_path() / "tokenizer.json";
    if (std::filesystem::exists(beside)) tok_path = beside.string();
  }
  if (tok_path.empty()) {
    fmt::print("(no tokenizer.json beside the shard; pass --tokenizer PATH to see decoded samples)\n");
    return;
  }
  auto tok = data::load_tokenizer(tok_path);
  s.expect_tokenizer(tok->hash());
  int shown = 0;
  start = 0;
  for (std::uint64_t i = 1; i <= s.size() && shown < a.samples; ++i) {
    if (i == s.size() || std::uint32_t(s[i]) == h.eot) {
      std::vector<data::TokenId> ids;
      std::string text;
      for (std::uint64_t j = start + 1; j < i; ++j) {
        ids.push_back(s[j]);
        // Instruction shards: the tokens the loss learns are shown in [brackets].
        const bool open = s.has_mask() && s.counts(j) && !s.counts(j - 1), close = s.has_mask() && s.counts(j) && (j + 1 == i || !s.counts(j + 1));
        if (open) text += "[";
        text += tok->token_bytes(s[j]);
        if (close) text += "]";
      }
      if (int(text.size()) > a.chars) text = text.substr(0, std::size_t(a.chars)) + " […]";
      fmt::print("\n--- document {} ({} tokens) ---\n{}\n", shown, ids.size(), text);
      ++shown, start = i;
    }
  }
}

struct SynthArgs {
  data::SynthOptions o;
  std::string out;
  bool list = false;
};

void synth(const SynthArgs& a) {
  if (a.list || a.o.task.empty()) {
    for (const auto& t : data::synth_tasks()) fmt::print("{}\n  source: {}\n  {}\n", t.name, t.source, t.measures);
    if (!a.list) fail("data synth", "name a task (one of the above) and --out FILE.jsonl");
    return;
  }
  LLMTK_CHECK(!a.out.empty(), "data synth", "--out FILE.jsonl is required");
  data::synth(a.o, a.out, [](const std::string& line) { fmt::print("{}\n", line); });
}

}  // namespace

void add_data_commands(CLI::App& app) {
  auto* d = app.add_subcommand("data", "Prepare corpora into token shards and inspect shards");
  d->require_subcommand(1);

  auto pa = std::make_shared<PrepareArgs>();
  auto* pr = d->add_subcommand("prepare", "Collect, clean, filter, deduplicate, split and tokenize a corpus");
  pr->add_option("config", pa->config, "A TOML config (see recipes/data/)")->check(CLI::ExistingFile);
  pr->add_option("--input", pa->inputs, "Files or directories (instead of input.paths)");
  pr->add_option("--out", pa->out, "Output directory (instead of output.dir)");
  pr->add_option("--tokenizer", pa->tokenizer, "Use this tokenizer instead of training one");
  pr->add_option("--vocab-size", pa->vocab_size, "Vocabulary size of the tokenizer to train")->check(CLI::Range(258, 1 << 20));
  pr->add_option("--set", pa->sets, "Override a config key: --set filter.min_chars=100");
  pr->callback([pa] { prepare(*pa); });

  auto ia = std::make_shared<InspectArgs>();
  auto* in = d->add_subcommand("inspect", "Header, statistics and decoded samples of a shard");
  in->add_option("shard", ia->shard, "A .bin shard")->required()->check(CLI::ExistingFile);
  in->add_option("--tokenizer", ia->tokenizer, "Tokenizer to decode with (default: tokenizer.json beside the shard)");
  in->add_option("--samples", ia->samples, "Documents to show")->check(CLI::Range(0, 1000));
  in->add_option("--chars", ia->chars, "Characters to show per document")->check(CLI::Range(1, 1 << 20));
  in->callback([ia] { inspect(*ia); });

  auto sa = std::make_shared<SynthArgs>();
  auto* sy = d->add_subcommand("synth", "Generate an instruction set from Debian's text packages (train/test split by reference)");
  sy->add_option("task", sa->o.task, "kjv-continue, kjv-book or wordnet-define (--list describes them)");
  sy->add_option("--out", sa->out, "The JSONL file to write (Alpaca records)");
  sy->add_option("--split", sa->o.split, "train or test: the two never share a reference (a verse, a word)")
      ->check(CLI::IsMember({"train", "test"}));
  sy->add_option("--source", sa->o.source, "The source text (default: the task's)");
  sy->add_option("--test-fraction", sa->o.test_fraction, "Share of references held out for testing")->check(CLI::Range(0.001, 0.999));
  sy->add_option("--seed", sa->o.seed, "Decides the split");
  sy->add_option("--limit", sa->o.limit, "At most this many records")->check(CLI::Range(std::int64_t(1), std::int64_t(1) << 40));
  sy->add_flag("--list", sa->list, "Describe the tasks");
  sy->callback([sa] { synth(*sa); });
}

}  // namespace llmtk::cli
