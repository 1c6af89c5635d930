// The corpus preparation pipeline. Each stage reads the documents the previous one kept and
// records in the report what it did: counts, bytes, reasons and examples.
#include "prepare.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "../config/config.hpp"
#include "../core/error.hpp"
#include "../report/svg.hpp"
#include "bpe.hpp"
#include "char_tokenizer.hpp"
#include "clean.hpp"
#include "shard.hpp"

namespace llmtk::data {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

PrepareConfig read_prepare_config(ConfigFile& file) {
  PrepareConfig c;
  auto root = file.root();
  c.kind = root.string("kind", c.kind, {"text", "sft"});
  auto sft = root.table("sft");
  c.sft.chat_template = sft.string("template", c.sft.chat_template, {"chatml"});
  c.sft.train_on_prompt = sft.boolean("train_on_prompt", c.sft.train_on_prompt);
  c.sft.max_tokens = sft.integer("max_tokens", c.sft.max_tokens, 0, std::int64_t(1) << 30);
  auto in = root.table("input");
  c.input.paths = in.strings("paths", {});
  c.input.format = in.string("format", c.input.format, {"auto", "text", "jsonl"});
  c.input.text_field = in.string("text_field", c.input.text_field);
  c.input.missing_field = in.string("missing_field", c.input.missing_field, {"fail", "skip"});
  c.input.split = in.string("split", c.input.split, {"file", "paragraph", "line"});
  auto cl = root.table("clean");
  c.clean.invalid_utf8 = cl.string("invalid_utf8", c.clean.invalid_utf8, {"repair", "drop", "fail"});
  c.clean.nfc = cl.boolean("nfc", c.clean.nfc);
  c.clean.whitespace = cl.boolean("whitespace", c.clean.whitespace);
  auto f = root.table("filter");
  c.filter.min_chars = f.integer("min_chars", c.filter.min_chars, 0, std::int64_t(1) << 40);
  c.filter.max_chars = f.integer("max_chars", c.filter.max_chars, 1, std::int64_t(1) << 40);
  c.filter.max_symbol_ratio = f.number("max_symbol_ratio", c.filter.max_symbol_ratio, 0, 1e9);
  c.filter.max_repeated_lines = f.number("max_repeated_lines", c.filter.max_repeated_lines, 0, 1);
  c.filter.scripts = f.strings("scripts", {});
  for (const auto& s : c.filter.scripts)
    if (std::find(std::begin(kScriptNames), std::end(kScriptNames), s) == std::end(kScriptNames))
      fail(file.name(), "filter.scripts: unknown script '", s, "'; known: latin, cyrillic, greek, arabic, hebrew, cjk, kana, hangul, devanagari");
  c.filter.min_script_fraction = f.number("min_script_fraction", c.filter.min_script_fraction, 0, 1);
  auto d = root.table("dedup");
  c.dedup.exact = d.boolean("exact", c.dedup.exact);
  c.dedup.near = d.boolean("near", c.dedup.near);
  c.dedup.minhash.num_perm = int(d.integer("num_perm", c.dedup.minhash.num_perm, 1, 4096));
  c.dedup.minhash.bands = int(d.integer("bands", c.dedup.minhash.bands, 1, 4096));
  c.dedup.minhash.shingle_words = int(d.integer("shingle_words", c.dedup.minhash.shingle_words, 1, 64));
  c.dedup.minhash.threshold = d.number("threshold", c.dedup.minhash.threshold, 0, 1);
  LLMTK_CHECK(c.dedup.minhash.num_perm % c.dedup.minhash.bands == 0, file.name(), "dedup.num_perm (",
              c.dedup.minhash.num_perm, ") must be a multiple of dedup.bands (", c.dedup.minhash.bands, ")");
  auto sp = root.table("split");
  c.split.val_fraction = sp.number("val_fraction", c.split.val_fraction, 0, 0.5);
  c.split.seed = std::uint64_t(sp.integer("seed", std::int64_t(c.split.seed), 0, INT64_MAX));
  auto t = root.table("tokenizer");
  c.tokenizer.path = t.string("path", "");
  c.tokenizer.kind = t.string("kind", c.tokenizer.kind, {"bpe", "char"});
  c.tokenizer.vocab_size = int(t.integer("vocab_size", c.tokenizer.vocab_size, 258, 1 << 20));
  c.tokenizer.pattern = t.string("pattern", c.tokenizer.pattern);
  c.tokenizer.special = t.strings("special", {});
  // Span corruption's sentinels (train/span.hpp): <extra_id_0> ... <extra_id_{n-1}>, after the others.
  c.tokenizer.sentinels = int(t.integer("sentinels", 0, 0, 100000));
  for (int k = 0; k < c.tokenizer.sentinels; ++k) c.tokenizer.special.push_back("<extra_id_" + std::to_string(k) + ">");
  for (const auto& special : c.tokenizer.special)
    LLMTK_CHECK(!special.empty() && std::count(c.tokenizer.special.begin(), c.tokenizer.special.end(), special) == 1, file.name(),
                "tokenizer.special: '", special, "' ", special.empty() ? "is empty" : "is listed twice", "; list each special token once");
  auto o = root.table("output");
  c.output.dir = o.string("dir", "");
  c.output.shard_tokens = o.integer("shard_tokens", c.output.shard_tokens, 1024, std::int64_t(1) << 40);
  c.threads = int(root.integer("threads", 0, 0, 1024));
  return c;
}

namespace {

struct Doc {
  std::string text;
  std::string source;  // file:line
};

// A reason documents were dropped, with a few examples a reader can look at.
struct Drops {
  std::map<std::string, std::pair<std::int64_t, std::int64_t>> count;  // reason → (docs, bytes)
  std::map<std::string, ojson> examples;
  void add(const std::string& reason, const Doc& d, const std::string& detail = "") {
    auto& c = count[reason];
    ++c.first, c.second += std::int64_t(d.text.size());
    auto& ex = examples[reason];
    if (ex.is_null()) ex = ojson::array();
    if (ex.size() < 3) {
      std::string excerpt = d.text.substr(0, 300);
      repair_utf8(excerpt);  // a cut may split a character
      ex.push_back({{"source", d.source}, {"detail", detail}, {"text", excerpt}});
    }
  }
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LLMTK_CHECK(in.good(), "data prepare", "cannot read '", path, "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Splits plain text into documents: the whole file, paragraphs (blank-line separated) or lines.
void split_text(const std::string& file, const std::string& text, const std::string& mode, std::vector<Doc>& out) {
  if (mode == "file") {
    out.push_back({text, file + ":1"});
    return;
  }
  std::int64_t line = 1, start_line = 1;
  std::string cur;
  auto flush = [&] {
    if (cur.find_first_not_of(" \t\r\n") != std::string::npos) out.push_back({cur, cat(file, ":", start_line)});
    cur.clear();
  };
  std::size_t pos = 0;
  while (pos <= text.size()) {
    auto nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view l(text.data() + pos, nl - pos);
    const bool blank = l.find_first_not_of(" \t\r") == std::string_view::npos;
    if (mode == "line") {
      cur = std::string(l), start_line = line;
      flush();
    } else if (blank) {
      flush();
      start_line = line + 1;
    } else {
      if (cur.empty()) start_line = line;
      cur.append(l).append("\n");
    }
    pos = nl + 1, ++line;
  }
  flush();
}

void read_jsonl(const std::string& file, const std::string& text, const PrepareConfig::Input& in,
                std::vector<Doc>& out, Drops& drops) {
  std::int64_t line = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string_view l(text.data() + pos, nl - pos);
    pos = nl + 1, ++line;
    if (l.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(l);
    } catch (const nlohmann::json::exception& e) {
      fail(cat(file, ":", line), "not valid JSON: ", e.what());
    }
    if (!j.is_object() || !j.contains(in.text_field) || !j[in.text_field].is_string()) {
      LLMTK_CHECK(in.missing_field == "skip", cat(file, ":", line), "no string field \"", in.text_field,
                  "\" (set input.text_field to the field that holds the text, or input.missing_field = \"skip\")");
      drops.add("missing_field", Doc{std::string(l), cat(file, ":", line)});
      continue;
    }
    out.push_back({j[in.text_field].get<std::string>(), cat(file, ":", line)});
  }
}

ojson histogram(const std::vector<std::int64_t>& values, const std::string& unit) {
  // Powers-of-two bins: lengths span several orders of magnitude.
  std::map<int, std::int64_t> bins;
  for (auto v : values) bins[v <= 1 ? 0 : int(std::ceil(std::log2(double(v))))]++;
  ojson out = ojson::array();
  for (auto [b, n] : bins) out.push_back({{"upto", std::int64_t(1) << b}, {"count", n}, {"unit", unit}});
  return out;
}

std::string fmt_int(std::int64_t n) {
  std::string s = std::to_string(n), out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i && (s.size() - i) % 3 == 0 && s[0] != '-') out += ',';
    out += s[i];
  }
  return out;
}

std::string render_html(const ojson& r) {
  using report::escape_html;
  std::string b = "<h1>Corpus preparation report</h1><p>" + escape_html(r["config"]["output_dir"].get<std::string>()) +
                  " &middot; tokenizer " + escape_html(r["tokenizer"]["path"].get<std::string>()) + "</p>";
  b += "<h2>Summary</h2><table><tr><th>stage</th><th>documents</th><th>bytes</th></tr>";
  for (const auto& s : r["stages"])
    b += "<tr><td>" + escape_html(s["stage"].get<std::string>()) + "</td><td class=n>" + fmt_int(s["docs"]) +
         "</td><td class=n>" + fmt_int(s["bytes"]) + "</td></tr>";
  b += "</table>";
  b += "<p>train: " + fmt_int(r["split"]["train"]["docs"]) + " documents, " + fmt_int(r["split"]["train"]["tokens"]) +
       " tokens; validation: " + fmt_int(r["split"]["val"]["docs"]) + " documents, " +
       fmt_int(r["split"]["val"]["tokens"]) + " tokens; " + escape_html(r["tokens"]["bytes_per_token"].dump()) +
       " bytes per token.</p>";
  b += "<h2>Dropped, by reason</h2><table><tr><th>reason</th><th>documents</th><th>bytes</th><th>examples</th></tr>";
  for (const auto& d : r["dropped"]) {
    std::string ex;
    for (const auto& e : d["examples"])
      ex += "<div>" + escape_html(e["source"].get<std::string>()) + " " + escape_html(e["detail"].get<std::string>()) +
            "<pre>" + escape_html(e["text"].get<std::string>()) + "</pre></div>";
    b += "<tr><td>" + escape_html(d["reason"].get<std::string>()) + "</td><td class=n>" + fmt_int(d["docs"]) +
         "</td><td class=n>" + fmt_int(d["bytes"]) + "</td><td>" + ex + "</td></tr>";
  }
  if (r["dropped"].empty()) b += "<tr><td colspan=4>nothing was dropped</td></tr>";
  b += "</table><h2>Cleaning</h2><table>";
  for (auto it = r["cleaning"].begin(); it != r["cleaning"].end(); ++it)
    b += "<tr><td>" + escape_html(it.key()) + "</td><td class=n>" + fmt_int(it.value()) + "</td></tr>";
  b += "</table><h2>Duplicate clusters (largest first)</h2><table><tr><th>kind</th><th>copies</th><th>kept</th><th>dropped example</th></tr>";
  for (const auto& c : r["duplicates"]["clusters"])
    b += "<tr><td>" + escape_html(c["kind"].get<std::string>()) + "</td><td class=n>" + fmt_int(c["size"]) + "</td><td>" +
         escape_html(c["kept"].get<std::string>()) + "</td><td><pre>" + escape_html(c["example"].get<std::string>()) +
         "</pre></td></tr>";
  if (r["duplicates"]["clusters"].empty()) b += "<tr><td colspan=4>no duplicates found</td></tr>";
  b += "</table><h2>Distributions</h2><div class=charts>";
  auto bars = [](const ojson& h) {
    std::vector<report::Bar> v;
    for (const auto& x : h) v.push_back({"≤" + fmt_int(x["upto"]), x["count"].get<double>()});
    return v;
  };
  b += report::bar_chart("document length (characters)", bars(r["histograms"]["chars"]), " documents");
  b += report::bar_chart("document length (tokens)", bars(r["histograms"]["tokens"]), " documents");
  std::vector<report::Bar> top;
  for (const auto& t : r["tokens"]["top"]) top.push_back({t["text"].get<std::string>(), t["count"].get<double>()});
  if (top.size() > 30) top.resize(30);
  b += report::bar_chart("most frequent tokens", top, " times");
  b += "</div><h2>Top tokens</h2><table><tr><th>id</th><th>token</th><th>count</th></tr>";
  for (const auto& t : r["tokens"]["top"])
    b += "<tr><td class=n>" + std::to_string(t["id"].get<int>()) + "</td><td><code>" + escape_html(t["text"].get<std::string>()) +
         "</code></td><td class=n>" + fmt_int(t["count"]) + "</td></tr>";
  b += "</table><h2>Shards</h2><table><tr><th>file</th><th>documents</th><th>tokens</th></tr>";
  for (const auto& s : r["shards"])
    b += "<tr><td>" + escape_html(s["path"].get<std::string>()) + "</td><td class=n>" + fmt_int(s["docs"]) +
         "</td><td class=n>" + fmt_int(s["tokens"]) + "</td></tr>";
  b += "</table><h2>Time per stage</h2><table>";
  for (auto it = r["seconds"].begin(); it != r["seconds"].end(); ++it)
    b += "<tr><td>" + escape_html(it.key()) + "</td><td class=n>" + escape_html(it.value().dump()) + " s</td></tr>";
  b += "</table>";
  return report::html_page("llmtk data prepare report", b);
}

void write_file(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    LLMTK_CHECK(out.good(), "data prepare", "cannot write '", tmp, "'");
    out << content;
    LLMTK_CHECK(out.good(), "data prepare", "writing '", tmp, "' failed (disk full?)");
  }
  fs::rename(tmp, path);
}

std::string visible_token(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    if (c == ' ') out += "␣";
    else if (c == '\n') out += "\\n";
    else if (c < 0x20) out += "\\x" + std::to_string(c);
    else out += char(c);
  }
  repair_utf8(out);  // a byte-level token may be part of a character
  return out;
}

}  // namespace

std::vector<std::string> input_files(const std::vector<std::string>& paths) {
  std::vector<std::string> files;
  for (const auto& p : paths) {
    LLMTK_CHECK(fs::exists(p), "data prepare", "input '", p, "' does not exist");
    if (fs::is_directory(p)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file()) found.push_back(e.path().string());
      std::sort(found.begin(), found.end());
      LLMTK_CHECK(!found.empty(), "data prepare", "input directory '", p, "' holds no files");
      files.insert(files.end(), found.begin(), found.end());
    } else {
      files.push_back(p);
    }
  }
  return files;
}

PrepareSummary prepare(const PrepareConfig& c, const std::function<void(const std::string&)>& log) {
  if (c.kind == "sft") return prepare_sft(c, log);
  using clock = std::chrono::steady_clock;
  LLMTK_CHECK(!c.input.paths.empty(), "data prepare", "no input: set input.paths (files or directories)");
  LLMTK_CHECK(!c.output.dir.empty(), "data prepare", "no output directory: set output.dir");
  fs::create_directories(c.output.dir);
  ojson r;
  r["config"] = {{"inputs", c.input.paths}, {"output_dir", c.output.dir}, {"split", c.input.split},
                 {"filter", {{"min_chars", c.filter.min_chars}, {"max_chars", c.filter.max_chars},
                             {"max_symbol_ratio", c.filter.max_symbol_ratio},
                             {"max_repeated_lines", c.filter.max_repeated_lines}, {"scripts", c.filter.scripts},
                             {"min_script_fraction", c.filter.min_script_fraction}}},
                 {"dedup", {{"exact", c.dedup.exact}, {"near", c.dedup.near}, {"threshold", c.dedup.minhash.threshold}}},
                 {"val_fraction", c.split.val_fraction}};
  r["stages"] = ojson::array();
  r["seconds"] = ojson::object();
  Drops drops;
  auto stage = [&](const std::string& name, const std::vector<Doc>& docs) {
    std::int64_t bytes = 0;
    for (const auto& d : docs) bytes += std::int64_t(d.text.size());
    r["stages"].push_back({{"stage", name}, {"docs", docs.size()}, {"bytes", bytes}});
    log(cat(name, ": ", docs.size(), " documents, ", bytes, " bytes"));
  };
  auto t0 = clock::now();
  auto lap = [&](const std::string& name) {
    const auto now = clock::now();
    r["seconds"][name] = std::round(std::chrono::duration<double>(now - t0).count() * 1000) / 1000;
    t0 = now;
  };

  // 1. Collect.
  std::vector<Doc> docs;
  const auto files = input_files(c.input.paths);
  for (const auto& f : files) {
    const std::string text = read_file(f);
    const bool jsonl = c.input.format == "jsonl" ||
                       (c.input.format == "auto" && (f.ends_with(".jsonl") || f.ends_with(".json")));
    if (jsonl) read_jsonl(f, text, c.input, docs, drops);
    else split_text(f, text, c.input.split, docs);
  }
  r["files"] = files.size();
  stage("collected", docs);
  lap("collect");

  // 2. Clean.
  std::int64_t utf8_docs = 0, utf8_seqs = 0, nfc_docs = 0, controls = 0;
  std::vector<Doc> clean;
  for (auto& d : docs) {
    std::int64_t bad = 0;
    if (c.clean.invalid_utf8 == "fail") {
      std::string probe = d.text;
      bad = repair_utf8(probe);
      LLMTK_CHECK(bad == 0, d.source, "invalid UTF-8 (", bad, " bad sequences); set clean.invalid_utf8 = \"repair\" or \"drop\"");
    } else {
      std::string repaired = d.text;
      bad = repair_utf8(repaired);
      if (bad && c.clean.invalid_utf8 == "drop") {
        drops.add("invalid_utf8", d, cat(bad, " invalid sequences"));
        continue;
      }
      if (bad) d.text.swap(repaired), ++utf8_docs, utf8_seqs += bad;
    }
    if (c.clean.nfc && to_nfc(d.text)) ++nfc_docs;
    if (c.clean.whitespace) controls += normalize_whitespace(d.text);
    clean.push_back(std::move(d));
  }
  docs.swap(clean);
  r["cleaning"] = {{"documents with invalid UTF-8 repaired", utf8_docs}, {"invalid UTF-8 sequences replaced", utf8_seqs},
                   {"documents changed by NFC", nfc_docs}, {"control characters removed", controls}};
  stage("cleaned", docs);
  lap("clean");

  // 3. Filter.
  std::vector<Doc> kept;
  for (auto& d : docs) {
    const TextStats s = text_stats(d.text);
    const double symbol_ratio = double(s.symbols) / double(std::max<std::int64_t>(s.letters, 1));
    const double repeated = s.lines ? double(s.repeated_lines) / double(s.lines) : 0.0;
    if (s.chars < c.filter.min_chars) drops.add("too_short", d, cat(s.chars, " characters"));
    else if (s.chars > c.filter.max_chars) drops.add("too_long", d, cat(s.chars, " characters"));
    else if (symbol_ratio > c.filter.max_symbol_ratio) drops.add("symbol_ratio", d, cat("symbols/letters = ", symbol_ratio));
    else if (repeated > c.filter.max_repeated_lines) drops.add("repeated_lines", d, cat(s.repeated_lines, " of ", s.lines, " lines repeat"));
    else if (!c.filter.scripts.empty() && script_fraction(s, c.filter.scripts) < c.filter.min_script_fraction)
      drops.add("script", d, cat(script_fraction(s, c.filter.scripts), " of letters in the allowed scripts"));
    else kept.push_back(std::move(d));
  }
  docs.swap(kept);
  stage("filtered", docs);
  lap("filter");

  // 4. Deduplicate: exact (hash of the cleaned text), then near (MinHash + LSH).
  ojson clusters = ojson::array();
  std::int64_t exact_dups = 0, near_dups = 0;
  if (c.dedup.exact) {
    std::unordered_map<std::uint64_t, std::size_t> first;  // hash → index in `kept`
    std::vector<std::int64_t> copies;
    kept.clear();
    for (auto& d : docs) {
      Fnv1a h;
      h.add(d.text);
      auto [it, fresh] = first.emplace(h.h, kept.size());
      if (fresh) {
        kept.push_back(std::move(d));
        copies.push_back(1);
        continue;
      }
      ++copies[it->second], ++exact_dups;
      drops.add("exact_duplicate", d, "same text as " + kept[it->second].source);
    }
    for (std::size_t i = 0; i < kept.size(); ++i)
      if (copies[i] > 1)
        clusters.push_back({{"kind", "exact"}, {"size", copies[i]}, {"kept", kept[i].source}, {"example", kept[i].text.substr(0, 200)}});
    docs.swap(kept);
  }
  if (c.dedup.near) {
    std::vector<std::string_view> views;
    for (const auto& d : docs) views.push_back(d.text);
    const auto rep = near_duplicate_clusters(views, c.dedup.minhash);
    std::vector<std::int64_t> size(docs.size(), 0);
    for (auto x : rep) ++size[x];
    kept.clear();
    for (std::size_t i = 0; i < docs.size(); ++i) {
      if (rep[i] == i) continue;
      ++near_dups;
      drops.add("near_duplicate", docs[i], "similar to " + docs[rep[i]].source);
    }
    for (std::size_t i = 0; i < docs.size(); ++i)
      if (size[i] > 1)
        clusters.push_back({{"kind", "near"}, {"size", size[i]}, {"kept", docs[i].source}, {"example", docs[i].text.substr(0, 200)}});
    for (std::size_t i = 0; i < docs.size(); ++i)
      if (rep[i] == i) kept.push_back(std::move(docs[i]));
    docs.swap(kept);
  }
  std::stable_sort(clusters.begin(), clusters.end(), [](const ojson& a, const ojson& b) { return a["size"] > b["size"]; });
  if (clusters.size() > 20) clusters.erase(clusters.begin() + 20, clusters.end());
  for (auto& cl : clusters) {
    std::string e = cl["example"];
    repair_utf8(e);
    cl["example"] = e;
  }
  r["duplicates"] = {{"exact_dropped", exact_dups}, {"near_dropped", near_dups}, {"clusters", clusters}};
  stage("deduplicated", docs);
  lap("dedup");

  r["dropped"] = ojson::array();
  for (const auto& [reason, n] : drops.count)
    r["dropped"].push_back({{"reason", reason}, {"docs", n.first}, {"bytes", n.second}, {"examples", drops.examples[reason]}});

  const std::string report_json = (fs::path(c.output.dir) / "report.json").string();
  const std::string report_html = (fs::path(c.output.dir) / "report.html").string();
  if (docs.empty()) {
    r["error"] = "no documents left";
    write_file(report_json, r.dump(2));
    std::string why;
    for (const auto& [reason, n] : drops.count) why += cat(why.empty() ? "" : ", ", reason, " ", n.first);
    fail("data prepare", "no documents left after cleaning, filtering and deduplication (dropped: ",
         why.empty() ? "none; the inputs are empty" : why, "); see ", report_json,
         " for examples, and loosen [filter] (e.g. filter.min_chars)");
  }

  // 5. Split train/validation by a seeded hash of the text: stable if the inputs are reordered.
  std::vector<const Doc*> train, val;
  for (const auto& d : docs) {
    Fnv1a h;
    h.add(std::to_string(c.split.seed));
    h.add(d.text);
    const double u = double(h.h >> 11) / 9007199254740992.0;
    (u < c.split.val_fraction ? val : train).push_back(&d);
  }
  if (val.empty() && c.split.val_fraction > 0 && train.size() > 1) val.push_back(train.back()), train.pop_back();
  lap("split");

  // 6. The tokenizer: given, or trained on the training split.
  std::unique_ptr<Tokenizer> tok;
  std::string tok_path = c.tokenizer.path;
  if (!tok_path.empty()) {
    // A given tokenizer is saved into the output as well: the prepared folder is self-contained,
    // as `llmtk train` expects (data.dir/tokenizer.json), and no later change to the source
    // tokenizer can break the shards.
    tok = load_tokenizer(tok_path);
    for (const auto& sp : c.tokenizer.special)
      if (!tok->special(sp)) tok->add_special(sp);
    const std::string copy = (fs::path(c.output.dir) / "tokenizer.json").string();
    tok->save(copy);
    LLMTK_CHECK(load_tokenizer(copy)->hash() == tok->hash(), "data prepare", "the tokenizer from '", tok_path,
                "' does not read back the same from ", copy, "; report this as a bug");
    log(cat("using the ", tok->kind(), " tokenizer from ", tok_path, " (vocab ", tok->vocab_size(), "), saved as ", copy));
    tok_path = copy;
  } else {
    std::vector<std::string> texts;
    for (const auto* d : train) texts.push_back(d->text);
    if (c.tokenizer.kind == "char") {
      std::vector<std::string> specials = {std::string(kEndOfText)};  // fixed at training: ids come before unknown's
      for (const auto& sp : c.tokenizer.special)
        if (sp != kEndOfText) specials.push_back(sp);
      tok = std::make_unique<CharTokenizer>(CharTokenizer::train(texts, specials));
    } else {
      BpeTrainOptions o;
      o.vocab_size = c.tokenizer.vocab_size, o.pattern = c.tokenizer.pattern;
      tok = std::make_unique<BpeTokenizer>(BpeTokenizer::train(texts, o));
    }
    for (const auto& sp : c.tokenizer.special)
      if (!tok->special(sp)) tok->add_special(sp);
    tok_path = (fs::path(c.output.dir) / "tokenizer.json").string();
    tok->save(tok_path);
    log(cat("trained a ", tok->kind(), " tokenizer: vocab ", tok->vocab_size(), " -> ", tok_path));
  }
  r["tokenizer"] = {{"path", tok_path}, {"kind", tok->kind()}, {"vocab_size", tok->vocab_size()},
                    {"hash", std::to_string(tok->hash())}};
  lap("tokenizer");

  // 7. Tokenize in parallel (the tokenizer is safe to share), then write shards in order.
  auto encode_all = [&](const std::vector<const Doc*>& set) {
    std::vector<std::vector<TokenId>> out(set.size());
    const unsigned n = c.threads > 0 ? unsigned(c.threads) : std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> pool;
    for (unsigned w = 0; w < n; ++w)
      pool.emplace_back([&, w] {
        for (std::size_t i = w; i < set.size(); i += n) out[i] = tok->encode(set[i]->text);
      });
    for (auto& t : pool) t.join();
    return out;
  };
  PrepareSummary sum;
  sum.docs_in = r["stages"][0]["docs"];
  sum.docs_kept = std::int64_t(docs.size());
  std::vector<std::int64_t> doc_chars, doc_tokens;
  std::vector<std::int64_t> freq(std::size_t(tok->vocab_size()), 0);
  std::int64_t bytes_total = 0, tokens_total = 0;
  r["shards"] = ojson::array();
  auto write_split = [&](const std::string& name, const std::vector<const Doc*>& set, std::vector<std::string>& paths) {
    const auto enc = encode_all(set);
    std::int64_t tokens = 0;
    std::unique_ptr<ShardWriter> w;
    auto finish = [&] {
      if (!w) return;
      w->close();
      r["shards"].push_back({{"path", w->path()}, {"docs", w->documents()}, {"tokens", w->tokens()}});
      paths.push_back(w->path());
      w.reset();
    };
    for (std::size_t i = 0; i < set.size(); ++i) {
      if (!w || std::int64_t(w->tokens()) >= c.output.shard_tokens) {
        finish();
        char nm[64];
        std::snprintf(nm, sizeof nm, "%s_%03zu.bin", name.c_str(), paths.size());
        w = std::make_unique<ShardWriter>((fs::path(c.output.dir) / nm).string(), *tok);
      }
      w->add_document(enc[i]);
      tokens += std::int64_t(enc[i].size()) + 1;
      doc_tokens.push_back(std::int64_t(enc[i].size()));
      doc_chars.push_back(text_stats(set[i]->text).chars);
      bytes_total += std::int64_t(set[i]->text.size());
      tokens_total += std::int64_t(enc[i].size());
      for (auto id : enc[i]) ++freq[std::size_t(id)];
    }
    finish();
    r["split"][name] = {{"docs", set.size()}, {"tokens", tokens}};
    return tokens;
  };
  // Remove shards a previous run left, so the directory holds exactly this run's output.
  for (const auto& e : fs::directory_iterator(c.output.dir))
    if (e.path().extension() == ".bin" && (e.path().filename().string().starts_with("train_") ||
                                           e.path().filename().string().starts_with("val_")))
      fs::remove(e.path());
  sum.train_tokens = write_split("train", train, sum.train_shards);
  sum.val_tokens = write_split("val", val, sum.val_shards);
  if (val.empty()) r["split"]["val"] = {{"docs", 0}, {"tokens", 0}};
  lap("tokenize");

  std::vector<std::pair<std::int64_t, TokenId>> top;
  for (std::size_t i = 0; i < freq.size(); ++i)
    if (freq[i]) top.emplace_back(freq[i], TokenId(i));
  std::partial_sort(top.begin(), top.begin() + std::min<std::ptrdiff_t>(40, std::ptrdiff_t(top.size())), top.end(),
                    [](auto& a, auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
  if (top.size() > 40) top.resize(40);
  ojson tops = ojson::array();
  for (auto [n, id] : top) tops.push_back({{"id", id}, {"text", visible_token(tok->token_bytes(id))}, {"count", n}});
  r["tokens"] = {{"total", tokens_total},
                 {"bytes_per_token", std::round(100.0 * double(bytes_total) / double(std::max<std::int64_t>(tokens_total, 1))) / 100},
                 {"top", tops}};
  r["histograms"] = {{"chars", histogram(doc_chars, "characters")}, {"tokens", histogram(doc_tokens, "tokens")}};
  write_file(report_json, r.dump(2) + "\n");
  write_file(report_html, render_html(r));
  sum.tokenizer_path = tok_path, sum.report_json = report_json, sum.report_html = report_html;
  log(cat("train: ", sum.train_tokens, " tokens in ", sum.train_shards.size(), " shard(s); val: ", sum.val_tokens,
          " tokens; report: ", report_html));
  return sum;
}

}  // namespace llmtk::data
