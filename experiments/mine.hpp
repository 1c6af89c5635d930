// An architecture of your own, outside the library: a block the presets do not have (multi-query
// attention with ALiBi, GeGLU, norms on both sides of each sublayer) and one registration line.
// Any *.hpp in a folder of LLMTK_ARCH_DIRS is picked up by the build; `llmtk arch list` shows it.
#pragma once
#include "models/user.hpp"

namespace mine {

using namespace llmtk;

struct SandwichBlock final : Block<RMSNorm, MQA<ALiBi>, GeGLU, SandwichNorm> {};
struct Sandwich final : DecoderLM<TokenEmbedding, Repeat<SandwichBlock>, RMSNorm, LMHead<Tied>> {};

struct SandwichTiny final {
  using Arch = Sandwich;
  static constexpr const char* name = "mine-tiny";
  static constexpr const char* about = "your own: MQA with ALiBi, GeGLU, sandwich norms (experiments/mine.hpp)";
  static constexpr Dims dims{.d_model = 128, .n_layers = 2, .n_heads = 4, .n_kv_heads = 1, .d_ff = 256,
                             .vocab = 4096, .max_seq = 256, .norm_eps = 1e-5};
};

}  // namespace mine

LLMTK_REGISTER_ARCH(mine::SandwichTiny);
