// Reading TOML configuration (data prepare configs, training recipes) into plain structs. Every
// read names its key, type and allowed range, so a wrong value, a wrong type or an unknown key
// fails with FILE:LINE, the key and what is allowed ("did you mean filter.min_chars?"). toml++
// stays inside config.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmtk {

class ConfigFile {
 public:
  // Parses `path`; a syntax error fails with FILE:LINE:COLUMN.
  explicit ConfigFile(const std::string& path);
  // Parses TOML text (name is used in messages).
  static ConfigFile from_string(std::string_view text, std::string name);
  ~ConfigFile();
  ConfigFile(ConfigFile&&) noexcept;

  class Table {
   public:
    bool has(std::string_view key) const;
    std::int64_t integer(std::string_view key, std::int64_t fallback, std::int64_t min, std::int64_t max);
    double number(std::string_view key, double fallback, double min, double max);
    bool boolean(std::string_view key, bool fallback);
    // `allowed` empty: any string.
    std::string string(std::string_view key, std::string fallback, std::initializer_list<std::string_view> allowed = {});
    // `check` returns "" for a good value, else why it is not (the error adds FILE:LINE and the key).
    std::string string(std::string_view key, std::string fallback, const std::function<std::string(const std::string&)>& check);
    std::vector<std::string> strings(std::string_view key, std::vector<std::string> fallback);
    // A list of whole numbers, each within [min, max].
    std::vector<std::int64_t> integers(std::string_view key, std::vector<std::int64_t> fallback, std::int64_t min,
                                       std::int64_t max);
    // An inline table of numbers keyed by free-form strings ({ "embed.*" = 0.1 }), sorted by key;
    // each number within [min, max]. Absent: empty.
    std::vector<std::pair<std::string, double>> numbers_by_name(std::string_view key, double min, double max);
    // A table of values by free-form names ({ "optim.lr" = [1e-3, 3e-3], "model.arch" = "x" }),
    // in file order: each value as `--set` text (a string as is; numbers and booleans as TOML
    // writes them), a single value as a list of one. Strings, numbers and booleans only; `lists`
    // false: single values only. Absent: empty.
    std::vector<std::pair<std::string, std::vector<std::string>>> values_by_name(std::string_view key, bool lists);
    Table table(std::string_view key);  // an absent table reads as empty
    std::string path() const;            // "filter" or "" for the root

   private:
    friend class ConfigFile;
    Table(ConfigFile* file, const void* node, std::string path) : file_(file), node_(node), path_(std::move(path)) {}
    const void* find(std::string_view key);  // marks the key as known
    [[noreturn]] void bad(std::string_view key, const void* node, std::string_view what) const;
    ConfigFile* file_;
    const void* node_;  // toml::table*, or null for an absent table
    std::string path_;
  };

  Table root();
  // Fails on the first key the file has that no read asked for, suggesting the closest known key.
  void reject_unknown_keys();
  // Sets a value from the command line ("optim.lr=3e-4"); the value is parsed as TOML, and as a
  // string when it is not valid TOML (so name=run1 works without quotes).
  void set(std::string_view assignment);
  const std::string& name() const { return name_; }

 private:
  ConfigFile() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string name_;
};

}  // namespace llmtk
