// Mixture of experts (layers/moe.hpp): gradients of the part and of whole models (with the
// auxiliary losses), the grouping of tokens by expert, the dense limit (one expert, k = 1), and
// the presets' sizes. Runs on the reference backend and again on the CPU backend.
#include "gradcheck.hpp"
#include "dsl/block.hpp"
#include "dsl/decoder_lm.hpp"
#include "dsl/repeat.hpp"
#include "layers/attention.hpp"
#include "layers/embedding.hpp"
#include "layers/glu.hpp"
#include "layers/lm_head.hpp"
#include "layers/moe.hpp"
#include "layers/rmsnorm.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"

using namespace llmtk;

namespace {

Dims small_moe(int experts, int k, int shared = 0, double capacity = 0, double aux = 0, double z = 0) {
  return Dims{.d_model = 16, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 12, .vocab = 13, .max_seq = 8}
      .with("moe_experts", experts)
      .with("moe_top_k", k)
      .with("moe_shared", shared)
      .with("moe_capacity", capacity)
      .with("moe_aux_coef", aux)
      .with("moe_z_coef", z);
}

test::GradTolerance tolerance() {
  test::GradTolerance tol;
  if (std::string_view(ops::active().backend) != "reference") tol.atol = 3e-3;
  return tol;
}

struct MoeBlock final : Block<RMSNorm, GQA<RoPE>, MoE<SwiGLU, TopKRouter>, PreNorm> {};
struct MoeLM final : DecoderLM<TokenEmbedding, Repeat<MoeBlock>, RMSNorm, LMHead<Untied>> {};
struct SwitchBlock final : Block<RMSNorm, GQA<RoPE>, MoE<GeGLU, SwitchRouter>, PreNorm> {};
struct SwitchLM final : DecoderLM<TokenEmbedding, Repeat<SwitchBlock>, RMSNorm, LMHead<Untied>> {};
struct DenseBlock final : Block<RMSNorm, GQA<RoPE>, SwiGLU, PreNorm> {};
struct DenseLM final : DecoderLM<TokenEmbedding, Repeat<DenseBlock>, RMSNorm, LMHead<Untied>> {};

// The training loss an MoE model minimises: the objective's, plus each MoE layer's load-balancing
// and z-losses (which the layers seed themselves in backward), read back from the model's stats.
class WithAuxLosses final : public Objective {
 public:
  explicit WithAuxLosses(const AnyModel& m) : m_(m) {}
  std::string name() const override { return "next_token+moe"; }
  float forward(TensorRef outputs, const Labels& labels) override {
    double loss = inner_.forward(outputs, labels), aux = 0, z = 0;
    for (const auto& [name, v] : m_.part_stats()) {
      if (name == "moe_aux") aux = v;
      if (name == "moe_z") z = v;
    }
    const double layers = m_.dims().n_layers;
    return float(loss + layers * (m_.dims().get("moe_aux_coef") * aux + m_.dims().get("moe_z_coef") * z));
  }
  void backward(TensorRef outputs) override { inner_.backward(outputs); }

 private:
  const AnyModel& m_;
  NextTokenLoss inner_;
};

}  // namespace

TEST_CASE("MoE part: every parameter and the input gradient", "[moe][gradcheck]") {
  SECTION("top-2 of 4 SwiGLU experts, one shared expert, dropless") {
    MoE<SwiGLU, TopKRouter> part;
    REQUIRE_GRADIENTS(test::gradcheck_part(part, small_moe(4, 2, 1), 2, 5, 31, tolerance()));
  }
  SECTION("Switch: top-1 of 4 GeGLU experts weighted by their probability, capacity 0.75 (tokens dropped)") {
    MoE<GeGLU, SwitchRouter> part;
    REQUIRE_GRADIENTS(test::gradcheck_part(part, small_moe(4, 1, 0, 0.75), 2, 5, 32, tolerance()));
  }
}

// The routing is piecewise constant: backprop differentiates with each token's experts fixed, and
// so do central differences as long as no nudge of ±h flips a choice. The seeds below give no
// token a top-k choice within a step of a tie (seed 42 has one: 158 entries then "fail", every
// nudge of an embedding flipping the same token's expert).
TEST_CASE("MoE models: every parameter gradient, auxiliary losses included", "[moe][gradcheck][model]") {
  SECTION("top-2, load balancing and z-loss") {
    ModelOf<MoeLM> m("moe", with_key_defaults<MoeLM>(small_moe(4, 2, 0, 0, 0.5, 0.2)));
    m.plan(2, 6);
    Rng rng(41);
    std::vector<std::int32_t> ids(12), targets(12);
    WithAuxLosses objective(m);
    REQUIRE_GRADIENTS(test::gradcheck_model(
        m, objective,
        [&](Rng& r) {
          for (auto& v : ids) v = std::int32_t(r.next() % 13);
          for (auto& v : targets) v = std::int32_t(r.next() % 13);
          return train::lm_batch(TensorRef(ids.data(), DType::i32, {2, 6}), TensorRef(targets.data(), DType::i32, {2, 6}));
        },
        rng, tolerance()));
  }
  SECTION("Switch, dropless") {
    ModelOf<SwitchLM> m("switch", with_key_defaults<SwitchLM>(small_moe(4, 1, 0, 0)));
    REQUIRE_GRADIENTS(test::gradcheck_model(m, 2, 6, 43, tolerance()));
  }
  SECTION("Switch with a capacity that drops tokens") {
    ModelOf<SwitchLM> m("switch", with_key_defaults<SwitchLM>(small_moe(4, 1, 0, 0.5)));
    REQUIRE_GRADIENTS(test::gradcheck_model(m, 2, 6, 43, tolerance()));
  }
}

TEST_CASE("MoE groups tokens by expert: each routed k times, none lost, capacity drops in token order", "[moe]") {
  // C = E = 4 and w_router = I: the logits are the tokens themselves.
  const Dims d0 = small_moe(4, 2);
  Dims d = d0;
  d.d_model = 4;
  Arena params("params"), acts("activations");
  Planner p(d, 1, 3, params, acts);
  MoE<SwiGLU, TopKRouter> part;
  part.declare(p);
  const int x_id = acts.add("x", {1, 3, 4}), y_id = acts.add("y", {1, 3, 4});
  Arena grads = params.like("grads");
  params.allocate(), grads.allocate(), acts.allocate();
  Rng rng(7);
  for (std::size_t i = 0; i < params.entries().size(); ++i) test::fill_normal(params[int(i)], rng, 0.3);
  TensorRef w = params[params.find("w_router")];
  for (int e = 0; e < 4; ++e)
    for (int c = 0; c < 4; ++c) w.f32()[e * 4 + c] = e == c ? 1.0f : 0.0f;
  // Token 0 → experts 0, 1; token 1 → 1, 2; token 2 → 3, 2.
  const float x[] = {4, 3, 0, 0, 0, 4, 3, 0, 0, 0, 3, 4};
  std::copy(std::begin(x), std::end(x), acts[x_id].f32());
  PartStats stats;

  auto run = [&](double capacity) {
    d.set("moe_capacity", capacity);
    Ctx c{params, grads, acts, d, 1, 3};
    stats.clear();
    c.stats = &stats;
    part.forward(c, acts[y_id], acts[x_id]);
  };
  auto stat = [&](std::string_view name) {
    for (const auto& [n, v] : stats.means())
      if (n == name) return v;
    FAIL("no statistic " << name);
    return 0.0;
  };

  run(0);
  CHECK(part.h_index == std::vector<std::int32_t>{0, 1, 1, 2, 3, 2});
  CHECK(part.count == std::vector<std::int64_t>{1, 2, 2, 1});
  CHECK(part.offset == std::vector<std::int64_t>{0, 1, 3, 5, 6});
  std::int64_t total = 0;
  for (auto n : part.count) total += n;
  CHECK(total == 3 * 2);  // tokens × k
  std::vector<int> seen(6, 0);
  for (int i = 0; i < 6; ++i) {
    const int s = part.h_slot[std::size_t(i)];
    REQUIRE(s >= 0);
    ++seen[std::size_t(s)];
    CHECK(part.h_token[std::size_t(s)] == i / 2);  // the row holds the token that chose it
  }
  CHECK(seen == std::vector<int>(6, 1));  // every expert row used once
  CHECK(stat("moe_dropped") == 0.0);
  CHECK(stat("moe_load_max") == Approx(2.0 * 4 / 6));
  // The load-balancing statistic: E · Σ_e f_e · P_e, worked out here from the softmax.
  double aux = 0;
  const int routed[] = {1, 2, 2, 1};
  for (int e = 0; e < 4; ++e) {
    double P = 0;
    for (int n = 0; n < 3; ++n) {
      double s = 0;
      for (int j = 0; j < 4; ++j) s += std::exp(double(x[n * 4 + j]));
      P += std::exp(double(x[n * 4 + e])) / s / 3;
    }
    aux += double(routed[e]) / 3 * P;
  }
  CHECK(stat("moe_aux") == Approx(4 * aux).epsilon(1e-5));

  run(0.25);  // at most ceil(0.25 · 6 / 4) = 1 token per expert: token 1's expert 1 and token 2's expert 2 are full
  CHECK(part.h_slot[2] == -1);
  CHECK(part.h_slot[5] == -1);
  CHECK(part.count == std::vector<std::int64_t>{1, 1, 1, 1});
  CHECK(stat("moe_dropped") == Approx(2.0 / 6));
}

TEST_CASE("MoE with one expert and k = 1 is the dense model with that expert", "[moe]") {
  const Dims d = small_moe(1, 1);
  ModelOf<MoeLM> moe("moe", with_key_defaults<MoeLM>(d));
  ModelOf<DenseLM> dense("dense", d);
  moe.plan(2, 6), dense.plan(2, 6);
  moe.allocate(), dense.allocate();
  dense.init(9);
  moe.init(10);
  // The dense model's weights into the MoE model; its expert 0 takes the feed-forward's.
  for (const auto& e : dense.params().entries()) {
    std::string name = e.name;
    const auto at = name.find(".mlp.w_");
    if (at != std::string::npos) name.insert(at + 5, "experts.0.");
    const int id = moe.params().find(name);
    REQUIRE(id >= 0);
    const int src = dense.params().find(e.name);
    std::copy(dense.params()[src].f32(), dense.params()[src].f32() + e.numel, moe.params()[id].f32());
  }
  std::vector<std::int32_t> ids(12), tg(12);
  for (int i = 0; i < 12; ++i) ids[std::size_t(i)] = (i * 5) % 13, tg[std::size_t(i)] = (i * 7 + 1) % 13;
  TensorRef tid(ids.data(), DType::i32, {2, 6}), ttg(tg.data(), DType::i32, {2, 6});
  NextTokenLoss o1, o2;
  CHECK(train::forward_backward(moe, o1, train::lm_batch(tid, ttg)) ==
        Approx(train::forward_backward(dense, o2, train::lm_batch(tid, ttg))).epsilon(1e-6));
  for (const auto& e : dense.params().entries()) {
    std::string name = e.name;
    const auto at = name.find(".mlp.w_");
    if (at != std::string::npos) name.insert(at + 5, "experts.0.");
    const TensorRef a = dense.grads()[dense.params().entries()[std::size_t(dense.params().find(e.name))].grad];
    const TensorRef b = moe.grads()[moe.params().entries()[std::size_t(moe.params().find(name))].grad];
    double worst = 0;
    for (std::int64_t i = 0; i < a.numel(); ++i)
      worst = std::max(worst, double(std::abs(a.f32()[i] - b.f32()[i])) / (1e-6 + std::abs(a.f32()[i])));
    INFO(e.name);
    CHECK(worst < 1e-4);
  }
}

TEST_CASE("MoE with activation recomputation: the same gradients, less memory", "[moe][recompute]") {
  // Blocks share one block's activation memory, and inside each the experts share expert 0's.
  Dims d = with_key_defaults<MoeLM>(small_moe(4, 2, 1, 0, 0.1, 0.01));
  d.n_layers = 3;
  ModelOf<MoeLM> plain("plain", d), saving("saving", d);
  plain.plan(2, 6);
  saving.plan(2, 6, true);
  CHECK(saving.acts().bytes() < plain.acts().bytes());
  plain.init(5), saving.init(5);
  std::vector<std::int32_t> ids(12), tg(12);
  for (int i = 0; i < 12; ++i) ids[std::size_t(i)] = (i * 5) % 13, tg[std::size_t(i)] = (i * 7 + 1) % 13;
  TensorRef tid(ids.data(), DType::i32, {2, 6}), ttg(tg.data(), DType::i32, {2, 6});
  NextTokenLoss o1, o2;
  CHECK(train::forward_backward(plain, o1, train::lm_batch(tid, ttg)) ==
        train::forward_backward(saving, o2, train::lm_batch(tid, ttg)));
  CHECK(std::memcmp(plain.grads().data(), saving.grads().data(), plain.grads().bytes()) == 0);  // bit for bit
  CHECK(plain.part_stats() == saving.part_stats());  // recomputed forwards report nothing twice
}

TEST_CASE("MoE presets: total and active parameters, part keys, rules", "[moe][registry]") {
  const ArchInfo& mixtral = find_arch("mixtral-8x7b");
  auto m = mixtral.make(mixtral.dims);
  m->plan(1, 1);
  CHECK(m->param_count() == 46'702'792'704);      // Mixtral 8x7B as published
  CHECK(m->active_param_count() == 12'879'925'248);  // 2 of 8 experts per token
  const ArchInfo& tiny = find_arch("moe-tiny");
  auto t = tiny.make(tiny.dims);
  t->plan(1, 8);
  auto llama = make_model("llama-tiny", find_arch("llama-tiny").dims);
  llama->plan(1, 8);
  // moe-tiny runs llama-tiny's parameters per token (2 experts of half its width), plus a router per layer.
  CHECK(t->active_param_count() == llama->param_count() + 4 * 8 * 256);
  CHECK(t->forward_flops_per_token(8) == Approx(llama->forward_flops_per_token(8) + 4 * 2.0 * 256 * 8));

  // Part keys: set by name, range-checked, refused by an architecture without the part.
  Dims d = tiny.dims;
  set_dim(d, "model.moe_experts", "16");
  CHECK(d.get("moe_experts") == 16);
  CHECK_THROWS_WITH(set_dim(d, "model.moe_top_k", "0"), Catch::Contains("out of range"));
  CHECK_THROWS_WITH(set_dim(d, "model.moe_experts", "2.5"), Catch::Contains("is not an integer"));
  CHECK_THROWS_WITH(set_dim(d, "model.moe_expert", "4"), Catch::Contains("did you mean model.moe_experts?"));
  Dims bad = tiny.dims;
  set_dim(bad, "moe_top_k", "9");
  CHECK(check_dims(bad, tiny.rules).size() == 1);
  CHECK(check_dims(bad, tiny.rules)[0].rule == "moe_top_k_within_experts");
  Dims plain = find_arch("llama-tiny").dims;
  set_dim(plain, "moe_experts", "4");
  CHECK_THROWS_WITH(make_model("llama-tiny", plain), Catch::Contains("model.moe_experts belongs to a part that llama-tiny does not have"));
  // The keys round-trip through their text form (state.json).
  Dims back = find_arch("llama-tiny").dims;
  for (const auto& [k, v] : dims_as_keys(tiny.dims)) set_dim(back, k, v);
  CHECK(back == tiny.dims);
}
