// cuDNN's own verdict on the SDPA graphs of backends/cuda/cudnn_attention.cpp, for an H100 and an
// A100, on a machine without a GPU. cuDNN 9.8+ builds plans for a GPU described in JSON
// (tests/cudnn_devices/); its heuristics then choose engine configurations for the graph, and
// finalizing a plan checks that the engine supports the graph and compiles its kernel for that
// architecture. Only loading the compiled kernel needs the device's driver: CTest runs this with
// the toolkit's stub libcuda, whose calls all fail, so each configuration must get exactly that
// far: offered by the heuristics, supported, compiled, and refused only by cuLibraryLoadData. A
// graph cuDNN does not recognise as attention gets no configuration at all (P in f32 instead of
// bf16, or exp without the running max, both did when planted). With a real driver for the
// described device, the plans finalize, which passes too.
#include <catch2/catch.hpp>
#include <cudnn.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/cudnn_attention.hpp"

using namespace llmtk;

namespace {

std::vector<std::string> g_errors;  // cuDNN's error-level log lines since the last clear
// A message is lines, each ended by '\0', the last by two.
void collect(cudnnSeverity_t, void*, const cudnnDebug_t*, const char* msg) {
  for (const char* line = msg; *line; line += std::string(line).size() + 1) g_errors.emplace_back(line);
}

std::string read_device(const std::string& file) {
  std::ifstream in(std::string(LLMTK_CUDNN_DEVICES_DIR) + "/" + file);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int messages_containing(const std::string& needle) {
  int n = 0;
  for (const auto& m : g_errors) n += m.find(needle) != std::string::npos;
  return n;
}

}  // namespace

TEST_CASE("cuDNN offers, supports and compiles engines for the SDPA graphs on an H100 and an A100", "[cudnn]") {
  REQUIRE(cudnnSetCallback(CUDNN_SEV_ERROR_EN, nullptr, &collect) == CUDNN_STATUS_SUCCESS);
  struct Shape {
    std::int64_t B, H, T, D;
    const char* what;
  };
  const Shape shapes[] = {{16, 12, 1024, 64, "GPT-2 124M and the Llama-style benchmark model, batch 16 x 1024"},
                          {2, 4, 256, 64, "test_cuda's attention at T = 256"},
                          {2, 4, 127, 64, "test_cuda's attention at T = 127"},
                          {4, 2, 64, 128, "head dim 128"},
                          {8, 8, 512, 32, "the quickstart's llama-tiny (head dim 32)"}};
  for (const char* device : {"h100_sxm.json", "a100_sxm.json"}) {
    const std::string json = read_device(device);
    for (const Shape& s : shapes)
      for (bool backward : {false, true}) {
        g_errors.clear();
        const cuda::OfflinePlan r = cuda::cudnn_sdpa_plan_offline(json, backward, s.B, s.H, s.T, s.D);
        INFO(device << ", " << (backward ? "backward" : "forward") << ", " << s.what << " (B " << s.B << ", H " << s.H
                    << ", T " << s.T << ", D " << s.D << "): " << (r.finalized ? "plan finalized" : r.why));
        std::ostringstream how;
        how << (r.finalized ? "a plan finalized" : "finalizing:");
        for (const auto& [status, n] : r.failures) how << ' ' << n << " x " << status;
        std::printf("%s %s, B %lld H %lld T %lld D %lld: %lld configurations offered; %s\n", device,
                    backward ? "backward" : "forward ", (long long)s.B, (long long)s.H, (long long)s.T,
                    (long long)s.D, (long long)r.offered, how.str().c_str());
        if (r.finalized) continue;  // a driver for this device is present
        CHECK(r.offered >= 1);
        const auto driver = r.failures.find("CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER");
        CHECK(r.failures.size() == 1);
        CHECK((driver != r.failures.end() && driver->second == r.offered));
        CHECK(messages_containing("cuLibraryLoadData") >= r.offered);  // compiled, then refused by the stub
      }
  }
  cudnnSetCallback(0, nullptr, nullptr);
}
