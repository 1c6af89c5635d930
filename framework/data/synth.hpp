// Instruction sets generated from Debian's text packages (`llmtk data synth`, docs/sft.md).
// No instruction data ships with Debian, so the tasks are built deterministically from texts that
// do: the King James Bible (bible-kjv) and WordNet's glosses (wordnet-base). Each item carries a
// reference ("Genesis 1:1", a word); a seeded hash of the verse's text (or the word) puts it in the
// training or the test split, so no test prompt ever appears in fine-tuning data — a verse that
// recurs word for word under other references falls on the same side — whatever the order.
//
//   kjv-continue    "Continue the verse: And God said, Let there be light: and there was" → "light."
//                   recall of text the base model saw in pre-training, and following the format
//   kjv-book        "Which book of the Bible is this verse from? ..." → "Genesis"
//                   a classification that generalises to verses never seen in fine-tuning
//   kjv-continue-pref, kjv-book-pref
//                   the same prompts as preference pairs (docs/alignment.md): the right answer
//                   chosen, a neighbouring verse's ending or book rejected
//   kjv-testament   {"text": "And God said, Let there be light: and there was light.", "label": "old"}
//                   sequence classification for an encoder ([classify], docs/encoders.md), classes even
//   kjv-next-verse  {"context": "  3 And God said, ...", "endings": ["\n  4 And God saw ...", ...], "label": 0}
//                   multiple choice for a base model (llmtk eval --task, docs/evaluation.md)
//   wordnet-define  "Define: lighthouse" → "a tower with a light that gives warning of shoals to passing ships"
//                   a new domain: the quickstart model never read WordNet
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace llmtk::data {

struct SynthTask {
  std::string name, source, measures;  // the default source file or directory, what the task measures
};
const std::vector<SynthTask>& synth_tasks();

struct SynthOptions {
  std::string task;
  std::string source;            // empty: the task's default
  std::string split = "train";   // train or test
  double test_fraction = 0.1;    // share of references held out for testing
  std::uint64_t seed = 1234;     // decides the split (and nothing else)
  std::int64_t limit = 0;        // > 0: at most this many records (the first, in source order)
};

// Writes Alpaca JSONL ({"instruction", "input", "output", "ref"}), for the preference tasks
// {"prompt", "chosen", "rejected", "ref"}, for the classification task {"text", "label", "ref"}, for the
// multiple-choice task {"context", "endings", "label", "ref"}, to `out` (via a temporary file); returns the number of records.
std::int64_t synth(const SynthOptions& o, const std::string& out, const std::function<void(const std::string&)>& log);

}  // namespace llmtk::data
