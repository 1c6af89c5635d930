// UTF-8 helpers shared by the data pipeline. decode_utf8 reads one code point at `i` and advances
// it; an invalid sequence (truncated, overlong, a surrogate, past U+10FFFF) yields U+FFFD and
// advances by one byte, so a caller can count and repair invalid input without stopping.
#pragma once
#include <string>
#include <string_view>

namespace llmtk::data {

inline constexpr char32_t kReplacement = 0xFFFD;
char32_t decode_utf8(std::string_view s, std::size_t& i);
void append_utf8(std::string& out, char32_t cp);

}  // namespace llmtk::data
