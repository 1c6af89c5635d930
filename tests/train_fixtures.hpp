// Fixtures for tests that train: a temporary folder per test process, a small prepared corpus,
// a tiny recipe over it, and readers for what a run writes.
#pragma once
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/prepare.hpp"
#include "train/trainer.hpp"

namespace train_fixtures {

using namespace llmtk;
using namespace llmtk::train;
namespace fs = std::filesystem;

inline fs::path tmp(const std::string& name) {
  auto d = fs::temp_directory_path() / ("llmtk-train-" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A small prepared corpus shared by the tests (prepared once).
inline const std::string& corpus() {
  static const std::string dir = [] {
    const auto d = tmp("corpus");
    std::string text;
    const char* lines[] = {"In the beginning God created the heaven and the earth.",
                           "And the earth was without form, and void; and darkness was upon the face of the deep.",
                           "And God said, Let there be light: and there was light.",
                           "And God saw the light, that it was good: and God divided the light from the darkness."};
    for (int i = 0; i < 120; ++i) text += std::string(lines[i % 4]) + " Verse " + std::to_string(i) + ".\n\n";
    std::ofstream(d / "text.txt") << text;
    data::PrepareConfig c;
    c.input.paths = {(d / "text.txt").string()};
    c.dedup.near = false;
    c.split.val_fraction = 0.1;
    c.tokenizer.vocab_size = 300;
    c.output.dir = (d / "out").string();
    data::prepare(c, [](const std::string&) {});
    return c.output.dir;
  }();
  return dir;
}

inline std::string write_recipe(const fs::path& dir, const std::string& extra = "") {
  const auto path = dir / "tiny.toml";
  std::ofstream(path) << "[model]\narch = \"llama-tiny\"\nd_model = 16\nn_layers = 1\nn_heads = 2\nn_kv_heads = 1\n"
                         "d_ff = 32\nvocab = 300\nmax_seq = 16\n\n[data]\ndir = \"" + corpus() + "\"\n\n"
                         "[train]\nbatch = 4\nseq = 16\nsteps = 8\ndevice = \"cpu\"\nthreads = 2\nseed = 3\n\n"
                         "[optim]\nlr = 1e-2\n\n[schedule]\nwarmup = 2\nmin_lr = 1e-3\n\n[eval]\nevery = 4\nbatches = 2\n\n"
                         "[checkpoint]\nevery = 4\n\n[log]\nevery = 1\n" + extra;
  return path.string();
}

inline std::vector<double> losses(const std::string& run) {
  std::vector<double> out;
  std::ifstream in(fs::path(run) / "metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (auto j = nlohmann::json::parse(line); j.contains("loss")) out.push_back(j["loss"]);
  return out;
}

inline std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

inline TrainOptions quiet(const fs::path& run) {
  TrainOptions o;
  o.run_dir = run.string();
  o.log = [](const std::string&) {};
  return o;
}

// Trains `recipe` in `dir` for `half` steps (stopping with a checkpoint), then resumes it to the
// end; checks that it stopped where asked and that the second run resumed rather than started
// over. Returns the resumed run's result.
inline TrainResult stop_and_resume(const Recipe& recipe, const fs::path& dir, std::int64_t half) {
  auto first = quiet(dir);
  first.stop_after = half;
  const auto h = train::train(recipe, first);
  REQUIRE((h.interrupted && h.steps == half));
  auto rest = quiet(dir);
  rest.resume = dir.string();
  std::string log;
  rest.log = [&](const std::string& line) { log += line + "\n"; };
  const auto c = train::train(recipe, rest);
  CHECK(log.find("resumed from") != std::string::npos);
  return c;
}

}  // namespace train_fixtures
