#include "gguf.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "../core/error.hpp"
#include "hf.hpp"  // model_family

namespace llmtk::train {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace gguf {

// IEEE half precision from a float, round to nearest even (what a f16 tensor or a Q8_0 scale
// holds). Written out because C++20 has no float16 type; subnormals and overflow handled.
std::uint16_t half_bits(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) return std::uint16_t(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));  // inf, NaN
  if (abs >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // rounds past 65504: inf
  if (abs < 0x38800000u) {                                         // below 2^-14: a subnormal half (or 0)
    const float scaled = std::bit_cast<float>(abs) * 16777216.0f;   // × 2^24: the subnormal's integer
    return std::uint16_t(sign | std::uint32_t(std::nearbyint(scaled)));
  }
  const std::uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);  // to nearest even at bit 13
  return std::uint16_t(sign | ((rounded - 0x38000000u) >> 13));
}

// Rows of each head reordered from half-split RoPE pairs (i, i + D/2) to adjacent pairs
// (2i, 2i + 1): new row h·D + 2i + j = old row h·D + j·D/2 + i.
std::vector<float> rope_pairs_adjacent(const std::vector<float>& w, std::int64_t heads, std::int64_t D, std::int64_t in) {
  std::vector<float> out(w.size());
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < D / 2; ++i)
      for (std::int64_t j = 0; j < 2; ++j)
        std::copy_n(w.data() + (h * D + j * (D / 2) + i) * in, in, out.data() + (h * D + 2 * i + j) * in);
  return out;
}

std::vector<char> q8_0_block(const float* x) {
  std::vector<char> out;
  float amax = 0;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(x[i]));
  const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
  const std::uint16_t h = half_bits(d);
  out.push_back(char(h & 0xff)), out.push_back(char(h >> 8));
  for (int i = 0; i < 32; ++i) out.push_back(char(std::int8_t(std::round(x[i] * id))));
  return out;
}

}  // namespace gguf

namespace {

using gguf::half_bits;
using gguf::rope_pairs_adjacent;

constexpr const char* kCommand = "export --gguf";
constexpr std::uint64_t kAlignment = 32;  // GGUF's default (general.alignment absent)

// GGUF's metadata value types and ggml's tensor types (the ids the format fixes).
enum class Value : std::uint32_t { u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9 };
enum class Ggml : std::uint32_t { f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30 };

// The file's header and metadata, then its tensor infos, built in memory (a few MB for a
// vocabulary), and the tensors' bytes streamed after them.
class Writer {
 public:
  void u32(std::uint32_t v) { put(v); }
  void u64(std::uint64_t v) { put(v); }
  void str(std::string_view s) {
    u64(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  void key(std::string_view k, Value t) { str(k), u32(std::uint32_t(t)), ++kv_; }
  void kv_u32(std::string_view k, std::uint32_t v) { key(k, Value::u32), u32(v); }
  void kv_f32(std::string_view k, float v) { key(k, Value::f32), put(v); }
  void kv_bool(std::string_view k, bool v) { key(k, Value::boolean), bytes_.push_back(char(v ? 1 : 0)); }
  void kv_str(std::string_view k, std::string_view v) { key(k, Value::string), str(v); }
  void kv_strings(std::string_view k, const std::vector<std::string>& v) {
    key(k, Value::array), u32(std::uint32_t(Value::string)), u64(v.size());
    for (const auto& s : v) str(s);
  }
  void kv_i32s(std::string_view k, const std::vector<std::int32_t>& v) {
    key(k, Value::array), u32(std::uint32_t(Value::i32)), u64(v.size());
    for (auto x : v) put(x);
  }
  std::vector<char> take() { return std::move(bytes_); }
  std::uint64_t kv_count() const { return kv_; }

 private:
  template <class T>
  void put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));  // little-endian hosts only (every llmtk target)
    bytes_.insert(bytes_.end(), b, b + sizeof(T));
  }
  std::vector<char> bytes_;
  std::uint64_t kv_ = 0;
};

// One tensor of the file: its GGUF name, extents innermost first, type, and how to get its values
// in llmtk's row-major order (permuted where the layout differs) when it is written, so that the
// export holds one tensor in memory at a time, not a second copy of the model.
struct Tensor {
  std::string name;
  std::vector<std::int64_t> ne;
  Ggml type;
  std::function<std::vector<float>()> values;
  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto e : ne) n *= std::uint64_t(e);
    return n;
  }
  std::uint64_t bytes() const {
    const std::uint64_t n = numel();
    return type == Ggml::f32 ? n * 4 : type == Ggml::q8_0 ? n / 32 * 34 : n * 2;
  }
};

std::uint64_t padded(std::uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

// The tensor's bytes in its type. Q8_0: per block of 32 along a row, d = max|x| / 127 stored as
// f16, then the 32 values round(x / d) as int8 (llama.cpp's reference quantizer).
std::vector<char> encode(const Tensor& t) {
  const std::vector<float> values = t.values();
  const std::size_t n = values.size();
  std::vector<char> out;
  auto put16 = [&](std::uint16_t h) { out.push_back(char(h & 0xff)), out.push_back(char(h >> 8)); };
  switch (t.type) {
    case Ggml::f32:
      out.resize(n * 4);
      std::memcpy(out.data(), values.data(), n * 4);
      break;
    case Ggml::f16:
      for (float v : values) put16(half_bits(v));
      break;
    case Ggml::bf16:
      for (float v : values) put16(bf16(v).bits);
      break;
    case Ggml::q8_0:
      for (std::size_t b = 0; b < n; b += 32) {
        const std::vector<char> block = gguf::q8_0_block(values.data() + b);
        out.insert(out.end(), block.begin(), block.end());
      }
      break;
  }
  return out;
}

std::vector<float> values_of(const Arena& p, const std::string& name) {
  const int id = p.find(name);
  LLMTK_CHECK(id >= 0, kCommand, "internal: no parameter '", name, "'");
  const TensorRef t = p[id];
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

}  // namespace

void export_gguf(const AnyModel& m, const std::string& path, const data::Tokenizer& tok, std::string_view type,
                 const data::ChatTemplate* chat) {
  // Refuse first, before anything is written.
  LLMTK_CHECK(std::find(std::begin(kGgufTypes), std::end(kGgufTypes), type) != std::end(kGgufTypes), kCommand,
              "--type ", type, " is not one of f32, f16, bf16, q8_0");
  const std::string family = model_family(m, kCommand, "GGUF's gpt2 architecture", "llama.cpp's llama architecture");
  LLMTK_CHECK(family != "mixtral", kCommand, "model '", m.name(), "' is a mixture of experts; this export writes the "
              "Llama family only so far (export --hf writes it as MixtralForCausalLM)");
  LLMTK_CHECK(family == "llama", kCommand, "model '", m.name(), "' is GPT-2 style (learned positions, LayerNorm, "
              "MLP<GELU>); this export writes the Llama family only so far (export --hf writes GPT-2)");
  LLMTK_CHECK(m.has_tag("swiglu"), kCommand, "model '", m.name(), "' has GeGLU; llama.cpp's llama architecture "
              "computes SwiGLU (silu), so the file would compute something else; nothing was written");
  LLMTK_CHECK(m.prefix() == 0, kCommand, "model '", m.name(), "' has prefix keys and values (prefix tuning), which GGUF "
              "has no place for; export them with --peft DIR; nothing was written");
  LLMTK_CHECK(m.soft_prompt() == 0, kCommand, "model '", m.name(), "' has a soft prompt (prompt tuning), which GGUF "
              "has no place for; export it with --peft DIR; nothing was written");
  for (const auto& e : m.params().entries())
    LLMTK_CHECK(e.name.find("_adapter.") == std::string::npos, kCommand, "model '", m.name(), "' carries adapters ('",
                e.name, "'); merge them first (a LoRA run: load it with its adapters merged, as export --hf --merge does)");
  LLMTK_CHECK(tok.kind() == "bpe", kCommand, "the run's tokenizer is a ", tok.kind(), " tokenizer; GGUF's gpt2 tokenizer "
              "model holds byte-level BPE only");
  const Dims& d = m.dims();
  const Ggml matrix_type = type == "f16" ? Ggml::f16 : type == "bf16" ? Ggml::bf16 : type == "q8_0" ? Ggml::q8_0 : Ggml::f32;
  if (matrix_type == Ggml::q8_0)
    LLMTK_CHECK(d.d_model % 32 == 0 && d.d_ff % 32 == 0 && (d.n_heads * d.head_dim()) % 32 == 0, kCommand,
                "q8_0 quantizes rows in blocks of 32; model.d_model = ", d.d_model, " and model.d_ff = ", d.d_ff,
                " must both be multiples of 32 (use --type f16 or f32)");

  // The tokenizer as Transformers writes it: vocabulary in byte-level form ("Ġthe"), merges, and
  // special tokens; llama.cpp's "gpt-2" pre-tokenizer is GPT-2's split.
  const fs::path tmp_tok = fs::path(path + ".tokenizer.tmp.json");
  json tj;
  try {
    tok.save(tmp_tok.string());
    std::ifstream in(tmp_tok);
    tj = json::parse(in);
  } catch (...) {
    fs::remove(tmp_tok);
    throw;
  }
  fs::remove(tmp_tok);
  const json& pre = tj["pre_tokenizer"];
  LLMTK_CHECK(pre.is_object() && pre.value("type", "") == "ByteLevel" && pre.value("use_regex", false), kCommand,
              "the tokenizer does not split text with GPT-2's pattern (its pre_tokenizer is ", pre.dump(),
              "); llama.cpp would tokenize differently, so nothing was written");
  const std::int64_t V = d.vocab;
  std::vector<std::string> tokens(static_cast<std::size_t>(V));
  std::vector<std::int32_t> types(std::size_t(V), 5);  // UNUSED until a token fills the id
  for (const auto& [text, id] : tj["model"]["vocab"].items()) {
    const auto i = id.get<std::int64_t>();
    LLMTK_CHECK(i >= 0 && i < V, kCommand, "token id ", i, " is outside model.vocab = ", V);
    tokens[std::size_t(i)] = text, types[std::size_t(i)] = 1;  // NORMAL
  }
  for (const auto& a : tj["added_tokens"]) {
    const auto i = a["id"].get<std::int64_t>();
    LLMTK_CHECK(i >= 0 && i < V, kCommand, "special token id ", i, " is outside model.vocab = ", V);
    tokens[std::size_t(i)] = a["content"].get<std::string>();
    types[std::size_t(i)] = a.value("special", false) ? 3 : 4;  // CONTROL or USER_DEFINED
  }
  const std::int64_t eot = tok.eot();  // fails, naming the fix, when the tokenizer has none
  for (std::int64_t i = 0; i < V; ++i)
    if (tokens[std::size_t(i)].empty()) tokens[std::size_t(i)] = "[PAD" + std::to_string(i) + "]";  // ids past the tokenizer
  std::vector<std::string> merges;
  for (const auto& mg : tj["model"]["merges"])
    merges.push_back(mg.is_string() ? mg.get<std::string>() : mg[0].get<std::string>() + " " + mg[1].get<std::string>());

  // The tensors, named and laid out as llama.cpp's llama architecture reads them (read through a
  // host copy when the model lives on a device).
  Arena host;
  if (m.params().device() != Device::host) host = m.params().host_copy();
  const Arena& p = m.params().device() == Device::host ? m.params() : host;
  const std::int64_t C = d.d_model, F = d.d_ff, D = d.head_dim(), H = d.n_heads, KV = d.n_kv_heads;
  std::vector<Tensor> ts;
  // rope_heads > 0: the rows of that many heads reordered for llama.cpp's RoPE pairs.
  auto matrix = [&](std::string name, std::string ours, std::int64_t out, std::int64_t in, std::int64_t rope_heads = 0) {
    LLMTK_CHECK(p.find(ours) >= 0, kCommand, "internal: no parameter '", ours, "'");
    ts.push_back({std::move(name), {in, out}, matrix_type, [&p, ours, rope_heads, D, in] {
                    auto v = values_of(p, ours);
                    return rope_heads ? rope_pairs_adjacent(v, rope_heads, D, in) : v;
                  }});
  };
  auto norm = [&](std::string name, std::string ours) {
    LLMTK_CHECK(p.find(ours) >= 0, kCommand, "internal: no parameter '", ours, "'");
    ts.push_back({std::move(name), {C}, Ggml::f32, [&p, ours] { return values_of(p, ours); }});
  };
  matrix("token_embd.weight", "embed.tokens", V, C);
  for (int l = 0; l < d.n_layers; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".", g = "blk." + std::to_string(l) + ".";
    norm(g + "attn_norm.weight", b + "attn.norm.weight");
    matrix(g + "attn_q.weight", b + "attn.wq", H * D, C, H);
    matrix(g + "attn_k.weight", b + "attn.wk", KV * D, C, KV);
    matrix(g + "attn_v.weight", b + "attn.wv", KV * D, C);
    matrix(g + "attn_output.weight", b + "attn.wo", C, H * D);
    norm(g + "ffn_norm.weight", b + "mlp.norm.weight");
    matrix(g + "ffn_gate.weight", b + "mlp.w_gate", F, C);
    matrix(g + "ffn_up.weight", b + "mlp.w_up", F, C);
    matrix(g + "ffn_down.weight", b + "mlp.w_down", C, F);
  }
  norm("output_norm.weight", "final_norm.weight");
  if (p.find("head.weight") >= 0) matrix("output.weight", "head.weight", V, C);  // absent: tied

  Writer w;
  w.kv_str("general.architecture", "llama");
  w.kv_str("general.name", m.name());
  w.kv_u32("general.file_type", matrix_type == Ggml::f32 ? 0 : matrix_type == Ggml::f16 ? 1 : matrix_type == Ggml::q8_0 ? 7 : 32);
  w.kv_u32("general.quantization_version", 2);
  w.kv_u32("llama.context_length", std::uint32_t(d.max_seq));
  w.kv_u32("llama.embedding_length", std::uint32_t(C));
  w.kv_u32("llama.block_count", std::uint32_t(d.n_layers));
  w.kv_u32("llama.feed_forward_length", std::uint32_t(F));
  w.kv_u32("llama.attention.head_count", std::uint32_t(H));
  w.kv_u32("llama.attention.head_count_kv", std::uint32_t(KV));
  w.kv_f32("llama.rope.freq_base", float(d.rope_base));
  w.kv_u32("llama.rope.dimension_count", std::uint32_t(D));
  w.kv_f32("llama.attention.layer_norm_rms_epsilon", float(d.norm_eps));
  w.kv_u32("llama.vocab_size", std::uint32_t(V));
  w.kv_str("tokenizer.ggml.model", "gpt2");
  w.kv_str("tokenizer.ggml.pre", "gpt-2");
  w.kv_strings("tokenizer.ggml.tokens", tokens);
  w.kv_i32s("tokenizer.ggml.token_type", types);
  w.kv_strings("tokenizer.ggml.merges", merges);
  // Without these llama.cpp assumes token 11; llmtk's documents are separated by <|endoftext|>,
  // and nothing is added before or after a text (as GPT-2).
  w.kv_u32("tokenizer.ggml.bos_token_id", std::uint32_t(eot));
  w.kv_u32("tokenizer.ggml.eos_token_id", std::uint32_t(chat ? chat->end_of_turn(tok) : eot));
  if (chat) w.kv_str("tokenizer.chat_template", chat->jinja());
  w.kv_bool("tokenizer.ggml.add_bos_token", false);
  w.kv_bool("tokenizer.ggml.add_eos_token", false);
  const std::uint64_t kv_count = w.kv_count();
  std::uint64_t offset = 0;
  std::vector<std::uint64_t> sizes;
  for (const auto& t : ts) {
    w.str(t.name), w.u32(std::uint32_t(t.ne.size()));
    for (auto e : t.ne) w.u64(std::uint64_t(e));
    w.u32(std::uint32_t(t.type)), w.u64(offset);
    sizes.push_back(t.bytes());
    offset += padded(t.bytes());
  }
  const std::vector<char> body = w.take();

  const fs::path final_path(path), tmp = fs::path(path + ".tmp");
  LLMTK_CHECK(!fs::is_directory(final_path), kCommand, "'", path, "' is a directory; give a file name such as model.gguf");
  struct RemoveUnlessDone {  // a failure below leaves no PATH.tmp behind
    const fs::path& p;
    bool done = false;
    ~RemoveUnlessDone() {
      std::error_code ec;
      if (!done) fs::remove(p, ec);
    }
  } cleanup{tmp};
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    LLMTK_CHECK(out.good(), kCommand, "cannot write '", tmp.string(), "'");
    auto write = [&](const void* data, std::size_t n) { out.write(static_cast<const char*>(data), std::streamsize(n)); };
    auto pad_to = [&](std::uint64_t at) {
      static const char zeros[kAlignment] = {};
      write(zeros, std::size_t(padded(at) - at));
    };
    const std::uint32_t magic = 0x46554747u, version = 3;  // "GGUF", little-endian
    const std::uint64_t n_tensors = ts.size();
    write(&magic, 4), write(&version, 4), write(&n_tensors, 8), write(&kv_count, 8);
    write(body.data(), body.size());
    pad_to(24 + body.size());
    for (std::size_t i = 0; i < ts.size(); ++i) {
      const std::vector<char> bytes = encode(ts[i]);
      LLMTK_CHECK(bytes.size() == sizes[i], kCommand, "internal: ", ts[i].name, " encodes to ", bytes.size(), " bytes");
      write(bytes.data(), bytes.size());
      pad_to(bytes.size());
    }
    out.flush();
    LLMTK_CHECK(out.good(), kCommand, "writing '", tmp.string(), "' failed (disk full?); nothing was written at '", path, "'");
  }
  fs::rename(tmp, final_path);
  cleanup.done = true;
}

}  // namespace llmtk::train
