// The CUDA backend on a GPU: every op against the reference backend (fp32 and bf16 tolerances),
// the golden models against PyTorch, whole-model gradients against the reference backend for
// every composition, determinism, and 50 training steps against the cpu backend. Without a usable
// GPU (or in a build without CUDA) the executable prints "SKIPPED: ..." and exits 77, which CTest
// reports as skipped.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/communicator.hpp"
#include "dsl/block.hpp"
#include "dsl/decoder_lm.hpp"
#include "dsl/repeat.hpp"
#include "golden_check.hpp"
#include "layers/attention.hpp"
#include "layers/embedding.hpp"
#include "layers/glu.hpp"
#include "layers/layernorm.hpp"
#include "layers/lm_head.hpp"
#include "layers/mlp.hpp"
#include "layers/rmsnorm.hpp"
#include "models/registry.hpp"
#include "op_cases.hpp"
#include "train/optimizer.hpp"
#include "train/step.hpp"
#include "train_fixtures.hpp"

namespace {

// The backend under test: "cuda", or the one LLMTK_CUDA_TESTS_ON names. CTest also runs this
// file on the cpu backend (test_cuda.harness), so the tests' own code (tolerances, host/device
// copies, the training loop) runs in every build, not only on a GPU machine.
const char* const kBackend = [] {
  const char* b = std::getenv("LLMTK_CUDA_TESTS_ON");
  return b && *b ? b : "cuda";
}();

const bool skip_without_gpu = [] {
  const std::string why = ops::backend_unavailable(kBackend);
  if (!why.empty()) {
    std::printf("SKIPPED: %s; the CUDA tests need an NVIDIA GPU (sm_80 or newer)\n", why.c_str());
    std::fflush(stdout);
    std::exit(77);
  }
  return false;
}();

struct Precision {
  explicit Precision(DType t) { ops::set_matmul_precision(t); }
  ~Precision() { ops::set_matmul_precision(DType::f32); }
};

// max |a − b| ≤ atol + rtol · max |b|
void expect_close(const std::string& what, const std::vector<float>& got, const std::vector<float>& want, double atol,
                  double rtol) {
  REQUIRE(got.size() == want.size());
  double max_ref = 0, max_err = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(double(want[i])));
    max_err = std::max(max_err, std::abs(double(got[i]) - double(want[i])));
  }
  INFO(what << ": max error " << max_err << " with max |reference| " << max_ref);
  CHECK(max_err <= atol + rtol * max_ref);
}

std::vector<float> read_all(const Arena& a, int id) {
  std::vector<float> v(std::size_t(a.entries()[std::size_t(id)].numel));
  a.read(id, v.data());
  return v;
}

}  // namespace

// ---- ops -------------------------------------------------------------------------------------

// The communicator of the backend's memory on one rank (NCCL on cuda; the harness runs the same
// calls on the cpu backend's host communicator): every collective's data path, on buffers in the
// backend's memory, including the grouped path for shards of unequal sizes. Two ranks train
// through NCCL in tests/scripts/nccl_emulated.sh.
TEST_CASE("the communicator for the backend's memory carries each collective on one rank", "[ops][nccl]") {
  ops::ScopedBackend scope(kBackend);
  std::unique_ptr<Communicator> nccl;
  if (std::string(kBackend) == "cuda") nccl = open_nccl(world());
  Communicator& c = nccl ? *nccl : world();
  INFO("communicator: " << c.name());
  CHECK(c.name() == (nccl ? "nccl" : "single"));
  Arena a;
  a.add("x", {7});
  a.add("y", {7});
  a.allocate();
  const std::vector<float> x = {1, -2, 3.5f, 4, 1e-3f, 6, -7};
  a.write(0, x.data());
  c.all_reduce_sum(a[0], "a test tensor");
  CHECK(read_all(a, 0) == x);
  c.reduce_scatter_sum(a[0], a[1], "a test tensor");  // one rank's shard is the whole
  CHECK(read_all(a, 1) == x);
  c.reduce_scatter_sum(a[0], a[1], std::vector<std::int64_t>{7}, "a test tensor");
  CHECK(read_all(a, 1) == x);
  const std::vector<float> zero(7, 0.0f);
  a.write(1, zero.data());
  c.all_gather(a[0], a[1], "a test tensor");
  CHECK(read_all(a, 1) == x);
  c.broadcast(a[0], 0, "a test tensor");
  CHECK(read_all(a, 0) == x);
  double h[2] = {1.5, -2};
  c.all_reduce_sum(h, 2, "host values");
  CHECK((h[0] == 1.5 && h[1] == -2));
  c.barrier("the end of the test");
}


TEST_CASE("cuda backend matches the reference backend op by op (fp32)", "[ops]") {
  static const bool said = std::printf("%s backend: %s\n", kBackend, ops::find_backend(kBackend)->info().c_str()) > 0;
  (void)said;
  op_cases::compare_backend(kBackend, 1e-4, 1e-8);
}

TEST_CASE("cuda backend with bf16 matmuls stays within bf16 tolerance of the reference", "[ops][bf16]") {
  Precision bf16(DType::bf16);
  op_cases::compare_backend(kBackend, 2e-2, 1e-4, [](std::string_view op) { return op.find("matmul") != op.npos; });
}

TEST_CASE("cuda backend with bf16 activations matches the reference in bf16 op by op", "[ops][bf16]") {
  // docs/bf16.md: the same bf16 inputs on both; outputs may differ by one bf16 rounding (2^-8)
  // and by the matmuls' bf16 copy of f32 weights.
  op_cases::compare_backend(kBackend, 2e-2, 1e-4, nullptr, DType::bf16);
}

TEST_CASE("cuda attention with bf16 precision (cuDNN where it applies) stays within bf16 tolerance", "[ops][bf16]") {
  Precision bf16(DType::bf16);
  op_cases::compare_backend(kBackend, 3e-2, 1e-3, [](std::string_view op) { return op.starts_with("attention"); });
}

// x and w stored as bf16 (bf16 activations and the working copy of the weights; the trainer's
// matmul peak measurement too): the products take them as they are, with their own leading dimensions. Rows of 32 and 48
// elements are 16-byte aligned; rows of 31 and 17 are not, which cuBLASLt may refuse in bf16 (the
// emulated one does), so those shapes also run the TF32 fallback on bf16 values. (40, 32, 17) is the
// LM head's case: aligned rows of x and w, an odd O, so w and dy are copied padded.
TEST_CASE("cuda matmuls with bf16-stored inputs match the reference, aligned and odd row lengths", "[ops]") {
  for (auto [N, I, O] : {std::tuple{64, 32, 48}, std::tuple{33, 31, 17}, std::tuple{40, 32, 17}}) {
    INFO("N " << N << ", I " << I << ", O " << O);
    auto run = [&](const char* backend) {
      ops::ScopedBackend scope(backend);
      op_cases::Outputs out;
      op_cases::Case c;
      c.out = &out;
      auto half = [&](std::int64_t rows, std::int64_t cols) {
        std::vector<bf16> v(std::size_t(rows * cols));
        for (auto& e : v) e = bf16(float(c.rng.normal()));
        return c.place(v.data(), DType::bf16, {rows, cols}, v.size() * sizeof(bf16));
      };
      auto x = half(N, I), w = half(O, I);
      c.act = DType::bf16;  // the activations share x's dtype; dw stays f32
      auto y = c.make({N, O}), dy = c.make({N, O}), dx = c.make({N, I}), dw = c.param({O, I});
      ops::matmul_forward(y, x, w, TensorRef{});
      ops::matmul_backward(dx, dw, TensorRef{}, dy, x, w);
      c.keep("y", y), c.keep("dx", dx), c.keep("dw", dw);
      return out;
    };
    const auto want = run("reference"), got = run(kBackend);
    for (std::size_t i = 0; i < want.f.size(); ++i) expect_close(want.names[i], got.f[i], want.f[i], 1e-5, 2e-2);
  }
}

// fp32; bf16 precision with f32 activations (cuDNN on rounded copies); bf16 activations (cuDNN
// reading and writing them in place, the tiled kernel on widened copies for the other masks).
TEST_CASE("cuda attention at model sizes: T = 127 and 256, D = 64, GQA, every mask", "[ops]") {
  const AttentionMask masks[] = {{true, 0, false, 0}, {true, 50, false, 0}, {true, 0, true, 0}};
  for (auto [precision, act] : {std::pair{DType::f32, DType::f32}, std::pair{DType::bf16, DType::f32},
                                std::pair{DType::bf16, DType::bf16}}) {
    for (std::int64_t T : {127, 256}) {
      for (const auto& m : masks) {
        INFO("T " << T << ", window " << m.window << ", alibi " << m.alibi << ", " << name_of(precision) << ", "
                  << name_of(act) << " activations");
        Precision p(precision);
        auto run = [&](const char* backend) {
          ops::ScopedBackend scope(backend);
          op_cases::Outputs out;
          op_cases::Case c;
          c.out = &out;
          c.act = act;
          auto q = c.make({2, T, 8, 64}), k = c.make({2, T, 2, 64}), v = c.make({2, T, 2, 64});
          auto o = c.make({2, T, 8, 64}), lse = c.param({2 * 8 * T});  // lse: f32 whatever the activations
          ops::attention_forward(o, lse, q, k, v, m);
          auto dout = c.make({2, T, 8, 64}), dq = c.make({2, T, 8, 64}), dk = c.make({2, T, 2, 64}),
               dv = c.make({2, T, 2, 64});
          ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse, m);
          c.keep("out", o), c.keep("lse", lse), c.keep("dq", dq), c.keep("dk", dk), c.keep("dv", dv);
          return out;
        };
        const auto want = run("reference"), got = run(kBackend);
        const double rtol = precision == DType::bf16 ? 3e-2 : 1e-4;
        for (std::size_t i = 0; i < want.f.size(); ++i) expect_close(want.names[i], got.f[i], want.f[i], 1e-5, rtol);
      }
    }
  }
}

// ---- models ----------------------------------------------------------------------------------

namespace {

// The golden test (tests/test_golden.cpp) on the GPU: weights from the file, logits, loss and
// every gradient against PyTorch's float64 values. fp32 on a GPU sums in another order than the
// reference backend, so the bounds are 10x the golden test's.
void run_golden(const std::string& file, const std::string& arch) {
  ops::ScopedBackend scope(kBackend);
  llmtk::test::check_golden(file, arch, 10);
}

struct PostNormBlock final : Block<LayerNorm, MHA<ALiBi>, MLP<ReLU>, PostNorm> {};
struct PostNormLM final : DecoderLM<TokenEmbedding, Repeat<PostNormBlock>, LayerNorm, LMHead<Tied>> {};
struct SandwichBlock final : Block<RMSNorm, MQA<NoPE>, GeGLU, SandwichNorm> {};
struct SinusoidalLM final : DecoderLM<Embedding<Sinusoidal>, Repeat<SandwichBlock>, RMSNorm, LMHead<Untied>> {};
struct EncoderBlock final : Block<RMSNorm, GQA<RoPE, Bidirectional>, SwiGLU, PreNorm> {};
struct BidirectionalLM final : DecoderLM<TokenEmbedding, Repeat<EncoderBlock>, RMSNorm, LMHead<Tied>> {};

// What flows with a step's batch besides the ids: padding lengths [B] or document segments [B, T].
struct StepInputs {
  std::vector<std::int32_t> lengths, segments;
};

// Loss and every parameter gradient of one step on `backend`, from the same seeded weights and tokens.
struct StepResult {
  float loss = 0;
  std::vector<std::vector<float>> grads;
};
StepResult one_step(const char* backend, const std::function<std::unique_ptr<AnyModel>()>& make, std::int64_t B,
                    std::int64_t T, std::uint64_t seed, const StepInputs& extra = {}) {
  ops::ScopedBackend scope(backend);
  auto m = make();
  m->plan(B, T);
  m->init(seed);
  Rng rng(seed + 1);
  std::vector<std::int32_t> ids(std::size_t(B * T)), tg(ids.size());
  for (auto& v : ids) v = std::int32_t(rng.next() % std::uint64_t(m->dims().vocab));
  for (auto& v : tg) v = std::int32_t(rng.next() % std::uint64_t(m->dims().vocab));
  tg[3] = kIgnoreIndex;
  StepResult r;
  NextTokenLoss objective;
  train::Batch batch = train::lm_batch(TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(tg.data(), DType::i32, {B, T}));
  std::vector<std::int32_t> lengths = extra.lengths, segments = extra.segments;
  if (!lengths.empty()) batch.inputs.lengths = TensorRef(lengths.data(), DType::i32, {B});
  if (!segments.empty()) batch.inputs.segments = TensorRef(segments.data(), DType::i32, {B, T});
  r.loss = train::forward_backward(*m, objective, batch);
  for (std::size_t i = 0; i < m->grads().entries().size(); ++i) r.grads.push_back(read_all(m->grads(), int(i)));
  return r;
}

void compare_with_reference(const std::function<std::unique_ptr<AnyModel>()>& make, std::int64_t B, std::int64_t T,
                            const StepInputs& extra = {}) {
  const StepResult want = one_step("reference", make, B, T, 31, extra), got = one_step(kBackend, make, B, T, 31, extra);
  CHECK(std::abs(got.loss - want.loss) <= 1e-5 * std::abs(want.loss));
  REQUIRE(got.grads.size() == want.grads.size());
  for (std::size_t i = 0; i < want.grads.size(); ++i)
    expect_close("grad " + std::to_string(i), got.grads[i], want.grads[i], 1e-7, 1e-4);
}

Dims tiny(const std::string& arch) {
  Dims d = find_arch(arch).dims;
  d.d_model = 64, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = arch == "gpt2" ? 4 : 2;
  d.d_ff = 96, d.vocab = 97, d.max_seq = 64;
  return d;
}

}  // namespace

TEST_CASE("GPT-2 style model on CUDA matches PyTorch", "[models][golden]") { run_golden("gpt2_tiny.json", "gpt2"); }
TEST_CASE("Llama style model on CUDA matches PyTorch", "[models][golden]") { run_golden("llama_tiny.json", "llama-tiny"); }
TEST_CASE("MoE model on CUDA matches PyTorch", "[models][golden]") { run_golden("moe_tiny.json", "moe-tiny"); }
TEST_CASE("hybrid minGRU/attention model on CUDA matches PyTorch", "[models][golden]") {
  run_golden("hybrid_tiny.json", "hybrid-tiny");
}
TEST_CASE("BERT encoder on CUDA matches PyTorch", "[models][golden]") { run_golden("bert_tiny.json", "bert-tiny"); }
TEST_CASE("T5 encoder-decoder on CUDA matches PyTorch", "[models][golden]") { run_golden("t5_tiny.json", "t5-tiny"); }

TEST_CASE("whole-model gradients on CUDA match the reference backend", "[models][gradients]") {
  SECTION("gpt2") { compare_with_reference([] { return make_model("gpt2", tiny("gpt2")); }, 2, 33); }
  SECTION("llama") { compare_with_reference([] { return make_model("llama-tiny", tiny("llama-tiny")); }, 2, 33); }
  SECTION("llama with a sliding window") {
    Dims d = tiny("llama-tiny");
    d.window = 9;
    compare_with_reference([d] { return make_model("llama-tiny", d); }, 1, 47);
  }
  SECTION("PostNorm, ALiBi (3 heads), ReLU") {
    Dims d{.d_model = 24, .n_layers = 2, .n_heads = 3, .n_kv_heads = 3, .d_ff = 40, .vocab = 31, .max_seq = 40,
           .bias = true};
    compare_with_reference([d] { return std::make_unique<ModelOf<PostNormLM>>("postnorm", d); }, 2, 31);
  }
  SECTION("sandwich norms, MQA, GeGLU, sinusoidal positions, untied head") {
    Dims d{.d_model = 32, .n_layers = 2, .n_heads = 4, .n_kv_heads = 1, .d_ff = 48, .vocab = 29, .max_seq = 40};
    compare_with_reference([d] { return std::make_unique<ModelOf<SinusoidalLM>>("sandwich", d); }, 2, 33);
  }
  SECTION("bidirectional attention over a padded batch") {
    compare_with_reference([] { return std::make_unique<ModelOf<BidirectionalLM>>("encoder", tiny("llama-tiny")); }, 3, 33,
                           {{33, 5, 20}, {}});
  }
  SECTION("mixture of experts: top-2 of 4 with a shared expert, and a capacity that drops tokens") {
    const Dims d = tiny("llama-tiny").with("moe_experts", 4).with("moe_top_k", 2).with("moe_shared", 1);
    compare_with_reference([d] { return make_model("moe-tiny", d); }, 2, 33);
    const Dims dropping = d.with("moe_shared", 0).with("moe_capacity", 0.5);
    compare_with_reference([dropping] { return make_model("moe-tiny", dropping); }, 2, 33);
  }
  SECTION("a hybrid of minGRU and attention over 150 positions (three scan chunks), packed documents") {
    Dims d = tiny("llama-tiny");
    d.n_layers = 3, d.max_seq = 160;
    std::vector<std::int32_t> segments(2 * 150);
    for (std::size_t i = 0; i < segments.size(); ++i) segments[i] = std::int32_t(i % 150 < 70 ? 0 : 1);
    compare_with_reference([d] { return make_model("hybrid-tiny", d); }, 2, 150, {{}, segments});
  }
  SECTION("causal attention with a window over packed documents") {
    Dims d = tiny("llama-tiny");
    d.window = 7;
    std::vector<std::int32_t> segments(2 * 33);
    for (std::size_t i = 0; i < segments.size(); ++i) segments[i] = std::int32_t(i % 33 < 4 ? 0 : i % 33 < 19 ? 1 : 2);
    compare_with_reference([d] { return make_model("llama-tiny", d); }, 2, 33, {{}, segments});
  }
}

TEST_CASE("a CUDA training step is deterministic: the same gradients bit for bit", "[models][determinism]") {
  auto make = [] { return make_model("llama-tiny", tiny("llama-tiny")); };
  const StepResult a = one_step(kBackend, make, 4, 64, 5), b = one_step(kBackend, make, 4, 64, 5);
  CHECK(a.loss == b.loss);
  for (std::size_t i = 0; i < a.grads.size(); ++i) CHECK(a.grads[i] == b.grads[i]);
}

TEST_CASE("decoding with a KV cache on CUDA gives the logits of a full forward pass", "[models][decode]") {
  ops::ScopedBackend scope(kBackend);
  const Dims d = tiny("llama-tiny");
  auto full = make_model("llama-tiny", d), step = make_model("llama-tiny", d);
  full->plan(1, 7);
  full->init(9);
  step->plan_decode(7);
  step->allocate();
  step->params().copy_from(full->params());
  std::vector<std::int32_t> ids = {3, 1, 4, 1, 5, 9, 2};
  full->forward(TensorRef(ids.data(), DType::i32, {1, 7}));
  std::vector<float> logits(std::size_t(7 * d.vocab));
  copy_bytes(logits.data(), Device::host, full->logits().data, full->logits().device, full->logits().bytes());
  for (int t = 0; t < 7; ++t) {
    const float* got = step->decode(TensorRef(&ids[std::size_t(t)], DType::i32, {1, 1}), t);
    for (int v = 0; v < d.vocab; ++v) REQUIRE(got[v] == Approx(logits[std::size_t(t * d.vocab + v)]).margin(1e-5));
  }
}

// ---- training --------------------------------------------------------------------------------

namespace {
// bf16 matmuls; activations in `act` (docs/bf16.md: f32 is the CUDA backend's default for a bf16
// run, bf16 what LLMTK_BF16_ACTIVATIONS=1 gives it and the cpu backend's default).
std::vector<double> train_losses(const char* backend, const std::string& arch, int steps, DType act) {
  ops::ScopedBackend scope(backend);
  Precision bf16(DType::bf16);
  Dims d = tiny(arch);
  d.n_layers = 3, d.vocab = 257;
  auto m = make_model(arch, d);
  m->set_precision(act);
  const std::int64_t B = 8, T = 64;
  m->plan(B, T);
  m->init(42);
  train::Recipe::Optim oc;
  oc.lr = 3e-3;
  train::Optimizer opt(oc, m->params());
  NextTokenLoss objective;
  // A learnable stream: each token is a fixed function of the one before, plus a little noise.
  Rng rng(11);
  std::vector<double> losses;
  std::vector<std::int32_t> ids(std::size_t(B * T)), tg(ids.size());
  for (int s = 0; s < steps; ++s) {
    for (std::size_t i = 0; i < ids.size(); ++i) {
      ids[i] = std::int32_t(rng.next() % 257);
      tg[i] = rng.next() % 8 == 0 ? std::int32_t(rng.next() % 257) : (ids[i] * 7 + 3) % 257;
    }
    m->zero_grad();
    losses.push_back(train::forward_backward(
        *m, objective, train::lm_batch(TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(tg.data(), DType::i32, {B, T}))));
    opt.step(m->params(), m->grads(), oc.lr, s + 1);
  }
  return losses;
}
}  // namespace

TEST_CASE("50 bf16 training steps on CUDA follow the cpu backend's losses", "[train]") {
  // Both activation dtypes for GPT-2 (its GELU matmuls, learned positions, LayerNorm, tied head);
  // bf16 activations for the Llama-style model (RoPE, GQA, SwiGLU, RMSNorm). The emulated run
  // of each takes minutes.
  for (auto [arch, act] : {std::pair{"gpt2", DType::bf16}, std::pair{"llama-tiny", DType::bf16},
                           std::pair{"gpt2", DType::f32}}) {
    const auto cpu = train_losses("cpu", arch, 50, act), gpu = train_losses(kBackend, arch, 50, act);
    for (std::size_t s = 0; s < cpu.size(); ++s) {
      INFO(arch << ", " << name_of(act) << " activations, step " << s + 1 << ": cpu " << cpu[s] << ", cuda " << gpu[s]);
      CHECK(std::abs(gpu[s] - cpu[s]) <= 2e-2 * std::abs(cpu[s]));
    }
    INFO(arch << ": loss " << gpu.front() << " -> " << gpu.back());
    CHECK(gpu.back() < 0.9 * gpu.front());
  }
}

TEST_CASE("the trainer on CUDA: the cpu backend's losses, and an exact resume from its checkpoint", "[train]") {
  using namespace train_fixtures;
  const auto d = tmp("cuda-trainer");
  auto recipe_on = [&](const char* device) {
    Recipe r = read_recipe(write_recipe(d, "sample_prompt = \"And God\"\nsample_tokens = 4\n"));
    r.train.device = device;
    return r;
  };
  const Recipe cpu = recipe_on("cpu"), gpu = recipe_on(kBackend);
  const auto a = train::train(cpu, quiet(d / "cpu"));
  const auto b = train::train(gpu, quiet(d / "gpu"));
  const auto la = losses(a.run_dir), lb = losses(b.run_dir);
  REQUIRE(la.size() == 8);
  REQUIRE(lb.size() == la.size());
  for (std::size_t s = 0; s < la.size(); ++s) {
    INFO("step " << s + 1 << ": cpu " << la[s] << ", " << kBackend << " " << lb[s]);
    CHECK(std::abs(lb[s] - la[s]) <= 1e-3 * std::abs(la[s]));  // fp32, another summation order
  }
  CHECK(std::abs(b.val_loss - a.val_loss) <= 1e-3 * std::abs(a.val_loss));
  // Stopped halfway and resumed on the same device: the straight run's losses and weights exactly.
  const auto c = stop_and_resume(gpu, d / "resumed", 4);
  CHECK(losses(c.run_dir) == lb);
  const auto weights = file_bytes(fs::path(b.checkpoint) / "model.safetensors");
  REQUIRE(!weights.empty());
  CHECK(file_bytes(fs::path(c.checkpoint) / "model.safetensors") == weights);
}
