// Tokenizer throughput: encode a file with a tokenizer (median of several runs, one thread) and,
// optionally, time BPE training on it. Prints one JSON object. Driven by benchmarks/tokenizer/run.sh,
// which runs a peer in the same command.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/bpe.hpp"

using namespace llmtk::data;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  std::string tokenizer, input;
  int repeat = 3, train_vocab = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--tokenizer") tokenizer = v;
    else if (k == "--input") input = v;
    else if (k == "--repeat") repeat = std::stoi(v);
    else if (k == "--train-vocab") train_vocab = std::stoi(v);
  }
  if (tokenizer.empty() || input.empty()) {
    std::fprintf(stderr, "usage: tokenizer_bench --tokenizer PATH --input FILE [--repeat N] [--train-vocab V]\n");
    return 2;
  }
  std::ifstream in(input, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  auto tok = load_tokenizer(tokenizer);
  std::size_t tokens = tok->encode(text).size();  // warm-up
  std::vector<double> runs;
  for (int r = 0; r < repeat; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    tokens = tok->encode(text).size();
    runs.push_back(seconds_since(t0));
  }
  std::sort(runs.begin(), runs.end());
  const double s = runs[runs.size() / 2];
  std::printf("{\"tool\": \"llmtk\", \"bytes\": %zu, \"tokens\": %zu, \"seconds\": %.4f, \"mb_per_s\": %.3f",
              text.size(), tokens, s, double(text.size()) / 1e6 / s);
  if (train_vocab > 0) {
    BpeTrainOptions o;
    o.vocab_size = train_vocab;
    const auto t0 = std::chrono::steady_clock::now();
    auto trained = BpeTokenizer::train(std::vector<std::string>{text}, o);
    std::printf(", \"train_vocab\": %d, \"train_seconds\": %.3f", trained.vocab_size(), seconds_since(t0));
  }
  std::printf("}\n");
  return 0;
}
