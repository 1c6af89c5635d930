// The op-by-op comparison shared by tests/test_backends.cpp (cpu) and tests/test_cuda.cpp: every
// op of a backend against the reference backend on the same seeded inputs, odd sizes, GQA group
// sizes 1/2/4/full, causal, sliding-window and ALiBi masks. The case table is generated from the
// op list, so an op without a case fails to compile.
#pragma once
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/memory.hpp"
#include "core/rng.hpp"
#include "ops/ops.hpp"

using namespace llmtk;

namespace op_cases {

// The buffers one case produced, in order.
struct Outputs {
  std::vector<std::vector<float>> f;
  std::vector<std::string> names;
};

// Inputs of one case: seeded, made on the host and placed in the active backend's memory (host,
// or the GPU for cuda), so the same cases run on every backend.
struct Case {
  Rng rng{2024};
  Outputs* out;
  const DeviceMemory& mem = current_memory();
  std::vector<void*> device_buffers;

  Case() = default;
  Case(const Case&) = delete;
  Case& operator=(const Case&) = delete;
  ~Case() {
    for (void* p : device_buffers) mem.release(p);
  }

  TensorRef place(const void* host, DType t, std::initializer_list<std::int64_t> shape, std::size_t bytes) {
    auto* p = mem.allocate(bytes, "test case");
    device_buffers.push_back(p);
    copy_bytes(p, mem.device, host, Device::host, bytes);
    return TensorRef(p, t, shape, mem.device);
  }
  // The dtype of activations and activation gradients in this run (docs/bf16.md); parameters,
  // their gradients, statistics and optimizer state are f32 in every run.
  DType act = DType::f32;
  // f32 runs only: activations hold values a bf16 tensor can hold, so that an f32 run and a bf16
  // run start from the same numbers.
  bool bf16_values = false;

  // Values in `t`'s dtype: f32 as they are, bf16 rounded.
  TensorRef place_values(const std::vector<float>& v, DType t, std::initializer_list<std::int64_t> shape) {
    if (t == DType::f32) return place(v.data(), t, shape, v.size() * sizeof(float));
    std::vector<bf16> h(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) h[i] = bf16(v[i]);
    return place(h.data(), t, shape, h.size() * sizeof(bf16));
  }
  std::vector<float> normal(std::initializer_list<std::int64_t> shape, double scale, double offset) {
    std::int64_t n = 1;
    for (auto e : shape) n *= e;
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = float(offset + scale * rng.normal());
    return v;
  }
  // An activation (or activation gradient): in this run's dtype.
  TensorRef activation(std::vector<float> v, std::initializer_list<std::int64_t> shape) {
    if (bf16_values)
      for (auto& x : v) x = float(bf16(x));
    return place_values(v, act, shape);
  }
  TensorRef make(std::initializer_list<std::int64_t> shape, double scale = 1.0, double offset = 0.0) {
    return activation(normal(shape, scale, offset), shape);
  }
  // A parameter, parameter gradient, statistic or optimizer state: f32.
  TensorRef param(std::initializer_list<std::int64_t> shape, double scale = 1.0, double offset = 0.0) {
    return place_values(normal(shape, scale, offset), DType::f32, shape);
  }
  TensorRef ids(std::initializer_list<std::int64_t> shape, int vocab, bool some_ignored = false) {
    std::int64_t n = 1;
    for (auto e : shape) n *= e;
    std::vector<std::int32_t> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = std::int32_t(rng.next() % std::uint64_t(vocab));
    if (some_ignored) v[1] = -100;
    return place(v.data(), DType::i32, shape, v.size() * sizeof(std::int32_t));
  }
  void keep(const char* name, TensorRef t) {
    std::vector<float> host(static_cast<std::size_t>(t.numel()));
    if (t.dtype == DType::bf16) {
      std::vector<bf16> h(host.size());
      copy_bytes(h.data(), Device::host, t.data, t.device, t.bytes());
      for (std::size_t i = 0; i < h.size(); ++i) host[i] = float(h[i]);
    } else {
      copy_bytes(host.data(), Device::host, t.data, t.device, t.bytes());
    }
    out->f.push_back(std::move(host));
    out->names.emplace_back(name);
  }
  void keep_i32(const char* name, TensorRef t) {  // indices, compared as exact floats
    std::vector<std::int32_t> h(static_cast<std::size_t>(t.numel()));
    copy_bytes(h.data(), Device::host, t.data, t.device, t.bytes());
    out->f.emplace_back(h.begin(), h.end());
    out->names.emplace_back(name);
  }
  TensorRef i32s(const std::vector<std::int32_t>& v, std::initializer_list<std::int64_t> shape) {
    return place(v.data(), DType::i32, shape, v.size() * sizeof(std::int32_t));
  }
};

#define LLMTK_X(name, params, args) void case_##name(Case& c);
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

// A dimension over 8,192 (the CPU backend computes such bf16 products in chunks along the rows
// or the reduction, backends/cpu/matmul.cpp).
void case_matmul_forward(Case& c) {
  for (auto [N, I, O] : {std::tuple{33, 31, 17}, std::tuple{1, 64, 127}, std::tuple{64, 1, 5}, std::tuple{4, 9001, 3}}) {
    auto x = c.make({N, I}), w = c.param({O, I}), b = c.param({O}), y = c.make({N, O});
    ops::matmul_forward(y, x, w, b);
    c.keep("y", y);
    ops::matmul_forward(y, x, w, TensorRef{});
    c.keep("y (no bias)", y);
  }
}
// (16, 32, 17): rows of x aligned, of dy not (the LM head's shape: CUDA pads dy's rows).
void case_matmul_backward(Case& c) {
  for (auto [N, I, O] : {std::tuple{33, 31, 17}, std::tuple{127, 16, 1}, std::tuple{9001, 3, 2}, std::tuple{5, 3, 9001},
                         std::tuple{16, 32, 17}}) {
    auto x = c.make({N, I}), w = c.param({O, I}), dy = c.make({N, O});
    auto dx = c.make({N, I}), dw = c.param({O, I}), db = c.param({O});  // dw, db start non-zero: +=
    ops::matmul_backward(dx, dw, db, dy, x, w);
    c.keep("dx", dx), c.keep("dw", dw), c.keep("db", db);
  }
}
// Sizes whose GELU side (O forward, I backward) is a multiple of 8, so cuBLASLt fuses GELU, and
// odd ones, which take the unfused path.
void case_matmul_gelu_forward(Case& c) {
  for (auto [N, I, O] : {std::tuple{33, 31, 17}, std::tuple{64, 32, 48}}) {
    auto x = c.make({N, I}), w = c.param({O, I}), b = c.param({O}), y = c.make({N, O}), h = c.make({N, O});
    ops::matmul_gelu_forward(y, h, x, w, b);
    c.keep("y", y), c.keep("h", h);
    ops::matmul_gelu_forward(y, h, x, w, TensorRef{});
    c.keep("y", y), c.keep("h", h);
  }
}
void case_gelu_matmul_backward(Case& c) {
  for (auto [N, I, O] : {std::tuple{33, 31, 17}, std::tuple{64, 48, 32}}) {
    auto h = c.make({N, I}, 2.0), a = c.make({N, I}), w = c.param({O, I}), dy = c.make({N, O});
    auto dh = c.make({N, I}), dw = c.param({O, I}), db = c.param({O});  // dw, db start non-zero: +=
    ops::gelu_matmul_backward(dh, dw, db, dy, a, w, h);
    c.keep("dh", dh), c.keep("dw", dw), c.keep("db", db);
    ops::gelu_matmul_backward(dh, dw, TensorRef{}, dy, a, w, h);
    c.keep("dh", dh), c.keep("dw", dw);
  }
}
// The element-wise cases also run on views one element into their tensors: not 16-byte aligned,
// so a backend's scalar loops run, not only its vectorised ones (into fresh outputs, so that a
// loop that writes nothing fails).
TensorRef inner(TensorRef t) { return t.span(1, t.numel() - 1); }

void case_add_forward(Case& c) {
  auto a = c.make({3, 37}), b = c.make({3, 37}), y = c.make({3, 37});
  ops::add_forward(y, a, b);
  c.keep("y", y);
  auto y1 = c.make({3, 37});
  ops::add_forward(inner(y1), inner(a), inner(b));
  c.keep("y (unaligned)", y1);
}
void case_layernorm_forward(Case& c) {
  auto x = c.make({31, 33}, 2.0, 0.5), w = c.param({33}), b = c.param({33}), y = c.make({31, 33}), m = c.param({31}), r = c.param({31});
  ops::layernorm_forward(y, m, r, x, w, b, 1e-5f);
  c.keep("y", y), c.keep("mean", m), c.keep("rstd", r);
  ops::layernorm_forward(y, m, r, x, w, TensorRef{}, 1e-5f);
  c.keep("y (no bias)", y);
}
// Rows of 33 and of 64 (a backend's vectorised path).
void case_layernorm_backward(Case& c) {
  for (auto [N, C] : {std::pair{31, 33}, std::pair{9, 64}}) {
    auto x = c.make({N, C}), w = c.param({C}), b = c.param({C}), y = c.make({N, C}), m = c.param({N}), r = c.param({N});
    ops::layernorm_forward(y, m, r, x, w, b, 1e-5f);
    auto dy = c.make({N, C}), dx = c.make({N, C}), dw = c.param({C}), db = c.param({C});
    ops::layernorm_backward(dx, dw, db, dy, x, w, m, r, TensorRef{});
    c.keep("dx", dx), c.keep("dw", dw), c.keep("db", db);
    // With the residual path's gradient fused in: from another tensor, then in place (dres = dx).
    auto dres = c.make({N, C}), dx2 = c.make({N, C});
    ops::layernorm_backward(dx2, TensorRef{}, TensorRef{}, dy, x, w, m, r, dres);
    c.keep("dx + dres", dx2);
    ops::layernorm_backward(dres, dw, db, dy, x, w, m, r, dres);
    c.keep("dx + dres (in place)", dres), c.keep("dw", dw), c.keep("db", db);
  }
}
void case_rmsnorm_forward(Case& c) {
  auto x = c.make({33, 127}), w = c.param({127}), y = c.make({33, 127}), r = c.param({33});
  ops::rmsnorm_forward(y, r, x, w, 1e-5f);
  c.keep("y", y), c.keep("rstd", r);
}
// Rows of 127 and of 64 (a backend's vectorised path).
void case_rmsnorm_backward(Case& c) {
  for (auto [N, C] : {std::pair{33, 127}, std::pair{9, 64}}) {
    auto x = c.make({N, C}), w = c.param({C}), y = c.make({N, C}), r = c.param({N});
    ops::rmsnorm_forward(y, r, x, w, 1e-5f);
    auto dy = c.make({N, C}), dx = c.make({N, C}), dw = c.param({C});
    ops::rmsnorm_backward(dx, dw, dy, x, w, r, TensorRef{});
    c.keep("dx", dx), c.keep("dw", dw);
    // With the residual path's gradient fused in: from another tensor, then in place (dres = dx).
    auto dres = c.make({N, C}), dx2 = c.make({N, C});
    ops::rmsnorm_backward(dx2, TensorRef{}, dy, x, w, r, dres);
    c.keep("dx + dres", dx2);
    ops::rmsnorm_backward(dres, dw, dy, x, w, r, dres);
    c.keep("dx + dres (in place)", dres), c.keep("dw", dw);
  }
}
void case_rope_forward(Case& c) {
  auto x = c.make({2, 33, 3, 16}), y = c.make({2, 33, 3, 16});
  ops::rope_forward(y, x, 10000.0f, 0);
  c.keep("y", y);
  ops::rope_forward(x, x, 500000.0f, 0);  // in place
  c.keep("y in place", x);
  ops::rope_forward(y, x, 10000.0f, 97);  // decoding at position 97
  c.keep("y at pos0 97", y);
  ops::rope_forward(y, x, 10000.0f, -40);  // negative positions: the contract allows them
  c.keep("y at pos0 -40", y);
}
void case_rope_backward(Case& c) {
  auto dy = c.make({2, 31, 2, 8}), dx = c.make({2, 31, 2, 8});
  ops::rope_backward(dx, dy, 10000.0f, 0);
  c.keep("dx", dx);
}
const AttentionMask kMasks[] = {{true, 0, false}, {true, 5, false}, {true, 0, true}, {true, 7, true}};
inline void attention_inputs_case(Case& c, bool backward);
inline void cross_attention_case(Case& c, bool backward);
inline void attention_bias_case(Case& c, bool backward);
void case_attention_forward(Case& c) {
  attention_inputs_case(c, false);
  attention_bias_case(c, false);
  cross_attention_case(c, false);
  for (int kv : {1, 2, 4}) {  // group sizes 4, 2, 1 (full MHA) over 4 query heads
    for (const auto& m : kMasks) {
      auto q = c.make({2, 33, 4, 16}), k = c.make({2, 33, kv, 16}), v = c.make({2, 33, kv, 16});
      auto o = c.make({2, 33, 4, 16}), lse = c.param({2 * 4 * 33});
      ops::attention_forward(o, lse, q, k, v, m);
      c.keep("out", o), c.keep("lse", lse);
      // Decoding: 3 new queries at positions 30..32 against all 33 keys.
      auto q3 = c.make({2, 3, 4, 16}), o3 = c.make({2, 3, 4, 16}), lse3 = c.param({2 * 4 * 3});
      AttentionMask dm = m;
      dm.q_offset = 30;
      ops::attention_forward(o3, lse3, q3, k, v, dm);
      c.keep("out (q_offset 30)", o3), c.keep("lse (q_offset 30)", lse3);
    }
  }
}
// Several 64-row tiles (the cpu backend's tile size), partial last tiles, a head size that is not
// a multiple of 16, and windows that cross tiles.
const AttentionMask kLongMasks[] = {{true, 0, false}, {false, 0, false}, {true, 70, true}, {true, 3, false}};
inline void long_attention_case(Case& c) {
  for (const auto& m : kLongMasks) {
    auto q = c.make({1, 131, 4, 24}), k = c.make({1, 131, 2, 24}), v = c.make({1, 131, 2, 24});
    auto o = c.make({1, 131, 4, 24}), lse = c.param({4 * 131});
    ops::attention_forward(o, lse, q, k, v, m);
    c.keep("out (T 131)", o), c.keep("lse (T 131)", lse);
    auto dout = c.make({1, 131, 4, 24}), dq = c.make({1, 131, 4, 24}), dk = c.make({1, 131, 2, 24}),
         dv = c.make({1, 131, 2, 24});
    ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, m);
    c.keep("dq (T 131)", dq), c.keep("dk (T 131)", dk), c.keep("dv (T 131)", dv);
    if (!m.causal) continue;
    auto q5 = c.make({1, 5, 4, 24}), o5 = c.make({1, 5, 4, 24}), lse5 = c.param({4 * 5});
    AttentionMask dm = m;
    dm.q_offset = 126;
    ops::attention_forward(o5, lse5, q5, k, v, dm);
    c.keep("out (T 131, q_offset 126)", o5);
  }
}
// Masks with run-time inputs: padding lengths per row and document segments of packed rows,
// causal and bidirectional, with and without a window (a short row with a window leaves later
// queries no key at all: out 0, lse -inf). T 131 crosses the cpu backend's 64-row tiles.
inline void attention_inputs_case(Case& c, bool backward) {
  for (std::int64_t T : {31, 131}) {
    const std::int64_t B = 3;
    std::vector<std::int32_t> lengths = {std::int32_t(T), 3, std::int32_t(T / 2 + 1)};
    std::vector<std::int32_t> segments(std::size_t(B * T));
    for (std::int64_t b = 0; b < B; ++b)  // documents of 1 to 40 tokens; row 0 is one document
      for (std::int64_t t = 0, doc = 0, left = 0; t < T; ++t) {
        if (b > 0 && left-- == 0) ++doc, left = std::int64_t(c.rng.next() % 40);
        segments[std::size_t(b * T + t)] = std::int32_t(doc);
      }
    const TensorRef len = c.place(lengths.data(), DType::i32, {B}, lengths.size() * 4);
    const TensorRef seg = c.place(segments.data(), DType::i32, {B, T}, segments.size() * 4);
    AttentionMask masks[] = {{false, 0, false, 0, len, {}}, {true, 0, false, 0, len, {}}, {true, 4, true, 0, len, {}},
                             {false, 5, false, 0, {}, {}},  {false, 0, false, 0, {}, seg}, {true, 0, true, 0, {}, seg},
                             {true, 6, false, 0, {}, seg}};
    for (const auto& m : masks) {
      auto q = c.make({B, T, 4, 24}), k = c.make({B, T, 2, 24}), v = c.make({B, T, 2, 24});
      auto o = c.make({B, T, 4, 24}), lse = c.param({B * 4 * T});
      ops::attention_forward(o, lse, q, k, v, m);
      c.keep("out (lengths or segments)", o), c.keep("lse (lengths or segments)", lse);
      if (!backward) continue;
      auto dout = c.make({B, T, 4, 24}), dq = c.make({B, T, 4, 24}), dk = c.make({B, T, 2, 24}), dv = c.make({B, T, 2, 24});
      ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, m);
      c.keep("dq (lengths or segments)", dq), c.keep("dk (lengths or segments)", dk), c.keep("dv (lengths or segments)", dv);
    }
  }
}
// Cross-attention (layers/cross_attention.hpp): T queries against the S keys of another sequence,
// shorter and longer than T (the 64-row tiles crossed on both sides), with the source's padding
// lengths and without.
inline void cross_attention_case(Case& c, bool backward) {
  for (const auto& [T, S] : std::vector<std::pair<std::int64_t, std::int64_t>>{{7, 19}, {70, 5}, {33, 131}}) {
    const std::int64_t B = 2;
    std::vector<std::int32_t> lengths = {std::int32_t(S), std::int32_t(S / 2 + 1)};
    const TensorRef len = c.place(lengths.data(), DType::i32, {B}, lengths.size() * 4);
    for (const AttentionMask& m : {AttentionMask(false), AttentionMask(false, 0, false, 0, len)}) {
      auto q = c.make({B, T, 4, 16}), k = c.make({B, S, 2, 16}), v = c.make({B, S, 2, 16});
      auto o = c.make({B, T, 4, 16}), lse = c.param({B * 4 * T});
      ops::attention_forward(o, lse, q, k, v, m);
      c.keep("cross out", o), c.keep("cross lse", lse);
      if (!backward) continue;
      auto dout = c.make({B, T, 4, 16}), dq = c.make({B, T, 4, 16}), dk = c.make({B, S, 2, 16}), dv = c.make({B, S, 2, 16});
      ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, m);
      c.keep("cross dq", dq), c.keep("cross dk", dk), c.keep("cross dv", dv);
    }
  }
}
// A learned bias on the scores (T5's relative positions): causal with padding, bidirectional, a
// cross-attention's Tk ≠ Tq, and decoding's q_offset (forward); its gradient per batch row.
inline void attention_bias_case(Case& c, bool backward) {
  const std::int64_t B = 2;
  std::vector<std::int32_t> lengths = {9, 70};
  const TensorRef len = c.place(lengths.data(), DType::i32, {B}, lengths.size() * 4);
  struct Shape {
    std::int64_t T, Tk;
    AttentionMask mask;
  };
  for (const Shape& sh : {Shape{70, 70, AttentionMask(true, 0, false, 0, len)}, Shape{33, 33, AttentionMask(false)},
                          Shape{7, 70, AttentionMask(false, 0, false, 0, len)}}) {
    const std::int64_t T = sh.T, Tk = sh.Tk;
    auto q = c.make({B, T, 4, 16}), k = c.make({B, Tk, 2, 16}), v = c.make({B, Tk, 2, 16});
    auto o = c.make({B, T, 4, 16}), lse = c.param({B * 4 * T}), bias = c.param({T, Tk, 4});
    AttentionMask m = sh.mask;
    m.bias = bias;
    ops::attention_forward(o, lse, q, k, v, m);
    c.keep("biased out", o), c.keep("biased lse", lse);
    if (!backward) continue;
    auto dout = c.make({B, T, 4, 16}), dq = c.make({B, T, 4, 16}), dk = c.make({B, Tk, 2, 16}), dv = c.make({B, Tk, 2, 16});
    m.dbias = c.param({B, T, Tk, 4});
    ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, m);
    c.keep("biased dq", dq), c.keep("biased dk", dk), c.keep("biased dv", dv), c.keep("dbias", m.dbias);
  }
  if (backward) return;
  // Decoding: 1 query at position 40 against 41 keys, with the bias row for it.
  auto q = c.make({1, 1, 4, 16}), k = c.make({1, 41, 4, 16}), v = c.make({1, 41, 4, 16});
  auto o = c.make({1, 1, 4, 16}), lse = c.param({4}), bias = c.param({1, 41, 4});
  AttentionMask m(true, 0, false, 40);
  m.bias = bias;
  ops::attention_forward(o, lse, q, k, v, m);
  c.keep("biased out (q_offset 40)", o);
}
void case_attention_backward(Case& c) {
  attention_inputs_case(c, true);
  attention_bias_case(c, true);
  cross_attention_case(c, true);
  long_attention_case(c);
  for (int kv : {1, 2, 4}) {
    for (const auto& m : kMasks) {
      auto q = c.make({2, 31, 4, 8}), k = c.make({2, 31, kv, 8}), v = c.make({2, 31, kv, 8});
      auto o = c.make({2, 31, 4, 8}), lse = c.param({2 * 4 * 31});
      ops::attention_forward(o, lse, q, k, v, m);
      auto dout = c.make({2, 31, 4, 8}), dq = c.make({2, 31, 4, 8}), dk = c.make({2, 31, kv, 8}), dv = c.make({2, 31, kv, 8});
      ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, m);
      c.keep("dq", dq), c.keep("dk", dk), c.keep("dv", dv);
    }
  }
  // Keys before the queries (a prefix, as prefix tuning trains): 40 keys, the 31 queries at
  // positions 9 .. 39; causal, with padding lengths, and a window reaching into the prefix.
  for (const AttentionMask& m : {AttentionMask(true, 0, false, 9), AttentionMask(true, 12, true, 9)}) {
    auto q = c.make({2, 31, 4, 8}), k = c.make({2, 40, 2, 8}), v = c.make({2, 40, 2, 8});
    auto o = c.make({2, 31, 4, 8}), lse = c.param({2 * 4 * 31});
    ops::attention_forward(o, lse, q, k, v, m);
    auto dout = c.make({2, 31, 4, 8}), dq = c.make({2, 31, 4, 8}), dk = c.make({2, 40, 2, 8}), dv = c.make({2, 40, 2, 8});
    ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, m);
    c.keep("prefix dq", dq), c.keep("prefix dk", dk), c.keep("prefix dv", dv);
  }
}
template <class F>
void unary_case(Case& c, F f) {
  auto x = c.make({7, 33}, 2.0), y = c.make({7, 33});
  f(y, x);
  c.keep("y", y);
  auto y1 = c.make({7, 33});
  f(inner(y1), inner(x));
  c.keep("y (unaligned)", y1);
}
template <class F>
void unary_backward_case(Case& c, F f) {
  auto x = c.make({7, 33}, 2.0), dy = c.make({7, 33}), dx = c.make({7, 33});
  f(dx, dy, x);
  c.keep("dx", dx);
  auto dx1 = c.make({7, 33});
  f(inner(dx1), inner(dy), inner(x));
  c.keep("dx (unaligned)", dx1);
}
void case_gelu_forward(Case& c) { unary_case(c, ops::gelu_forward); }
void case_gelu_backward(Case& c) { unary_backward_case(c, ops::gelu_backward); }
void case_relu_forward(Case& c) { unary_case(c, ops::relu_forward); }
void case_relu_backward(Case& c) { unary_backward_case(c, ops::relu_backward); }
void case_silu_forward(Case& c) { unary_case(c, ops::silu_forward); }
void case_silu_backward(Case& c) { unary_backward_case(c, ops::silu_backward); }
void case_tanh_forward(Case& c) { unary_case(c, ops::tanh_forward); }
void case_tanh_backward(Case& c) { unary_backward_case(c, ops::tanh_backward); }
template <class F>
void gated_case(Case& c, F f) {
  auto g = c.make({5, 31}, 2.0), u = c.make({5, 31}), y = c.make({5, 31});
  f(y, g, u);
  c.keep("y", y);
  auto y1 = c.make({5, 31});
  f(inner(y1), inner(g), inner(u));
  c.keep("y (unaligned)", y1);
}
template <class F>
void gated_backward_case(Case& c, F f) {
  auto g = c.make({5, 31}, 2.0), u = c.make({5, 31}), dy = c.make({5, 31}), dg = c.make({5, 31}), du = c.make({5, 31});
  f(dg, du, dy, g, u);
  c.keep("dgate", dg), c.keep("dup", du);
  auto dg1 = c.make({5, 31}), du1 = c.make({5, 31});
  f(inner(dg1), inner(du1), inner(dy), inner(g), inner(u));
  c.keep("dgate (unaligned)", dg1), c.keep("dup (unaligned)", du1);
}
void case_swiglu_forward(Case& c) { gated_case(c, ops::swiglu_forward); }
void case_swiglu_backward(Case& c) { gated_backward_case(c, ops::swiglu_backward); }
void case_geglu_forward(Case& c) { gated_case(c, ops::geglu_forward); }
void case_geglu_backward(Case& c) { gated_backward_case(c, ops::geglu_backward); }
void case_embedding_forward(Case& c) {
  auto table = c.param({11, 33}), y = c.make({3, 7, 33});
  ops::embedding_forward(y, c.ids({3, 7}, 11), table);
  c.keep("y", y);
}
void case_embedding_backward(Case& c) {
  auto dtable = c.param({11, 33}), dy = c.make({3, 7, 33});
  ops::embedding_backward(dtable, dy, c.ids({3, 7}, 11));
  c.keep("dtable", dtable);
}
void case_positions_forward(Case& c) {
  auto x = c.make({3, 7, 33}), table = c.param({9, 33}), y = c.make({3, 7, 33});
  ops::positions_forward(y, x, table, 0);
  c.keep("y", y);
  ops::positions_forward(y, x, table, 2);  // decoding: positions 2 .. 8
  c.keep("y", y);
}
void case_positions_backward(Case& c) {
  auto dy = c.make({3, 7, 33}), dtable = c.param({9, 33});
  ops::positions_backward(dtable, dy);
  c.keep("dtable", dtable);
}
void case_sinusoidal_forward(Case& c) {
  auto x = c.make({2, 65, 34}), y = c.make({2, 65, 34});
  ops::sinusoidal_forward(y, x, 0);
  c.keep("y", y);
  ops::sinusoidal_forward(y, x, 7);
  c.keep("y", y);
}
// Logits whose first `masked` columns are −inf in every row (banned tokens): log Σ exp must skip
// them whatever chunking a backend uses (the cpu backend works in 2048-column chunks).
inline TensorRef masked_logits(Case& c, std::int64_t N, std::int64_t V, std::int64_t masked) {
  std::vector<float> v(static_cast<std::size_t>(N * V));
  for (std::int64_t i = 0; i < N * V; ++i)
    v[static_cast<std::size_t>(i)] = i % V < masked ? -INFINITY : float(2.0 * c.rng.normal());
  return c.activation(std::move(v), {N, V});
}
inline TensorRef late_targets(Case& c, std::int64_t N, int V, int masked) {  // targets among the unmasked columns
  std::vector<std::int32_t> v(static_cast<std::size_t>(N));
  for (auto& t : v) t = masked + std::int32_t(c.rng.next() % std::uint64_t(V - masked));
  return c.place(v.data(), DType::i32, {N}, v.size() * sizeof(std::int32_t));
}
void case_cross_entropy_forward(Case& c) {
  auto logits = c.make({33, 127}, 3.0), losses = c.param({33});
  ops::cross_entropy_forward(losses, logits, c.ids({33}, 127, true), -100);
  c.keep("losses", losses);
  auto masked = masked_logits(c, 3, 4200, 4100), losses3 = c.param({3});
  ops::cross_entropy_forward(losses3, masked, late_targets(c, 3, 4200, 4100), -100);
  c.keep("losses (first 4100 logits -inf)", losses3);
}
void case_cross_entropy_backward(Case& c) {
  auto logits = c.make({33, 127}, 3.0), dlogits = c.make({33, 127});
  const TensorRef targets = c.ids({33}, 127, true);
  ops::cross_entropy_backward(dlogits, logits, targets, TensorRef{}, 1.0f / 32, -100);
  c.keep("dlogits", dlogits);
  auto weights = c.param({33}, 0.5, 1.0);  // per-token weights around 1
  ops::cross_entropy_backward(dlogits, logits, targets, weights, 1.0f / 32, -100);
  c.keep("dlogits (weighted)", dlogits);
  auto masked = masked_logits(c, 3, 4200, 4100), dmasked = c.make({3, 4200});
  ops::cross_entropy_backward(dmasked, masked, late_targets(c, 3, 4200, 4100), TensorRef{}, 1.0f / 3, -100);
  c.keep("dlogits (first 4100 logits -inf)", dmasked);
}
// Tensor parallel's cross-entropy: a rank holding columns [300, 427) of a vocabulary of 500,
// targets anywhere in the vocabulary, one ignored.
void case_vocab_parallel_ce_forward(Case& c) {
  auto logits = c.make({33, 127}, 3.0), stats = c.param({33, 2});
  ops::vocab_parallel_ce_forward(stats, logits, c.ids({33}, 500, true), 300, -100);
  c.keep("stats", stats);
}
void case_vocab_parallel_ce_backward(Case& c) {
  auto logits = c.make({33, 127}, 3.0), dlogits = c.make({33, 127});
  std::vector<float> lse = c.normal({33}, 1.0, 6.0), scale = c.normal({33}, 0.01, 0.03);
  scale[1] = 0;  // an ignored row
  const TensorRef targets = c.ids({33}, 500, true);
  ops::vocab_parallel_ce_backward(dlogits, logits, targets, c.place_values(lse, DType::f32, {33}),
                                  c.place_values(scale, DType::f32, {33}), 300);
  c.keep("dlogits", dlogits);
}
// Mixture of experts: 13 tokens, 8 experts, top-2 (normalised) and top-1 (Switch's raw probability).
void case_moe_route_forward(Case& c) {
  for (auto [K, normalize] : {std::pair{2, 1}, std::pair{1, 0}}) {
    auto logits = c.make({13, 8}, 2.0), probs = c.param({13, 8}), lse = c.param({13}), gate = c.param({13, K});
    auto index = c.ids({13, K}, 8);
    ops::moe_route_forward(probs, lse, index, gate, logits, normalize);
    c.keep("probs", probs), c.keep("lse", lse), c.keep_i32("index", index), c.keep("gate", gate);
  }
}
void case_moe_route_backward(Case& c) {
  for (auto [K, normalize] : {std::pair{2, 1}, std::pair{3, 0}}) {
    auto logits = c.make({13, 8}, 2.0), probs = c.param({13, 8}), lse = c.param({13}), gate = c.param({13, K});
    auto index = c.ids({13, K}, 8);
    ops::moe_route_forward(probs, lse, index, gate, logits, normalize);
    auto dgate = c.param({13, K}), dprobs = c.param({8}, 0.1), dlogits = c.make({13, 8});
    ops::moe_route_backward(dlogits, dgate, dprobs, probs, lse, index, gate, 0.3f, normalize);
    c.keep("dlogits", dlogits);
    ops::moe_route_backward(dlogits, dgate, TensorRef{}, probs, lse, index, gate, 0.0f, normalize);
    c.keep("dlogits (no aux, no z-loss)", dlogits);
  }
}
// 13 tokens × 2 slots over 20 expert rows: slot (7·i) mod 26, the six beyond 19 dropped (−1).
inline std::vector<std::int32_t> moe_slots() {
  std::vector<std::int32_t> v(26);
  for (int i = 0; i < 26; ++i) v[std::size_t(i)] = (7 * i) % 26 < 20 ? (7 * i) % 26 : -1;
  return v;
}
void case_moe_gather(Case& c) {
  std::vector<std::int32_t> token(20);
  for (int m = 0; m < 20; ++m) token[std::size_t(m)] = (5 * m + 3) % 13;
  auto x = c.make({13, 33}), xs = c.make({20, 33});
  ops::moe_gather(xs, x, c.i32s(token, {20}));
  c.keep("xs", xs);
}
void case_moe_combine_forward(Case& c) {
  auto ys = c.make({20, 33}), gate = c.param({13, 2}), y = c.make({13, 33});
  const TensorRef slot = c.i32s(moe_slots(), {13, 2});
  ops::moe_combine_forward(y, ys, gate, slot);
  c.keep("y", y);
  ops::moe_combine_forward(y, ys, TensorRef{}, slot);
  c.keep("y (weights 1)", y);
}
void case_moe_combine_backward(Case& c) {
  auto ys = c.make({20, 33}), gate = c.param({13, 2}), dy = c.make({13, 33}), dys = c.make({20, 33});
  auto dgate = c.param({13, 2});
  const TensorRef slot = c.i32s(moe_slots(), {13, 2});
  ops::moe_combine_backward(dys, dgate, dy, ys, gate, slot);
  c.keep("dys", dys), c.keep("dgate", dgate);
  ops::moe_combine_backward(dys, TensorRef{}, dy, ys, TensorRef{}, slot);
  c.keep("dys (weights 1)", dys);
}
// minGRU's gates, and the linear recurrence over 150 steps (three of the cuda backend's 64-step
// chunks), with and without a starting state and documents restarting it.
void case_mingru_gates_forward(Case& c) {
  auto z = c.make({5, 33}, 2.0), h = c.make({5, 33}), a = c.make({5, 33}), u = c.make({5, 33});
  ops::mingru_gates_forward(a, u, z, h);
  c.keep("a", a), c.keep("u", u);
}
void case_mingru_gates_backward(Case& c) {
  auto z = c.make({5, 33}, 2.0), h = c.make({5, 33}), da = c.make({5, 33}), du = c.make({5, 33});
  auto dz = c.make({5, 33}), dh = c.make({5, 33});
  ops::mingru_gates_backward(dz, dh, da, du, z, h);
  c.keep("dz", dz), c.keep("dh", dh);
}
inline TensorRef scan_segments(Case& c) {
  std::vector<std::int32_t> v(3 * 150, 0);
  for (int t = 0; t < 150; ++t) v[std::size_t(150 + t)] = t < 50 ? 0 : t < 120 ? 1 : 2;  // row 1: three documents
  return c.i32s(v, {3, 150});
}
void case_linear_scan_forward(Case& c) {
  auto a = c.make({3, 150, 37}, 0.15, 0.6), x = c.make({3, 150, 37}), y = c.make({3, 150, 37});
  auto h0 = c.param({3, 37});
  ops::linear_scan_forward(y, a, x, TensorRef{}, TensorRef{});
  c.keep("y", y);
  ops::linear_scan_forward(y, a, x, h0, scan_segments(c));
  c.keep("y (from h0, documents)", y);
}
void case_linear_scan_backward(Case& c) {
  auto a = c.make({3, 150, 37}, 0.15, 0.6), x = c.make({3, 150, 37}), y = c.make({3, 150, 37});
  auto dy = c.make({3, 150, 37}), da = c.make({3, 150, 37}), dx = c.make({3, 150, 37});
  auto h0 = c.param({3, 37});
  const TensorRef segments = scan_segments(c);
  ops::linear_scan_forward(y, a, x, TensorRef{}, TensorRef{});
  ops::linear_scan_backward(da, dx, dy, a, y, TensorRef{}, TensorRef{});
  c.keep("da", da), c.keep("dx", dx);
  ops::linear_scan_forward(y, a, x, h0, segments);
  ops::linear_scan_backward(da, dx, dy, a, y, h0, segments);
  c.keep("da (from h0, documents)", da), c.keep("dx (from h0, documents)", dx);
}
void case_adamw_step(Case& c) {
  auto p = c.param({1001}), g = c.param({1001}), m = c.param({1001}, 0.1), v = c.param({1001}, 0.01, 0.05);
  for (int step = 1; step <= 3; ++step)
    ops::adamw_step(p, g, m, v, AdamWArgs{.lr = 1e-2f, .weight_decay = 0.1f, .step = step});
  c.keep("param", p), c.keep("m", m), c.keep("v", v);
}

void case_sgd_step(Case& c) {
  for (bool nesterov : {false, true}) {
    auto p = c.param({1001}), g = c.param({1001}), buf = c.param({1001});
    for (int step = 1; step <= 3; ++step)
      ops::sgd_step(p, g, buf, SgdArgs{.lr = 1e-2f, .momentum = 0.9f, .weight_decay = 0.1f, .nesterov = nesterov, .step = step});
    c.keep("param", p), c.keep("buf", buf);
  }
}
void case_lion_step(Case& c) {
  auto p = c.param({1001}), g = c.param({1001}), m = c.param({1001});
  for (int step = 1; step <= 3; ++step) ops::lion_step(p, g, m, LionArgs{.lr = 1e-3f, .weight_decay = 0.1f});
  c.keep("param", p), c.keep("m", m);
}
void case_sum_squares(Case& c) {
  auto x = c.param({100003}), out = c.param({1});
  ops::sum_squares(out, x);
  c.keep("out", out);
}
void case_scale_forward(Case& c) {
  auto x = c.make({1001}), y = c.make({1001});
  ops::scale_forward(y, x, 0.37f);
  c.keep("y", y);
}
// The mask is a function of (seed, index): every backend drops the same elements, in place too.
void case_dropout(Case& c) {
  auto x = c.make({1001}), y = c.make({1001});
  ops::dropout(y, x, 0.3f, 0x1234abcdull);
  c.keep("y", y);
  ops::dropout(x, x, 0.5f, 7);
  c.keep("x in place", x);
}
// Both ways between f32 and bf16, odd sizes, values that round both ways, and in place within a
// dtype; the backend's result is compared with the reference's.
void case_convert(Case& c) {
  auto x = c.param({1001}, 3.0), h = c.place_values(c.normal({1001}, 3.0, 0.0), DType::bf16, {1001});
  auto y16 = c.place_values(c.normal({1001}, 1.0, 0.0), DType::bf16, {1001}), y32 = c.param({1001});
  ops::convert(y16, x);
  c.keep("f32 -> bf16", y16);
  ops::convert(y32, h);
  c.keep("bf16 -> f32", y32);
  ops::convert(y32, x);
  c.keep("f32 -> f32", y32);
}

struct OpCase {
  std::string_view name;
  void (*run)(Case&);
};
constexpr OpCase kCases[] = {
#define LLMTK_X(name, params, args) {#name, &case_##name},
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};
static_assert(std::size(kCases) == ops::kOpCount);

Outputs run_on(const char* backend, const OpCase& oc, DType act = DType::f32, bool bf16_values = false) {
  ops::ScopedBackend scope(backend);
  Outputs out;
  Case c;
  c.act = act;
  c.bf16_values = bf16_values;
  c.out = &out;
  oc.run(c);
  return out;
}

// Outputs of `want` and `got` agree within rel·max|want| and an NMSE bound.
inline void expect_outputs_close(std::string_view op, const Outputs& want, const Outputs& got, double rel,
                                 double nmse_max) {
  REQUIRE(want.f.size() == got.f.size());
  for (std::size_t k = 0; k < want.f.size(); ++k) {
    double max_ref = 0, max_err = 0, err2 = 0, ref2 = 0;
    for (std::size_t i = 0; i < want.f[k].size(); ++i) {
      const double a = want.f[k][i], b = got.f[k][i];
      if (a == b) {  // also equal infinities: the lse of a query that sees no key is -inf
        if (std::isfinite(a)) max_ref = std::max(max_ref, std::abs(a)), ref2 += a * a;
        continue;
      }
      max_ref = std::max(max_ref, std::abs(a));
      max_err = std::max(max_err, std::abs(a - b));
      err2 += (a - b) * (a - b), ref2 += a * a;
    }
    const double nmse = ref2 > 0 ? err2 / ref2 : err2;
    INFO(op << " " << want.names[k] << ": max error " << max_err << " (max |ref| " << max_ref << "), NMSE " << nmse);
    CHECK(max_err <= rel * max_ref + 1e-5);
    CHECK(nmse <= nmse_max);
  }
}

// act: the activations' dtype. In bf16 both backends get the same bf16 inputs; an output may
// differ by the rounding of a bf16 result that lies near a rounding boundary (2^-8 relative).
void compare_backend(const char* backend, double rel = 1e-4, double nmse_max = 1e-9,
                     bool (*only)(std::string_view) = nullptr, DType act = DType::f32) {
  for (const auto& oc : kCases) {
    if (only && !only(oc.name)) continue;
    DYNAMIC_SECTION(oc.name) {
      const Outputs want = run_on("reference", oc, act), got = run_on(backend, oc, act);
      expect_outputs_close(oc.name, want, got, rel, nmse_max);
    }
  }
}

}  // namespace op_cases
