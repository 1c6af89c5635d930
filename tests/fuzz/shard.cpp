// Token shards (`llmtk data prepare` output; a header, the tokens, a loss mask): any bytes read as
// a shard, then through the data loader in each order, as training reads it. Every id the loader
// hands out must lie inside the vocabulary the shard's header declares.
#include <vector>

#include "data/loader.hpp"
#include "fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace llmtk;
  const std::string file = fuzz::put("train_000.bin", fuzz::bytes(data, size));
  std::uint64_t hash = 0;
  std::uint32_t vocab = 0;
  fuzz::expect_clean(file, [&] {
    data::Shard shard(file);
    hash = shard.header().tokenizer_hash, vocab = shard.header().vocab_size;
    for (std::uint64_t i = 0; i < shard.size(); ++i) (void)shard.counts(i);
  });
  for (auto order : {data::DataOrder::shuffled, data::DataOrder::sequential, data::DataOrder::by_length,
                     data::DataOrder::random}) {
    for (bool packing : {true, false}) {
      // Data too small for a batch, or an order that does not suit it (by_length on instruction
      // data), is refused naming the recipe's key instead.
      fuzz::expect_clean({file, "data.order", "train.batch", "train.seq"}, [&] {
        data::LoaderOptions o;
        o.batch = 2, o.seq = 8, o.order = order, o.packing = packing;
        data::DataLoader loader({file}, hash, o);
        std::vector<data::TokenId> ids(16), targets(16), segments(16);
        for (int step = 0; step < 3; ++step) {
          loader.next(ids, targets, segments);
          for (std::size_t i = 0; i < ids.size(); ++i) {
            if (ids[i] < 0 || std::uint32_t(ids[i]) >= vocab) fuzz::broken("the loader handed out an id outside the vocabulary", file);
            if (targets[i] != data::kIgnoreTarget && (targets[i] < 0 || std::uint32_t(targets[i]) >= vocab))
              fuzz::broken("the loader handed out a target outside the vocabulary", file);
          }
        }
      });
    }
  }
  return 0;
}
