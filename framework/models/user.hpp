// What a header of your own includes to define and register architectures outside the library.
// Put it in a folder CMake reads (LLMTK_ARCH_DIRS; `experiments/` by default), e.g.
//
//   // experiments/mine.hpp
//   #include "models/user.hpp"
//   namespace mine {
//   using namespace llmtk;
//   struct Tiny final {
//     using Arch = DecoderLM<TokenEmbedding, Repeat<Block<RMSNorm, MQA<ALiBi>, GeGLU, PreNorm>>,
//                            RMSNorm, LMHead<Tied>>;
//     static constexpr const char* name = "mine-tiny";
//     static constexpr const char* about = "MQA with ALiBi and GeGLU";
//     static constexpr Dims dims = LlamaTiny::dims;
//   };
//   }
//   LLMTK_REGISTER_ARCH(mine::Tiny);
//
// and rebuild: `llmtk arch list` shows it, and `model.arch = "mine-tiny"` trains it. An ablation
// (Ablate<...> in Arch) registers each variant: LLMTK_REGISTER_ABLATION(Preset), or
// LLMTK_REGISTER_ABLATION_SKIPPING(Preset) to leave out the variants that break a rule.
// docs/experiments.md has the guide.
#pragma once
#include "../dsl/ablate.hpp"
#include "../dsl/block.hpp"
#include "../dsl/combinators.hpp"
#include "../dsl/decoder_lm.hpp"
#include "../dsl/parallel_block.hpp"
#include "../dsl/pattern.hpp"
#include "../dsl/placement.hpp"
#include "../dsl/repeat.hpp"
#include "../layers/attention.hpp"
#include "../layers/embedding.hpp"
#include "../layers/glu.hpp"
#include "../layers/layernorm.hpp"
#include "../layers/lm_head.hpp"
#include "../layers/mlp.hpp"
#include "../layers/moe.hpp"
#include "../layers/positions.hpp"
#include "../layers/qk_norm.hpp"
#include "../layers/recurrence.hpp"
#include "../layers/rmsnorm.hpp"
#include "ablation.hpp"
#include "gpt2.hpp"
#include "llama.hpp"
#include "gemma.hpp"
#include "hybrid.hpp"
#include "moe.hpp"
#include "registry.hpp"

#define LLMTK_USER_CAT2(a, b) a##b
#define LLMTK_USER_CAT(a, b) LLMTK_USER_CAT2(a, b)

// One registration line per preset; each runs once, before main.
#define LLMTK_REGISTER_ARCH(Preset)                                                     \
  static const bool LLMTK_USER_CAT(llmtk_registered_, __LINE__) [[maybe_unused]] = \
      ::llmtk::register_architectures({::llmtk::preset_entry<Preset>()})
#define LLMTK_REGISTER_ABLATION(Preset)                                                 \
  static const bool LLMTK_USER_CAT(llmtk_registered_, __LINE__) [[maybe_unused]] = \
      ::llmtk::register_architectures(::llmtk::ablation_entries<Preset>())
#define LLMTK_REGISTER_ABLATION_SKIPPING(Preset)                                                           \
  static const bool LLMTK_USER_CAT(llmtk_registered_, __LINE__) [[maybe_unused]] = [] {                   \
    std::vector<std::string> skipped;                                                                    \
    auto entries = ::llmtk::ablation_entries<Preset, ::llmtk::RuleBreak::skip>(&skipped);                \
    return ::llmtk::register_architectures(std::move(entries), std::move(skipped));                      \
  }()
