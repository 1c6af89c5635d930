// The engine's seams (docs/engine2.md): objectives apart from the model (a loss mask honoured by
// next-token cross-entropy), freezing through Linear, and adapters beside Linear.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

#include "dsl/block.hpp"
#include "dsl/decoder_lm.hpp"
#include "dsl/repeat.hpp"
#include "gradcheck.hpp"
#include "layers/attention.hpp"
#include "layers/embedding.hpp"
#include "layers/glu.hpp"
#include "layers/lm_head.hpp"
#include "layers/qk_norm.hpp"
#include "layers/rmsnorm.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/optimizer.hpp"
#include "train/step.hpp"

using namespace llmtk;

namespace {

Dims tiny(const std::string& arch) {
  Dims d = find_arch(arch).dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = arch == "gpt2" ? 4 : 2;
  d.d_ff = 24, d.vocab = 13, d.max_seq = 8;
  return d;
}
Dims tiny_llama() { return tiny("llama-tiny"); }

struct Sample {
  std::int64_t B, T;
  std::vector<std::int32_t> ids, targets;
  Sample(std::int64_t b, std::int64_t t, std::uint64_t seed, int vocab) : B(b), T(t), ids(std::size_t(b * t)), targets(ids.size()) {
    Rng rng(seed);
    for (auto& v : ids) v = std::int32_t(rng.next() % std::uint64_t(vocab));
    for (auto& v : targets) v = std::int32_t(rng.next() % std::uint64_t(vocab));
  }
  TensorRef tid() { return TensorRef(ids.data(), DType::i32, {B, T}); }
  TensorRef ttg() { return TensorRef(targets.data(), DType::i32, {B, T}); }
};

std::vector<float> all_grads(AnyModel& m) {
  const float* g = static_cast<const float*>(m.grads().data());
  return std::vector<float>(g, g + m.grads().bytes() / sizeof(float));
}

}  // namespace

TEST_CASE("a loss mask: masked positions contribute nothing to the loss or any gradient", "[engine][objective]") {
  const auto backend = GENERATE(as<std::string>{}, "reference", "cpu");
  ops::ScopedBackend scope(backend);
  auto m = make_model("llama-tiny", tiny_llama());
  m->plan(2, 6);
  m->init(3);
  Sample tok(2, 6, 5, 13);
  std::vector<float> weights(12, 1.0f);
  for (int i : {0, 4, 7, 11}) weights[std::size_t(i)] = 0.0f;
  const TensorRef w(weights.data(), DType::f32, {2, 6});

  NextTokenLoss objective;
  m->zero_grad();
  const float masked = train::forward_backward(*m, objective, train::lm_batch(tok.tid(), tok.ttg(), w));
  CHECK(objective.counted() == 12);
  CHECK(objective.weight_sum() == 8.0);
  const auto g_masked = all_grads(*m);

  // The same batch with the masked positions' targets changed: bit for bit the same loss and gradients.
  Sample other = tok;
  for (int i : {0, 4, 7, 11}) other.targets[std::size_t(i)] = (other.targets[std::size_t(i)] + 5) % 13;
  m->zero_grad();
  CHECK(train::forward_backward(*m, objective, train::lm_batch(other.tid(), other.ttg(), w)) == masked);
  CHECK(all_grads(*m) == g_masked);

  // And the same as leaving those positions out with the ignore index (a 0/1 mask is exactly that).
  Sample ignored = tok;
  for (int i : {0, 4, 7, 11}) ignored.targets[std::size_t(i)] = kIgnoreIndex;
  m->zero_grad();
  const float by_ignore = train::forward_backward(*m, objective, train::lm_batch(ignored.tid(), ignored.ttg()));
  CHECK(by_ignore == Approx(masked).epsilon(1e-6));
  const auto g_ignore = all_grads(*m);
  REQUIRE(g_ignore.size() == g_masked.size());
  for (std::size_t i = 0; i < g_ignore.size(); ++i) REQUIRE(g_masked[i] == Approx(g_ignore[i]).margin(1e-7).epsilon(1e-5));

  // The loss is the weighted mean of the per-position losses.
  std::vector<float> fractional(12);
  for (std::size_t i = 0; i < 12; ++i) fractional[i] = 0.25f * float(i % 4);
  const TensorRef fw(fractional.data(), DType::f32, {2, 6});
  const float weighted = train::forward_loss(*m, objective, train::lm_batch(tok.tid(), tok.ttg(), fw));
  double sum = 0, wsum = 0;
  for (std::size_t i = 0; i < 12; ++i) {
    std::vector<std::int32_t> one(12, kIgnoreIndex);
    one[i] = tok.targets[i];
    NextTokenLoss single;
    const double li = train::forward_loss(*m, single, train::lm_batch(tok.tid(), TensorRef(one.data(), DType::i32, {2, 6})));
    sum += fractional[i] * li, wsum += fractional[i];
  }
  CHECK(weighted == Approx(sum / wsum).epsilon(1e-6));

  // Bad weights stop with the position and the rule.
  fractional[3] = -1.0f;
  REQUIRE_THROWS_WITH(train::forward_loss(*m, objective, train::lm_batch(tok.tid(), tok.ttg(), fw)),
                      Catch::Contains("weight of position 3 is -1") && Catch::Contains(">= 0"));
}

TEST_CASE("freezing through Linear: no gradient buffer, no optimizer state, frozen values unchanged", "[engine][freeze]") {
  auto frozen = make_model("llama-tiny", tiny_llama()), full = make_model("llama-tiny", tiny_llama());
  frozen->freeze({"blocks.*.attn.w?", "embed.*"});
  frozen->plan(2, 6), full->plan(2, 6);
  frozen->init(7), full->init(7);
  for (const auto& e : frozen->grads().entries()) {
    INFO(e.name);
    CHECK_FALSE(Planner::glob("blocks.*.attn.w?", e.name));
    CHECK(e.name != "embed.tokens");
  }
  // 2 blocks × 4 attention matrices + the token table are frozen.
  const Dims d = tiny_llama();
  const std::int64_t attn = 2 * (2 * d.d_model * d.d_model + 2 * d.d_model * d.kv_dim()), table = d.vocab * d.d_model;
  CHECK(frozen->trainable_count() == full->param_count() - attn - table);
  CHECK(frozen->grads().numel() == frozen->trainable_count());

  train::Recipe::Optim oc;
  train::Optimizer opt_frozen(oc, frozen->params());
  for (Arena* a : opt_frozen.state()) CHECK(a->numel() == frozen->trainable_count());
  NextTokenLoss o1, o2;
  train::TrainStep s1(*frozen, o1, opt_frozen, {1.0, true});
  Sample tok(2, 6, 9, 13);
  const auto before = frozen->params().host_copy();
  const train::Batch batch = train::lm_batch(tok.tid(), tok.ttg());
  full->zero_grad();
  train::forward_backward(*full, o2, batch);
  frozen->zero_grad();
  train::forward_backward(*frozen, o1, batch);
  // The trainable parameters get exactly the gradients they get in the unfrozen model.
  for (const auto& e : frozen->grads().entries()) {
    INFO(e.name);
    std::vector<float> a(std::size_t(e.numel)), b(a.size());
    frozen->grads().read(frozen->grads().find(e.name), a.data());
    full->grads().read(full->grads().find(e.name), b.data());
    CHECK(a == b);
  }
  s1.run([&] { return batch; }, 1, 1e-2, 1);
  for (const auto& e : frozen->params().entries()) {
    INFO(e.name);
    const int i = frozen->params().find(e.name);
    const bool same = std::memcmp(before[i].data, frozen->params()[i].data, before[i].bytes()) == 0;
    CHECK(same == e.frozen);
  }
  // A pattern that matches nothing is an error naming it.
  auto typo = make_model("llama-tiny", tiny_llama());
  typo->freeze({"block.*"});
  REQUIRE_THROWS_WITH(typo->plan(1, 4), Catch::Contains("freeze pattern 'block.*' matches no parameter"));
}

namespace {
// A rank-1 LoRA-style adapter for the test: y += (x·aᵀ)·bᵀ with a: [1, in], b: [out, 1].
class RankOne final : public LinearAdapter {
 public:
  RankOne(std::int64_t out, std::int64_t in) : out_(out), in_(in) {}
  void declare(Planner& p) override {
    a_ = p.param("a", {1, in_}, ParamKind::matrix);
    b_ = p.param("b", {out_, 1}, ParamKind::matrix);
    h_ = p.act("h", {p.B * p.T, 1}), y_ = p.act("y", {p.B * p.T, out_}), dh_ = p.act("dh", {p.B * p.T, 1});
    dx_ = p.act("dx", {p.B * p.T, in_});
  }
  void forward(Ctx& c, TensorRef y, TensorRef x) override {
    ops::matmul_forward(c.a(h_), x, c.p(a_), {});
    ops::matmul_forward(c.a(y_), c.a(h_), c.p(b_), {});
    ops::add_forward(y, y, c.a(y_));
  }
  void backward(Ctx& c, TensorRef dx, TensorRef dy, TensorRef x) override {
    ops::matmul_backward(c.a(dh_), c.g(b_), {}, dy, c.a(h_), c.p(b_));
    ops::matmul_backward(c.a(dx_), c.g(a_), {}, c.a(dh_), x, c.p(a_));
    if (dx) ops::add_forward(dx, dx, c.a(dx_));
  }

 private:
  std::int64_t out_, in_;
  ParamSlot a_, b_;
  ActSlot h_, y_, dh_, dx_;
};
}  // namespace

TEST_CASE("adapters beside Linear: declared by a factory, trained through the whole model", "[engine][adapter]") {
  for (const char* arch : {"llama-tiny", "gpt2"}) {
    INFO(arch);
    auto m = make_model(arch, tiny(arch));
    std::vector<std::string> seen;
    m->set_adapters([&](std::string_view name, std::int64_t out, std::int64_t in) -> std::shared_ptr<LinearAdapter> {
      seen.emplace_back(name);
      if (!name.ends_with("wq") && !name.ends_with("w_fc") && !name.ends_with("w_down")) return nullptr;
      return std::make_shared<RankOne>(out, in);
    });
    llmtk::test::GradTolerance tol;
    tol.atol = 1e-4;  // the loss is a mean: its gradients are small, so is the bound
    REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, 2, 6, 21, tol));
    CHECK(m->params().find("blocks.1.attn.wq_adapter.a") >= 0);
    CHECK(m->params().find(std::string_view(arch) == "gpt2" ? "blocks.0.mlp.w_fc_adapter.b" : "blocks.0.mlp.w_down_adapter.b") >= 0);
    CHECK(std::find(seen.begin(), seen.end(), "blocks.0.attn.wk") != seen.end());
  }
}

// ---- compositions the engine gains without editing any existing part ---------------------------
namespace {
struct QkBlock final : Block<RMSNorm, GQA<QKNorm<RoPE>>, SwiGLU, PreNorm> {};
struct QkLM final : DecoderLM<TokenEmbedding, Repeat<QkBlock>, RMSNorm, LMHead<Tied>> {};
struct EncoderBlock final : Block<RMSNorm, GQA<RoPE, Bidirectional>, SwiGLU, PreNorm> {};
struct BidirectionalLM final : DecoderLM<TokenEmbedding, Repeat<EncoderBlock>, RMSNorm, LMHead<Tied>> {};

llmtk::test::GradTolerance model_tolerance() {
  llmtk::test::GradTolerance tol;
  tol.atol = 1e-4;  // the loss is a mean: its gradients are small, so is the bound
  return tol;
}

// Logits of a [1, T] row, copied to the host.
std::vector<float> logits_of(AnyModel& m, const std::vector<std::int32_t>& ids, ModelInputs in = {}) {
  in.ids = TensorRef(const_cast<std::int32_t*>(ids.data()), DType::i32, {1, std::int64_t(ids.size())});
  const TensorRef l = m.forward(in);
  std::vector<float> out(std::size_t(l.numel()));
  copy_bytes(out.data(), Device::host, l.data, l.device, l.bytes());
  return out;
}
}  // namespace

TEST_CASE("a parallel block (GPT-J, PaLM) is one header and a preset", "[engine][parallel]") {
  const ArchInfo& info = find_arch("parallel-tiny");
  REQUIRE(info.structure.size() == 2);
  CHECK(info.structure[1] == "ParallelLMBlock = ParallelBlock<LayerNorm, MHA<RoPE>, MLP<GELU>>");
  Dims d = info.dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = d.n_kv_heads = 4, d.d_ff = 24, d.vocab = 13, d.max_seq = 8;
  auto m = make_model("parallel-tiny", d);
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, 2, 6, 31, model_tolerance()));
  CHECK(m->params().find("blocks.1.norm.weight") >= 0);
  CHECK(m->params().find("blocks.1.attn.wq") >= 0);
  CHECK(m->params().find("blocks.1.mlp.w_fc") >= 0);
  const auto parts = m->parts();
  CHECK(std::any_of(parts.begin(), parts.end(), [](const PartInfo& p) { return p.path == "blocks.N.norm"; }));
  // Neither Transformers family: export refuses it by name instead of writing a wrong model.
  CHECK_FALSE(m->has_tag("sequential_block"));
}

TEST_CASE("QK-norm attention is a composition: GQA<QKNorm<RoPE>>", "[engine][qknorm]") {
  const Dims d = tiny_llama();
  ModelOf<QkLM> m("qk", d);
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(m, 2, 6, 33, model_tolerance()));
  CHECK(m.params().find("blocks.0.attn.q_norm.weight") >= 0);
  CHECK(m.params()["blocks.0.attn.k_norm.weight"].numel() == d.head_dim());
  CHECK((m.has_tag("qk_norm") && m.has_tag("rope")));
  // The RoPE rules still hold inside the composition.
  Dims odd = d;
  odd.d_model = 20;  // head_dim 5
  CHECK_THROWS_WITH(ModelOf<QkLM>("qk", odd), Catch::Contains("rule rope_even_head_dim"));
  // Decoding with a KV cache gives the full forward's logits.
  ModelOf<QkLM> full("qk", d), step("qk", d);
  full.plan(1, 7), full.init(4);
  step.plan_decode(7), step.allocate();
  step.params().copy_from(full.params());
  const std::vector<std::int32_t> ids = {3, 1, 4, 1, 5, 9, 2};
  const auto want = logits_of(full, ids);
  for (int t = 0; t < 7; ++t) {
    std::int32_t id = ids[std::size_t(t)];
    const float* got = step.decode(TensorRef(&id, DType::i32, {1, 1}), t);
    for (int v = 0; v < d.vocab; ++v) REQUIRE(got[v] == Approx(want[std::size_t(t * d.vocab + v)]).margin(1e-5));
  }
}

TEST_CASE("padding: a bidirectional model's real positions never see the padding", "[engine][mask]") {
  const auto backend = GENERATE(as<std::string>{}, "reference", "cpu");
  INFO(backend);
  ops::ScopedBackend scope(backend);
  const Dims d = tiny_llama();
  ModelOf<BidirectionalLM> padded("enc", d), exact("enc", d);
  padded.plan(2, 8), exact.plan(1, 5);
  padded.init(6), exact.allocate();
  exact.params().copy_from(padded.params());
  // Row 0: 5 real tokens, then 3 of padding (any ids); row 1: 8 real tokens.
  std::vector<std::int32_t> ids = {3, 7, 1, 9, 4, 12, 12, 12, 2, 5, 8, 1, 0, 6, 11, 3};
  std::vector<std::int32_t> lengths = {5, 8};
  const TensorRef tid(ids.data(), DType::i32, {2, 8});
  const TensorRef len(lengths.data(), DType::i32, {2});
  const TensorRef l = padded.forward({tid, len, {}});
  std::vector<float> got(std::size_t(l.numel()));
  copy_bytes(got.data(), Device::host, l.data, l.device, l.bytes());
  const auto want = logits_of(exact, {3, 7, 1, 9, 4});
  for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(got[i] == Approx(want[i]).margin(1e-5));
  // Without the lengths, the padding changes the real positions (the test can fail).
  const TensorRef lu = padded.forward(tid);
  std::vector<float> unmasked(std::size_t(lu.numel()));
  copy_bytes(unmasked.data(), Device::host, lu.data, lu.device, lu.bytes());
  double diff = 0;
  for (std::size_t i = 0; i < want.size(); ++i) diff = std::max(diff, double(std::abs(unmasked[i] - want[i])));
  CHECK(diff > 1e-3);
}

TEST_CASE("packed documents: segments make each document attend only to itself", "[engine][mask]") {
  const auto backend = GENERATE(as<std::string>{}, "reference", "cpu");
  INFO(backend);
  ops::ScopedBackend scope(backend);
  const Dims d = tiny_llama();
  auto packed = make_model("llama-tiny", d), alone = make_model("llama-tiny", d);
  packed->plan(1, 8), alone->plan(1, 3);
  packed->init(8), alone->allocate();
  alone->params().copy_from(packed->params());
  // Two documents in one row: 5 tokens, then 3. RoPE sees relative positions only, so the second
  // document gives the same logits packed at offset 5 as alone at offset 0.
  const std::vector<std::int32_t> ids = {3, 7, 1, 9, 4, 10, 2, 6};
  std::vector<std::int32_t> segments = {0, 0, 0, 0, 0, 1, 1, 1};
  const auto got = logits_of(*packed, ids, {{}, {}, TensorRef(segments.data(), DType::i32, {1, 8})});
  const auto want = logits_of(*alone, {10, 2, 6});
  for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(got[5 * std::size_t(d.vocab) + i] == Approx(want[i]).margin(1e-4));
}

TEST_CASE("attention backward with padding and segments matches finite differences", "[engine][mask]") {
  ops::ScopedBackend scope("reference");
  const std::int64_t B = 2, T = 9, H = 4, KV = 2, D = 8;
  Rng rng(17);
  auto make = [&](std::int64_t n) {
    std::vector<float> out(static_cast<std::size_t>(n));
    for (auto& x : out) x = float(rng.normal());
    return out;
  };
  std::vector<float> q = make(B * T * H * D), k = make(B * T * KV * D), v = make(B * T * KV * D), r = make(B * T * H * D);
  std::vector<std::int32_t> lengths = {6, 9}, segments = {0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 0, 0, 0, 0, 1, 1, 1, 1};
  auto t4 = [&](std::vector<float>& x, std::int64_t heads) { return TensorRef(x.data(), DType::f32, {B, T, heads, D}); };
  const AttentionMask masks[] = {{false, 0, false, 0, TensorRef(lengths.data(), DType::i32, {B})},
                                 {true, 3, true, 0, TensorRef(lengths.data(), DType::i32, {B})},
                                 {false, 0, false, 0, {}, TensorRef(segments.data(), DType::i32, {B, T})},
                                 {true, 0, false, 0, {}, TensorRef(segments.data(), DType::i32, {B, T})}};
  for (const auto& m : masks) {
    std::vector<float> out(q.size()), lse(std::size_t(B * H * T));
    auto f = [&] {  // Σ r · attention(q, k, v)
      ops::attention_forward(t4(out, H), TensorRef(lse.data(), DType::f32, {B * H * T}), t4(q, H), t4(k, KV), t4(v, KV), m);
      double s = 0;
      for (std::size_t i = 0; i < out.size(); ++i) s += double(r[i]) * out[i];
      return s;
    };
    f();
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    ops::attention_backward(t4(dq, H), t4(dk, KV), t4(dv, KV), t4(r, H), t4(q, H), t4(k, KV), t4(v, KV), t4(out, H),
                            TensorRef(lse.data(), DType::f32, {B * H * T}), m);
    for (auto [x, dx] : {std::pair{&q, &dq}, std::pair{&k, &dk}, std::pair{&v, &dv}})
      for (std::size_t i = 0; i < x->size(); i += 7) {
        const float keep = (*x)[i];
        (*x)[i] = keep + 1e-2f;
        const double up = f();
        (*x)[i] = keep - 1e-2f;
        const double down = f();
        (*x)[i] = keep;
        REQUIRE((*dx)[i] == Approx((up - down) / 2e-2).margin(2e-3).epsilon(1e-2));
      }
  }
}
