// The project's own architecture: a block none of llmtk's presets has — GQA with RoPE, a ReLU
// feed-forward, and a norm on both sides of each sublayer (sandwich) — composed from the library's
// parts and registered with one line. The compiler checks that the parts fit, as for the presets.
#pragma once
#include "models/user.hpp"

namespace my {

using namespace llmtk;

struct MyBlock final : Block<LayerNorm, GQA<RoPE>, MLP<ReLU>, SandwichNorm> {};
struct MyLM final : DecoderLM<TokenEmbedding, Repeat<MyBlock>, LayerNorm, LMHead<Tied>> {};

struct MyTiny final {
  using Arch = MyLM;
  static constexpr const char* name = "my-tiny";
  static constexpr const char* about = "examples/external: GQA with RoPE, a ReLU feed-forward, sandwich norms";
  static constexpr Dims dims{.d_model = 64, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .d_ff = 128,
                             .vocab = 300, .max_seq = 64, .norm_eps = 1e-5};
};

}  // namespace my

LLMTK_REGISTER_ARCH(my::MyTiny);
