// llmtk tokenizer train | encode | decode
#include <fmt/core.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.hpp"
#include "core/error.hpp"
#include "data/bpe.hpp"
#include "data/char_tokenizer.hpp"

namespace llmtk::cli {

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LLMTK_CHECK(in.good(), "tokenizer", "cannot open input '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A token's bytes as a reader can see them: control characters and spaces made visible.
std::string visible(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c == ' ') out += "␣";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += char(c);
  }
  return out;
}

struct TrainArgs {
  int vocab_size = 8192;
  std::vector<std::string> inputs, specials{std::string(data::kEndOfText)};
  std::string out, pattern = "gpt2", kind = "bpe";
  std::int64_t min_frequency = 2;
};

void train(const TrainArgs& a) {
  std::vector<std::string> texts;
  std::size_t bytes = 0;
  for (const auto& f : a.inputs) {
    texts.push_back(read_all(f));
    bytes += texts.back().size();
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<data::Tokenizer> tok;
  if (a.kind == "char") {
    tok = std::make_unique<data::CharTokenizer>(data::CharTokenizer::train(texts, a.specials));
  } else {
    data::BpeTrainOptions o;
    o.vocab_size = a.vocab_size, o.special_tokens = a.specials, o.pattern = a.pattern;
    o.min_frequency = a.min_frequency;
    tok = std::make_unique<data::BpeTokenizer>(data::BpeTokenizer::train(texts, o));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  tok->save(a.out);
  std::size_t tokens = 0;
  for (const auto& t : texts) tokens += tok->encode(t).size();
  fmt::print("trained a {} tokenizer on {} bytes in {:.2f} s: vocab {}, {:.2f} bytes per token on the "
             "training text\nwrote {}\n",
             tok->kind(), bytes, secs, tok->vocab_size(), double(bytes) / double(std::max<std::size_t>(tokens, 1)), a.out);
  if (a.kind == "bpe" && tok->vocab_size() < a.vocab_size)
    fmt::print("note: stopped at {} tokens: no pair occurs {} times or more (--min-frequency)\n",
               tok->vocab_size(), a.min_frequency);
}

struct EncodeArgs {
  std::string tokenizer, text, input;
  bool json = false, special = false, show = false;
};

void encode(const EncodeArgs& a) {
  auto tok = data::load_tokenizer(a.tokenizer);
  const std::string text = a.input.empty() ? a.text : read_all(a.input);
  const auto ids = tok->encode(text, a.special);
  if (a.show) {
    for (auto id : ids) fmt::print("{:>7}  {}\n", id, visible(tok->token_bytes(id)));
    fmt::print("{} bytes, {} tokens\n", text.size(), ids.size());
  } else if (a.json) {
    fmt::print("{}\n", nlohmann::json(ids).dump());
  } else {
    std::string line;
    for (std::size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    fmt::print("{}\n", line);
  }
}

}  // namespace

void add_tokenizer_commands(CLI::App& app) {
  auto* t = app.add_subcommand("tokenizer", "Train, run and inspect tokenizers");
  t->require_subcommand(1);

  auto ta = std::make_shared<TrainArgs>();
  auto* tr = t->add_subcommand("train", "Learn a tokenizer from text files");
  tr->add_option("--input", ta->inputs, "Text files to learn from")->required()->check(CLI::ExistingFile);
  tr->add_option("--out", ta->out, "Where to write tokenizer.json")->required();
  tr->add_option("--vocab-size", ta->vocab_size, "Vocabulary size, special tokens included")->check(CLI::Range(257, 1 << 20));
  tr->add_option("--special", ta->specials, "Special tokens (default: <|endoftext|>); repeat for several");
  tr->add_option("--pattern", ta->pattern, "Pre-tokenizer: gpt2, cl100k or a PCRE2 pattern");
  tr->add_option("--kind", ta->kind, "bpe or char")->check(CLI::IsMember({"bpe", "char"}));
  tr->add_option("--min-frequency", ta->min_frequency, "Stop when the best pair is rarer than this");
  tr->callback([ta] { train(*ta); });

  auto ea = std::make_shared<EncodeArgs>();
  auto* en = t->add_subcommand("encode", "Text to token ids");
  en->add_option("--tokenizer", ea->tokenizer, "tokenizer.json, or a directory with it or encoder.json + vocab.bpe")->required();
  auto* text = en->add_option("--text", ea->text, "The text to encode");
  auto* input = en->add_option("--input", ea->input, "A file to encode")->check(CLI::ExistingFile);
  text->excludes(input);
  en->add_flag("--json", ea->json, "Print a JSON array");
  en->add_flag("--special", ea->special, "Turn special tokens written in the text into their ids");
  en->add_flag("--show", ea->show, "Print one token per line with its text");
  en->callback([ea, text, input] {
    LLMTK_CHECK(text->count() + input->count() == 1, "tokenizer encode", "give the text with --text STR or --input FILE");
    encode(*ea);
  });

  auto da = std::make_shared<std::pair<std::string, std::vector<data::TokenId>>>();
  auto* de = t->add_subcommand("decode", "Token ids to text");
  de->add_option("--tokenizer", da->first, "tokenizer.json, or a directory with it or encoder.json + vocab.bpe")->required();
  de->add_option("ids", da->second, "Token ids")->required();
  de->callback([da] {
    auto tok = data::load_tokenizer(da->first);
    fmt::print("{}\n", tok->decode(da->second));
  });
}

}  // namespace llmtk::cli
