// Stacks whose layers differ (dsl/pattern.hpp) and the recurrent mixer (layers/recurrence.hpp):
// gradients through Pattern, PatternCut and Layers and through minGRU, local attention that sees
// only its window, decoding (with a KV cache, with a recurrent state) and recomputation across
// layer types, documents that do not see each other, and what arch show and the rules say. Runs on
// the reference backend and again on the CPU backend.
#include "gradcheck.hpp"
#include "dsl/block.hpp"
#include "dsl/decoder_lm.hpp"
#include "dsl/pattern.hpp"
#include "layers/attention.hpp"
#include "layers/embedding.hpp"
#include "layers/glu.hpp"
#include "layers/lm_head.hpp"
#include "layers/mlp.hpp"
#include "layers/moe.hpp"
#include "layers/recurrence.hpp"
#include "layers/rmsnorm.hpp"
#include "models/gemma.hpp"
#include "models/hybrid.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"

using namespace llmtk;

namespace {

test::GradTolerance tolerance() {
  test::GradTolerance tol;
  tol.atol = std::string_view(ops::active().backend) == "reference" ? 1e-4 : 3e-4;
  tol.max_per_tensor = 24;
  return tol;
}
Dims small(int n_layers, int local_window) {
  return Dims{.d_model = 16, .n_layers = n_layers, .n_heads = 4, .n_kv_heads = 2, .d_ff = 24, .vocab = 13, .max_seq = 8}
      .with("local_window", local_window);
}

Dims plain(int n_layers) {  // for architectures without a Local mask (they refuse its key)
  return Dims{.d_model = 16, .n_layers = n_layers, .n_heads = 4, .n_kv_heads = 2, .d_ff = 24, .vocab = 13, .max_seq = 8};
}

struct DenseBlock final : Block<RMSNorm, GQA<RoPE>, SwiGLU, PreNorm> {};
struct MoeBlock final : Block<RMSNorm, GQA<RoPE, Local>, MoE<SwiGLU>, PreNorm> {};
struct GeluBlock final : Block<RMSNorm, GQA<NoPE>, MLP<GELU>, PreNorm> {};
// Three different layers, listed; a pattern of two cut at an odd depth.
struct Listed final : DecoderLM<TokenEmbedding, Layers<DenseBlock, GeluBlock, GemmaLocalBlock>, RMSNorm, LMHead<Untied>> {};
struct Cut final : DecoderLM<TokenEmbedding, PatternCut<GemmaLocalBlock, GemmaGlobalBlock>, RMSNorm, LMHead<Tied>> {};
// Dense and MoE layers alternating: the active parameters count each MoE layer's chosen experts only.
struct HalfMoe final : DecoderLM<TokenEmbedding, Pattern<DenseBlock, MoeBlock>, RMSNorm, LMHead<Tied>> {};
struct OneLocal final : DecoderLM<TokenEmbedding, Layers<GemmaLocalBlock>, RMSNorm, LMHead<Tied>> {};
struct OneGlobal final : DecoderLM<TokenEmbedding, Layers<GemmaGlobalBlock>, RMSNorm, LMHead<Tied>> {};

// Decoding `ids` one token at a time (a KV cache for attention, a state for minGRU) gives the
// logits of one full forward pass over them.
void expect_decode_matches_forward(const std::string& arch, const Dims& d, std::vector<std::int32_t> ids,
                                   std::uint64_t seed) {
  const std::int64_t T = std::int64_t(ids.size());
  auto full = make_model(arch, d), step = make_model(arch, d);
  full->plan(1, T);
  full->init(seed);
  step->plan_decode(T);
  step->allocate();
  std::memcpy(step->params().data(), full->params().data(), full->params().bytes());
  full->forward(TensorRef(ids.data(), DType::i32, {1, T}));
  for (std::int64_t t = 0; t < T; ++t) {
    const float* got = step->decode(TensorRef(&ids[std::size_t(t)], DType::i32, {1, 1}), t);
    const float* want = full->logits().f32() + t * d.vocab;
    for (int v = 0; v < d.vocab; ++v) REQUIRE(got[v] == Approx(want[v]).margin(1e-5));
  }
}

template <class Arch>
void gradcheck(Dims d, std::uint64_t seed) {
  ModelOf<Arch> m("test", with_key_defaults<Arch>(d));
  REQUIRE_GRADIENTS(test::gradcheck_model(m, 2, 6, seed, tolerance()));
}

}  // namespace

TEST_CASE("stacks of different layers: every parameter gradient", "[hybrid][gradcheck]") {
  SECTION("gemma-tiny: local (window 3) and global attention alternating") {
    auto m = make_model("gemma-tiny", with_key_defaults<Gemma>(small(4, 3)));
    REQUIRE_GRADIENTS(test::gradcheck_model(*m, 2, 6, 51, tolerance()));
  }
  SECTION("Layers<dense, NoPE + GELU MLP, local GeGLU sandwich>") { gradcheck<Listed>(small(3, 2), 52); }
  SECTION("PatternCut of two over three layers") { gradcheck<Cut>(small(3, 2), 53); }
}

TEST_CASE("minGRU: the part's gradients, and a hybrid stack's", "[hybrid][recurrent][gradcheck]") {
  SECTION("the mixer alone") {
    MinGRU<> part;
    REQUIRE_GRADIENTS(test::gradcheck_part(part, plain(1), 2, 7, 61, tolerance()));
  }
  SECTION("hybrid-tiny: recurrent, recurrent, attention") {
    auto m = make_model("hybrid-tiny", plain(3));
    REQUIRE_GRADIENTS(test::gradcheck_model(*m, 2, 6, 62, tolerance()));
  }
}

TEST_CASE("a hybrid decodes with its recurrent state and keeps packed documents apart", "[hybrid][recurrent][decode]") {
  Dims d = plain(6);
  d.max_seq = 16;
  // One token at a time: the recurrent layers' state and the attention layer's cache carry what came before.
  expect_decode_matches_forward("hybrid-tiny", d, {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5}, 4);

  // Two documents packed in one row: changing the first leaves the second's logits as they were.
  auto m = make_model("hybrid-tiny", d);
  m->plan(1, 10);
  m->init(6);
  std::vector<std::int32_t> seg = {0, 0, 0, 0, 1, 1, 1, 1, 1, 1};
  auto second = [&](std::vector<std::int32_t> row) {
    ModelInputs in{TensorRef(row.data(), DType::i32, {1, 10}), {}, TensorRef(seg.data(), DType::i32, {1, 10})};
    m->forward(in);
    return std::vector<float>(m->logits().f32() + 4 * d.vocab, m->logits().f32() + 10 * d.vocab);
  };
  const auto base = second({1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  CHECK(second({7, 7, 7, 7, 5, 6, 7, 8, 9, 10}) == base);
  CHECK(second({1, 2, 3, 4, 5, 6, 7, 8, 9, 11}) != base);  // its own tokens do count
  // And the second document alone, from position 0, computes the same.
  auto alone = make_model("hybrid-tiny", d);
  alone->plan(1, 6);
  alone->allocate();
  std::memcpy(alone->params().data(), m->params().data(), m->params().bytes());
  std::vector<std::int32_t> doc = {5, 6, 7, 8, 9, 10};
  alone->forward(TensorRef(doc.data(), DType::i32, {1, 6}));
  for (std::size_t i = 0; i < base.size(); ++i) REQUIRE(alone->logits().f32()[i] == Approx(base[i]).margin(1e-5));
}

TEST_CASE("a local layer sees only its window; a global one sees every earlier token", "[hybrid]") {
  // One layer over 8 tokens with local_window 3: the last position's logits do not move when
  // token 0 changes; a global layer's do.
  auto last_logits = [](AnyModel& m, std::vector<std::int32_t> ids) {
    m.forward(TensorRef(ids.data(), DType::i32, {1, 8}));
    const float* l = m.logits().f32() + 7 * m.dims().vocab;
    return std::vector<float>(l, l + m.dims().vocab);
  };
  const Dims d = with_key_defaults<OneLocal>(small(1, 3));
  ModelOf<OneLocal> local("local", d);
  ModelOf<OneGlobal> global("global", d);
  local.plan(1, 8), global.plan(1, 8);
  local.init(3), global.init(3);
  const std::vector<std::int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8}, b = {9, 2, 3, 4, 5, 6, 7, 8};
  CHECK(last_logits(local, a) == last_logits(local, b));
  CHECK(last_logits(global, a) != last_logits(global, b));
  // Tokens inside the window do count.
  const std::vector<std::int32_t> c = {1, 2, 3, 4, 5, 10, 7, 8};
  CHECK(last_logits(local, a) != last_logits(local, c));
}

TEST_CASE("a pattern stack decodes with its KV cache and recomputes with its own layers", "[hybrid][decode]") {
  Dims d = with_key_defaults<Gemma>(small(4, 3));
  d.max_seq = 9;
  expect_decode_matches_forward("gemma-tiny", d, {3, 1, 4, 1, 5, 9, 2}, 9);

  auto plain = make_model("gemma-tiny", d), saving = make_model("gemma-tiny", d);
  plain->plan(2, 6);
  saving->plan(2, 6, true);
  CHECK(saving->acts().bytes() < plain->acts().bytes());
  plain->init(5), saving->init(5);
  std::vector<std::int32_t> in(12), tg(12);
  for (int i = 0; i < 12; ++i) in[std::size_t(i)] = (i * 5) % 13, tg[std::size_t(i)] = (i * 7 + 1) % 13;
  TensorRef tid(in.data(), DType::i32, {2, 6}), ttg(tg.data(), DType::i32, {2, 6});
  NextTokenLoss o1, o2;
  CHECK(train::forward_backward(*plain, o1, train::lm_batch(tid, ttg)) ==
        train::forward_backward(*saving, o2, train::lm_batch(tid, ttg)));
  CHECK(std::memcmp(plain->grads().data(), saving->grads().data(), plain->grads().bytes()) == 0);
}

TEST_CASE("arch show lists each layer type with its layers; the stack's rules hold", "[hybrid][registry]") {
  const ArchInfo& gemma = find_arch("gemma-tiny");
  auto m = gemma.make(gemma.dims);
  m->plan(1, 8);
  bool local = false, global = false;
  for (const auto& row : m->parts(2)) {
    if (row.path == "blocks") CHECK(row.note == "4 layers, a pattern of 2");
    if (row.path == "blocks.0") local = row.type == "GemmaLocalBlock" && row.note == "2 x, layers 0, 2";
    if (row.path == "blocks.1") global = row.type == "GemmaGlobalBlock" && row.note == "2 x, layers 1, 3";
  }
  CHECK(local);
  CHECK(global);
  // FLOPs: a local layer's attention sees at most 64 keys.
  Dims all_global = gemma.dims;
  all_global.set("local_window", 256);
  CHECK(m->forward_flops_per_token(256) < gemma.make(all_global)->forward_flops_per_token(256));

  Dims odd = gemma.dims;
  odd.n_layers = 5;
  const auto broken = check_dims(odd, gemma.rules);
  REQUIRE(broken.size() == 1);
  CHECK(broken[0].rule == "pattern_divides_layers");
  Dims no_window = gemma.dims;
  CHECK_THROWS_WITH(set_dim(no_window, "model.local_window", "0"), Catch::Contains("out of range"));

  // Dense and MoE layers alternating: the MoE layers' unchosen experts are inactive, once per MoE layer.
  const Dims h = with_key_defaults<HalfMoe>(small(4, 8)).with("moe_experts", 4).with("moe_top_k", 1);
  ModelOf<HalfMoe> half("half", h);
  half.plan(1, 8);
  const std::int64_t expert = 3 * 16 * 24;
  CHECK(half.param_count() - half.active_param_count() == 2 * 3 * expert);
}
