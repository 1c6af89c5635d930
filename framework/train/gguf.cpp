#include "gguf.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "../core/durable.hpp"
#include "../core/error.hpp"
#include "../data/bpe.hpp"
#include "../models/registry.hpp"
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

// The inverse: adjacent pairs back to half-split (old row h·D + j·D/2 + i = new row h·D + 2i + j).
std::vector<float> rope_pairs_half_split(const std::vector<float>& w, std::int64_t heads, std::int64_t D, std::int64_t in) {
  std::vector<float> out(w.size());
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t i = 0; i < D / 2; ++i)
      for (std::int64_t j = 0; j < 2; ++j)
        std::copy_n(w.data() + (h * D + 2 * i + j) * in, in, out.data() + (h * D + j * (D / 2) + i) * in);
  return out;
}

// IEEE half to float, exactly (every half is a float).
float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) return std::bit_cast<float>(sign) + (sign ? -1.0f : 1.0f) * float(m) * 0x1p-24f;  // zero, subnormal
  if (e == 31) return std::bit_cast<float>(sign | 0x7f800000u | (m << 13));                    // inf, NaN
  return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
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

// One tensor of the file and the llmtk parameters it holds, the one table the writer and the reader
// both follow. Most hold one parameter; GPT-2's attn_qkv concatenates q, k and v along the rows, and
// an MoE layer's ffn_{gate,up,down}_exps stack the experts' matrices along a new outer dimension (a
// 3-d tensor, as llama.cpp's Mixtral layout). rope_heads > 0: each part's rows of that many heads
// are reordered for llama.cpp's RoPE pairs. Vectors (norms, biases) and MoE routers stay f32 (as
// llama.cpp's converter keeps them); matrices take the export's type.
struct Slot {
  std::string name;
  std::vector<std::string> ours;
  bool stacked = false;
  bool in_type = false;
  std::int64_t rope_heads = 0;
};

// The tensors of a model of the family "gpt2" (llama.cpp's gpt2 architecture), "llama" or "mixtral"
// (its llama architecture, without and with experts) at sizes d; `untied`: it has its own head.weight.
std::vector<Slot> layout(const Dims& d, const std::string& family, bool untied) {
  const bool gpt2 = family == "gpt2", moe = family == "mixtral";
  std::vector<Slot> s;
  auto vec = [&](std::string name, std::string ours) { s.push_back({std::move(name), {std::move(ours)}}); };
  auto mat = [&](std::string name, std::vector<std::string> ours, std::int64_t rope_heads = 0) {
    s.push_back({std::move(name), std::move(ours), false, true, rope_heads});
  };
  mat("token_embd.weight", {"embed.tokens"});
  if (gpt2) mat("position_embd.weight", {"embed.positions"});
  for (int l = 0; l < d.n_layers; ++l) {
    const std::string b = "blocks." + std::to_string(l) + ".", g = "blk." + std::to_string(l) + ".";
    vec(g + "attn_norm.weight", b + "attn.norm.weight");
    if (gpt2) {
      vec(g + "attn_norm.bias", b + "attn.norm.bias");
      mat(g + "attn_qkv.weight", {b + "attn.wq", b + "attn.wk", b + "attn.wv"});
      s.push_back({g + "attn_qkv.bias", {b + "attn.bq", b + "attn.bk", b + "attn.bv"}});
      mat(g + "attn_output.weight", {b + "attn.wo"});
      vec(g + "attn_output.bias", b + "attn.bo");
      vec(g + "ffn_norm.weight", b + "mlp.norm.weight");
      vec(g + "ffn_norm.bias", b + "mlp.norm.bias");
      mat(g + "ffn_up.weight", {b + "mlp.w_fc"});
      vec(g + "ffn_up.bias", b + "mlp.b_fc");
      mat(g + "ffn_down.weight", {b + "mlp.w_proj"});
      vec(g + "ffn_down.bias", b + "mlp.b_proj");
      continue;
    }
    mat(g + "attn_q.weight", {b + "attn.wq"}, d.n_heads);
    mat(g + "attn_k.weight", {b + "attn.wk"}, d.n_kv_heads);
    mat(g + "attn_v.weight", {b + "attn.wv"});
    mat(g + "attn_output.weight", {b + "attn.wo"});
    vec(g + "ffn_norm.weight", b + "mlp.norm.weight");
    if (moe) {
      vec(g + "ffn_gate_inp.weight", b + "mlp.w_router");
      for (const char* w : {"gate", "up", "down"}) {
        Slot e{g + "ffn_" + w + "_exps.weight", {}, true, true};
        for (int x = 0; x < d.get_int("moe_experts"); ++x)
          e.ours.push_back(b + "mlp.experts." + std::to_string(x) + ".w_" + w);
        s.push_back(std::move(e));
      }
    } else {
      mat(g + "ffn_gate.weight", {b + "mlp.w_gate"});
      mat(g + "ffn_up.weight", {b + "mlp.w_up"});
      mat(g + "ffn_down.weight", {b + "mlp.w_down"});
    }
  }
  vec("output_norm.weight", "final_norm.weight");
  if (gpt2) vec("output_norm.bias", "final_norm.bias");
  // llama.cpp's gpt2 reads output.weight always (a copy of a tied embedding); its llama ties the
  // head to token_embd when output.weight is absent.
  if (untied || gpt2) mat("output.weight", {untied ? "head.weight" : "embed.tokens"});
  return s;
}

// A slot's extents in llmtk's row-major order (outermost first), from its parts' shapes in `p`.
std::vector<std::int64_t> slot_shape(const Arena& p, const Slot& s, const char* what) {
  std::vector<std::int64_t> shape;
  for (const auto& name : s.ours) {
    const int id = p.find(name);
    LLMTK_CHECK(id >= 0, what, "internal: no parameter '", name, "' for ", s.name);
    const auto& e = p.entries()[std::size_t(id)];
    std::vector<std::int64_t> part(e.shape.begin(), e.shape.end());
    if (shape.empty()) {
      shape = part;
      if (s.stacked) shape.insert(shape.begin(), 1);
      continue;
    }
    const bool same = s.stacked ? std::equal(part.begin(), part.end(), shape.begin() + 1, shape.end())
                                : std::equal(part.begin() + 1, part.end(), shape.begin() + 1, shape.end());
    LLMTK_CHECK(same && part.size() + (s.stacked ? 1 : 0) == shape.size(), what, "internal: the parts of ", s.name,
                " differ in shape");
    shape[0] += s.stacked ? 1 : part[0];
  }
  return shape;
}

}  // namespace

void export_gguf(const AnyModel& m, const std::string& path, const data::Tokenizer& tok, std::string_view type,
                 const data::ChatTemplate* chat) {
  // Refuse first, before anything is written.
  LLMTK_CHECK(std::find(std::begin(kGgufTypes), std::end(kGgufTypes), type) != std::end(kGgufTypes), kCommand,
              "--type ", type, " is not one of f32, f16, bf16, q8_0");
  const std::string family = model_family(m, kCommand, "GGUF's gpt2 architecture", "llama.cpp's llama architecture");
  const bool gpt2 = family == "gpt2";  // llama.cpp's "gpt2" architecture; otherwise its "llama"
  LLMTK_CHECK(gpt2 || m.has_tag("swiglu"), kCommand, "model '", m.name(), "' has GeGLU; llama.cpp's llama architecture "
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
  std::vector<Tensor> ts;
  const std::int64_t D = d.head_dim();
  for (const Slot& slot : layout(d, family, p.find("head.weight") >= 0)) {
    std::vector<std::int64_t> ne = slot_shape(p, slot, kCommand);
    std::reverse(ne.begin(), ne.end());  // GGUF lists extents innermost first
    const Ggml t = slot.in_type ? matrix_type : Ggml::f32;
    LLMTK_CHECK(t != Ggml::q8_0 || ne[0] % 32 == 0, kCommand, "q8_0 quantizes rows in blocks of 32, and the rows of ",
                slot.name, " (", slot.ours[0], ") have ", ne[0], " values; use --type f16 or f32, or sizes that are "
                "multiples of 32");
    ts.push_back({slot.name, ne, t, [&p, slot, D] {
                    std::vector<float> out;
                    for (const auto& name : slot.ours) {
                      auto v = values_of(p, name);
                      if (slot.rope_heads) v = rope_pairs_adjacent(v, slot.rope_heads, D, std::int64_t(v.size()) / (slot.rope_heads * D));
                      out.insert(out.end(), v.begin(), v.end());
                    }
                    return out;
                  }});
  }

  Writer w;
  const std::string arch = gpt2 ? "gpt2" : "llama";
  w.kv_str("general.architecture", arch);
  w.kv_str("general.name", m.name());
  w.kv_u32("general.file_type", matrix_type == Ggml::f32 ? 0 : matrix_type == Ggml::f16 ? 1 : matrix_type == Ggml::q8_0 ? 7 : 32);
  w.kv_u32("general.quantization_version", 2);
  w.kv_u32(arch + ".context_length", std::uint32_t(d.max_seq));
  w.kv_u32(arch + ".embedding_length", std::uint32_t(d.d_model));
  w.kv_u32(arch + ".block_count", std::uint32_t(d.n_layers));
  w.kv_u32(arch + ".feed_forward_length", std::uint32_t(d.d_ff));  // each expert's, in an MoE
  w.kv_u32(arch + ".attention.head_count", std::uint32_t(d.n_heads));
  if (gpt2) {
    w.kv_f32("gpt2.attention.layer_norm_epsilon", float(d.norm_eps));
  } else {
    w.kv_u32("llama.attention.head_count_kv", std::uint32_t(d.n_kv_heads));
    w.kv_f32("llama.rope.freq_base", float(d.rope_base));
    w.kv_u32("llama.rope.dimension_count", std::uint32_t(D));
    w.kv_f32("llama.attention.layer_norm_rms_epsilon", float(d.norm_eps));
  }
  if (family == "mixtral") {  // llama.cpp routes as Mixtral: softmax, top-k, the k weights renormalised
    w.kv_u32("llama.expert_count", std::uint32_t(d.get_int("moe_experts")));
    w.kv_u32("llama.expert_used_count", std::uint32_t(d.get_int("moe_top_k")));
  }
  w.kv_u32(arch + ".vocab_size", std::uint32_t(d.vocab));
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
    durable::OutFile out(tmp.string(), kCommand);  // every write checked: a full disk is an error naming the file
    auto write = [&](const void* data, std::size_t n) { out.write(data, n); };
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
    out.commit();
  }
  fs::rename(tmp, final_path);
  cleanup.done = true;
}


// ---- reading -----------------------------------------------------------------------------------

namespace {

// A GGUF file read through bounds checks: every length and count is compared with what is left of
// the file before anything of that size is allocated, so a hostile header ends in an error.
class GgufReader {
 public:
  explicit GgufReader(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    LLMTK_CHECK(in_.good(), kWhat, "cannot read '", path, "'");
    std::error_code ec;
    size_ = fs::file_size(path, ec);
    LLMTK_CHECK(!ec, kWhat, "cannot read the size of '", path, "'");
  }
  std::uint64_t pos() const { return pos_; }
  std::uint64_t size() const { return size_; }
  void bytes(void* dst, std::uint64_t n) {
    need(n, "data");
    in_.read(static_cast<char*>(dst), std::streamsize(n));
    LLMTK_CHECK(in_.good(), kWhat, "'", path_, "': read error at offset ", pos_);
    pos_ += n;
  }
  template <class T>
  T get() {
    T v;
    bytes(&v, sizeof v);
    return v;
  }
  std::string str(const char* what) {
    const auto n = get<std::uint64_t>();
    need(n, what);
    std::string s(std::size_t(n), '\0');
    bytes(s.data(), n);
    return s;
  }
  // A metadata value of GGUF type `type`, as JSON; arrays of arrays to `depth` 4.
  json value(std::uint32_t type, const std::string& key, int depth = 0) {
    switch (type) {
      case 0: return get<std::uint8_t>();
      case 1: return get<std::int8_t>();
      case 2: return get<std::uint16_t>();
      case 3: return get<std::int16_t>();
      case 4: return get<std::uint32_t>();
      case 5: return get<std::int32_t>();
      case 6: return get<float>();
      case 7: return get<std::uint8_t>() != 0;
      case 8: return str("a string");
      case 9: {
        LLMTK_CHECK(depth < 4, kWhat, "'", path_, "': metadata '", key, "' nests arrays more than 4 deep");
        const auto elem = get<std::uint32_t>();
        const auto n = get<std::uint64_t>();
        need(n, "an array");  // every element takes at least one byte
        json a = json::array();
        for (std::uint64_t i = 0; i < n; ++i) a.push_back(value(elem, key, depth + 1));
        return a;
      }
      case 10: return get<std::uint64_t>();
      case 11: return get<std::int64_t>();
      case 12: return get<double>();
      default: fail(kWhat, "'", path_, "': metadata '", key, "' has the unknown value type ", type, " at offset ", pos_);
    }
  }
  void seek(std::uint64_t at) {
    LLMTK_CHECK(at <= size_, kWhat, "'", path_, "': offset ", at, " is past the end of the file (", size_, " bytes)");
    in_.clear();
    in_.seekg(std::streamoff(at));
    pos_ = at;
  }

  static constexpr const char* kWhat = "gguf";

 private:
  void need(std::uint64_t n, const char* what) {
    LLMTK_CHECK(n <= size_ - pos_, kWhat, "'", path_, "': ", what, " of ", n, " bytes at offset ", pos_, " runs past the end "
                "of the file (", size_, " bytes): the file is cut short or not GGUF");
  }
  std::string path_;
  std::ifstream in_;
  std::uint64_t size_ = 0, pos_ = 0;
};

struct TensorInfo {
  std::vector<std::uint64_t> ne;
  std::uint32_t type = 0;
  std::uint64_t offset = 0, numel = 0, bytes = 0;
  bool used = false;
};

}  // namespace

bool is_gguf_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.good() && std::memcmp(magic, "GGUF", 4) == 0;
}

GgufModel load_gguf(const std::string& path) {
  const char* what = GgufReader::kWhat;
  GgufReader r(path);
  char magic[4];
  r.bytes(magic, 4);
  LLMTK_CHECK(std::memcmp(magic, "GGUF", 4) == 0, what, "'", path, "' is not a GGUF file (it does not start with \"GGUF\")");
  const auto version = r.get<std::uint32_t>();
  LLMTK_CHECK(version == 2 || version == 3, what, "'", path, "' is GGUF version ", version, "; llmtk reads versions 2 and 3");
  const auto n_tensors = r.get<std::uint64_t>(), n_kv = r.get<std::uint64_t>();
  // Each key-value pair takes at least 12 bytes, each tensor info at least 24.
  LLMTK_CHECK(n_kv <= r.size() / 12 && n_tensors <= r.size() / 24, what, "'", path, "' claims ", n_kv, " metadata entries and ",
              n_tensors, " tensors, more than its ", r.size(), " bytes can hold");
  json meta = json::object();
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = r.str("a key");
    const auto type = r.get<std::uint32_t>();
    LLMTK_CHECK(!meta.contains(key), what, "'", path, "': metadata key '", key, "' appears twice");
    meta[key] = r.value(type, key);
  }
  std::map<std::string, TensorInfo> tensors;
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    const std::string name = r.str("a tensor name");
    TensorInfo t;
    const auto dims = r.get<std::uint32_t>();
    LLMTK_CHECK(dims >= 1 && dims <= 4, what, "'", path, "': tensor '", name, "' has ", dims, " dimensions (GGUF allows 1 to 4)");
    t.numel = 1;
    for (std::uint32_t k = 0; k < dims; ++k) {
      t.ne.push_back(r.get<std::uint64_t>());
      LLMTK_CHECK(t.ne.back() >= 1 && t.ne.back() <= r.size(), what, "'", path, "': tensor '", name, "' has the extent ",
                  t.ne.back(), ", larger than the file");
      t.numel *= t.ne.back();
      LLMTK_CHECK(t.numel <= r.size(), what, "'", path, "': tensor '", name, "' has more elements than the file has bytes");
    }
    t.type = r.get<std::uint32_t>();
    t.offset = r.get<std::uint64_t>();
    switch (t.type) {
      case 0: t.bytes = t.numel * 4; break;
      case 1: case 30: t.bytes = t.numel * 2; break;
      case 8:
        LLMTK_CHECK(t.ne[0] % 32 == 0, what, "'", path, "': q8_0 tensor '", name, "' has rows of ", t.ne[0], " (not a multiple of 32)");
        t.bytes = t.numel / 32 * 34;
        break;
      default:
        fail(what, "'", path, "': tensor '", name, "' has ggml type ", t.type, "; llmtk reads f32 (0), f16 (1), q8_0 (8) and "
             "bf16 (30), the types llmtk export --gguf writes");
    }
    LLMTK_CHECK(tensors.emplace(name, t).second, what, "'", path, "': tensor '", name, "' appears twice");
  }
  const std::uint64_t alignment = meta.contains("general.alignment") && meta["general.alignment"].is_number_unsigned()
                                      ? meta["general.alignment"].get<std::uint64_t>() : kAlignment;
  LLMTK_CHECK(alignment >= 1 && alignment <= 1024 && (alignment & (alignment - 1)) == 0, what, "'", path,
              "': general.alignment ", alignment, " is not a power of two up to 1024");
  const std::uint64_t data = (r.pos() + alignment - 1) / alignment * alignment;
  for (const auto& [name, t] : tensors)
    LLMTK_CHECK(t.offset % alignment == 0 && t.offset <= r.size() && data <= r.size() - t.offset &&
                    t.bytes <= r.size() - data - t.offset,
                what, "'", path, "': tensor '", name, "' (", t.bytes, " bytes at data offset ", t.offset,
                ") lies outside the file (", r.size(), " bytes) or is misaligned");

  // The llama architecture's hyper-parameters.
  auto text = [&](const char* key) {
    LLMTK_CHECK(meta.contains(key) && meta[key].is_string(), what, "'", path, "' has no string '", key, "'");
    return meta[key].get<std::string>();
  };
  auto number = [&](const std::string& key) {
    LLMTK_CHECK(meta.contains(key) && meta[key].is_number(), what, "'", path, "' has no number '", key, "'");
    return meta[key].get<double>();
  };
  auto count = [&](const std::string& key) {
    const double v = number(key);
    LLMTK_CHECK(v >= 1 && v <= double(1 << 30) && v == std::floor(v), what, "'", path, "': ", key, " = ", v, " is not a size");
    return int(v);
  };
  const std::string arch = text("general.architecture");
  LLMTK_CHECK(arch == "llama" || arch == "gpt2", what, "'", path, "' is llama.cpp's '", arch, "' architecture; llmtk reads "
              "the 'llama' and 'gpt2' architectures (as llmtk export --gguf writes them)");
  const bool gpt2 = arch == "gpt2", moe = !gpt2 && meta.contains("llama.expert_count");
  const bool untied = tensors.contains("output.weight") && !gpt2;
  LLMTK_CHECK(moe || !untied, what, "'", path, "' has an untied head (output.weight); llmtk's llama presets tie the head to "
              "the token embedding (its untied Llama-style presets are mixtures of experts)");
  GgufModel g;
  // The preset of each family, at the file's sizes; an MoE's by its head (as a Mixtral directory reads).
  g.arch = gpt2 ? "gpt2" : moe ? (untied ? "mixtral-8x7b" : "moe-tiny") : "llama-tiny";
  const std::string family = gpt2 ? "gpt2" : moe ? "mixtral" : "llama";
  Dims d = find_arch(g.arch).dims;
  d.d_model = count(arch + ".embedding_length"), d.n_layers = count(arch + ".block_count");
  d.d_ff = count(arch + ".feed_forward_length"), d.n_heads = count(arch + ".attention.head_count");
  d.n_kv_heads = meta.contains(arch + ".attention.head_count_kv") ? count(arch + ".attention.head_count_kv") : d.n_heads;
  d.max_seq = count(arch + ".context_length");
  if (gpt2) {
    d.norm_eps = number("gpt2.attention.layer_norm_epsilon"), d.bias = true;
    LLMTK_CHECK(d.n_kv_heads == d.n_heads, what, "'", path, "': GPT-2 has as many key/value heads as query heads");
  } else {
    d.rope_base = meta.contains("llama.rope.freq_base") ? number("llama.rope.freq_base") : 10000.0;
    d.norm_eps = number("llama.attention.layer_norm_rms_epsilon");
  }
  if (moe) {
    d.set("moe_experts", count("llama.expert_count")), d.set("moe_top_k", count("llama.expert_used_count"));
    LLMTK_CHECK(d.get("moe_top_k") <= d.get("moe_experts"), what, "'", path, "': llama.expert_used_count ",
                d.get_int("moe_top_k"), " is more than llama.expert_count ", d.get_int("moe_experts"));
  }
  LLMTK_CHECK(text("tokenizer.ggml.model") == "gpt2", what, "'", path, "' has the '", text("tokenizer.ggml.model"),
              "' tokenizer model; llmtk reads byte-level BPE ('gpt2')");
  LLMTK_CHECK(meta.contains("tokenizer.ggml.tokens") && meta["tokenizer.ggml.tokens"].is_array(), what, "'", path,
              "' has no tokenizer.ggml.tokens");
  const auto& tok_list = meta["tokenizer.ggml.tokens"];
  d.vocab = meta.contains(arch + ".vocab_size") ? count(arch + ".vocab_size") : int(tok_list.size());
  LLMTK_CHECK(d.n_heads > 0 && d.d_model % d.n_heads == 0 && d.n_heads % d.n_kv_heads == 0, what, "'", path, "': ",
              d.n_heads, " heads (", d.n_kv_heads, " for keys and values) do not tile a width of ", d.d_model);
  LLMTK_CHECK(!meta.contains("llama.rope.dimension_count") || count("llama.rope.dimension_count") == d.head_dim(), what, "'",
              path, "': RoPE over ", meta.value("llama.rope.dimension_count", 0), " of each head's ", d.head_dim(),
              " dimensions; llmtk rotates whole heads");
  g.dims = d;
  try {
    g.model = make_model(g.arch, d);  // checks the sizes against the architecture's rules, naming them
  } catch (const std::exception& e) {
    fail(what, "'", path, "': its sizes do not make a ", g.arch, ": ", e.what());
  }
  g.model->plan(1, 1);
  g.model->allocate();

  // The tensors, each converted to f32 in llmtk's layout and written into its parameter.
  std::map<std::uint32_t, int> types;
  // A tensor's values in f32, its extents checked (GGUF lists them innermost first: [out, in] is {in, out}).
  auto decode = [&](const std::string& name, std::vector<std::uint64_t> want) {
    auto it = tensors.find(name);
    LLMTK_CHECK(it != tensors.end(), what, "'", path, "' has no tensor '", name, "'");
    TensorInfo& t = it->second;
    std::reverse(want.begin(), want.end());
    LLMTK_CHECK(t.ne == want, what, "'", path, "': tensor '", name, "' has extents that do not match the metadata's sizes");
    std::vector<char> raw(std::size_t(t.bytes));
    r.seek(data + t.offset);
    r.bytes(raw.data(), t.bytes);
    std::vector<float> v(std::size_t(t.numel));
    for (std::size_t i = 0; i < v.size(); ++i) {
      std::uint16_t h;
      switch (t.type) {
        case 0: std::memcpy(&v[i], raw.data() + 4 * i, 4); break;
        case 1: std::memcpy(&h, raw.data() + 2 * i, 2), v[i] = gguf::half_to_float(h); break;
        case 30: std::memcpy(&h, raw.data() + 2 * i, 2), v[i] = std::bit_cast<float>(std::uint32_t(h) << 16); break;
        default: {  // q8_0: per 32 values an f16 scale, then 32 int8
          const char* block = raw.data() + i / 32 * 34;
          std::memcpy(&h, block, 2);
          v[i] = gguf::half_to_float(h) * float(std::int8_t(block[2 + i % 32]));
        }
      }
    }
    t.used = true;
    if (t.ne.size() >= 2) ++types[t.type];  // matrices and stacked experts
    return v;
  };
  // Each slot's parts written into their parameters; a parameter that two slots hold (GPT-2's tied
  // head, written out as output.weight) must get the same values from both.
  Arena& params = g.model->params();
  const std::vector<Slot> slots = layout(d, family, untied);
  std::map<std::string, int> holders;
  for (const Slot& slot : slots)
    for (const auto& ours : slot.ours) ++holders[ours];
  std::map<std::string, std::vector<float>> written;  // those held twice, as first read
  for (const Slot& slot : slots) {
    const std::vector<std::int64_t> shape = slot_shape(params, slot, what);
    const auto v = decode(slot.name, std::vector<std::uint64_t>(shape.begin(), shape.end()));
    const std::size_t n = v.size() / slot.ours.size();
    for (std::size_t k = 0; k < slot.ours.size(); ++k) {
      std::vector<float> part(v.begin() + std::ptrdiff_t(k * n), v.begin() + std::ptrdiff_t((k + 1) * n));
      if (slot.rope_heads)
        part = gguf::rope_pairs_half_split(part, slot.rope_heads, d.head_dim(), std::int64_t(n) / (slot.rope_heads * d.head_dim()));
      const std::string& ours = slot.ours[k];
      if (auto it = written.find(ours); it != written.end()) {
        LLMTK_CHECK(it->second == part, what, "'", path, "' has a ", slot.name, " that differs from the tensor holding '", ours,
                    "' (an untied head); llmtk's ", g.arch, " preset ties the head to the token embedding");
        continue;
      }
      params.write(params.find(ours), part.data());
      if (holders[ours] > 1) written.emplace(ours, std::move(part));
    }
  }
  for (const auto& [name, t] : tensors)
    LLMTK_CHECK(t.used, what, "'", path, "' has the tensor '", name, "', which ", g.arch, " at these sizes does not have");
  const std::uint32_t main_type = types.empty() ? 0 : std::max_element(types.begin(), types.end(), [](auto& a, auto& b) {
    return a.second < b.second;
  })->first;
  g.type = main_type == 1 ? "f16" : main_type == 30 ? "bf16" : main_type == 8 ? "q8_0" : "f32";

  // The tokenizer: tokens in byte-level form, CONTROL (3) and USER_DEFINED (4) ones special, the
  // UNUSED (5) filler past the tokenizer's end (export_gguf pads the vocabulary to model.vocab) left out.
  std::vector<std::string> toks;
  std::vector<bool> special;
  const json types_list = meta.value("tokenizer.ggml.token_type", json::array());
  LLMTK_CHECK(types_list.is_array() && types_list.size() == tok_list.size(), what, "'", path,
              "': tokenizer.ggml.token_type does not give one type per token");
  for (std::size_t i = 0; i < tok_list.size(); ++i) {
    LLMTK_CHECK(tok_list[i].is_string() && types_list[i].is_number_integer(), what, "'", path, "': token ", i,
                " is not a string with an integer type");
    toks.push_back(tok_list[i].get<std::string>());
    const int type = types_list[i].get<int>();
    special.push_back(type == 3 || type == 4);
  }
  while (!toks.empty() && types_list[toks.size() - 1].get<int>() == 5) toks.pop_back(), special.pop_back();
  std::vector<std::string> merges;
  if (meta.contains("tokenizer.ggml.merges"))
    for (const auto& m : meta["tokenizer.ggml.merges"]) {
      LLMTK_CHECK(m.is_string(), what, "'", path, "': tokenizer.ggml.merges holds a non-string");
      merges.push_back(m.get<std::string>());
    }
  LLMTK_CHECK(std::int64_t(toks.size()) <= d.vocab, what, "'", path, "': ", toks.size(), " tokens for a vocabulary of ", d.vocab);
  try {
    g.tokenizer = std::make_unique<data::BpeTokenizer>(data::BpeTokenizer::from_vocab(toks, special, merges, path));
  } catch (const std::exception& e) {
    fail(what, "'", path, "': its tokenizer cannot be read: ", e.what());
  }
  return g;
}

}  // namespace llmtk::train
