// Checks of the emulation itself, built into test_cuda_emu only: the fused-attention tests in
// tests/test_cuda.cpp prove something about the cuDNN graphs only if the graphs ran.
#include <catch2/catch.hpp>

#include "core/arena.hpp"
#include "core/rng.hpp"
#include "ops/ops.hpp"

using namespace llmtk;

int cuda_emu_cudnn_executions();  // cudnn.cpp

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
