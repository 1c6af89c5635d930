#include "fuzz.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace llmtk::fuzz {

namespace fs = std::filesystem;

namespace {
// Made on first use; its destructor (at exit, also when libFuzzer's time is up) removes it.
struct Scratch {
  std::string path;
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    path = std::string(fs::is_directory("/dev/shm") ? "/dev/shm" : (tmp ? tmp : "/tmp")) + "/llmtk-fuzz-XXXXXX";
    if (!::mkdtemp(path.data())) {
      std::perror("llmtk fuzz: mkdtemp");
      std::abort();
    }
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
}  // namespace

const std::string& scratch() {
  static const Scratch dir;
  return dir.path;
}

std::string put(const std::string& name, std::string_view bytes) {
  const fs::path path = fs::path(scratch()) / name;
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "llmtk fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
  return path.string();
}

void broken(std::string_view rule, std::string_view detail) {
  std::fprintf(stderr, "\nllmtk fuzz: %.*s\n  %.*s\n", int(rule.size()), rule.data(), int(detail.size()), detail.data());
  std::abort();
}

}  // namespace llmtk::fuzz
