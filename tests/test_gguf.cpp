// Reading GGUF back (train/gguf.hpp: load_gguf): a file export_gguf wrote gives back the model —
// bit for bit in f32, within each type's rounding in f16, bf16 and q8_0 — and the tokenizer; a
// damaged or hostile file ends in an error naming the file, never a crash or an allocation of the
// size a header claims (every cut of a file, every claimed count, and seeded byte corruption).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <fstream>

#include "core/rng.hpp"
#include "data/tokenizer.hpp"
#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/gguf.hpp"
#include "train_fixtures.hpp"

using namespace llmtk;
using namespace train_fixtures;

namespace {

struct Exported {
  std::unique_ptr<AnyModel> model;
  std::unique_ptr<data::Tokenizer> tok;
  fs::path dir;
};

Exported exported_model() {
  Exported e;
  e.tok = data::load_tokenizer(corpus() + "/tokenizer.json");
  Dims d = find_arch("llama-tiny").dims;
  // Rows of 32 (q8_0's blocks); the vocabulary padded past the tokenizer's end, as a recipe may.
  d.d_model = 32, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 2, d.d_ff = 64, d.vocab = e.tok->vocab_size() + 5, d.max_seq = 16;
  e.model = make_model("llama-tiny", d);
  e.model->plan(1, 8);
  e.model->init(3);
  e.dir = tmp("gguf-read");
  return e;
}

std::vector<float> host_params(const AnyModel& m) {
  std::vector<float> v(std::size_t(m.params().numel()));
  copy_bytes(v.data(), Device::host, m.params().data(), m.params().device(), v.size() * sizeof(float));
  return v;
}

void write_bytes(const fs::path& p, const std::string& bytes) { std::ofstream(p, std::ios::binary) << bytes; }

}  // namespace

TEST_CASE("GGUF read back: the same model and tokenizer, exactly in f32 and within each type's rounding", "[gguf]") {
  auto e = exported_model();
  const auto want = host_params(*e.model);
  for (const char* type : {"f32", "f16", "bf16", "q8_0"}) {
    INFO(type);
    const auto path = (e.dir / (std::string(type) + ".gguf")).string();
    train::export_gguf(*e.model, path, *e.tok, type);
    CHECK(train::is_gguf_file(path));
    const auto g = train::load_gguf(path);
    CHECK(g.arch == "llama-tiny");
    CHECK(g.type == type);
    CHECK(g.dims.d_model == 32);
    CHECK(g.dims.n_kv_heads == 2);
    CHECK(g.dims.vocab == e.model->dims().vocab);
    REQUIRE(g.model->params().numel() == e.model->params().numel());
    const auto got = host_params(*g.model);
    // Half a unit in the last place of each weight (f16: 2^-11 relative, and 2^-25 absolute below
    // its normal range; bf16: 2^-8), or half a quantization step of the weights' scale (q8_0: the
    // init's weights reach about 0.1, so a step of at most 0.1 / 127).
    const std::string t = type;
    double worst = 0;  // error over the allowed error
    for (std::size_t i = 0; i < want.size(); ++i) {
      const double err = std::abs(double(got[i]) - double(want[i])), w = std::abs(double(want[i]));
      const double allowed = t == "f32" ? 0 : t == "f16" ? 0x1p-11 * w + 0x1p-25 : t == "bf16" ? 0x1p-8 * w : 0.5 * 0.1 / 127;
      worst = std::max(worst, allowed > 0 ? err / allowed : err > 0 ? INFINITY : 0);
    }
    INFO("largest error relative to the allowed: " << worst);
    CHECK(worst <= 1.0);
    // Norm weights stay f32: exact in every type.
    for (const auto& en : g.model->params().entries())
      if (en.kind == ParamKind::norm) {
        std::vector<float> a(std::size_t(en.numel)), b(a.size());
        g.model->params().read(g.model->params().find(en.name), a.data());
        e.model->params().read(e.model->params().find(en.name), b.data());
        CHECK(a == b);
      }
    // The tokenizer: the same ids for text and specials, the filler past its end left out.
    CHECK(g.tokenizer->vocab_size() == e.tok->vocab_size());
    CHECK(g.tokenizer->hash() == e.tok->hash());
    for (const char* text : {"In the beginning God created the heaven and the earth.", "  12 And Ephron, ÿ€ 1234!",
                             "<|endoftext|>And God said"})
      CHECK(g.tokenizer->encode(text, true) == e.tok->encode(text, true));
  }
  // The logits agree too (f32: exactly the same computation).
  const auto g = train::load_gguf((e.dir / "f32.gguf").string());
  std::vector<std::int32_t> ids = {1, 5, 9, 2, 7, 3, 8, 4};
  g.model->plan(1, 8);
  const TensorRef ti(ids.data(), DType::i32, {1, 8});
  std::vector<float> a(std::size_t(8 * e.model->dims().vocab)), b(a.size());
  const TensorRef la = e.model->forward({ti, {}, {}});
  copy_bytes(a.data(), Device::host, la.data, la.device, a.size() * 4);
  const TensorRef lb = g.model->forward({ti, {}, {}});
  copy_bytes(b.data(), Device::host, lb.data, lb.device, b.size() * 4);
  CHECK(a == b);
}

TEST_CASE("GGUF read back, GPT-2 (llama.cpp's gpt2 architecture): fused q|k|v, biases, positions, the tied head", "[gguf]") {
  const auto tok = data::load_tokenizer(corpus() + "/tokenizer.json");
  Dims d = find_arch("gpt2-tiny").dims;
  d.d_model = 32, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 4, d.d_ff = 64, d.vocab = tok->vocab_size(), d.max_seq = 16;
  d.bias = true;
  auto m = make_model("gpt2-tiny", d);
  m->plan(1, 8);
  m->init(5);
  // Biases of init are zero; give them values so that a misplaced one shows.
  Rng rng(9);
  for (std::size_t i = 0; i < m->params().entries().size(); ++i)
    if (m->params().entries()[i].kind == ParamKind::bias) {
      std::vector<float> v(std::size_t(m->params().entries()[i].numel));
      for (auto& x : v) x = float(0.1 * rng.normal());
      m->params().write(int(i), v.data());
    }
  const auto dir = tmp("gguf-gpt2");
  for (const char* type : {"f32", "q8_0"}) {
    INFO(type);
    const auto path = (dir / (std::string(type) + ".gguf")).string();
    train::export_gguf(*m, path, *tok, type);
    const auto g = train::load_gguf(path);
    CHECK(g.arch == "gpt2");
    CHECK(g.type == type);
    REQUIRE(g.model->params().entries().size() == m->params().entries().size());
    for (const auto& e : m->params().entries()) {
      INFO(e.name);
      std::vector<float> a(std::size_t(e.numel)), b(a.size());
      m->params().read(m->params().find(e.name), a.data());
      g.model->params().read(g.model->params().find(e.name), b.data());
      if (std::string(type) == "f32" || e.shape.size() == 1) {  // vectors stay f32
        CHECK(a == b);
      } else {
        double worst = 0;
        for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
        CHECK(worst <= 0.5 * 0.1 / 127);
      }
    }
  }
}

TEST_CASE("GGUF read back, mixture of experts: the router, stacked experts, tied and untied heads", "[gguf][moe]") {
  const auto tok = data::load_tokenizer(corpus() + "/tokenizer.json");
  for (const char* arch : {"moe-tiny", "mixtral-8x7b"}) {  // tied head, untied head (output.weight)
    INFO(arch);
    Dims d = find_arch(arch).dims.with("moe_experts", 4).with("moe_top_k", 2);
    d.d_model = 32, d.n_layers = 2, d.n_heads = 4, d.n_kv_heads = 2, d.d_ff = 64, d.vocab = tok->vocab_size(), d.max_seq = 16;
    auto m = make_model(arch, d);
    m->plan(1, 8);
    m->init(11);
    const auto dir = tmp(std::string("gguf-") + arch);
    for (const char* type : {"f32", "q8_0"}) {
      INFO(type);
      const auto path = (dir / (std::string(type) + ".gguf")).string();
      train::export_gguf(*m, path, *tok, type);
      const auto g = train::load_gguf(path);
      CHECK(g.arch == arch);
      CHECK(g.type == type);
      CHECK(g.dims.get_int("moe_experts") == 4);
      CHECK(g.dims.get_int("moe_top_k") == 2);
      REQUIRE(g.model->params().entries().size() == m->params().entries().size());
      for (const auto& e : m->params().entries()) {
        INFO(e.name);
        std::vector<float> a(std::size_t(e.numel)), b(a.size());
        m->params().read(m->params().find(e.name), a.data());
        g.model->params().read(g.model->params().find(e.name), b.data());
        // f32 exactly; in q8_0 vectors and the routers stay f32, the rest within half a step.
        if (std::string(type) == "f32" || e.shape.size() == 1 || e.name.ends_with("w_router")) {
          CHECK(a == b);
        } else {
          double worst = 0;
          for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
          CHECK(worst <= 0.5 * 0.1 / 127);
        }
      }
    }
    // The f32 file computes the same logits.
    const auto g = train::load_gguf((dir / "f32.gguf").string());
    g.model->plan(1, 8);
    std::vector<std::int32_t> ids = {1, 5, 9, 2, 7, 3, 8, 4};
    const TensorRef ti(ids.data(), DType::i32, {1, 8});
    std::vector<float> a(std::size_t(8 * d.vocab)), b(a.size());
    const TensorRef la = m->forward({ti, {}, {}});
    copy_bytes(a.data(), Device::host, la.data, la.device, a.size() * 4);
    const TensorRef lb = g.model->forward({ti, {}, {}});
    copy_bytes(b.data(), Device::host, lb.data, lb.device, b.size() * 4);
    CHECK(a == b);
  }
}

TEST_CASE("GGUF read: a damaged or hostile file is an error naming the file, never a crash", "[gguf][errors]") {
  auto e = exported_model();
  const auto good = (e.dir / "good.gguf").string();
  train::export_gguf(*e.model, good, *e.tok, "q8_0");
  const std::string bytes = file_bytes(good);
  const auto bad = e.dir / "bad.gguf";
  auto error_of = [&](const std::string& content) -> std::string {
    write_bytes(bad, content);
    try {
      train::load_gguf(bad.string());
    } catch (const std::exception& ex) {
      return ex.what();
    }
    return "";
  };
  // Every cut of the file: the header, the metadata, the tensor table and the data.
  int cuts = 0;
  for (std::size_t n = 0; n < bytes.size(); n += 1 + n / 7) {
    const std::string err = error_of(bytes.substr(0, n));
    INFO("cut at " << n << " of " << bytes.size());
    CHECK(err.find(bad.string()) != std::string::npos);
    ++cuts;
  }
  CHECK(cuts > 40);
  auto with = [&](std::size_t at, const void* v, std::size_t n) {
    std::string b = bytes;
    std::memcpy(b.data() + at, v, n);
    return b;
  };
  const std::uint32_t version = 7;
  const std::uint64_t huge = std::uint64_t(1) << 62;
  CHECK(error_of(with(0, "GGUG", 4)).find("is not a GGUF file") != std::string::npos);
  CHECK(error_of(with(4, &version, 4)).find("GGUF version 7; llmtk reads versions 2 and 3") != std::string::npos);
  CHECK(error_of(with(8, &huge, 8)).find("more than its") != std::string::npos);   // tensor count
  CHECK(error_of(with(16, &huge, 8)).find("more than its") != std::string::npos);  // key-value count
  // The first key's length claims more than the file holds.
  CHECK(error_of(with(24, &huge, 8)).find("runs past the end of the file") != std::string::npos);
  // Seeded corruption of single bytes and 8-byte words across the header and tables: each file
  // loads or fails with the file named.
  Rng rng(17);
  const std::size_t table_end = std::min<std::size_t>(bytes.size(), 24 + std::size_t(e.tok->vocab_size()) * 40);
  int errors = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string b = bytes;
    const std::size_t at = std::size_t(rng.next() % (table_end - 8));
    if (trial % 2) {
      const std::uint64_t v = rng.next() >> (rng.next() % 64);
      std::memcpy(b.data() + at, &v, 8);
    } else {
      b[at] = char(rng.next());
    }
    const std::string err = error_of(b);
    if (!err.empty()) {
      ++errors;
      INFO("trial " << trial << " at " << at << ": " << err);
      CHECK(err.find(bad.string()) != std::string::npos);
    }
  }
  CHECK(errors > 50);
  // Not a llama file: named.
  write_bytes(bad, "not gguf at all");
  CHECK_THROWS_WITH(train::load_gguf(bad.string()), Catch::Contains("is not a GGUF file"));
}
