// Errors: every message starts with the name of what failed, "[rmsnorm_forward] x has ...".
#pragma once
#include <charconv>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>

namespace llmtk {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::string& s, std::string_view v) { s += v; }
inline void append(std::string& s, const char* v) { s += v; }
inline void append(std::string& s, const std::string& v) { s += v; }
inline void append(std::string& s, char v) { s += v; }
template <class T>
  requires std::is_integral_v<T>
inline void append(std::string& s, T v) { s += std::to_string(v); }
// Floating point in its shortest form that reads back exactly: 50, 0.001, 1e-12.
template <class T>
  requires std::is_floating_point_v<T>
inline void append(std::string& s, T v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}
}  // namespace detail

// Concatenate strings and numbers; keeps <format>/<sstream> out of widely included headers.
template <class... Parts>
std::string cat(const Parts&... parts) {
  std::string s;
  (detail::append(s, parts), ...);
  return s;
}

// `where` names the op or part ("rmsnorm_forward"); the message says what is wrong.
template <class... Parts>
[[noreturn]] void fail(std::string_view where, const Parts&... parts) {
  throw Error(cat("[", where, "] ", parts...));
}

// For readers of outside files: runs `read` and makes sure any failure names the file. An
// llmtk::Error whose message lacks `path` is thrown again with "'PATH': " in front; any other
// exception but bad_alloc (a JSON value of the wrong type, a number out of range) becomes an
// llmtk::Error naming the file and what was wrong.
template <class F>
decltype(auto) reading_file(std::string_view where, const std::string& path, F&& read) {
  try {
    return read();
  } catch (const Error& e) {
    if (std::string_view(e.what()).find(path) != std::string_view::npos) throw;
    fail(where, "'", path, "': ", e.what());
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    fail(where, "'", path, "' is malformed: ", e.what());
  }
}

}  // namespace llmtk

#define LLMTK_CHECK(cond, where, ...)                   \
  do {                                                  \
    if (!(cond)) ::llmtk::fail((where), __VA_ARGS__);   \
  } while (0)
