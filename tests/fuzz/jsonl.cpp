// JSON Lines records: any bytes read as a file by every reader of JSONL llmtk has: instruction
// conversations (and their last answer, for tasks), preference pairs, replies to score,
// labelled texts for classification, and multiple-choice evaluation items.
#include "data/chat.hpp"
#include "fuzz.hpp"
#include "train/classify.hpp"
#include "train/lm_eval.hpp"
#include "train/preference.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  const std::string file = fuzz::put("records.jsonl", fuzz::bytes(data, size));
  fuzz::expect_clean(file, [&] {
    const auto conversations = data::read_conversations(file);
    for (std::size_t i = 0; i < conversations.size(); ++i)
      fuzz::expect_clean(file, [&] { (void)data::split_last_answer(conversations[i], file + ":" + std::to_string(i + 1)); });
  });
  fuzz::expect_clean(file, [&] { (void)train::read_preferences(file); });
  fuzz::expect_clean(file, [&] { (void)train::read_replies(file); });
  fuzz::expect_clean(file, [&] { (void)train::labels_in(train::read_labelled(file)); });
  fuzz::expect_clean(file, [&] { (void)train::read_choices(file); });
  return 0;
}
