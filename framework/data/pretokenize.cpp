#include "pretokenize.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "../core/error.hpp"

namespace llmtk::data {

std::string_view pattern_by_name(std::string_view name) {
  if (name == "gpt2") return kGpt2Pattern;
  if (name == "cl100k") return kCl100kPattern;
  return name;
}

struct Pretokenizer::Impl {
  pcre2_code* code = nullptr;
  ~Impl() { pcre2_code_free(code); }
};

void Pretokenizer::FreeState::operator()(void* p) const {
  pcre2_match_data_free(static_cast<pcre2_match_data*>(p));
}

Pretokenizer::MatchState Pretokenizer::new_state() const {
  return MatchState(pcre2_match_data_create_from_pattern(impl_->code, nullptr));
}

Pretokenizer::Pretokenizer(std::string_view pattern) : pattern_(pattern_by_name(pattern)), impl_(new Impl) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  // UTF + UCP: \p{L}, \s and friends are Unicode-aware. MATCH_INVALID_UTF: invalid byte
  // sequences never match instead of failing the whole call (they become pieces of their own).
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern_.data()), pattern_.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset, nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail("pretokenizer", "bad pattern at offset ", offset, ": ", reinterpret_cast<const char*>(msg));
  }
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
}

Pretokenizer::~Pretokenizer() = default;
Pretokenizer::Pretokenizer(Pretokenizer&&) noexcept = default;
Pretokenizer& Pretokenizer::operator=(Pretokenizer&&) noexcept = default;

std::pair<std::size_t, std::size_t> Pretokenizer::next_match(void* state, std::string_view text,
                                                             std::size_t pos) const {
  auto* md = static_cast<pcre2_match_data*>(state);
  int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, 0,
                       md, nullptr);
  if (rc < 0) return {text.size(), text.size()};  // no match (PCRE2_ERROR_NOMATCH) or an error
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
  return {ov[0], ov[1]};
}

std::vector<std::string_view> Pretokenizer::split(std::string_view text) const {
  std::vector<std::string_view> out;
  split(text, [&](std::string_view p) { out.push_back(p); });
  return out;
}

}  // namespace llmtk::data
