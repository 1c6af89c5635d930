#include "config.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <iterator>
#include <functional>
#include <set>
#include <charconv>
#include <toml++/toml.h>

#include "../core/error.hpp"
#include "../core/text.hpp"

namespace llmtk {

struct ConfigFile::Impl {
  toml::table root;
  std::set<std::string> known;  // full dotted keys any read asked for
};

namespace {

std::string where(const std::string& file, const toml::node* n) {
  if (!n || !n->source().begin) return file;
  return cat(file, ":", n->source().begin.line);
}

// toml++ describes a bad value by the token it hoped for ("Error while parsing boolean: expected
// 'false', saw 'fas'" for `lr = fast`). When the line is `key = word`, say what is wrong in
// TOML's terms instead, and keep toml++'s words after it.
std::string describe_parse_error(std::string_view description, std::string_view text, std::size_t line) {
  std::size_t start = 0;
  for (std::size_t l = 1; l < line && start != std::string_view::npos; ++l) {
    start = text.find('\n', start);
    if (start != std::string_view::npos) ++start;
  }
  if (start == std::string_view::npos || start >= text.size()) return std::string(description);
  std::string_view row = text.substr(start, text.find('\n', start) - start);
  const auto eq = row.find('=');
  if (eq == std::string_view::npos || row.find('[') < eq) return std::string(description);
  auto trim = [](std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\r')) v.remove_suffix(1);
    return v;
  };
  const std::string_view key = trim(row.substr(0, eq));
  std::string_view value = trim(row.substr(eq + 1));
  if (const auto hash = value.find(" #"); hash != std::string_view::npos) value = trim(value.substr(0, hash));
  const bool word = !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '/';
  }) && std::isalpha(static_cast<unsigned char>(value.front()));
  if (key.empty() || !word) return std::string(description);
  return cat("'", value, "' is not a TOML value: a string needs quotes (", key, " = \"", value,
             "\"); numbers are written like 3e-4 and switches as true or false (", description, ")");
}

std::string join(std::string_view path, std::string_view key) {
  return path.empty() ? std::string(key) : cat(path, ".", key);
}

}  // namespace

ConfigFile::ConfigFile(const std::string& path) : impl_(new Impl), name_(path) {
  std::ifstream in(path, std::ios::binary);
  LLMTK_CHECK(in.good(), path, "cannot open the file");
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  try {
    impl_->root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    fail(cat(path, ":", b.line, ":", b.column), describe_parse_error(e.description(), text, b.line));
  }
}

ConfigFile ConfigFile::from_string(std::string_view text, std::string name) {
  ConfigFile f;
  f.impl_.reset(new Impl);
  f.name_ = std::move(name);
  try {
    f.impl_->root = toml::parse(text, f.name_);
  } catch (const toml::parse_error& e) {
    fail(cat(f.name_, ":", e.source().begin.line, ":", e.source().begin.column),
         describe_parse_error(e.description(), text, e.source().begin.line));
  }
  return f;
}

ConfigFile::~ConfigFile() = default;
ConfigFile::ConfigFile(ConfigFile&&) noexcept = default;

ConfigFile::Table ConfigFile::root() { return Table(this, &impl_->root, ""); }

std::string ConfigFile::Table::path() const { return path_; }

const void* ConfigFile::Table::find(std::string_view key) {
  file_->impl_->known.insert(join(path_, key));
  if (!node_) return nullptr;
  return static_cast<const toml::table*>(node_)->get(key);
}

bool ConfigFile::Table::has(std::string_view key) const {
  return node_ && static_cast<const toml::table*>(node_)->contains(key);
}

void ConfigFile::Table::bad(std::string_view key, const void* node, std::string_view what) const {
  fail(where(file_->name_, static_cast<const toml::node*>(node)), join(path_, key), " ", what);
}

std::int64_t ConfigFile::Table::integer(std::string_view key, std::int64_t fallback, std::int64_t min, std::int64_t max) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (!n) return fallback;
  // Checked before value<>(), which would convert a float (4e95) to an integer with undefined behaviour.
  if (!n->is_integer()) bad(key, n, "must be an integer");
  const auto v = n->value<std::int64_t>();
  if (!v) bad(key, n, "must be an integer");
  if (*v < min || *v > max) bad(key, n, cat("is ", *v, "; it must be between ", min, " and ", max));
  return *v;
}

double ConfigFile::Table::number(std::string_view key, double fallback, double min, double max) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (!n) return fallback;
  if (!n->is_number()) bad(key, n, "must be a number");
  const double v = *n->value<double>();
  if (!std::isfinite(v) || v < min || v > max)
    bad(key, n, cat("is ", v, "; it must be between ", min, " and ", max));
  return v;
}

bool ConfigFile::Table::boolean(std::string_view key, bool fallback) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (!n) return fallback;
  if (!n->is_boolean()) bad(key, n, "must be true or false");
  return *n->value<bool>();
}

std::string ConfigFile::Table::string(std::string_view key, std::string fallback,
                                      std::initializer_list<std::string_view> allowed) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (!n) return fallback;
  if (!n->is_string()) bad(key, n, "must be a string");
  std::string v = *n->value<std::string>();
  if (allowed.size() && std::find(allowed.begin(), allowed.end(), v) == allowed.end()) {
    std::string list;
    for (auto a : allowed) list += cat(list.empty() ? "" : ", ", "\"", a, "\"");
    bad(key, n, cat("is \"", v, "\"; allowed: ", list));
  }
  return v;
}

std::string ConfigFile::Table::string(std::string_view key, std::string fallback,
                                      const std::function<std::string(const std::string&)>& check) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (!n) return fallback;
  if (!n->is_string()) bad(key, n, "must be a string");
  std::string v = *n->value<std::string>();
  if (const std::string why = check(v); !why.empty()) bad(key, n, why);
  return v;
}

std::vector<std::string> ConfigFile::Table::strings(std::string_view key, std::vector<std::string> fallback) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (!n) return fallback;
  if (n->is_string()) return {*n->value<std::string>()};
  if (!n->is_array()) bad(key, n, "must be a string or an array of strings");
  std::vector<std::string> out;
  for (const auto& e : *n->as_array()) {
    if (!e.is_string()) bad(key, &e, "must hold only strings");
    out.push_back(*e.value<std::string>());
  }
  return out;
}

std::vector<std::int64_t> ConfigFile::Table::integers(std::string_view key, std::vector<std::int64_t> fallback,
                                                     std::int64_t min, std::int64_t max) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (!n) return fallback;
  if (!n->is_array()) bad(key, n, "must be a list of whole numbers, e.g. [1, 2]");
  std::vector<std::int64_t> out;
  for (const auto& e : *n->as_array()) {
    if (!e.is_integer()) bad(key, &e, "must hold only whole numbers");
    const std::int64_t v = *e.value<std::int64_t>();
    if (v < min || v > max) bad(key, &e, cat("holds ", v, "; each must be between ", min, " and ", max));
    out.push_back(v);
  }
  return out;
}

std::vector<std::pair<std::string, double>> ConfigFile::Table::numbers_by_name(std::string_view key, double min,
                                                                               double max) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (!n) return {};
  if (!n->is_table()) bad(key, n, "must be a table of numbers by name, e.g. { \"embed.*\" = 0.1 }");
  std::vector<std::pair<std::string, double>> out;
  for (const auto& [k, v] : *n->as_table()) {
    const std::string name(k.str());
    file_->impl_->known.insert(join(join(path_, key), name));  // its keys are names, not settings
    if (!v.is_number()) bad(key, &v, cat("[\"", name, "\"] must be a number"));
    const double x = *v.value<double>();
    if (!std::isfinite(x) || x < min || x > max)
      bad(key, &v, cat("[\"", name, "\"] is ", x, "; it must be between ", min, " and ", max));
    out.emplace_back(name, x);
  }
  return out;
}

std::vector<std::pair<std::string, std::vector<std::string>>> ConfigFile::Table::values_by_name(std::string_view key,
                                                                                               bool lists) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (!n) return {};
  if (!n->is_table()) bad(key, n, "must be a table of values by key, e.g. { \"optim.lr\" = 3e-4 }");
  auto text = [&](const std::string& name, const toml::node& v) -> std::string {
    if (auto s = v.value_exact<std::string>()) return *s;
    if (auto i = v.value_exact<std::int64_t>()) return std::to_string(*i);
    if (auto b = v.value_exact<bool>()) return *b ? "true" : "false";
    if (auto d = v.value_exact<double>()) {
      char buf[64];
      const auto r = std::to_chars(buf, buf + sizeof buf, *d);  // the shortest text that reads back exactly
      std::string t(buf, r.ptr);
      if (t.find_first_of(".eni") == std::string::npos) t += ".0";  // 2.0 stays a float in TOML
      return t;
    }
    bad(key, &v, cat("[\"", name, "\"] must be a string, a number or a boolean", lists ? " (or a list of them)" : ""));
  };
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  // toml++ keeps keys sorted; the file's order is the order a reader expects (axes vary in it).
  std::vector<std::pair<const toml::key*, const toml::node*>> items;
  for (const auto& [k, v] : *n->as_table()) items.emplace_back(&k, &v);
  std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    const auto &pa = a.first->source().begin, &pb = b.first->source().begin;
    return pa.line != pb.line ? pa.line < pb.line : pa.column < pb.column;
  });
  for (const auto& [k, v] : items) {
    const std::string name(k->str());
    file_->impl_->known.insert(join(join(path_, key), name));  // its keys are names, not settings
    std::vector<std::string> values;
    if (const auto* arr = v->as_array()) {
      if (!lists) bad(key, v, cat("[\"", name, "\"] must be one value, not a list"));
      for (const auto& e : *arr) values.push_back(text(name, e));
    } else {
      values.push_back(text(name, *v));
    }
    out.emplace_back(name, std::move(values));
  }
  return out;
}

ConfigFile::Table ConfigFile::Table::table(std::string_view key) {
  auto* n = static_cast<const toml::node*>(find(key));
  if (n && !n->is_table()) bad(key, n, "must be a table ([" + join(path_, key) + "])");
  return Table(file_, n ? n->as_table() : nullptr, join(path_, key));
}

void ConfigFile::reject_unknown_keys() {
  const auto& known = impl_->known;
  std::function<void(const toml::table&, const std::string&)> walk = [&](const toml::table& t, const std::string& path) {
    for (const auto& [k, v] : t) {
      const std::string full = join(path, k.str());
      if (!known.count(full)) {
        std::vector<std::string> here;
        std::string siblings;
        for (const auto& kn : known) {
          const auto dot = kn.rfind('.');
          const std::string parent = dot == std::string::npos ? "" : kn.substr(0, dot);
          if (parent != path) continue;
          siblings += cat(siblings.empty() ? "" : ", ", kn);
          here.push_back(kn);
        }
        const std::string best = closest(full, here);
        std::string hint = best.empty() ? std::string() : cat(" (did you mean ", best, "?)");
        fail(where(name_, &v), "unknown key ", full, hint, siblings.empty() ? "" : "; known keys here: ", siblings);
      }
      if (v.is_table()) walk(*v.as_table(), full);
    }
  };
  walk(impl_->root, "");
}

void ConfigFile::set(std::string_view assignment) {
  const auto eq = assignment.find('=');
  LLMTK_CHECK(eq != std::string_view::npos && eq > 0, "--set", "'", assignment,
              "' must be KEY=VALUE, e.g. optim.lr=3e-4");
  const std::string key(assignment.substr(0, eq));
  const std::string value(assignment.substr(eq + 1));
  toml::table parsed;
  try {
    parsed = toml::parse("v = " + value);
  } catch (const toml::parse_error&) {
    parsed = toml::table{{"v", value}};  // a bare word: take it as a string
  }
  // Walk or create the tables on the way to the key.
  toml::table* t = &impl_->root;
  std::size_t start = 0;
  for (auto dot = key.find('.'); dot != std::string::npos; start = dot + 1, dot = key.find('.', start)) {
    const std::string part = key.substr(start, dot - start);
    auto* node = t->get(part);
    if (!node) node = t->insert(part, toml::table{}).first->second.as_table();
    LLMTK_CHECK(node->is_table(), "--set", "'", key.substr(0, dot), "' is a value, not a table");
    t = node->as_table();
  }
  t->insert_or_assign(key.substr(start), *parsed.get("v"));
}

}  // namespace llmtk
