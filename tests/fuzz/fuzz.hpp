// What every fuzz target shares (tests/fuzz/README.md): a scratch directory of this process's own,
// the input written there as the file a reader opens, and the rule each reader must keep. A
// reader given any bytes either succeeds or throws llmtk::Error whose message names the file it
// read; any other exception, a crash, a sanitizer report, a leak or a hang is a bug, and the
// target aborts so that libFuzzer (or the replay driver) keeps the input that did it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <string>
#include <string_view>

#include "core/error.hpp"

namespace llmtk::fuzz {

// A directory under /dev/shm (or $TMPDIR) made on first use and removed at exit.
const std::string& scratch();
// Writes `bytes` to scratch()/name (creating sub-directories) and returns its path.
std::string put(const std::string& name, std::string_view bytes);
inline std::string_view bytes(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}
// Prints what broke the rule, with the input's size, and aborts.
[[noreturn]] void broken(std::string_view rule, std::string_view detail);

// Runs `read`; an llmtk::Error is the good way to refuse, provided its message names `file` (or,
// where the input is not a file, one of `names`: "--set"). Any other exception breaks the rule.
template <class F>
void expect_clean(std::initializer_list<std::string_view> names, F&& read) {
  try {
    read();
  } catch (const llmtk::Error& e) {
    const std::string_view what = e.what();
    bool named = false;
    for (auto n : names) named |= what.find(n) != std::string_view::npos;
    if (!named) broken("the error does not name the file", what);
  } catch (const std::exception& e) {
    broken("an exception other than llmtk::Error escaped the reader", e.what());
  }
}
template <class F>
void expect_clean(const std::string& file, F&& read) {
  expect_clean({std::string_view(file)}, std::forward<F>(read));
}

}  // namespace llmtk::fuzz
