// Every op of the cpu backend against the reference backend (tests/op_cases.hpp): outputs must
// agree within fp32 tolerances (max |a − b| ≤ 1e-4 · max|reference| + 1e-5, NMSE ≤ 1e-9).
#include "op_cases.hpp"

using op_cases::compare_backend;

TEST_CASE("cpu backend matches the reference backend op by op", "[backend][cpu]") { compare_backend("cpu"); }

TEST_CASE("cpu backend with bf16 matmuls stays within bf16 tolerance of the reference", "[backend][cpu][bf16]") {
  // bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ≈ 2e-3 per input); products accumulate
  // in f32, so outputs stay within ~1e-2 of the largest value and NMSE within ~1e-5.
  ops::set_matmul_precision(DType::bf16);
  compare_backend("cpu", 2e-2, 1e-4, [](std::string_view op) { return op.starts_with("matmul"); });
  ops::set_matmul_precision(DType::f32);
}
