// Encoder-decoders (dsl/encoder_decoder_lm.hpp, layers/cross_attention.hpp, models/seq2seq.hpp):
// the structure (one shared embedding, the sides and their norms), every parameter's gradient
// against finite differences (cross-attention's memory gradient reaches the encoder), a padded
// source equal to its rows alone, and decoding (the encoder once, the decoder one position at a
// time with its KV cache and the memory's keys and values kept) equal to the full forward; span
// corruption (train/span.hpp): its lengths, rows that give the text back, its statistics and
// determinism, the batches, and the loss's measures of recovery.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "gradcheck.hpp"
#include "models/registry.hpp"
#include "layers/rmsnorm.hpp"
#include "models/model.hpp"
#include "models/seq2seq.hpp"
#include "models/t5.hpp"
#include "data/char_tokenizer.hpp"
#include "data/loader.hpp"
#include "data/shard.hpp"
#include "ops/ops.hpp"
#include "train/span.hpp"

using namespace llmtk;
namespace fs = std::filesystem;

namespace {

llmtk::test::GradTolerance model_tolerance() {
  llmtk::test::GradTolerance tol;
  tol.atol = std::string_view(ops::active().backend) == "reference" ? 1e-4 : 3e-4;
  tol.rtol = 2e-2;
  tol.max_per_tensor = 24;
  return tol;
}
// A transformer-tiny small enough for finite differences.
Dims tiny_seq2seq() {
  Dims d = find_arch("transformer-tiny").dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 4, d.d_ff = 24, d.vocab = 13, d.max_seq = 12;
  return d;
}
// Weights of unit scale: init's 0.02 would leave attention nearly uniform and the cross-attention's
// share of each output tiny next to the residual, hiding what the memory and its padding change.
void unit_weights(AnyModel& m, std::uint64_t seed) {
  Rng rng(seed);
  for (std::size_t i = 0; i < m.params().entries().size(); ++i) {
    std::vector<float> v(std::size_t(m.params()[int(i)].numel()));
    const bool norm = m.params().entries()[i].kind == ParamKind::norm;
    for (auto& x : v) x = float(norm ? 1 + 0.2 * rng.normal() : 0.5 * rng.normal());
    m.params().write(int(i), v.data());
  }
}
// transformer-tiny's shape with GELU for ReLU: finite differences need a smooth loss (a ReLU's kink
// crossed by a nudge of ±h is a wrong derivative, not a wrong gradient). Post-norm blocks, and
// pre-norm with learned positions (each side's norm then after its stack, as T5 has it).
struct SmoothEncoderBlock final : Block<LayerNorm, MHA<NoPE, Bidirectional>, MLP<GELU>, PostNorm> {};
struct SmoothDecoderBlock final : CrossBlock<LayerNorm, MHA<NoPE, Causal>, CrossAttention, MLP<GELU>, PostNorm> {};
struct SmoothPostNorm final : EncoderDecoderLM<Embedding<Sinusoidal>, Repeat<SmoothEncoderBlock>, LayerNorm,
                                               Repeat<SmoothDecoderBlock>, LayerNorm, LMHead<Tied>> {};
struct PreEncoderBlock final : Block<RMSNorm, MHA<NoPE, Bidirectional>, MLP<GELU>, PreNorm> {};
struct PreDecoderBlock final : CrossBlock<RMSNorm, MHA<NoPE, Causal>, CrossAttention, MLP<GELU>, PreNorm> {};
struct SmoothPreNorm final : EncoderDecoderLM<Embedding<LearnedPositions>, Repeat<PreEncoderBlock>, RMSNorm,
                                              Repeat<PreDecoderBlock>, RMSNorm, LMHead<Untied>> {};
// T5 with GELU for ReLU (finite differences, as above): the relative bias and the scaled tied head.
struct SmoothT5EncoderBlock final : Block<RMSNorm, MHA<T5Positions, Bidirectional>, MLP<GELU>, PreNorm> {};
struct SmoothT5DecoderBlock final : CrossBlock<RMSNorm, MHA<T5Positions, Causal>, CrossAttention, MLP<GELU>, PreNorm> {};
struct SmoothT5 final : EncoderDecoderLM<TokenEmbedding, Repeat<SmoothT5EncoderBlock>, RMSNorm, Repeat<SmoothT5DecoderBlock>,
                                         RMSNorm, LMHead<TiedScaled>> {};
Dims tiny_t5() {
  Dims d = find_arch("t5-tiny").dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 4, d.d_ff = 24, d.vocab = 13, d.max_seq = 40;
  d.norm_eps = 1e-5;
  return d;
}
std::unique_ptr<AnyModel> smooth(bool prenorm) {
  if (prenorm) return std::make_unique<ModelOf<SmoothPreNorm>>("seq2seq-prenorm", tiny_seq2seq());
  return std::make_unique<ModelOf<SmoothPostNorm>>("seq2seq-postnorm", tiny_seq2seq());
}
std::vector<float> to_host(TensorRef t) { return outputs_on_host(t); }
std::vector<float> grads_on_host(AnyModel& m) {
  std::vector<float> g(std::size_t(m.grads().numel()));
  copy_bytes(g.data(), Device::host, m.grads().data(), m.grads().device(), g.size() * sizeof(float));
  return g;
}

}  // namespace

TEST_CASE("an encoder-decoder: one embedding for both sides, each side's norm in its place, cross-attention in the decoder", "[seq2seq]") {
  const Dims d = tiny_seq2seq();
  auto m = make_model("transformer-tiny", d);
  CHECK(m->encoder_decoder());
  CHECK(m->has_tag("cross_attention"));
  CHECK_FALSE(make_model("bert-tiny", find_arch("bert-tiny").dims)->encoder_decoder());
  m->plan(2, 5, false, 7);
  CHECK(m->source_len() == 7);
  std::vector<std::string> names;
  for (const auto& e : m->params().entries()) names.push_back(e.name);
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  CHECK(has("embed.tokens"));
  CHECK(has("encoder.embed_norm.weight"));  // post-norm blocks: the norm after the embedding
  CHECK(has("decoder.embed_norm.weight"));
  CHECK(has("decoder.blocks.1.cross.wq"));
  CHECK(has("decoder.blocks.1.cross.norm.weight"));
  CHECK_FALSE(has("encoder.blocks.0.cross.wq"));
  for (const auto& n : names) CHECK_FALSE(n.starts_with("decoder_embed"));  // the decoder reads embed.tokens
  CHECK_FALSE(has("head.weight"));                                        // tied
  // C = 16, F = 24, V = 13: embedding V·C; per side one LayerNorm (2C); encoder blocks: attention
  // 4(C² + C), MLP 2CF + F + C, two LayerNorms 4C; decoder blocks add cross-attention 4(C² + C)
  // and its LayerNorm 2C.
  const std::int64_t C = 16, F = 24, V = 13, L = 2;
  const std::int64_t attn = 4 * (C * C + C), mlp = 2 * C * F + F + C;
  const std::int64_t enc = attn + mlp + 4 * C, dec = 2 * attn + mlp + 6 * C;
  CHECK(m->param_count() == V * C + 2 * 2 * C + L * (enc + dec));
  // The parts as arch show lists them.
  const auto parts = m->parts(1);
  std::vector<std::string> paths;
  for (const auto& p : parts) paths.push_back(p.path);
  CHECK(paths == std::vector<std::string>{"embed", "encoder", "encoder.embed_norm", "encoder.blocks", "decoder",
                                          "decoder.embed_norm", "decoder.blocks", "head"});
  // The source is required, and only an encoder-decoder takes one.
  m->allocate();
  std::vector<std::int32_t> ids(10, 1);
  CHECK_THROWS_WITH(m->forward(TensorRef(ids.data(), DType::i32, {2, 5})),
                    Catch::Contains("is an encoder-decoder: source must be [2, 7] i32"));
  auto decoder_only = make_model("llama-tiny", find_arch("llama-tiny").dims);
  CHECK_THROWS_WITH(decoder_only->plan(1, 4, false, 3), Catch::Contains("a source length (3) is for encoder-decoders only"));
}

TEST_CASE("an encoder-decoder: every parameter gradient, with and without source padding", "[seq2seq][gradcheck]") {
  const bool prenorm = GENERATE(false, true), padded = GENERATE(false, true);
  INFO("pre-norm " << prenorm << ", source padding " << padded);
  auto m = smooth(prenorm);
  const std::int64_t B = 2, T = 5, S = 7;
  m->plan(B, T, false, S);
  Rng rng(47);
  std::vector<std::int32_t> source(std::size_t(B * S)), ids(std::size_t(B * T)), targets(ids.size());
  std::vector<std::int32_t> lengths = {4, 7};
  NextTokenLoss objective;
  auto batch = [&](Rng& r) {
    for (auto& v : source) v = std::int32_t(r.next() % 13);
    for (auto& v : ids) v = std::int32_t(r.next() % 13);
    for (auto& v : targets) v = std::int32_t(r.next() % 13);
    targets[2] = kIgnoreIndex;
    train::Batch b = train::lm_batch(TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(targets.data(), DType::i32, {B, T}));
    b.inputs.source = TensorRef(source.data(), DType::i32, {B, S});
    if (padded) b.inputs.source_lengths = TensorRef(lengths.data(), DType::i32, {B});
    return b;
  };
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, objective, batch, rng, model_tolerance()));
}

TEST_CASE("an encoder-decoder: a padded source gives the loss and gradients of its rows one at a time", "[seq2seq][mask]") {
  const auto backend = GENERATE(as<std::string>{}, "reference", "cpu");
  INFO(backend);
  ops::ScopedBackend scope(backend);
  const Dims d = tiny_seq2seq();
  auto batch = make_model("transformer-tiny", d), one = make_model("transformer-tiny", d);
  const std::int64_t B = 2, T = 4, S = 8;
  batch->plan(B, T, false, S);
  batch->init(5);
  unit_weights(*batch, 5);
  // Row 0: a source of 5 real tokens, then 3 of padding (any ids); row 1: 8 real tokens.
  std::vector<std::int32_t> source = {3, 7, 1, 9, 4, 12, 12, 12, 2, 5, 8, 1, 0, 6, 11, 3};
  std::vector<std::int32_t> lengths = {5, 8};
  std::vector<std::int32_t> ids = {0, 4, 9, 2, 0, 6, 6, 1};
  std::vector<std::int32_t> targets = {4, 9, 2, 10, 6, 6, 1, 3};
  NextTokenLoss objective;
  train::Batch b = train::lm_batch(TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(targets.data(), DType::i32, {B, T}));
  b.inputs.source = TensorRef(source.data(), DType::i32, {B, S});
  b.inputs.source_lengths = TensorRef(lengths.data(), DType::i32, {B});
  batch->zero_grad();
  const double loss = train::forward_backward(*batch, objective, b);
  double want_loss = 0;
  std::vector<double> want_grad(std::size_t(batch->grads().numel()), 0.0);
  for (std::int64_t r = 0; r < B; ++r) {
    const std::int64_t L = lengths[std::size_t(r)];
    one->plan(1, T, false, L);
    one->allocate();
    one->params().copy_from(batch->params());
    one->zero_grad();
    std::vector<std::int32_t> row_source(source.begin() + r * S, source.begin() + r * S + L);
    train::Batch rb = train::lm_batch(TensorRef(ids.data() + r * T, DType::i32, {1, T}),
                                      TensorRef(targets.data() + r * T, DType::i32, {1, T}));
    rb.inputs.source = TensorRef(row_source.data(), DType::i32, {1, L});
    want_loss += 0.5 * train::forward_backward(*one, objective, rb);  // each row holds half the targets
    const auto g = grads_on_host(*one);
    for (std::size_t i = 0; i < g.size(); ++i) want_grad[i] += 0.5 * g[i];
  }
  CHECK(loss == Approx(want_loss).epsilon(1e-5));
  const auto got = grads_on_host(*batch);
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(double(got[i]) - want_grad[i])), scale = std::max(scale, std::abs(want_grad[i]));
  INFO("largest gradient " << scale << ", largest difference " << worst);
  CHECK(scale > 1e-3);
  CHECK(worst <= 1e-5 * std::max(1.0, scale) + 1e-6);
  // Without the lengths the padding leaks into row 0's memory (the test can fail).
  b.inputs.source_lengths = {};
  CHECK(std::abs(train::forward_loss(*batch, objective, b) - want_loss) > 1e-4);
}

TEST_CASE("an encoder-decoder decodes: the encoder once, then one position at a time, as the full forward", "[seq2seq][decode]") {
  const auto backend = GENERATE(as<std::string>{}, "reference", "cpu");
  INFO(backend);
  ops::ScopedBackend scope(backend);
  const Dims d = tiny_seq2seq();
  auto full = make_model("transformer-tiny", d);
  const std::int64_t T = 6, S = 9, V = 13;
  full->plan(1, T, false, S);
  full->init(3);
  unit_weights(*full, 3);
  std::vector<std::int32_t> source = {5, 1, 8, 8, 2, 11, 0, 7, 3}, ids = {0, 9, 4, 4, 12, 1};
  ModelInputs in{TensorRef(ids.data(), DType::i32, {1, T}), {}, {}};
  in.source = TensorRef(source.data(), DType::i32, {1, S});
  const auto want = to_host(full->forward(in));
  auto step = make_model("transformer-tiny", d);
  step->plan_decode(T, S);
  step->allocate();
  step->params().copy_from(full->params());
  CHECK_THROWS_WITH(step->decode(TensorRef(ids.data(), DType::i32, {1, 1}), 0), Catch::Contains("encode() the source"));
  step->encode(TensorRef(source.data(), DType::i32, {1, S}));
  double worst = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    const float* logits = step->decode(TensorRef(ids.data() + t, DType::i32, {1, 1}), t);
    for (std::int64_t v = 0; v < V; ++v) worst = std::max(worst, double(std::abs(logits[v] - want[std::size_t(t * V + v)])));
  }
  CHECK(worst < 1e-4);
  // Another source: encode() again, and the kept keys and values follow it.
  std::vector<std::int32_t> other = {1, 1, 2, 3, 5, 8, 0, 4, 9};
  step->encode(TensorRef(other.data(), DType::i32, {1, S}));
  const float* first = step->decode(TensorRef(ids.data(), DType::i32, {1, 1}), 0);
  double moved = 0;
  for (std::int64_t v = 0; v < V; ++v) moved = std::max(moved, double(std::abs(first[v] - want[std::size_t(v)])));
  CHECK(moved > 1e-3);
  CHECK_THROWS_WITH(step->encode(TensorRef(other.data(), DType::i32, {1, 4})), Catch::Contains("encode takes [1, 9]"));
}

namespace {
// 26 letters, a space and a full stop, <|endoftext|>, [PAD] and 30 sentinels.
const data::CharTokenizer& span_letters() {
  static const data::CharTokenizer t = [] {
    std::vector<std::string> specials = {std::string(data::kEndOfText), "[PAD]"};
    for (int k = 0; k < 30; ++k) specials.push_back(train::sentinel_name(k));
    const std::vector<std::string> texts = {"abcdefghijklmnopqrstuvwxyz ."};
    return data::CharTokenizer::train(texts, specials);
  }();
  return t;
}
// The raw row again from a source and its target: each sentinel of the source replaced by the
// tokens after the same sentinel in the target.
std::vector<std::int32_t> restore(const std::vector<std::int32_t>& source, const std::vector<std::int32_t>& target,
                                  const train::SpanTokens& st) {
  std::vector<std::int32_t> out;
  for (std::size_t i = 0; i + 1 < source.size(); ++i) {
    if (!st.is_sentinel[std::size_t(source[i])]) {
      out.push_back(source[i]);
      continue;
    }
    auto it = std::find(target.begin(), target.end(), source[i]);
    for (++it; it != target.end() && !st.is_sentinel[std::size_t(*it)] && *it != st.eos; ++it) out.push_back(*it);
  }
  return out;
}
}  // namespace

TEST_CASE("span corruption: lengths as T5 computes them", "[seq2seq][objective]") {
  const SpanOptions t5;
  const auto l = train::span_lengths(568, t5);  // T5's inputs_length 512 ↔ 568 raw tokens
  CHECK(l.noise == 85);
  CHECK(l.spans == 28);
  CHECK(l.source == 568 - 85 + 28 + 1);
  CHECK(l.source == 512);
  CHECK(l.target == 85 + 28 + 1);
  CHECK(train::span_lengths_for_source(512, t5).raw == 568);
  CHECK(train::span_lengths_for_source(48, t5).raw == 52);
  CHECK(train::span_lengths_for_source(48, t5).target == 12);
  const auto tiny = train::span_lengths(5, t5);  // at least one token dropped, one span
  CHECK(tiny.noise == 1);
  CHECK(tiny.spans == 1);
}

TEST_CASE("span corruption: rows that give the text back, 15% dropped in spans of 3, the same for the same seed", "[seq2seq][objective]") {
  const auto& tok = span_letters();
  const train::SpanTokens st = train::span_tokens(tok, "test");
  REQUIRE(st.sentinels.size() == 30);
  const SpanOptions o;
  const std::int64_t L = 101;
  const auto l = train::span_lengths(L, o);
  // T5 cuts the dropped tokens and the kept ones each into `spans` non-empty runs, every way of
  // cutting equally likely: a run of n tokens cut in k has a first run of length 1 with probability
  // C(n − 2, k − 2) / C(n − 1, k − 1) = (k − 1) / (n − 1). Counted over many rows, within five
  // binomial standard deviations.
  std::int64_t spans = 0, span_tokens = 0, first_span_one = 0, first_kept_one = 0, last_dropped = 0;
  const int rows = 4000;
  for (int row = 0; row < rows; ++row) {
    std::vector<std::int32_t> raw(static_cast<std::size_t>(L)), source(static_cast<std::size_t>(l.source)),
        target(static_cast<std::size_t>(l.target));
    Rng r(static_cast<std::uint64_t>(row));
    for (auto& v : raw) v = std::int32_t(r.next() % 28);
    train::corrupt_row(raw, source, target, st, o, std::uint64_t(row) * 7919);
    REQUIRE(restore(source, target, st) == raw);
    REQUIRE(source.back() == st.eos);
    REQUIRE(target.back() == st.eos);
    REQUIRE(target.front() == st.sentinels[0]);  // T5's rows: the target starts with the first sentinel
    REQUIRE_FALSE(st.is_sentinel[std::size_t(source.front())]);  // a kept run first
    // Sentinels in order, each once on each side.
    std::vector<std::int32_t> in_source, in_target;
    for (auto v : source)
      if (st.is_sentinel[std::size_t(v)]) in_source.push_back(v);
    for (auto v : target)
      if (st.is_sentinel[std::size_t(v)]) in_target.push_back(v);
    REQUIRE(in_source == std::vector<std::int32_t>(st.sentinels.begin(), st.sentinels.begin() + l.spans));
    REQUIRE(in_target == in_source);
    for (std::size_t i = 0; i < target.size(); ++i)
      if (st.is_sentinel[std::size_t(target[i])]) {
        ++spans;
        std::int64_t n = 0;
        for (std::size_t j = i + 1; j < target.size() && !st.is_sentinel[std::size_t(target[j])] && target[j] != st.eos; ++j) ++n;
        span_tokens += n;
        if (i == 0) first_span_one += n == 1;
      }
    first_kept_one += st.is_sentinel[std::size_t(source[1])];
    last_dropped += source[source.size() - 2] == st.sentinels[std::size_t(l.spans - 1)];  // T5 ends on a dropped span
  }
  CHECK(spans == rows * l.spans);
  CHECK(double(span_tokens) / double(spans) == Approx(double(l.noise) / double(l.spans)));  // 15 / 5 = 3: the mean span length
  CHECK(last_dropped == rows);
  auto within = [&](std::int64_t count, double p) {
    INFO(count << " of " << rows << ", expected probability " << p);
    CHECK(std::abs(double(count) / rows - p) < 5 * std::sqrt(p * (1 - p) / rows));
  };
  within(first_span_one, double(l.spans - 1) / double(l.noise - 1));     // 4 / 14
  within(first_kept_one, double(l.spans - 1) / double(L - l.noise - 1));  // 4 / 85
  // Deterministic in the seed; another seed drops other tokens.
  std::vector<std::int32_t> raw(static_cast<std::size_t>(L), 3), a(static_cast<std::size_t>(l.source)), b = a, c = a,
      ta(static_cast<std::size_t>(l.target)), tb = ta, tc = ta;
  for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = std::int32_t(i % 28);
  train::corrupt_row(raw, a, ta, st, o, 5);
  train::corrupt_row(raw, b, tb, st, o, 5);
  train::corrupt_row(raw, c, tc, st, o, 6);
  CHECK(a == b);
  CHECK(ta == tb);
  CHECK(a != c);
  // Too few sentinels for the spans: refused, naming the fix.
  const auto wide = train::span_lengths(700, o);  // 105 dropped in 35 spans; the tokenizer has 30 sentinels
  std::vector<std::int32_t> big(700, 1), s2(static_cast<std::size_t>(wide.source)), t2(static_cast<std::size_t>(wide.target));
  CHECK_THROWS_WITH(train::corrupt_row(big, s2, t2, st, o, 1), Catch::Contains("[tokenizer] sentinels = 35"));
}

TEST_CASE("span batches: the decoder reads the target shifted right after [PAD], the same rows after a seek", "[seq2seq][objective]") {
  const auto& tok = span_letters();
  const fs::path dir = fs::temp_directory_path() / ("llmtk-span-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    data::ShardWriter w((dir / "train_000.bin").string(), tok);
    for (int d = 0; d < 40; ++d) {
      std::vector<data::TokenId> doc;
      for (int i = 0; i < 30; ++i) doc.push_back(data::TokenId((d * 3 + i) % 28));
      w.add_document(doc);
    }
    w.close();
  }
  const SpanOptions o;
  const auto l = train::span_lengths_for_source(60, o);  // 3 spans: their places are drawn
  const std::int64_t B = 3, S = l.source, T = l.target;
  data::DataLoader loader({(dir / "train_000.bin").string()}, tok.hash(), {B, l.raw, data::DataOrder::shuffled, 3, 0, 1});
  const train::SpanTokens st = train::span_tokens(tok, "test");
  train::SpanBatches batches(loader, st, o, 11);
  batches.next();
  const data::LoaderPosition second = batches.position();
  const train::Batch b = batches.next();
  REQUIRE(b.inputs.source.size(0) == B);
  REQUIRE(b.inputs.source.size(1) == S);
  REQUIRE(b.inputs.ids.size(1) == T);
  const std::vector<std::int32_t> source(b.inputs.source.i32(), b.inputs.source.i32() + B * S);
  const std::vector<std::int32_t> ids(b.inputs.ids.i32(), b.inputs.ids.i32() + B * T);
  const std::vector<std::int32_t> targets(b.labels.targets.i32(), b.labels.targets.i32() + B * T);
  for (std::int64_t r = 0; r < B; ++r) {
    CHECK(ids[std::size_t(r * T)] == st.pad);
    for (std::int64_t t = 1; t < T; ++t) CHECK(ids[std::size_t(r * T + t)] == targets[std::size_t(r * T + t - 1)]);
    CHECK(targets[std::size_t(r * T + T - 1)] == st.eos);
  }
  batches.seek(second);
  const train::Batch again = batches.next();
  CHECK(std::vector<std::int32_t>(again.inputs.source.i32(), again.inputs.source.i32() + B * S) == source);
  CHECK(std::vector<std::int32_t>(again.labels.targets.i32(), again.labels.targets.i32() + B * T) == targets);
  train::SpanBatches other(loader, st, o, 12);
  other.seek(second);
  const train::Batch x = other.next();
  CHECK(std::vector<std::int32_t>(x.inputs.source.i32(), x.inputs.source.i32() + B * S) != source);
  fs::remove_all(dir);
}

TEST_CASE("the span loss: cross-entropy of every target token, token accuracy and exact spans", "[seq2seq][objective]") {
  const auto& tok = span_letters();
  const train::SpanTokens st = train::span_tokens(tok, "test");
  const std::int64_t V = tok.vocab_size();
  // One row: <s0> a b <s1> c <eos>; the model is right at every position but 'c'.
  const std::int32_t s0 = st.sentinels[0], s1 = st.sentinels[1];
  std::vector<std::int32_t> targets = {s0, 0, 1, s1, 2, st.eos};
  const std::int64_t T = std::int64_t(targets.size());
  std::vector<float> logits(std::size_t(T * V), 0.0f);
  for (std::int64_t t = 0; t < T; ++t) logits[std::size_t(t * V + (t == 4 ? 5 : targets[std::size_t(t)]))] = 3.0f;
  train::SpanLoss loss(st.is_sentinel);
  const float value = loss.forward(TensorRef(logits.data(), DType::f32, {1, T, V}),
                                   {TensorRef(targets.data(), DType::i32, {1, T}), {}, {}});
  const double right = 3.0 - std::log(std::exp(3.0) + double(V - 1)), wrong = -std::log(std::exp(3.0) + double(V - 1));
  CHECK(value == Approx(-(5 * right + wrong) / 6).epsilon(1e-5));
  const auto m = loss.metrics();
  CHECK(m[0].first == "accuracy");
  CHECK(m[0].second == Approx(5.0 / 6));
  CHECK(m[1].first == "span_exact");
  CHECK(m[1].second == Approx(0.5));  // "a b" recovered, "c" not
}

TEST_CASE("T5: the presets' parameter counts, one relative bias table per stack", "[seq2seq][t5]") {
  auto small = make_model("t5-small", find_arch("t5-small").dims);
  small->plan(1, 8);
  CHECK(small->param_count() == 60506624);  // T5ForConditionalGeneration of t5-small (tied head)
  auto tiny = make_model("t5-tiny", find_arch("t5-tiny").dims);
  tiny->plan(1, 8);
  std::vector<std::string> tables;
  for (const auto& e : tiny->params().entries())
    if (e.name.find("relative_bias") != std::string::npos) tables.push_back(e.name);
  CHECK(tables == std::vector<std::string>{"encoder.relative_bias", "decoder.relative_bias"});
  CHECK(tiny->has_tag("relative_bias"));
  CHECK(find_arch("t5-tiny").structure[0] ==
        "T5 = EncoderDecoderLM<TokenEmbedding, Repeat<T5EncoderBlock>, RMSNorm, Repeat<T5DecoderBlock>, RMSNorm, LMHead<TiedScaled>>");
}

TEST_CASE("T5's relative position buckets", "[seq2seq][t5]") {
  using P = T5Positions;  // 32 buckets, max distance 128
  // Bidirectional (the encoder): 16 buckets a side, 8 exact; keys after the query in 16 .. 31.
  CHECK(P::bucket(0, true) == 0);
  CHECK(P::bucket(-1, true) == 1);
  CHECK(P::bucket(1, true) == 17);
  CHECK(P::bucket(-7, true) == 7);
  CHECK(P::bucket(-8, true) == 8);     // 8 + ⌊log(8/8) / log(128/8) · 8⌋
  CHECK(P::bucket(-127, true) == 15);  // 8 + ⌊7.977⌋
  CHECK(P::bucket(-1000, true) == 15);
  CHECK(P::bucket(1000, true) == 31);
  CHECK(P::bucket(20, true) == 16 + 8 + 2);  // ⌊log(20/8) / log(16) · 8⌋ = ⌊2.64⌋
  // Causal (the decoder): 32 buckets for keys at or before the query, 16 exact.
  CHECK(P::bucket(5, false) == 0);
  CHECK(P::bucket(-1, false) == 1);
  CHECK(P::bucket(-15, false) == 15);
  CHECK(P::bucket(-16, false) == 16);
  CHECK(P::bucket(-127, false) == 31);  // 16 + ⌊15.94⌋
  CHECK(P::bucket(-64, false) == 16 + 10);  // ⌊log(4) / log(8) · 16⌋ = ⌊10.67⌋
  for (std::int64_t r = -500; r < 500; ++r) {  // monotone in the distance, within range
    const auto b = P::bucket(r, true);
    REQUIRE((b >= 0 && b < 32));
    if (r < 0) REQUIRE(P::bucket(r, true) >= P::bucket(r + 1, true));
  }
}

TEST_CASE("T5: every parameter gradient, the relative bias tables and the scaled tied head included", "[seq2seq][t5][gradcheck]") {
  const bool padded = GENERATE(false, true);
  INFO("source padding " << padded);
  ModelOf<SmoothT5> m("t5-smooth", tiny_t5());
  const std::int64_t B = 2, T = 5, S = 7;
  m.plan(B, T, false, S);
  Rng rng(53);
  std::vector<std::int32_t> source(std::size_t(B * S)), ids(std::size_t(B * T)), targets(ids.size());
  std::vector<std::int32_t> lengths = {4, 7};
  NextTokenLoss objective;
  auto batch = [&](Rng& r) {
    for (auto& v : source) v = std::int32_t(r.next() % 13);
    for (auto& v : ids) v = std::int32_t(r.next() % 13);
    for (auto& v : targets) v = std::int32_t(r.next() % 13);
    train::Batch b = train::lm_batch(TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(targets.data(), DType::i32, {B, T}));
    b.inputs.source = TensorRef(source.data(), DType::i32, {B, S});
    if (padded) b.inputs.source_lengths = TensorRef(lengths.data(), DType::i32, {B});
    return b;
  };
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(m, objective, batch, rng, model_tolerance()));
}

TEST_CASE("T5 decodes as its full forward: the relative bias of each new query against the cache", "[seq2seq][t5][decode]") {
  const auto backend = GENERATE(as<std::string>{}, "reference", "cpu");
  INFO(backend);
  ops::ScopedBackend scope(backend);
  const Dims d = tiny_t5();
  auto full = make_model("t5-tiny", d);
  const std::int64_t T = 30, S = 11, V = 13;  // past the 16 exact buckets of the decoder
  full->plan(1, T, false, S);
  full->init(3);
  unit_weights(*full, 3);
  std::vector<std::int32_t> source = {5, 1, 8, 8, 2, 11, 0, 7, 3, 9, 4}, ids(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) ids[std::size_t(t)] = std::int32_t((t * 7 + 3) % 13);
  ModelInputs in{TensorRef(ids.data(), DType::i32, {1, T}), {}, {}};
  in.source = TensorRef(source.data(), DType::i32, {1, S});
  const auto want = to_host(full->forward(in));
  auto step = make_model("t5-tiny", d);
  step->plan_decode(T, S);
  step->allocate();
  step->params().copy_from(full->params());
  step->encode(TensorRef(source.data(), DType::i32, {1, S}));
  double worst = 0, scale = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    const float* logits = step->decode(TensorRef(ids.data() + t, DType::i32, {1, 1}), t);
    for (std::int64_t v = 0; v < V; ++v) {
      worst = std::max(worst, double(std::abs(logits[v] - want[std::size_t(t * V + v)])));
      scale = std::max(scale, double(std::abs(want[std::size_t(t * V + v)])));
    }
  }
  CHECK(worst < 1e-4 * std::max(1.0, scale));
}
