#include "synth.hpp"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "tokenizer.hpp"  // Fnv1a

namespace llmtk::data {

namespace fs = std::filesystem;

const std::vector<SynthTask>& synth_tasks() {
  static const std::vector<SynthTask> tasks = {
      {"kjv-continue", "data/corpus/kjv.txt",
       "recall: the last 1-3 words of a verse (of 6 to 30 words) from its beginning; the base model read the verse in "
       "pre-training, so the task measures following the format and recalling, not understanding"},
      {"kjv-book", "data/corpus/kjv.txt",
       "classification: the book a verse (of at most 30 words) comes from, out of 66; test verses are unseen, so it "
       "measures what in a verse's words marks its book (names, style), not recall"},
      {"wordnet-define", "/usr/share/wordnet/data.noun",
       "a new domain: the gloss of a one-word noun from WordNet (glosses of at most 12 words); the base model never "
       "read WordNet, so exact answers are rare and the loss on the answers is the measure"},
      {"kjv-continue-pref", "data/corpus/kjv.txt",
       "preferences: kjv-continue's prompts with the right ending chosen and a neighbouring verse's ending (as many "
       "words) rejected; the same verses are held out as in kjv-continue"},
      {"kjv-book-pref", "data/corpus/kjv.txt",
       "preferences: kjv-book's prompts with the right book chosen and a neighbouring book of the canon rejected (the "
       "plausible mistake: its style is closest); the same verses are held out as in kjv-book"},
      {"kjv-next-verse", "data/corpus/kjv.txt",
       "multiple choice (llmtk eval --task): the verse that follows a verse, among four verses of its book of about its "
       "length; the quickstart model read most verses in pre-training (95% of chapters), so it measures what it learned "
       "of the text's order and content; chance is 25%"},
      {"kjv-testament", "data/corpus/kjv.txt",
       "sequence classification (an encoder's [classify]): whether a verse (of at most 40 words) is from the Old or the "
       "New Testament, as many of each (Old Testament verses are sampled down to the New's count); test verses are unseen"},
  };
  return tasks;
}

namespace {

struct Item {
  std::string ref, instruction, input, output;
  std::string key;       // decides the split: the verse's text (identical verses fall together), or the word
  std::string rejected;  // preference tasks: the plausible wrong answer (output is the chosen one)
  std::string label = "";  // classification tasks: the class of `input`
  std::vector<std::string> endings = {};  // multiple choice: the candidates after `input`, endings[answer] right
  int answer = -1;
};

std::vector<std::string> words_of(const std::string& s) {
  std::vector<std::string> w;
  std::istringstream in(s);
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

std::string join(const std::vector<std::string>& w, std::size_t from, std::size_t to) {
  std::string s;
  for (std::size_t i = from; i < to; ++i) s += (i > from ? " " : "") + w[i];
  return s;
}

// The output of `bible -l 1000 Genesis1:1-Revelation22:21` (what ./setup.sh writes): a line
// "Book N" starts a chapter, "  V text" is verse V.
struct Verse {
  std::string book, ref, text;
};
std::vector<Verse> read_kjv(const std::string& path) {
  std::ifstream in(path);
  LLMTK_CHECK(in.good(), "data synth", "cannot read '", path, "'; ./setup.sh writes it (from Debian's bible-kjv), or pass --source");
  std::vector<Verse> out;
  std::string line, book, chapter;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line[0] != ' ') {  // "1 Samuel 3", "Song of Solomon 2"
      const auto sp = line.rfind(' ');
      LLMTK_CHECK(sp != std::string::npos && sp + 1 < line.size() && std::isdigit(static_cast<unsigned char>(line[sp + 1])),
                  "data synth", "'", path, "': '", line, "' is neither a chapter heading (\"Genesis 1\") nor a verse; "
                  "expected the output of: bible -l 1000 Genesis1:1-Revelation22:21");
      book = line.substr(0, sp), chapter = line.substr(sp + 1);
      continue;
    }
    const auto a = line.find_first_not_of(' ');
    const auto b = line.find(' ', a);
    if (b == std::string::npos || book.empty()) continue;
    out.push_back({book, book + " " + chapter + ":" + line.substr(a, b - a), line.substr(b + 1)});
  }
  LLMTK_CHECK(!out.empty(), "data synth", "'", path, "' holds no verses");
  return out;
}

std::vector<Item> kjv_continue(const std::string& path) {
  std::vector<Item> items;
  for (const auto& v : read_kjv(path)) {
    const auto w = words_of(v.text);
    if (w.size() < 6 || w.size() > 30) continue;
    // The last 1 to 3 words: short enough that a 2M-parameter model's recall can get some
    // exactly right (with the last quarter, 2 to 6 words, it got none in 600 steps).
    const std::size_t k = std::clamp<std::size_t>(w.size() / 8, 1, 3);
    items.push_back({v.ref, "Continue the verse: " + join(w, 0, w.size() - k), "", join(w, w.size() - k, w.size()), v.text, ""});
  }
  return items;
}

std::vector<Item> kjv_book(const std::string& path) {
  std::vector<Item> items;
  for (const auto& v : read_kjv(path))
    if (words_of(v.text).size() <= 30)
      items.push_back({v.ref, "Which book of the Bible is this verse from?", v.text, v.book, v.text, ""});
  return items;
}

// Old or New Testament: the New begins at Matthew. The Old has about three times as many verses;
// each is kept with probability (New's count / Old's), decided by a hash of its text, so the two
// classes come out about even and a classifier cannot score by always answering "old".
std::vector<Item> kjv_testament(const std::string& path) {
  const auto verses = read_kjv(path);
  const auto first_new = std::find_if(verses.begin(), verses.end(), [](const Verse& v) { return v.book == "Matthew"; });
  LLMTK_CHECK(first_new != verses.begin() && first_new != verses.end(), "data synth", "'", path,
              "' does not hold both testaments (the New begins at Matthew); kjv-testament needs the whole Bible");
  const double n_old = double(first_new - verses.begin()), n_new = double(verses.end() - first_new);
  std::vector<Item> items;
  for (auto v = verses.begin(); v != verses.end(); ++v) {
    if (words_of(v->text).size() > 40) continue;
    const bool is_new = v >= first_new;
    Fnv1a h;
    h.add("testament;" + v->text);
    if (!is_new && Rng(h.h).uniform() >= n_new / n_old) continue;
    items.push_back({v->ref, "", v->text, "", v->text, "", is_new ? "new" : "old"});
  }
  return items;
}

// The preference tasks: the same prompts and split keys as their instruction tasks, each with a
// wrong answer a model could plausibly give, chosen deterministically from the verse's neighbours.
std::vector<Item> kjv_continue_pref(const std::string& path) {
  const auto verses = read_kjv(path);
  std::vector<Item> items;
  for (std::size_t i = 0; i < verses.size(); ++i) {
    const auto w = words_of(verses[i].text);
    if (w.size() < 6 || w.size() > 30) continue;
    const std::size_t k = std::clamp<std::size_t>(w.size() / 8, 1, 3);
    const std::string chosen = join(w, w.size() - k, w.size());
    // The next verse's last k words (the previous one's at a book's end, or when they are the same).
    std::string rejected;
    for (const std::size_t j : {i + 1, i - 1}) {
      if (j >= verses.size() || verses[j].book != verses[i].book) continue;
      const auto o = words_of(verses[j].text);
      if (o.size() < k) continue;
      const std::string r = join(o, o.size() - k, o.size());
      if (r != chosen) {
        rejected = r;
        break;
      }
    }
    if (rejected.empty()) continue;
    items.push_back({verses[i].ref, "Continue the verse: " + join(w, 0, w.size() - k), "", chosen, verses[i].text, rejected});
  }
  return items;
}

std::vector<Item> kjv_book_pref(const std::string& path) {
  const auto verses = read_kjv(path);
  std::vector<std::string> canon;  // the books in the order they come
  for (const auto& v : verses)
    if (canon.empty() || canon.back() != v.book) canon.push_back(v.book);
  LLMTK_CHECK(canon.size() >= 2, "data synth", "'", path, "' holds one book; kjv-book-pref needs at least two to reject one");
  std::vector<Item> items;
  for (const auto& v : verses) {
    if (words_of(v.text).size() > 30) continue;
    const auto at = std::size_t(std::find(canon.begin(), canon.end(), v.book) - canon.begin());
    // The book before or after it, as a hash of the verse decides (the first and last have one neighbour).
    Fnv1a h;
    h.add(v.text);
    const bool after = at == 0 || (at + 1 < canon.size() && (Rng(h.h).next() & 1));
    items.push_back({v.ref, "Which book of the Bible is this verse from?", v.text, v.book, v.text, canon[after ? at + 1 : at - 1]});
  }
  return items;
}

// Multiple choice in HellaSwag's layout: the context is a verse as the corpus writes it ("  3 And God
// said, ..."), the endings are the next verse and three other verses of the same book, all given the
// next verse's number ("\n  4 ..."), so only the words tell them apart. The others are at least
// three verses away and have within 30% of the next verse's words (a model cannot win on length);
// a hash of the context picks them and the right ending's place.
std::vector<Item> kjv_next_verse(const std::string& path) {
  const auto verses = read_kjv(path);
  std::vector<Item> items;
  std::size_t book_begin = 0;
  for (std::size_t i = 0; i + 1 < verses.size(); ++i) {
    if (verses[i].book != verses[book_begin].book) book_begin = i;
    if (verses[i + 1].book != verses[i].book) continue;
    std::size_t book_end = i + 1;
    while (book_end < verses.size() && verses[book_end].book == verses[i].book) ++book_end;
    const auto nw = words_of(verses[i + 1].text).size();
    if (nw > 40 || words_of(verses[i].text).size() > 40) continue;
    const auto number = [](const std::string& ref) { return ref.substr(ref.rfind(':') + 1); };
    Fnv1a h;
    h.add("next-verse;" + verses[i].text);
    Rng rng(h.h);
    std::vector<std::string> endings;
    for (int tries = 0; tries < 400 && endings.size() < 3; ++tries) {
      const std::size_t j = book_begin + std::size_t(rng.next() % (book_end - book_begin));
      const auto w = words_of(verses[j].text).size();
      if ((j + 3 > i + 1 && j < i + 4) || double(w) < 0.7 * double(nw) || double(w) > 1.3 * double(nw)) continue;
      if (verses[j].text == verses[i + 1].text || std::find(endings.begin(), endings.end(), verses[j].text) != endings.end())
        continue;
      endings.push_back(verses[j].text);
    }
    if (endings.size() < 3) continue;
    const int answer = int(rng.next() % 4);
    endings.insert(endings.begin() + answer, verses[i + 1].text);
    for (auto& e : endings) e = "\n  " + number(verses[i + 1].ref) + " " + e;
    Item it{verses[i].ref, "", "  " + number(verses[i].ref) + " " + verses[i].text, "", verses[i].text, ""};
    it.endings = std::move(endings), it.answer = answer;
    items.push_back(std::move(it));
  }
  return items;
}

// WordNet's data.* files: "offset lex_filenum ss_type w_cnt word lex_id ... | gloss"; lines that
// start with spaces are the licence. One item per one-word lemma, its first synset's gloss up to
// the first ';' (the definition, without the examples).
std::vector<Item> wordnet_define(const std::string& path) {
  std::ifstream in(path);
  LLMTK_CHECK(in.good(), "data synth", "cannot read '", path, "'; install Debian's wordnet-base (tools/install-deps.sh does), or pass --source");
  std::vector<Item> items;
  std::set<std::string> seen;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == ' ') continue;
    const auto bar = line.find(" | ");
    if (bar == std::string::npos) continue;
    std::istringstream head(line.substr(0, bar));
    std::string offset, lexfile, type, count, word;
    head >> offset >> lexfile >> type >> count >> word;
    if (word.empty() || !std::all_of(word.begin(), word.end(), [](char c) { return c >= 'a' && c <= 'z'; })) continue;
    if (!seen.insert(word).second) continue;
    std::string gloss = line.substr(bar + 3);
    gloss = gloss.substr(0, gloss.find(';'));
    while (!gloss.empty() && gloss.back() == ' ') gloss.pop_back();
    const auto n = words_of(gloss).size();
    if (n == 0 || n > 12 || gloss.find('"') != std::string::npos) continue;
    items.push_back({word, "Define: " + word, "", gloss, word, ""});
  }
  LLMTK_CHECK(!items.empty(), "data synth", "'", path, "' holds no WordNet synsets (expected a data.noun file)");
  return items;
}

}  // namespace

std::int64_t synth(const SynthOptions& o, const std::string& out, const std::function<void(const std::string&)>& log) {
  const auto& tasks = synth_tasks();
  const auto task = std::find_if(tasks.begin(), tasks.end(), [&](const SynthTask& t) { return t.name == o.task; });
  if (task == tasks.end()) {
    std::string names;
    for (const auto& t : tasks) names += (names.empty() ? "" : ", ") + t.name;
    fail("data synth", "unknown task '", o.task, "'; known: ", names);
  }
  LLMTK_CHECK(o.split == "train" || o.split == "test", "data synth", "--split must be train or test, got '", o.split, "'");
  LLMTK_CHECK(o.test_fraction > 0 && o.test_fraction < 1, "data synth", "the test fraction must be in (0, 1), got ", o.test_fraction);
  const std::string source = o.source.empty() ? task->source : o.source;
  const std::vector<Item> items = o.task == "kjv-continue"        ? kjv_continue(source)
                                  : o.task == "kjv-book"          ? kjv_book(source)
                                  : o.task == "kjv-continue-pref" ? kjv_continue_pref(source)
                                  : o.task == "kjv-book-pref"     ? kjv_book_pref(source)
                                  : o.task == "kjv-testament"     ? kjv_testament(source)
                                  : o.task == "kjv-next-verse"    ? kjv_next_verse(source)
                                                                  : wordnet_define(source);
  const std::string tmp = out + ".tmp";
  if (fs::path(out).has_parent_path()) fs::create_directories(fs::path(out).parent_path());
  std::int64_t n = 0;
  {
    std::ofstream f(tmp, std::ios::binary);
    LLMTK_CHECK(f.good(), "data synth", "cannot write '", tmp, "'");
    for (const auto& it : items) {
      Fnv1a h;
      h.add(std::to_string(o.seed) + ";" + it.key);
      // FNV-1a's top bits barely depend on a string's last characters ("Genesis 1:1" and "Genesis
      // 1:2"), so the hash goes through SplitMix64's mixing before it is read as a fraction.
      const bool test = Rng(h.h).uniform() < o.test_fraction;
      if (test != (o.split == "test")) continue;
      if (o.limit > 0 && n >= o.limit) break;
      // Preference records in the convention of TRL and torchtune: prompt, chosen, rejected.
      const nlohmann::ordered_json j =
          it.answer >= 0 ? nlohmann::ordered_json{{"context", it.input}, {"endings", it.endings}, {"label", it.answer}, {"ref", it.ref}}
          : !it.label.empty() ? nlohmann::ordered_json{{"text", it.input}, {"label", it.label}, {"ref", it.ref}}
          : it.rejected.empty()
              ? nlohmann::ordered_json{{"instruction", it.instruction}, {"input", it.input}, {"output", it.output}, {"ref", it.ref}}
              : nlohmann::ordered_json{{"prompt", it.input.empty() ? it.instruction : it.instruction + "\n\n" + it.input},
                                       {"chosen", it.output}, {"rejected", it.rejected}, {"ref", it.ref}};
      f << j.dump() << "\n";
      ++n;
    }
    LLMTK_CHECK(f.good(), "data synth", "writing '", tmp, "' failed (disk full?)");
  }
  fs::rename(tmp, out);
  log(cat(o.task, ": ", n, " ", o.split, " records from ", source, " -> ", out, " (split by text with seed ", o.seed,
          ": ", o.test_fraction * 100, "% of verses or words are test-only)"));
  return n;
}

}  // namespace llmtk::data
