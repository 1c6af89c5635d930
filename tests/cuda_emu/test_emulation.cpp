// Checks of the emulation itself, built into test_cuda_emu only: the fused-attention tests in
// tests/test_cuda.cpp prove something about the cuDNN graphs only if the graphs ran, and the
// matmul + GELU cases something about the GELU epilogues only if cuBLASLt ran them.
#include <catch2/catch.hpp>

#include "core/arena.hpp"
#include "core/rng.hpp"
#include "ops/ops.hpp"
#include "scheduler.hpp"

using namespace llmtk;

int cuda_emu_cudnn_executions();  // cudnn.cpp
int cuda_emu_gelu_epilogues();    // cublaslt.cpp
void cuda_emu_refuse_gelu(bool);  // cublaslt.cpp

TEST_CASE("the emulated cuDNN runs the backend's SDPA forward and backward graphs", "[ops]") {
  ops::ScopedBackend scope("cuda");
  Arena a("attention");
  const int q = a.add("q", {2, 40, 4, 16}), k = a.add("k", {2, 40, 2, 16}), v = a.add("v", {2, 40, 2, 16});
  const int o = a.add("o", {2, 40, 4, 16}), lse = a.add("lse", {2 * 4 * 40}), dout = a.add("dout", {2, 40, 4, 16});
  const int dq = a.add("dq", {2, 40, 4, 16}), dk = a.add("dk", {2, 40, 2, 16}), dv = a.add("dv", {2, 40, 2, 16});
  a.allocate();
  Rng rng(3);
  for (int id : {q, k, v, dout}) {
    std::vector<float> x(std::size_t(a.entries()[std::size_t(id)].numel));
    for (auto& e : x) e = float(rng.normal());
    a.write(id, x.data());
  }
  const AttentionMask causal{true, 0, false, 0};
  ops::set_matmul_precision(DType::bf16);
  const int before = cuda_emu_cudnn_executions();
  ops::attention_forward(a[o], a[lse], a[q], a[k], a[v], causal);
  ops::attention_backward(a[dq], a[dk], a[dv], a[dout], a[q], a[k], a[v], a[o], a[lse], causal);
  ops::set_matmul_precision(DType::f32);
  CHECK(cuda_emu_cudnn_executions() == before + 2);
}

TEST_CASE("the emulated cuBLASLt runs the GELU epilogues of the MLP's fused ops", "[ops]") {
  ops::ScopedBackend scope("cuda");
  Arena a("mlp");
  const int x = a.add("x", {24, 16}), w = a.add("w", {32, 16}), b = a.add("b", {32}), h = a.add("h", {24, 32});
  const int y = a.add("y", {24, 32}), w2 = a.add("w2", {8, 32}), dy = a.add("dy", {24, 8}), dh = a.add("dh", {24, 32});
  const int dw2 = a.add("dw2", {8, 32});
  a.allocate();
  Rng rng(5);
  for (int id : {x, w, b, w2, dy}) {
    std::vector<float> v(std::size_t(a.entries()[std::size_t(id)].numel));
    for (auto& e : v) e = float(rng.normal());
    a.write(id, v.data());
  }
  for (DType precision : {DType::f32, DType::bf16}) {
    ops::set_matmul_precision(precision);
    const int before = cuda_emu_gelu_epilogues();
    ops::matmul_gelu_forward(a[y], a[h], a[x], a[w], a[b]);
    ops::gelu_matmul_backward(a[dh], a[dw2], TensorRef{}, a[dy], a[y], a[w2], a[h]);
    CHECK(cuda_emu_gelu_epilogues() == before + 2);
  }
  ops::set_matmul_precision(DType::f32);
}

// A broadcast without a barrier: thread 0 writes a shared value that every thread then reads.
// Run first to last it looks right; run last to first the other threads read before the write.
// CTest runs the kernel tests in both orders (test_cuda_emu.*_reversed) for this reason.
TEST_CASE("the emulation's two thread orders expose a missing barrier that one order hides", "[ops]") {
  const bool was = cuda_emu::reverse_order();
  auto broadcast_without_barrier = [] {
    static float shared_value;
    static float seen[64];
    shared_value = -1.0f;  // the value before this launch
    cuda_emu::launch(dim3(1), dim3(64), true, [] {
      const unsigned t = cuda_emu::position().thread.x;
      if (t == 0) shared_value = 42.0f;
      // a __syncthreads belongs here
      seen[t] = shared_value;
      cuda_emu::sync_block();
    });
    int wrong = 0;
    for (float v : seen) wrong += v != 42.0f;
    return wrong;
  };
  cuda_emu::set_reverse_order(false);
  CHECK(broadcast_without_barrier() == 0);
  cuda_emu::set_reverse_order(true);
  CHECK(broadcast_without_barrier() == 63);
  cuda_emu::set_reverse_order(was);
}

// A cuBLASLt that refuses the GELU epilogues outright (INVALID_VALUE from the heuristic, not just
// no algorithm): the fused ops run the plain product and the GELU kernel, and still match the
// reference backend.
TEST_CASE("the fused matmul + GELU ops fall back when cuBLASLt refuses the epilogue", "[ops]") {
  auto run = [](const char* backend) {
    ops::ScopedBackend scope(backend);
    Arena a("refused");
    const int x = a.add("x", {40, 24}), w = a.add("w", {56, 24}), b = a.add("b", {56}), h = a.add("h", {40, 56});
    const int y = a.add("y", {40, 56}), w2 = a.add("w2", {16, 56}), dy = a.add("dy", {40, 16});
    const int dh = a.add("dh", {40, 56}), dw2 = a.add("dw2", {16, 56});
    a.allocate();
    Rng rng(9);
    for (int id : {x, w, b, w2, dy, dw2}) {
      std::vector<float> v(std::size_t(a.entries()[std::size_t(id)].numel));
      for (auto& e : v) e = float(rng.normal());
      a.write(id, v.data());
    }
    ops::matmul_gelu_forward(a[y], a[h], a[x], a[w], a[b]);
    ops::gelu_matmul_backward(a[dh], a[dw2], TensorRef{}, a[dy], a[y], a[w2], a[h]);
    std::vector<std::vector<float>> out;
    for (int id : {y, h, dh, dw2}) {
      out.emplace_back(std::size_t(a.entries()[std::size_t(id)].numel));
      a.read(id, out.back().data());
    }
    return out;
  };
  cuda_emu_refuse_gelu(true);
  const int before = cuda_emu_gelu_epilogues();
  const auto got = run("cuda");
  cuda_emu_refuse_gelu(false);
  CHECK(cuda_emu_gelu_epilogues() == before);  // no epilogue ran
  const auto want = run("reference");
  for (std::size_t k = 0; k < want.size(); ++k)
    for (std::size_t i = 0; i < want[k].size(); ++i) REQUIRE(got[k][i] == Approx(want[k][i]).margin(1e-4).epsilon(1e-4));
}
