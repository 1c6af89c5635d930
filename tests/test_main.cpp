// Catch2's main, compiled once for every test executable. LLMTK_TEST_BACKEND (environment) picks
// the backend the tests run on; CTest registers some suites twice, once per backend.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include <cstdlib>

#include "ops/ops.hpp"

namespace {
const bool backend_selected = [] {
  const char* name = std::getenv("LLMTK_TEST_BACKEND");
  llmtk::ops::use_backend(name && *name ? name : "reference");
  return true;
}();
}  // namespace
