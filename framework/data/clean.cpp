#include "clean.hpp"

#include <utf8proc.h>

#include <cstdlib>
#include <unordered_set>

#include "../core/error.hpp"
#include "utf8.hpp"

namespace llmtk::data {

std::int64_t repair_utf8(std::string& text) {
  std::int64_t bad = 0;
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t at = i;
    const char32_t cp = decode_utf8(text, i);
    // decode_utf8 returns U+FFFD for invalid input and advances one byte; a real U+FFFD in the
    // text is three bytes long.
    if (cp == kReplacement && i - at == 1) ++bad;
    append_utf8(out, cp);
  }
  if (bad) text.swap(out);
  return bad;
}

// utf8proc: Unicode normalization needs the Unicode character database; utf8proc (Debian's
// libutf8proc) is small and well kept, so the tables are not rewritten here.
bool to_nfc(std::string& text) {
  utf8proc_uint8_t* out = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                              static_cast<utf8proc_ssize_t>(text.size()), &out,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  LLMTK_CHECK(n >= 0, "clean", "Unicode normalization failed: ", utf8proc_errmsg(n));
  std::string s(reinterpret_cast<char*>(out), static_cast<std::size_t>(n));
  std::free(out);
  if (s == text) return false;
  text.swap(s);
  return true;
}

std::int64_t normalize_whitespace(std::string& text) {
  std::int64_t removed = 0;
  std::string out;
  out.reserve(text.size());
  std::size_t line_start = 0;
  int blank_run = 0;
  auto end_line = [&] {
    // Trim trailing spaces and tabs of the line just finished.
    while (out.size() > line_start && (out.back() == ' ' || out.back() == '\t')) out.pop_back();
  };
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t at = i;
    const char32_t cp = decode_utf8(text, i);
    if (cp == '\r') {
      if (i < text.size() && text[i] == '\n') continue;  // \r\n: keep only the \n
    }
    if (cp == '\n' || cp == '\r' || cp == 0x2028 || cp == 0x2029) {
      end_line();
      const bool blank = out.size() == line_start;
      blank_run = blank ? blank_run + 1 : 0;
      if (blank_run <= 2) out += '\n';
      line_start = out.size();
      continue;
    }
    const bool control = (cp < 0x20 && cp != '\t') || cp == 0x7F || (cp >= 0x80 && cp < 0xA0);
    if (control) {
      ++removed;
      continue;
    }
    out.append(text, at, i - at);
  }
  end_line();
  // Trim leading and trailing blank space of the whole document.
  const auto first = out.find_first_not_of(" \t\n");
  const auto last = out.find_last_not_of(" \t\n");
  text = first == std::string::npos ? std::string() : out.substr(first, last - first + 1);
  return removed;
}

TextStats text_stats(std::string_view text) {
  TextStats s;
  std::unordered_set<std::string_view> seen;
  std::size_t line_start = 0;
  auto line = [&](std::size_t end) {
    auto l = text.substr(line_start, end - line_start);
    if (l.find_first_not_of(" \t") != std::string_view::npos) {
      ++s.lines;
      if (!seen.insert(l).second) ++s.repeated_lines;
    }
  };
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] == '\n') line(i), line_start = i + 1;
    const char32_t cp = decode_utf8(text, i);
    ++s.chars;
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
    const bool letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
    const bool mark = cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_ME;
    if (letter) {
      ++s.letters;
      if (cp < 0x250 || (cp >= 0x1E00 && cp < 0x1F00)) ++s.latin;
      else if (cp >= 0x370 && cp < 0x400) ++s.greek;
      else if (cp >= 0x400 && cp < 0x530) ++s.cyrillic;
      else if (cp >= 0x590 && cp < 0x600) ++s.hebrew;
      else if (cp >= 0x600 && cp < 0x700) ++s.arabic;
      else if (cp >= 0x900 && cp < 0x980) ++s.devanagari;
      else if (cp >= 0x3040 && cp < 0x3100) ++s.kana;
      else if ((cp >= 0x4E00 && cp < 0xA000) || (cp >= 0x3400 && cp < 0x4DC0) || (cp >= 0x20000 && cp < 0x2FA20)) ++s.cjk;
      else if ((cp >= 0xAC00 && cp < 0xD7B0) || (cp >= 0x1100 && cp < 0x1200)) ++s.hangul;
      else ++s.other_script;
    } else if (cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO) {
      ++s.digits;
    } else if (cat == UTF8PROC_CATEGORY_ZS || cp == '\n' || cp == '\t') {
      ++s.spaces;
    } else if (!mark) {
      ++s.symbols;
    }
  }
  line(text.size());
  return s;
}

double script_fraction(const TextStats& s, const std::vector<std::string>& scripts) {
  if (s.letters == 0) return 0.0;
  std::int64_t n = 0;
  for (const auto& name : scripts) {
    if (name == "latin") n += s.latin;
    else if (name == "cyrillic") n += s.cyrillic;
    else if (name == "greek") n += s.greek;
    else if (name == "arabic") n += s.arabic;
    else if (name == "hebrew") n += s.hebrew;
    else if (name == "cjk") n += s.cjk;
    else if (name == "kana") n += s.kana;
    else if (name == "hangul") n += s.hangul;
    else if (name == "devanagari") n += s.devanagari;
    else fail("filter.scripts", "unknown script '", name, "'; known: latin, cyrillic, greek, arabic, hebrew, cjk, kana, hangul, devanagari");
  }
  return double(n) / double(s.letters);
}

}  // namespace llmtk::data
