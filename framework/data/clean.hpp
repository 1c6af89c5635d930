// Cleaning and filtering one document: pure functions of the text, so each rule can be read and
// tested on its own. prepare.cpp applies them and counts what each one did.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llmtk::data {

struct CleanStats {
  std::int64_t invalid_utf8 = 0;    // invalid sequences replaced by U+FFFD
  std::int64_t control_chars = 0;   // control characters removed
  bool nfc_changed = false;         // Unicode NFC changed the text
};

// UTF-8 repair: every invalid sequence becomes U+FFFD. Returns how many there were.
std::int64_t repair_utf8(std::string& text);
// Unicode NFC (canonical composition: "e" + U+0301 → "é"). Text must be valid UTF-8.
bool to_nfc(std::string& text);
// Newlines to \n, control characters other than \n and \t removed, trailing spaces on each line
// removed, runs of more than two blank lines cut to two, leading/trailing blank space trimmed.
std::int64_t normalize_whitespace(std::string& text);

struct TextStats {
  std::int64_t chars = 0, letters = 0, digits = 0, spaces = 0, symbols = 0;
  std::int64_t lines = 0, repeated_lines = 0;  // non-empty lines, and those seen before in the text
  // Letters per script, for the language heuristic.
  std::int64_t latin = 0, cyrillic = 0, greek = 0, arabic = 0, hebrew = 0, cjk = 0, kana = 0,
               hangul = 0, devanagari = 0, other_script = 0;
};
TextStats text_stats(std::string_view text);
// The share of letters in one of the named scripts ("latin", "cyrillic", "greek", "arabic",
// "hebrew", "cjk", "kana", "hangul", "devanagari").
double script_fraction(const TextStats& s, const std::vector<std::string>& scripts);
inline constexpr std::string_view kScriptNames[] = {"latin", "cyrillic", "greek", "arabic", "hebrew",
                                                    "cjk", "kana", "hangul", "devanagari"};

}  // namespace llmtk::data
