// Every op of the cpu backend against the reference backend (tests/op_cases.hpp): outputs must
// agree within fp32 tolerances (max |a − b| ≤ 1e-4 · max|reference| + 1e-5, NMSE ≤ 1e-9).
#include "op_cases.hpp"

#include <cmath>
#include <vector>

using op_cases::compare_backend;

TEST_CASE("cpu backend matches the reference backend op by op", "[backend][cpu]") { compare_backend("cpu"); }

TEST_CASE("cpu backend with bf16 matmuls stays within bf16 tolerance of the reference", "[backend][cpu][bf16]") {
  // bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ≈ 2e-3 per input); products accumulate
  // in f32, so outputs stay within ~1e-2 of the largest value and NMSE within ~1e-5.
  ops::set_matmul_precision(DType::bf16);
  compare_backend("cpu", 2e-2, 1e-4, [](std::string_view op) { return op.starts_with("matmul"); });
  ops::set_matmul_precision(DType::f32);
}

TEST_CASE("cpu matmuls take bf16 inputs as they are", "[backend][cpu][bf16]") {
  // Inputs already in bf16 are not rounded again: the reference widens them exactly, so the cpu
  // backend's bf16 product (f32 accumulation) must agree with it to f32 accuracy.
  const std::int64_t N = 37, I = 70, O = 33;
  Rng rng(7);
  std::vector<bf16> x(static_cast<std::size_t>(N * I)), w(static_cast<std::size_t>(O * I));
  for (auto& e : x) e = bf16(float(rng.normal()));
  for (auto& e : w) e = bf16(float(rng.normal()));
  std::vector<float> b(static_cast<std::size_t>(O)), dy(static_cast<std::size_t>(N * O));
  for (auto& e : b) e = float(rng.normal());
  for (auto& e : dy) e = float(rng.normal());
  const TensorRef X(x.data(), DType::bf16, {N, I}), W(w.data(), DType::bf16, {O, I});
  const TensorRef B(b.data(), DType::f32, {O}), DY(dy.data(), DType::f32, {N, O});
  auto run = [&](const char* backend) {
    ops::ScopedBackend use(backend);
    std::vector<float> y(std::size_t(N * O)), dx(std::size_t(N * I)), dw(std::size_t(O * I), 0.5f);
    ops::matmul_forward(TensorRef(y.data(), DType::f32, {N, O}), X, W, B);
    ops::matmul_backward(TensorRef(dx.data(), DType::f32, {N, I}), TensorRef(dw.data(), DType::f32, {O, I}),
                         TensorRef{}, DY, X, W);
    y.insert(y.end(), dx.begin(), dx.end());
    y.insert(y.end(), dw.begin(), dw.end());
    return y;
  };
  const auto want = run("reference"), got = run("cpu");
  double max_err = 0, max_ref = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    max_err = std::max(max_err, double(std::abs(want[i] - got[i])));
    max_ref = std::max(max_ref, double(std::abs(want[i])));
  }
  INFO("max error " << max_err << ", max |ref| " << max_ref);
  // dy is f32 and is rounded to bf16 for dx and dw (one rounding, 2^-9 relative); y is exact.
  CHECK(max_err <= 1e-2 * max_ref);
  // y alone: both inputs exact in bf16, so only f32 accumulation order differs.
  double y_err = 0;
  for (std::int64_t i = 0; i < N * O; ++i) y_err = std::max(y_err, double(std::abs(want[std::size_t(i)] - got[std::size_t(i)])));
  CHECK(y_err <= 1e-5 * max_ref + 1e-5);
}

TEST_CASE("backends register themselves, in order, with what they run on", "[backend]") {
  const auto names = ops::backends();
  REQUIRE(names.size() >= 3);
  CHECK(std::vector<std::string>(names.begin(), names.begin() + 3) == std::vector<std::string>{"reference", "cpu", "cuda"});
  for (const auto& name : names) {
    INFO(name);
    const ops::BackendInfo* b = ops::find_backend_info(name);
    REQUIRE(b != nullptr);
    CHECK(b->table == ops::find_backend(name));
    CHECK(std::string_view(b->description).starts_with("runs "));
  }
  CHECK(ops::find_backend_info("cpu")->memory().device == Device::host);
  CHECK(ops::find_backend_info("cuda")->memory().device == Device::cuda);
  CHECK(ops::backend_unavailable("cpu").empty());
  // A mistake names the backend it most likely means: by what it runs on, else by spelling.
  CHECK(ops::suggest_backend("gpu") == "cuda");
  CHECK(ops::suggest_backend("refrence") == "reference");
  CHECK(ops::suggest_backend("cdua") == "cuda");
  CHECK(ops::suggest_backend("tensorflow").empty());
  CHECK(ops::unknown_backend("GPU") == "unknown backend 'GPU' (did you mean cuda?); this build has: reference, cpu, cuda");
}

TEST_CASE("the op context: backend, matmul precision and threads in one place", "[backend]") {
  {
    ops::ScopedBackend use("cpu");
    CHECK(ops::context().backend == ops::find_backend_info("cpu"));
    CHECK(&ops::active() == ops::find_backend("cpu"));
    ops::set_matmul_precision(DType::bf16);
    CHECK(ops::context().matmul_dtype == DType::bf16);
    ops::set_matmul_precision(DType::f32);
    // The cpu backend's thread setter is OpenMP's; its info() reports the count.
    const std::string before = ops::backend_info();  // "…, 2 OpenMP threads"
    const int threads = std::stoi(before.substr(before.rfind(", ") + 2));
    ops::set_threads(1);
    CHECK(ops::context().threads == 1);
    CHECK(ops::backend_info().ends_with(", 1 OpenMP threads"));
    CHECK_THROWS_WITH(ops::set_threads(0), Catch::Contains("at least 1"));
    ops::set_threads(threads);
  }
  CHECK(ops::context().backend == ops::find_backend_info("reference"));
}
