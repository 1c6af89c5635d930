// Per-op speed of the CPU backend at the shapes of GPT-2 124M and llama-tiny (batch 8 × seq 256),
// next to oneDNN's plain matmul primitive at the same matmul shapes (created once, memory
// objects prepared: the practical ceiling). GFLOP/s for matmuls and attention, GB/s for the
// memory-bound ops. Prints markdown; with --json FILE also writes JSON.
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.hpp"
#include "ops/ops.hpp"

using namespace llmtk;

namespace {

struct Buf {
  std::vector<float> v;
  std::vector<std::int64_t> shape;
  Buf(std::vector<std::int64_t> s, Rng& rng, float scale = 1.0f) : shape(std::move(s)) {
    std::int64_t n = 1;
    for (auto e : shape) n *= e;
    v.resize(std::size_t(n));
    for (auto& x : v) x = float(scale * rng.normal());
  }
  TensorRef t() {
    TensorRef r;
    r.data = v.data(), r.dtype = DType::f32, r.rank = int(shape.size());
    for (int i = 0; i < r.rank; ++i) r.ext[i] = shape[i];
    return r;
  }
};

// The same values in bf16 (activations of a bf16 step, or a weight's working copy).
struct Half {
  std::vector<bf16> v;
  std::vector<std::int64_t> shape;
  explicit Half(const Buf& b) : shape(b.shape) {
    for (float x : b.v) v.push_back(bf16(x));
  }
  TensorRef t() {
    TensorRef r;
    r.data = v.data(), r.dtype = DType::bf16, r.rank = int(shape.size());
    for (int i = 0; i < r.rank; ++i) r.ext[i] = shape[i];
    return r;
  }
};

// printf-style formatting into a std::string (GCC 12 reports a false -Wrestrict on long
// chains of std::string + at -O3).
template <class... Args>
std::string format(const char* f, Args... args) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, args...);
  return buf;
}

double median_seconds(const std::function<void()>& f, int reps = 5) {
  f();  // warm-up (creates cached primitives)
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// oneDNN's matmul alone: y[N, O] = x[N, I] · w[O, I]ᵀ, primitive and memory made once, inputs
// and output in the data type (f32, or bf16 with f32 accumulation).
double plain_onednn(std::int64_t N, std::int64_t I, std::int64_t O, bool bf16_inputs = false) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  const dt in = bf16_inputs ? dt::bf16 : dt::f32;
  // 0x3f003f00 is 0.5 as two bf16 values, or about 0.502 as one f32: either way finite data.
  std::vector<std::uint32_t> x(std::size_t(N * I), 0x3f003f00u), w(std::size_t(O * I), 0x3e803e80u);
  std::vector<float> y(std::size_t(N * O));
  dnnl::memory::desc a({N, I}, in, tag::ab), b({I, O}, in, tag::ba), c({N, O}, in, tag::ab);
  dnnl::matmul prim(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, b, c), eng));
  dnnl::memory ma(a, eng, x.data()), mb(b, eng, w.data()), mc(c, eng, y.data());
  return median_seconds([&] {
    prim.execute(s, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
    s.wait();
  });
}

struct Row {
  std::string model, op, shape, unit;
  double rate, ceiling;
  double rate_bf16 = 0, ceiling_bf16 = 0;  // llmtk with bf16 activations; matmuls: oneDNN bf16 alone
};

void bench_model(std::vector<Row>& rows, const std::string& model, std::int64_t B, std::int64_t T, std::int64_t C,
                 std::int64_t F, std::int64_t V, std::int64_t H, std::int64_t KV, bool gated) {
  Rng rng(1);
  const std::int64_t N = B * T, D = C / H;
  auto matmul = [&](const std::string& name, std::int64_t I, std::int64_t O) {
    Buf x({N, I}, rng), w({O, I}, rng, 0.02f), y({N, O}, rng), dy({N, O}, rng), dx({N, I}, rng), dw({O, I}, rng);
    const double flops = 2.0 * double(N * I * O);
    const double f = median_seconds([&] { ops::matmul_forward(y.t(), x.t(), w.t(), TensorRef{}); });
    const double b = median_seconds([&] { ops::matmul_backward(dx.t(), dw.t(), TensorRef{}, dy.t(), x.t(), w.t()); });
    const double ceil = flops / plain_onednn(N, I, O) / 1e9;
    // bf16 (docs/bf16.md): activations in bf16, the weight's bf16 working copy, dw in f32.
    Half x16(x), w16(w), y16(y), dy16(dy), dx16(dx);
    const double f16 = median_seconds([&] { ops::matmul_forward(y16.t(), x16.t(), w16.t(), TensorRef{}); });
    const double b16 =
        median_seconds([&] { ops::matmul_backward(dx16.t(), dw.t(), TensorRef{}, dy16.t(), x16.t(), w16.t()); });
    const double ceil16 = flops / plain_onednn(N, I, O, true) / 1e9;
    const std::string shape = format("%lld×%lld→%lld", (long long)N, (long long)I, (long long)O);
    rows.push_back({model, format("matmul_forward %s", name.c_str()), shape, "GFLOP/s", flops / f / 1e9, ceil,
                    flops / f16 / 1e9, ceil16});
    rows.push_back({model, format("matmul_backward %s", name.c_str()), shape, "GFLOP/s", 2 * flops / b / 1e9, ceil,
                    2 * flops / b16 / 1e9, ceil16});
  };
  matmul("q/o projection", C, C);
  matmul(gated ? "gate/up" : "mlp up", C, F);
  matmul(gated ? "down" : "mlp down", F, C);
  matmul("lm head", C, V);
  {
    Buf q({B, T, H, D}, rng), k({B, T, KV, D}, rng), v({B, T, KV, D}, rng), o({B, T, H, D}, rng), lse({B * H * T}, rng);
    Buf dout({B, T, H, D}, rng), dq({B, T, H, D}, rng), dk({B, T, KV, D}, rng), dv({B, T, KV, D}, rng);
    const double flops = 4.0 * double(B * H) * double(T) * double(T + 1) / 2.0 * double(D);  // causal
    const double f = median_seconds([&] { ops::attention_forward(o.t(), lse.t(), q.t(), k.t(), v.t(), AttentionMask{}); });
    const double b = median_seconds(
        [&] { ops::attention_backward(dq.t(), dk.t(), dv.t(), dout.t(), q.t(), k.t(), v.t(), o.t(), lse.t(), AttentionMask{}); });
    Half q16(q), k16(k), v16(v), o16(o), dout16(dout), dq16(dq), dk16(dk), dv16(dv);
    const double f16 =
        median_seconds([&] { ops::attention_forward(o16.t(), lse.t(), q16.t(), k16.t(), v16.t(), AttentionMask{}); });
    const double b16 = median_seconds([&] {
      ops::attention_backward(dq16.t(), dk16.t(), dv16.t(), dout16.t(), q16.t(), k16.t(), v16.t(), o16.t(), lse.t(),
                              AttentionMask{});
    });
    const std::string shape = format("B%lld T%lld H%lld/%lld D%lld", (long long)B, (long long)T, (long long)H,
                                     (long long)KV, (long long)D);
    rows.push_back({model, "attention_forward", shape, "GFLOP/s", flops / f / 1e9, 0, flops / f16 / 1e9, 0});
    rows.push_back({model, "attention_backward", shape, "GFLOP/s", 2.5 * flops / b / 1e9, 0, 2.5 * flops / b16 / 1e9, 0});
  }
  auto memory_op = [&](const std::string& name, double bytes, const std::function<void()>& f) {
    rows.push_back({model, name, format("%lld rows", (long long)N), "GB/s", bytes / median_seconds(f) / 1e9, 0});
  };
  Buf x({N, C}, rng), y({N, C}, rng), dy({N, C}, rng), dx({N, C}, rng), w({C}, rng), bb({C}, rng), dw({C}, rng),
      db({C}, rng), mean({N}, rng), rstd({N}, rng);
  const double nc = double(N * C) * 4;
  if (gated) {
    memory_op("rmsnorm_forward", 2 * nc, [&] { ops::rmsnorm_forward(y.t(), rstd.t(), x.t(), w.t(), 1e-5f); });
    memory_op("rmsnorm_backward", 3 * nc, [&] { ops::rmsnorm_backward(dx.t(), dw.t(), dy.t(), x.t(), w.t(), rstd.t(), TensorRef{}); });
    Buf g({N, F}, rng), u({N, F}, rng), a({N, F}, rng), da({N, F}, rng), du({N, F}, rng);
    const double nf = double(N * F) * 4;
    memory_op("swiglu_forward", 3 * nf, [&] { ops::swiglu_forward(a.t(), g.t(), u.t()); });
    memory_op("swiglu_backward", 5 * nf, [&] { ops::swiglu_backward(da.t(), du.t(), a.t(), g.t(), u.t()); });
    Buf q({B, T, H, D}, rng);
    memory_op("rope_forward", 2.0 * double(B * T * H * D) * 4, [&] { ops::rope_forward(q.t(), q.t(), 10000.0f, 0); });
  } else {
    memory_op("layernorm_forward", 2 * nc, [&] { ops::layernorm_forward(y.t(), mean.t(), rstd.t(), x.t(), w.t(), bb.t(), 1e-5f); });
    memory_op("layernorm_backward", 3 * nc,
              [&] { ops::layernorm_backward(dx.t(), dw.t(), db.t(), dy.t(), x.t(), w.t(), mean.t(), rstd.t(), TensorRef{}); });
    Buf h({N, F}, rng), a({N, F}, rng), da({N, F}, rng);
    const double nf = double(N * F) * 4;
    memory_op("gelu_forward", 2 * nf, [&] { ops::gelu_forward(a.t(), h.t()); });
    memory_op("gelu_backward", 3 * nf, [&] { ops::gelu_backward(da.t(), a.t(), h.t()); });
  }
  {
    Buf logits({N, V}, rng, 2.0f), dlogits({N, V}, rng), losses({N}, rng);
    std::vector<std::int32_t> tg(static_cast<std::size_t>(N));
    for (std::size_t i = 0; i < tg.size(); ++i) tg[i] = std::int32_t(rng.next() % std::uint64_t(V));
    TensorRef tt(tg.data(), DType::i32, {N});
    const double nv = double(N * V) * 4;
    memory_op("cross_entropy_forward", nv, [&] { ops::cross_entropy_forward(losses.t(), logits.t(), tt, -100); });
    memory_op("cross_entropy_backward", 2 * nv,
              [&] { ops::cross_entropy_backward(dlogits.t(), logits.t(), tt, TensorRef{}, 1.0f / float(N), -100); });
  }
  {
    // One step over a tensor the size of the MLP's two matrices: reads p, g, m, v; writes p, m, v.
    const std::int64_t P = 2 * C * F;
    Buf p({P}, rng, 0.02f), g({P}, rng, 0.01f), m({P}, rng, 0.0f), v({P}, rng, 0.0f);
    rows.push_back({model, "adamw_step", format("%lld params", (long long)P), "GB/s",
                    7.0 * double(P) * 4 / median_seconds([&] { ops::adamw_step(p.t(), g.t(), m.t(), v.t(), AdamWArgs{}); }) / 1e9, 0});
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--json") json_path = argv[i + 1];
  ops::use_backend("cpu");
  std::vector<Row> rows;
  bench_model(rows, "gpt2", 8, 256, 768, 3072, 50257, 12, 12, false);
  bench_model(rows, "llama-tiny", 8, 256, 256, 688, 4096, 8, 4, true);
  std::printf("# Per-op speed, CPU backend\n\n%s; batch 8 x seq 256; median of 5 after a warm-up.\n\n",
              ops::backend_info().c_str());
  std::printf("| model | op | shape | llmtk fp32 | oneDNN matmul alone, f32 | llmtk bf16 | oneDNN matmul alone, bf16 |\n"
              "|---|---|---|---:|---:|---:|---:|\n");
  auto gf = [](double x) { return x > 0 ? format("%.0f GFLOP/s", x) : std::string(); };
  for (const auto& r : rows)
    std::printf("| %s | %s | %s | %.1f %s | %s | %s | %s |\n", r.model.c_str(), r.op.c_str(), r.shape.c_str(), r.rate,
                r.unit.c_str(), gf(r.ceiling).c_str(), gf(r.rate_bf16).c_str(), gf(r.ceiling_bf16).c_str());
  std::printf("\nbf16 (docs/bf16.md): activations and their gradients in bf16, matmuls on the weights' bf16 working "
              "copy with f32 accumulation and f32 dw; \"oneDNN alone, bf16\" is the product with bf16 inputs and "
              "output. Attention computes in f32 tiles in both precisions (bf16 loaded into them, rounded on store).\n");
  std::printf("\nCommand: `benchmarks/ops/run.sh`\n");
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "[\n";
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      out << "  {\"model\": \"" << r.model << "\", \"op\": \"" << r.op << "\", \"shape\": \"" << r.shape << "\", \"rate\": "
          << r.rate << ", \"unit\": \"" << r.unit << "\", \"onednn_matmul_gflops\": " << r.ceiling
          << ", \"bf16_gflops\": " << r.rate_bf16 << ", \"onednn_matmul_bf16_gflops\": " << r.ceiling_bf16 << "}"
          << (i + 1 < rows.size() ? ",\n" : "\n");
    }
    out << "]\n";
  }
  return 0;
}
