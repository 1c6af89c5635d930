// The engine's seams (docs/engine2.md): objectives apart from the model (a loss mask honoured by
// next-token cross-entropy), freezing through Linear, and adapters beside Linear.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

#include "gradcheck.hpp"
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
  train::Optimizer opt_frozen(oc, frozen->params()), opt_full(oc, full->params());
  for (Arena* a : opt_frozen.state()) CHECK(a->numel() == frozen->trainable_count());
  NextTokenLoss o1, o2;
  train::TrainStep s1(*frozen, o1, opt_frozen, 1.0), s2(*full, o2, opt_full, 0.0);
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
