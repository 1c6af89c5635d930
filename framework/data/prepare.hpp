// Corpus preparation: collect → clean → filter → deduplicate → split → tokenize → shards, with a
// quality report (report.json and report.html) that counts everything, so nothing is dropped
// without a reason a reader can see.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "minhash.hpp"

namespace llmtk {
class ConfigFile;
}

namespace llmtk::data {

struct PrepareConfig {
  std::string kind = "text";               // text (pre-training documents) or sft (instruction data, docs/sft.md)
  struct Input {
    std::vector<std::string> paths;        // files and directories (read recursively, sorted)
    std::string format = "auto";           // auto (by extension: .jsonl/.json are JSONL), text, jsonl
    std::string text_field = "text";       // JSONL: the field holding the document
    std::string missing_field = "fail";    // JSONL line without the field: fail or skip (counted)
    std::string split = "paragraph";       // text: one document per file, paragraph or line
  } input;
  struct Clean {
    std::string invalid_utf8 = "repair";   // repair (U+FFFD), drop (the document) or fail
    bool nfc = true;                       // Unicode NFC
    bool whitespace = true;                // newlines, control characters, trailing/blank runs
  } clean;
  struct Filter {
    std::int64_t min_chars = 32, max_chars = 1'000'000;
    double max_symbol_ratio = 0.5;         // symbols / letters
    double max_repeated_lines = 0.5;       // share of non-empty lines that repeat an earlier one
    std::vector<std::string> scripts;      // e.g. ["latin"]; empty: any script
    double min_script_fraction = 0.8;      // share of letters in those scripts
  } filter;
  struct Dedup {
    bool exact = true, near = true;
    MinHashOptions minhash;
  } dedup;
  struct Split {
    double val_fraction = 0.01;
    std::uint64_t seed = 1234;
  } split;
  struct Tokenizer {
    std::string path;                      // an existing tokenizer; empty: train one
    std::string kind = "bpe";              // bpe or char (when training)
    int vocab_size = 4096;
    std::string pattern = "gpt2";
    // Special tokens appended to the tokenizer (given or trained) with the next free ids, e.g. the
    // [PAD], [CLS], [SEP], [MASK] of a masked language model; ones it has already are kept.
    std::vector<std::string> special;
    // Span corruption's sentinels, <extra_id_0> ... <extra_id_{n-1}>, appended after `special`.
    int sentinels = 0;
  } tokenizer;
  struct Output {
    std::string dir;
    std::int64_t shard_tokens = 100'000'000;
  } output;
  struct Sft {
    std::string chat_template = "chatml";
    bool train_on_prompt = false;          // false: only the assistant's tokens count in the loss
    std::int64_t max_tokens = 0;           // > 0: longer examples are dropped (counted in the report)
  } sft;
  int threads = 0;  // tokenizer threads; 0: one per core
};

// Reads a config file (see recipes/data/*.toml); unknown keys and bad values fail with FILE:LINE.
PrepareConfig read_prepare_config(ConfigFile& file);

struct PrepareSummary {
  std::int64_t docs_in = 0, docs_kept = 0, train_tokens = 0, val_tokens = 0;
  std::vector<std::string> train_shards, val_shards;
  std::string tokenizer_path, report_json, report_html;
};

// The files named by `paths`: files as given, directories read recursively (sorted).
std::vector<std::string> input_files(const std::vector<std::string>& paths);

// Runs the pipeline; `log` receives one line per stage. Fails (after writing the report) when no
// document survives.
PrepareSummary prepare(const PrepareConfig& config, const std::function<void(const std::string&)>& log);
// kind = "sft": instruction JSONL → the chat template → shards with a loss mask (sft.cpp).
PrepareSummary prepare_sft(const PrepareConfig& config, const std::function<void(const std::string&)>& log);

}  // namespace llmtk::data
