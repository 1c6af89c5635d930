// The registered presets, and the model.* keys of Dims.
#include "registry.hpp"

#include <charconv>
#include <cmath>

#include "../core/text.hpp"
#include "gpt2.hpp"
#include "llama.hpp"
#include "gemma.hpp"
#include "hybrid.hpp"
#include "moe.hpp"
#include "bert.hpp"
#include "seq2seq.hpp"
#include "t5.hpp"
#include "parallel.hpp"

namespace llmtk {

namespace {

// Architectures registered from outside the library (models/user.hpp), during static
// initialisation; read once, by the first call to architectures().
struct UserRegistry {
  std::vector<ArchInfo> archs;
  std::vector<std::string> skipped;
  bool read = false;
};
UserRegistry& user_registry() {
  static UserRegistry r;
  return r;
}

}  // namespace

bool register_architectures(std::vector<ArchInfo> archs, std::vector<std::string> skipped) {
  UserRegistry& r = user_registry();
  LLMTK_CHECK(!r.read, "register_architectures", "called after the registry was read; register from a header in "
              "LLMTK_ARCH_DIRS with LLMTK_REGISTER_ARCH (models/user.hpp)");
  for (auto& a : archs) r.archs.push_back(std::move(a));
  for (auto& s : skipped) r.skipped.push_back(std::move(s));
  return true;
}

const std::vector<std::string>& skipped_variants() {
  architectures();
  return user_registry().skipped;
}

const std::vector<ArchInfo>& architectures() {
  static const std::vector<ArchInfo> list = [] {
    std::vector<ArchInfo> all = {
        preset_entry<Gpt2Small>(),
        preset_entry<Gpt2Tiny>(),
        preset_entry<LlamaTiny>(),
        preset_entry<LlamaGegluTiny>(),
        preset_entry<Llama3_1B>(),
        preset_entry<ParallelTiny>(),
        preset_entry<MoeTiny>(),
        preset_entry<Mixtral8x7B>(),
        preset_entry<GemmaTiny>(),
        preset_entry<HybridTiny>(),
        preset_entry<BertTiny>(),
        preset_entry<BertBase>(),
        preset_entry<BertPreNormTiny>(),
        preset_entry<TransformerTiny>(),
        preset_entry<T5Tiny>(),
        preset_entry<T5Small>(),
    };
    UserRegistry& user = user_registry();
    user.read = true;
    for (auto& a : user.archs) {
      for (const auto& b : all)
        LLMTK_CHECK(b.name != a.name, "model.arch", "architecture '", a.name,
                    "' is registered twice; give one of the presets another name");
      all.push_back(std::move(a));
    }
    user.archs.clear();
    return all;
  }();
  return list;
}

// Every preset again with a score head, found by find_arch only (arch list shows the language models).
const std::vector<ArchInfo>& scored_architectures() {
  static const std::vector<ArchInfo> list = {
      preset_entry<Gpt2Small, true>(),  preset_entry<Gpt2Tiny, true>(),   preset_entry<LlamaTiny, true>(),
      preset_entry<LlamaGegluTiny, true>(), preset_entry<Llama3_1B, true>(), preset_entry<ParallelTiny, true>(),
      preset_entry<MoeTiny, true>(),    preset_entry<GemmaTiny, true>(),  preset_entry<HybridTiny, true>(),
  };
  return list;
}

// The encoder presets again with a classification head ("NAME+classify").
const std::vector<ArchInfo>& classifier_architectures() {
  static const std::vector<ArchInfo> list = {classifier_entry<BertTiny>(), classifier_entry<BertBase>(),
                                             classifier_entry<BertPreNormTiny>()};
  return list;
}

std::string_view lm_arch(std::string_view name) {
  if (name.ends_with(kScoreSuffix)) name.remove_suffix(kScoreSuffix.size());
  if (name.ends_with(kClassifySuffix)) name.remove_suffix(kClassifySuffix.size());
  return name;
}

const ArchInfo& find_arch(std::string_view name) {
  std::string known;
  const bool scored = name.ends_with(kScoreSuffix);
  const auto& list = scored ? scored_architectures() : name.ends_with(kClassifySuffix) ? classifier_architectures() : architectures();
  for (const auto& a : list) {
    if (a.name == name) return a;
    known += (known.empty() ? "" : ", ") + a.name;
  }
  std::vector<std::string> names;
  for (const auto& a : list) names.push_back(a.name);
  const std::string best = closest(name, names);
  fail("model.arch", "unknown architecture '", name, "'", best.empty() ? std::string() : cat(" (did you mean ", best, "?)"),
       "; registered: ", known,
       scored ? "" : cat(" (each also as NAME", kScoreSuffix, ": a reward or value model)"));
}

std::unique_ptr<AnyModel> make_model(std::string_view arch, const Dims& dims) {
  const ArchInfo& a = find_arch(arch);
  check_part_keys(a, dims, "model");
  return a.make(dims);
}

namespace {

struct DimKey {
  const char* name;
  enum { integer, real, boolean } type;
  int Dims::*i = nullptr;
  double Dims::*d = nullptr;
  bool Dims::*b = nullptr;
  const char* help;
};

// clang-format off
const DimKey kDimKeys[] = {
    {"d_model", DimKey::integer, &Dims::d_model, nullptr, nullptr, "width of the residual stream"},
    {"n_layers", DimKey::integer, &Dims::n_layers, nullptr, nullptr, "number of blocks"},
    {"n_heads", DimKey::integer, &Dims::n_heads, nullptr, nullptr, "query heads"},
    {"n_kv_heads", DimKey::integer, &Dims::n_kv_heads, nullptr, nullptr, "key/value heads"},
    {"d_ff", DimKey::integer, &Dims::d_ff, nullptr, nullptr, "feed-forward hidden width"},
    {"vocab", DimKey::integer, &Dims::vocab, nullptr, nullptr, "vocabulary size"},
    {"max_seq", DimKey::integer, &Dims::max_seq, nullptr, nullptr, "longest sequence"},
    {"rope_base", DimKey::real, nullptr, &Dims::rope_base, nullptr, "RoPE theta"},
    {"window", DimKey::integer, &Dims::window, nullptr, nullptr, "sliding attention window, 0 = none"},
    {"norm_eps", DimKey::real, nullptr, &Dims::norm_eps, nullptr, "norm epsilon"},
    {"bias", DimKey::boolean, nullptr, nullptr, &Dims::bias, "biases in linear maps and LayerNorm"},
};
// clang-format on

}  // namespace

// Every part key some registered architecture declares, each name once.
const std::vector<KeySpec>& registered_part_keys() {
  static const std::vector<KeySpec> keys = [] {
    std::vector<KeySpec> out;
    std::vector<const ArchInfo*> all;
    for (const auto& a : architectures()) all.push_back(&a);
    for (const auto& a : classifier_architectures()) all.push_back(&a);  // model.n_labels
    for (const ArchInfo* a : all)
      for (const auto& k : a->keys) {
        bool seen = false;
        for (const auto& o : out) seen = seen || o.name == k.name;
        if (!seen) out.push_back(k);
      }
    return out;
  }();
  return keys;
}
namespace {

const KeySpec* find_part_key(std::string_view key) {
  for (const auto& k : registered_part_keys())
    if (k.name == key) return &k;
  return nullptr;
}
std::string format_key_value(double v, KeyKind kind) {
  if (kind == KeyKind::boolean) return v != 0 ? "true" : "false";
  char buf[32];
  auto [p, ec] = kind == KeyKind::integer ? std::to_chars(buf, buf + sizeof buf, std::int64_t(v))
                                          : std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, p);
}

// A part key from text: its kind and range checked, named in errors with the part's help text.
void set_part_key(Dims& dims, const KeySpec& k, const std::string& full, std::string_view value) {
  const char* first = value.data();
  const char* last = value.data() + value.size();
  double v = 0;
  if (k.kind == KeyKind::boolean) {
    LLMTK_CHECK(value == "true" || value == "false", full, "'", value, "' is not true or false (", k.help, ")");
    v = value == "true";
  } else if (k.kind == KeyKind::integer) {
    std::int64_t i = 0;
    auto [p, ec] = std::from_chars(first, last, i);
    LLMTK_CHECK(ec == std::errc() && p == last, full, "'", value, "' is not an integer (", k.help, ")");
    v = double(i);
  } else {
    auto [p, ec] = std::from_chars(first, last, v);
    LLMTK_CHECK(ec == std::errc() && p == last && std::isfinite(v), full, "'", value, "' is not a finite number (",
                k.help, ")");
  }
  LLMTK_CHECK(v >= k.lo && v <= k.hi, full, "'", value, "' is out of range: ", k.help, " must be between ",
              format_key_value(k.lo, k.kind), " and ", format_key_value(k.hi, k.kind));
  LLMTK_CHECK(dims.set(k.name, v), full, "too many part keys in one model (at most ", std::size(dims.part), ")");
}

}  // namespace

KeyKind dim_kind(std::string_view key) {
  if (key.starts_with("model.")) key.remove_prefix(6);
  for (const auto& d : kDimKeys)
    if (key == d.name)
      return d.type == DimKey::integer ? KeyKind::integer : d.type == DimKey::real ? KeyKind::real : KeyKind::boolean;
  if (const KeySpec* k = find_part_key(key)) return k->kind;
  return KeyKind::integer;
}

void check_part_keys(const ArchInfo& arch, const Dims& dims, std::string_view where) {
  for (const auto& p : dims.part) {
    if (p.name[0] == 0) continue;
    bool known = false;
    for (const auto& k : arch.keys) known = known || k.name == std::string_view(p.name);
    if (known) continue;
    std::string own;
    for (const auto& k : arch.keys) own += cat(own.empty() ? "" : ", ", "model.", k.name);
    fail(where, "model.", p.name, " belongs to a part that ", arch.name, " does not have; ",
         own.empty() ? cat("its parts own no keys beyond the core ones") : cat("its parts' own keys are: ", own));
  }
}

void set_dim(Dims& dims, std::string_view key, std::string_view value) {
  const std::string full(key);
  if (key.starts_with("model.")) key.remove_prefix(6);
  const DimKey* k = nullptr;
  for (const auto& d : kDimKeys)
    if (key == d.name) k = &d;
  if (!k) {
    if (const KeySpec* part = find_part_key(key)) return set_part_key(dims, *part, full, value);
    std::string all;
    std::vector<std::string> names;
    for (const auto& d : kDimKeys) {
      all += cat(all.empty() ? "" : ", ", "model.", d.name);
      names.emplace_back(d.name);
    }
    std::string parts;
    for (const auto& p : registered_part_keys()) {
      parts += cat(parts.empty() ? "" : ", ", "model.", p.name);
      names.emplace_back(p.name);
    }
    const std::string best = closest(key, names);
    std::string hint = best.empty() ? std::string() : cat(" (did you mean model.", best, "?)");
    fail(full, "unknown key", hint, "; model keys are: ", all,
         parts.empty() ? std::string() : cat("; keys parts own (where the architecture has the part): ", parts));
  }
  const char* first = value.data();
  const char* last = value.data() + value.size();
  if (k->type == DimKey::integer) {
    int v = 0;
    auto [p, ec] = std::from_chars(first, last, v);
    LLMTK_CHECK(ec != std::errc::result_out_of_range, full, "'", value, "' is out of range (", k->help, ")");
    LLMTK_CHECK(ec == std::errc() && p == last, full, "'", value, "' is not an integer (", k->help, ")");
    dims.*(k->i) = v;
  } else if (k->type == DimKey::real) {
    // std::from_chars for double needs GCC 11+, which C++20 already requires here.
    double v = 0;
    auto [p, ec] = std::from_chars(first, last, v);
    LLMTK_CHECK(ec == std::errc() && p == last && std::isfinite(v), full, "'", value,
                "' is not a finite number (", k->help, ")");
    dims.*(k->d) = v;
  } else {
    LLMTK_CHECK(value == "true" || value == "false", full, "'", value,
                "' is not true or false (", k->help, ")");
    dims.*(k->b) = value == "true";
  }
}

Dims dims_with_overrides(const ArchInfo& arch, const std::vector<std::string>& sets, std::string_view command) {
  Dims dims = arch.dims;
  SetKeys set;
  for (const auto& s : sets) {
    const auto eq = s.find('=');
    LLMTK_CHECK(eq != std::string::npos, "--set", "'", s, "' must be KEY=VALUE, e.g. model.n_layers=6");
    const std::string key = s.substr(0, eq);
    LLMTK_CHECK(key.starts_with("model."), "--set", "'", key, "': ", command,
                " takes model.* keys only, e.g. --set model.n_layers=6");
    set_dim(dims, key, std::string_view(s).substr(eq + 1));
    set.push_back(key);
  }
  check_part_keys(arch, dims, "--set");
  arch.resolve(dims, set);
  return dims;
}

std::vector<std::pair<std::string, std::string>> dims_as_keys(const Dims& dims) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& k : kDimKeys) {
    std::string v;
    if (k.type == DimKey::integer) v = std::to_string(dims.*(k.i));
    else if (k.type == DimKey::boolean) v = dims.*(k.b) ? "true" : "false";
    else {
      char buf[32];
      auto [p, ec] = std::to_chars(buf, buf + sizeof buf, dims.*(k.d));
      v.assign(buf, p);
    }
    out.emplace_back(k.name, v);
  }
  for (const auto& p : dims.part)
    if (p.name[0] != 0) out.emplace_back(p.name, format_key_value(p.value, dim_kind(p.name)));
  return out;
}


}  // namespace llmtk
