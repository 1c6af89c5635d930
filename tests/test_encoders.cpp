// Encoders (dsl/encoder_lm.hpp, models/bert.hpp) and the masked-language-model objective
// (train/masked.hpp): whole-model gradients against finite differences, token types, padding
// against rows alone, the masking's statistics and determinism, and the sequence classifier (its
// gradients, rows, batches and padding).
#include <unistd.h>

#include <cmath>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/char_tokenizer.hpp"
#include "data/loader.hpp"
#include "data/shard.hpp"
#include "gradcheck.hpp"
#include "models/bert.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/classify.hpp"
#include "train/masked.hpp"

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
Dims tiny_bert() {
  Dims d = find_arch("bert-tiny").dims;
  d.d_model = 16, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 4, d.d_ff = 24, d.vocab = 13, d.max_seq = 8;
  d.norm_eps = 1e-5;  // BERT's 1e-12 is fine in training; finite differences want a smoother norm
  return d;
}

std::vector<float> host(TensorRef t) { return outputs_on_host(t); }

}  // namespace

TEST_CASE("the BERT presets: parameter counts and structure", "[encoder]") {
  const auto base = make_model("bert-base", find_arch("bert-base").dims);
  base->plan(1, 8);
  CHECK(base->param_count() == 109514298);  // BertForMaskedLM of bert-base-uncased (no pooler)
  CHECK(base->has_tag("encoder"));
  CHECK(base->has_tag("bidirectional"));
  CHECK_FALSE(base->has_tag("causal"));
  CHECK(base->parts(0)[1].path == "embed_norm");  // post-norm blocks: the norm after the embedding
  const auto pre = make_model("bert-prenorm-tiny", find_arch("bert-prenorm-tiny").dims);
  pre->plan(1, 8);
  CHECK(pre->parts(0)[2].path == "final_norm");  // pre-norm blocks: after the stack
  CHECK_FALSE(make_model("llama-tiny", find_arch("llama-tiny").dims)->has_tag("encoder"));
}

TEST_CASE("BERT (post-norm) and its pre-norm ablation: every parameter gradient", "[encoder][gradcheck]") {
  const std::string arch = GENERATE(as<std::string>{}, "bert-tiny", "bert-prenorm-tiny");
  INFO(arch);
  auto m = make_model(arch, tiny_bert());
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, 2, 6, 43, model_tolerance()));
}

TEST_CASE("token types: given with the batch, they select rows of embed.types and train them", "[encoder][gradcheck]") {
  auto m = make_model("bert-tiny", tiny_bert());
  const std::int64_t B = 2, T = 6;
  m->plan(B, T);
  Rng rng(43);
  std::vector<std::int32_t> ids(std::size_t(B * T)), targets(ids.size()), types(ids.size());
  NextTokenLoss objective;
  auto batch = [&](Rng& r) {
    for (auto& v : ids) v = std::int32_t(r.next() % 13);
    for (auto& v : targets) v = std::int32_t(r.next() % 13);
    for (std::size_t i = 0; i < types.size(); ++i) types[i] = std::int32_t(i % std::size_t(T) >= 3);  // A A A B B B
    train::Batch b = train::lm_batch(TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(targets.data(), DType::i32, {B, T}));
    b.inputs.token_types = TensorRef(types.data(), DType::i32, {B, T});
    return b;
  };
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, objective, batch, rng, model_tolerance()));
  // Type 1 changes the output; without types every token is type 0.
  const auto b = batch(rng);
  const auto with_types = host(m->forward(b.inputs));
  const auto without = host(m->forward(b.inputs.ids));
  double early = 0, late = 0;  // positions 0-2 are type 0 in both; 3-5 differ
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t v = 0; v < 13; ++v) {
      const std::size_t i = std::size_t(t * 13 + v);
      (t < 3 ? early : late) += std::abs(double(with_types[i]) - double(without[i]));
    }
  CHECK(late > 1e-3);
  CHECK(early > 1e-3);  // bidirectional: the B tokens change the A tokens' outputs too
}

TEST_CASE("padding: a padded batch gives the loss and gradients of its rows one at a time", "[encoder][mask]") {
  const auto backend = GENERATE(as<std::string>{}, "reference", "cpu");
  INFO(backend);
  ops::ScopedBackend scope(backend);
  const Dims d = tiny_bert();
  auto batch = make_model("bert-tiny", d), one = make_model("bert-tiny", d);
  batch->plan(2, 8);
  batch->init(5);
  // Weights of unit scale (init's 0.02 would make attention nearly uniform and tiny next to the
  // residual, hiding what the padding changes).
  Rng rng(5);
  for (std::size_t i = 0; i < batch->params().entries().size(); ++i) {
    std::vector<float> v(std::size_t(batch->params()[int(i)].numel()));
    const bool norm = batch->params().entries()[i].kind == ParamKind::norm;
    for (auto& x : v) x = float(norm ? 1 + 0.2 * rng.normal() : 0.5 * rng.normal());
    batch->params().write(int(i), v.data());
  }
  // Row 0: 5 real tokens then 3 of padding (any ids, never counted); row 1: 8 real tokens.
  std::vector<std::int32_t> ids = {3, 7, 1, 9, 4, 12, 12, 12, 2, 5, 8, 1, 0, 6, 11, 3};
  std::vector<std::int32_t> targets = {-100, 7, -100, 2, 4, -100, -100, -100, 2, -100, -100, 1, 5, -100, 11, -100};
  std::vector<std::int32_t> lengths = {5, 8};
  const std::int64_t counted[2] = {3, 4};
  NextTokenLoss objective;
  train::Batch padded = train::lm_batch(TensorRef(ids.data(), DType::i32, {2, 8}), TensorRef(targets.data(), DType::i32, {2, 8}));
  padded.inputs.lengths = TensorRef(lengths.data(), DType::i32, {2});
  batch->zero_grad();
  const double loss = train::forward_backward(*batch, objective, padded);
  // The batch's loss is the mean over its 7 counted positions: Σ_rows (row mean · row count) / 7.
  double want_loss = 0;
  std::vector<double> want_grad(std::size_t(batch->grads().numel()), 0.0);
  for (std::int64_t r = 0; r < 2; ++r) {
    const std::int64_t L = lengths[std::size_t(r)];
    one->plan(1, L);
    one->allocate();
    one->params().copy_from(batch->params());
    one->zero_grad();
    std::vector<std::int32_t> row_ids(ids.begin() + r * 8, ids.begin() + r * 8 + L);
    std::vector<std::int32_t> row_targets(targets.begin() + r * 8, targets.begin() + r * 8 + L);
    const double l = train::forward_backward(
        *one, objective, train::lm_batch(TensorRef(row_ids.data(), DType::i32, {1, L}), TensorRef(row_targets.data(), DType::i32, {1, L})));
    const double w = double(counted[r]) / 7.0;
    want_loss += w * l;
    std::vector<float> g(want_grad.size());
    copy_bytes(g.data(), Device::host, one->grads().data(), one->grads().device(), g.size() * sizeof(float));
    for (std::size_t i = 0; i < g.size(); ++i) want_grad[i] += w * g[i];
  }
  CHECK(loss == Approx(want_loss).epsilon(1e-5));
  std::vector<float> got(want_grad.size());
  copy_bytes(got.data(), Device::host, batch->grads().data(), batch->grads().device(), got.size() * sizeof(float));
  double worst = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(double(got[i]) - want_grad[i])), scale = std::max(scale, std::abs(want_grad[i]));
  INFO("largest gradient " << scale << ", largest difference " << worst);
  CHECK(scale > 1e-3);
  CHECK(worst <= 1e-5 * std::max(1.0, scale) + 1e-6);
  // Without the lengths the padding leaks into row 0 (the test can fail).
  padded.inputs.lengths = {};
  CHECK(std::abs(train::forward_loss(*batch, objective, padded) - want_loss) > 1e-4);
}

namespace {
// 26 letters, a space and a full stop (ids 0-27 in some order), <|endoftext|>, then the MLM's four.
const data::CharTokenizer& mlm_letters() {
  static const data::CharTokenizer t = [] {
    std::vector<std::string> texts = {"abcdefghijklmnopqrstuvwxyz ."};
    return data::CharTokenizer::train(texts, {std::string(data::kEndOfText), "[PAD]", "[CLS]", "[SEP]", "[MASK]"});
  }();
  return t;
}
}  // namespace

TEST_CASE("masking: 15% selected, of those 80/10/10, never a special token, the same for the same seed", "[encoder][objective]") {
  const auto& tok = mlm_letters();
  const train::MlmTokens mlm = train::mlm_tokens(tok, "test");
  REQUIRE(mlm.ordinary.size() == std::size_t(tok.vocab_size() - 5));  // all but <|endoftext|> and the four
  const double n_ordinary = double(mlm.ordinary.size());
  const MaskingOptions o;  // BERT's
  std::int64_t positions = 0, specials = 0, selected = 0, masked = 0, randomised = 0, kept = 0;
  const std::int64_t T = 64;
  for (std::uint64_t row = 0; row < 2000; ++row) {
    std::vector<std::int32_t> ids(static_cast<std::size_t>(T)), original, targets(ids.size());
    Rng r(row);
    for (auto& v : ids) v = mlm.ordinary[r.next() % mlm.ordinary.size()];
    ids[0] = mlm.cls, ids[std::size_t(T - 1)] = mlm.sep, ids[7] = *tok.special("<|endoftext|>");
    original = ids;
    const std::int64_t n = train::mask_row(ids, targets, mlm, o, row * 7919);
    std::int64_t counted = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      const std::size_t i = std::size_t(t);
      const bool special = mlm.special[std::size_t(original[i])];
      specials += special;
      positions += !special;
      if (targets[i] == kIgnoreIndex) {
        REQUIRE(ids[i] == original[i]);  // what is not selected is left as it was
        continue;
      }
      REQUIRE_FALSE(special);  // never [CLS], [SEP], end of text or any other special token
      REQUIRE(targets[i] == original[i]);
      ++counted;
      if (ids[i] == mlm.mask) ++masked;
      else if (ids[i] != original[i]) {
        ++randomised;
        REQUIRE_FALSE(mlm.special[std::size_t(ids[i])]);
      } else {
        ++kept;
      }
    }
    REQUIRE(n == counted);
    selected += counted;
    // The same seed masks the same way.
    std::vector<std::int32_t> again = original, again_targets(ids.size());
    train::mask_row(again, again_targets, mlm, o, row * 7919);
    REQUIRE(again == ids);
  }
  REQUIRE(specials == 3 * 2000);
  // Within 4 standard deviations of the binomial counts. A random replacement can draw the token
  // it replaces (1 in n_ordinary): those count as kept.
  auto near = [](std::int64_t k, std::int64_t n, double p) {
    const double sd = std::sqrt(double(n) * p * (1 - p));
    INFO(k << " of " << n << ", expected " << double(n) * p << " ± " << 4 * sd);
    CHECK(std::abs(double(k) - double(n) * p) <= 4 * sd);
  };
  near(selected, positions, 0.15);
  near(masked, selected, 0.8);
  near(randomised, selected, 0.1 * (n_ordinary - 1) / n_ordinary);
  near(kept, selected, 0.1 + 0.1 / n_ordinary);
}

TEST_CASE("masked batches: [CLS] text [SEP] rows, the same masks after a seek, validation masks fixed", "[encoder][objective]") {
  const auto& tok = mlm_letters();
  const fs::path dir = fs::temp_directory_path() / ("llmtk-mlm-" + std::to_string(::getpid()));
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
  const std::int64_t B = 4, T = 16;
  data::DataLoader loader({(dir / "train_000.bin").string()}, tok.hash(),
                          {B, train::mlm_loader_seq(T), data::DataOrder::shuffled, 3, 0, 1});
  const train::MlmTokens mlm = train::mlm_tokens(tok, "test");
  train::MaskedBatches batches(loader, mlm, {}, 11);
  batches.next();
  const data::LoaderPosition second = batches.position();
  const train::Batch b = batches.next();
  const std::vector<std::int32_t> ids(b.inputs.ids.i32(), b.inputs.ids.i32() + B * T);
  const std::vector<std::int32_t> targets(b.labels.targets.i32(), b.labels.targets.i32() + B * T);
  std::int64_t counted = 0;
  for (std::int64_t r = 0; r < B; ++r) {
    CHECK(ids[std::size_t(r * T)] == mlm.cls);
    CHECK(ids[std::size_t(r * T + T - 1)] == mlm.sep);
    CHECK(targets[std::size_t(r * T)] == kIgnoreIndex);
    for (std::int64_t t = 0; t < T; ++t) counted += targets[std::size_t(r * T + t)] != kIgnoreIndex;
  }
  CHECK(counted > 0);
  // Seeking back to a batch masks it exactly as before (a resumed run sees the same batches).
  batches.seek(second);
  const train::Batch again = batches.next();
  CHECK(std::vector<std::int32_t>(again.inputs.ids.i32(), again.inputs.ids.i32() + B * T) == ids);
  CHECK(std::vector<std::int32_t>(again.labels.targets.i32(), again.labels.targets.i32() + B * T) == targets);
  // Another seed masks other tokens.
  train::MaskedBatches other(loader, mlm, {}, 12);
  other.seek(second);
  const train::Batch o = other.next();
  CHECK(std::vector<std::int32_t>(o.labels.targets.i32(), o.labels.targets.i32() + B * T) != targets);
  // A tokenizer without the MLM's specials is refused, naming the fix.
  std::vector<std::string> texts = {"abc"};
  const data::CharTokenizer plain = data::CharTokenizer::train(texts);
  CHECK_THROWS_WITH(train::mlm_tokens(plain, "recipe.toml"), Catch::Contains("[PAD], [CLS], [SEP], [MASK]") &&
                                                                 Catch::Contains("special = "));
  fs::remove_all(dir);
}

TEST_CASE("MLM accuracy counts the selected positions whose most probable token is the original", "[encoder][objective]") {
  // 3 positions, vocab 4: position 0 right, 1 wrong, 2 not selected.
  std::vector<float> logits = {0, 5, 1, 2, /**/ 3, 0, 0, 1, /**/ 9, 0, 0, 0};
  std::vector<std::int32_t> targets = {1, 3, kIgnoreIndex};
  train::MaskedTokenLoss loss;
  const float l = loss.forward(TensorRef(logits.data(), DType::f32, {1, 3, 4}), Labels(TensorRef(targets.data(), DType::i32, {1, 3})));
  CHECK(loss.metrics()[0].first == "accuracy");
  CHECK(loss.metrics()[0].second == 0.5);
  const double ce0 = std::log(std::exp(0.0) + std::exp(5.0) + std::exp(1.0) + std::exp(2.0)) - 5.0;
  const double ce1 = std::log(std::exp(3.0) + 2.0 + std::exp(1.0)) - 1.0;
  CHECK(l == Approx((ce0 + ce1) / 2).epsilon(1e-6));
}

// ---- sequence classification (train/classify.hpp, layers/class_head.hpp) -----------------------

TEST_CASE("a classifier on [CLS]: every parameter gradient, through padding and a pair's token types", "[encoder][classify][gradcheck]") {
  Dims d = tiny_bert();
  d.set("n_labels", 3);
  auto m = make_model("bert-tiny+classify", d);
  REQUIRE(m->classifier());
  REQUIRE(m->outputs() == 3);
  const std::int64_t B = 2, T = 6;
  m->plan(B, T);
  std::vector<std::int32_t> ids(std::size_t(B * T)), targets(ids.size()), types(ids.size()), lengths = {4, 6};
  train::MaskedTokenLoss objective("classify");
  Rng rng(47);
  auto batch = [&](Rng& r) {
    for (auto& v : ids) v = std::int32_t(r.next() % 13);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      types[i] = std::int32_t(i % std::size_t(T) >= 2);  // A A B B (B B)
      targets[i] = i % std::size_t(T) == 0 ? std::int32_t(r.next() % 3) : kIgnoreIndex;  // the label, at [CLS] only
    }
    train::Batch b = train::lm_batch(TensorRef(ids.data(), DType::i32, {B, T}), TensorRef(targets.data(), DType::i32, {B, T}));
    b.inputs.token_types = TensorRef(types.data(), DType::i32, {B, T});
    b.inputs.lengths = TensorRef(lengths.data(), DType::i32, {B});
    return b;
  };
  REQUIRE_GRADIENTS(llmtk::test::gradcheck_model(*m, objective, batch, rng, model_tolerance()));
  // The head's parameters are BertForSequenceClassification's: the pooler [C, C] and the classifier [K, C].
  CHECK(m->params().entries()[std::size_t(m->params().find("head.pool.weight"))].shape == std::vector<std::int64_t>{16, 16});
  CHECK(m->params().entries()[std::size_t(m->params().find("head.weight"))].shape == std::vector<std::int64_t>{3, 16});
  CHECK(m->params().find("head.transform.weight") < 0);  // no MLM head
}

TEST_CASE("classification rows: [CLS] text [SEP] (pair [SEP]), padded, the label at [CLS] only, cut longest first", "[encoder][classify]") {
  const auto& tok = mlm_letters();
  const train::MlmTokens mlm = train::mlm_tokens(tok, "test");
  const fs::path dir = fs::temp_directory_path() / ("llmtk-classify-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string file = (dir / "x.jsonl").string();
  std::ofstream(file) << "{\"text\": \"ab\", \"label\": \"yes\"}\n\n"
                      << "{\"text\": \"abc\", \"text_pair\": \"de\", \"label\": \"no\"}\n"
                      << "{\"text\": \"abcdefghij\", \"text_pair\": \"xyz\", \"label\": 7}\n";
  const auto examples = train::read_labelled(file);
  REQUIRE(examples.size() == 3);
  CHECK(examples[2].label == "7");  // an integer label reads as its digits
  CHECK(examples[1].where == file + ":3");
  CHECK(train::labels_in(examples) == std::vector<std::string>{"yes", "no", "7"});
  const auto enc = train::encode_examples(tok, mlm, examples, {"no", "yes", "7"}, 8);
  REQUIRE(enc.examples.size() == 3);
  auto id = [&](char c) { return std::int32_t(tok.encode(std::string(1, c))[0]); };
  CHECK(enc.examples[0].ids == std::vector<std::int32_t>{mlm.cls, id('a'), id('b'), mlm.sep});
  CHECK(enc.examples[0].label == 1);
  CHECK(enc.examples[1].ids == std::vector<std::int32_t>{mlm.cls, id('a'), id('b'), id('c'), mlm.sep, id('d'), id('e'), mlm.sep});
  CHECK(enc.examples[1].types == std::vector<std::int32_t>{0, 0, 0, 0, 0, 1, 1, 1});
  // 10 + 3 letters in 8 − 3 places: the longer segment gives way until they fit (3 and 2).
  CHECK(enc.truncated == 1);
  CHECK(enc.examples[2].ids == std::vector<std::int32_t>{mlm.cls, id('a'), id('b'), id('c'), mlm.sep, id('x'), id('y'), mlm.sep});
  // A label the recipe does not name is refused at its line.
  CHECK_THROWS_WITH(train::encode_examples(tok, mlm, examples, {"no", "yes"}, 8),
                    Catch::Contains(file + ":4") && Catch::Contains("label \"7\" is not one of classify.labels"));
  // Rows: padded with [PAD] after the lengths; the label at [CLS] and nothing else counted.
  std::vector<std::int32_t> ids, types, targets, lengths;
  const train::Batch b = train::classify_rows({&enc.examples[0], &enc.examples[1]}, 3, 8, mlm.pad, ids, types, targets, lengths);
  CHECK(lengths == std::vector<std::int32_t>{4, 8, 1});  // the third row is empty: one [CLS], not counted
  CHECK(ids[4] == mlm.pad);
  CHECK(targets[0] == 1);
  CHECK(targets[8] == 0);
  CHECK(std::count(targets.begin(), targets.end(), kIgnoreIndex) == 24 - 2);
  CHECK(b.inputs.token_types.i32()[13] == 1);
  // Bad lines name the file and line.
  std::ofstream(file) << "{\"text\": \"ab\"}\n";
  CHECK_THROWS_WITH(train::read_labelled(file), Catch::Contains(file + ":1") && Catch::Contains("needs \"label\""));
  std::ofstream(file) << "{\"text\": 3, \"label\": \"a\"}\n";
  CHECK_THROWS_WITH(train::read_labelled(file), Catch::Contains("needs \"text\", a string"));
  fs::remove_all(dir);
}

TEST_CASE("classification batches: every example once an epoch, shuffled by (seed, epoch), the same after a seek", "[encoder][classify]") {
  std::vector<train::EncodedExample> examples;
  for (int i = 0; i < 10; ++i) examples.push_back({{0, i, 1}, {0, 0, 0}, i % 2});
  train::ClassifyBatches a(examples, 2, 4, true, 9, 3, "test"), b(examples, 2, 4, true, 9, 3, "test");
  REQUIRE(a.batches_per_epoch() == 5);
  std::multiset<int> seen;
  std::vector<std::int32_t> first_epoch;
  for (int s = 0; s < 5; ++s) {
    const train::Batch x = a.next();
    for (int r = 0; r < 2; ++r) seen.insert(x.inputs.ids.i32()[r * 4 + 1]), first_epoch.push_back(x.inputs.ids.i32()[r * 4 + 1]);
  }
  CHECK(seen == std::multiset<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(first_epoch != std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});  // shuffled
  const train::Batch second = a.next();  // epoch 1, batch 0
  b.seek({1, 0});
  const train::Batch again = b.next();
  CHECK(std::equal(second.inputs.ids.i32(), second.inputs.ids.i32() + 8, again.inputs.ids.i32()));
  CHECK_THROWS_WITH(train::ClassifyBatches(examples, 11, 4, true, 9, 3, "few.jsonl"), Catch::Contains("fewer than one batch"));
}

TEST_CASE("a classifier's [CLS] logits: a padded row gives what the row alone gives", "[encoder][classify][mask]") {
  const auto backend = GENERATE(as<std::string>{}, "reference", "cpu");
  INFO(backend);
  ops::ScopedBackend scope(backend);
  Dims d = tiny_bert();
  d.set("n_labels", 3);
  auto padded = make_model("bert-tiny+classify", d), alone = make_model("bert-tiny+classify", d);
  padded->plan(1, 8);
  padded->init(3);
  Rng rng(3);  // unit-scale weights, so that what the padding would change shows
  for (std::size_t i = 0; i < padded->params().entries().size(); ++i) {
    std::vector<float> v(std::size_t(padded->params()[int(i)].numel()));
    const bool norm = padded->params().entries()[i].kind == ParamKind::norm;
    for (auto& x : v) x = float(norm ? 1 + 0.2 * rng.normal() : 0.5 * rng.normal());
    padded->params().write(int(i), v.data());
  }
  std::vector<std::int32_t> ids = {9, 3, 7, 1, 10, 0, 0, 0}, lengths = {5};
  ModelInputs in{TensorRef(ids.data(), DType::i32, {1, 8}), TensorRef(lengths.data(), DType::i32, {1}), {}};
  const auto with_padding = host(padded->forward(in));
  alone->plan(1, 5);
  alone->allocate();
  alone->params().copy_from(padded->params());
  const auto row = host(alone->forward(TensorRef(ids.data(), DType::i32, {1, 5})));
  for (int k = 0; k < 3; ++k) CHECK(with_padding[std::size_t(k)] == Approx(row[std::size_t(k)]).margin(1e-5));
  // Without the lengths the padding reaches [CLS] (the test can fail).
  const auto leaked = host(padded->forward(TensorRef(ids.data(), DType::i32, {1, 8})));
  CHECK(std::abs(leaked[0] - row[0]) + std::abs(leaked[1] - row[1]) > 1e-3);
}
