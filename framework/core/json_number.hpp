// Whole numbers read from JSON files written elsewhere. nlohmann::json converts a number to an
// integer type with a plain cast, so 1.5 becomes 1 and 1e300 is undefined behaviour; every
// reader of outside JSON takes its counts, sizes, ids and offsets through whole<T>() instead,
// which accepts only integers that fit T and otherwise fails naming `what`.
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string_view>

#include "error.hpp"

namespace llmtk {

template <class T>
T whole(const nlohmann::json& v, std::string_view what) {
  static_assert(std::is_integral_v<T>);
  bool fits = false;
  if (v.is_number_unsigned())
    fits = v.get<std::uint64_t>() <= std::uint64_t(std::numeric_limits<T>::max());
  else if (v.is_number_integer())
    fits = std::is_signed_v<T> && v.get<std::int64_t>() >= std::int64_t(std::numeric_limits<T>::min()) &&
           v.get<std::int64_t>() <= std::int64_t(std::numeric_limits<T>::max());
  if (!fits)
    fail(what, "expected a whole number from ", std::numeric_limits<T>::min(), " to ", std::numeric_limits<T>::max(),
         ", got ", v.dump());
  return v.is_number_unsigned() ? T(v.get<std::uint64_t>()) : T(v.get<std::int64_t>());
}

}  // namespace llmtk
