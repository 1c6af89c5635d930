// type_name<T>(): the name of a type as the source spells it, without the llmtk:: prefix, so a
// strong name (struct LlamaBlock final : Block<...> {}) prints as "LlamaBlock" with no boilerplate.
#pragma once
#include <string>
#include <string_view>

namespace llmtk {

template <class T>
constexpr std::string_view raw_type_name() {
  std::string_view f = __PRETTY_FUNCTION__;  // "... [with T = llmtk::X; ...]" (GCC), "[T = ...]" (Clang)
  auto start = f.find("T = ") + 4;
  auto end = f.find_first_of(";]", start);
  return f.substr(start, end - start);
}

template <class T>
std::string type_name() {
  std::string s(raw_type_name<T>());
  for (auto p = s.find("llmtk::"); p != std::string::npos; p = s.find("llmtk::")) s.erase(p, 7);
  return s;
}

}  // namespace llmtk
