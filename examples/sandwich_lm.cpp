// A new architecture in a few lines: sandwich norms around grouped-query RoPE attention and a
// GeGLU feed-forward, with an untied head. Its backward comes from its parts. This example trains
// nothing; it runs one forward and backward on the reference backend and prints the loss.
#include <cmath>
#include <cstdio>
#include <vector>

#include "layers/glu.hpp"
#include "models/llama.hpp"
#include "models/model.hpp"
#include "train/objective.hpp"

using namespace llmtk;

struct SandwichBlock final : Block<RMSNorm, GQA<RoPE>, GeGLU, SandwichNorm> {};
struct SandwichLM final : DecoderLM<TokenEmbedding, Repeat<SandwichBlock>, RMSNorm, LMHead<Untied>> {};

int main() {
  constexpr Dims dims{.d_model = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 128,
                      .vocab = 256, .max_seq = 32};
  static_assert(dims_hold<dims, SandwichLM>());  // the size rules (core and every part's), at compile time

  ModelOf<SandwichLM> model("sandwich", dims);
  model.plan(/*batch*/ 2, /*seq*/ 16);
  model.init(/*seed*/ 1);
  std::vector<std::int32_t> ids(32), targets(32);
  for (int i = 0; i < 32; ++i) ids[i] = (7 * i) % 256, targets[i] = (7 * i + 7) % 256;
  // The model returns logits; the objective turns them into a loss and seeds their gradient.
  NextTokenLoss objective;
  const TensorRef logits = model.forward(TensorRef(ids.data(), DType::i32, {2, 16}));
  const float loss = objective.forward(logits, {TensorRef(targets.data(), DType::i32, {2, 16}), {}});
  objective.backward(logits);  // d loss / d logits, in place
  model.backward(logits);      // every parameter's gradient +=
  for (const auto& line : model.structure()) std::printf("%s\n", line.c_str());
  std::printf("parameters: %lld\nloss at init: %.4f (log vocab = %.4f)\n",
              static_cast<long long>(model.param_count()), loss, std::log(256.0));
  return 0;
}
