// The architecture registry: names (as recipes and the command line write them) to presets.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../core/dims.hpp"  // Dims, DimsRule, SetKeys
#include "../dsl/decoder_lm.hpp"
#include "../dsl/encoder_lm.hpp"
#include "../layers/class_head.hpp"
#include "../layers/score_head.hpp"
#include "model.hpp"

namespace llmtk {

struct ArchInfo {
  std::string name;
  std::string about;
  std::string group;    // the ablation a variant belongs to ("llama-ffn"); empty for a preset
  Dims dims;            // the preset's sizes; recipes and --set change them by value
  std::vector<DimsRule> rules;          // the core size rules and every part's
  std::vector<KeySpec> keys;            // the model.* keys its parts own (MoE's moe_experts...)
  std::vector<std::string_view> tags;   // what the parts say about themselves ("rope", "mha"...)
  // Sizes a part derives from others the user did not set (MHA: n_kv_heads = n_heads).
  std::function<void(Dims&, const SetKeys&)> resolve;
  std::vector<std::string> structure;
  std::function<std::unique_ptr<AnyModel>(const Dims&)> make;
};

// The built-in presets, then the architectures registered outside the library (user_archs).
const std::vector<ArchInfo>& architectures();
// Adds architectures from outside the library (LLMTK_REGISTER_ARCH, models/user.hpp) before the
// first call to architectures(); `skipped` lists ablation variants left out, with the reason.
bool register_architectures(std::vector<ArchInfo> archs, std::vector<std::string> skipped = {});
// The ablation variants registered with RuleBreak::skip that break a rule: "NAME[...]: rule (why)".
const std::vector<std::string>& skipped_variants();
// The entry for `name`; fails with the list of registered names. "NAME+score" is NAME with a
// score head in place of its LM head (a reward or value model: layers/score_head.hpp).
const ArchInfo& find_arch(std::string_view name);
inline constexpr std::string_view kScoreSuffix = "+score";
// "NAME+classify" is an encoder NAME with a classification head on [CLS] in place of its MLM head
// (layers/class_head.hpp): what [classify] fine-tunes.
inline constexpr std::string_view kClassifySuffix = "+classify";
// "llama-tiny+score" → "llama-tiny", "bert-tiny+classify" → "bert-tiny"; other names unchanged.
std::string_view lm_arch(std::string_view name);
// A planned (not allocated) model; fails naming every size rule `dims` breaks.
std::unique_ptr<AnyModel> make_model(std::string_view arch, const Dims& dims);

// The preset's sizes with `--set model.KEY=VALUE` overrides applied, then the sizes its parts
// derive (MHA's n_kv_heads); `command` names the command in errors ("arch show"). The rules are
// checked when the model is made.
Dims dims_with_overrides(const ArchInfo& arch, const std::vector<std::string>& sets, std::string_view command);
// Recipe keys of Dims ("model.d_model" or "d_model"): set one from text, read all back. A key
// owned by a part (KeySpec) is accepted when some registered architecture's parts declare it;
// check_part_keys then says whether the architecture at hand does.
void set_dim(Dims& dims, std::string_view key, std::string_view value);
std::vector<std::pair<std::string, std::string>> dims_as_keys(const Dims& dims);
// Every key some registered architecture's parts declare (MoE's moe_experts, Local's local_window...).
const std::vector<KeySpec>& registered_part_keys();
// The kind of model key `key` (a core key or any registered part's); integer when unknown.
KeyKind dim_kind(std::string_view key);
// Fails naming the first part key set in `dims` that none of `arch`'s parts declares.
void check_part_keys(const ArchInfo& arch, const Dims& dims, std::string_view where);

// A language model's parts with a score head in place of its LM head: the same embedding, blocks
// and final norm (so an instruction-tuned model's weights load into it, all but the head).
template <class LM>
struct WithScoreHead final
    : DecoderLM<typename LM::EmbeddingT, typename LM::StackT, typename LM::FinalNormT, ScoreHead> {};

// An encoder's parts with a classification head in place of its MLM head: the same embedding,
// blocks and norm, so a masked language model's weights load into it, all but the head.
template <class Encoder>
struct WithClassHead final
    : EncoderLM<typename Encoder::EmbeddingT, typename Encoder::StackT, typename Encoder::NormT, ClassHead> {};

// The registry entry of the composition Arch named `name`, its sizes `D` checked rule by rule at
// compile time unless `Check` is false (then they are checked when a model is made).
template <class Arch, Dims D, bool Check = true>
ArchInfo arch_entry(const std::string& name, const std::string& about) {
  if constexpr (Check) static_assert(dims_hold<D, Arch>());
  ArchInfo info{name, about, {}, with_key_defaults<Arch>(D), rules_of<Arch>(), keys_of<Arch>(), tags_of<Arch>(),
                [](Dims& d, const SetKeys& set) { resolve_dims<Arch>(d, set); }, {}, {}};
  info.make = [name](const Dims& d) -> std::unique_ptr<AnyModel> { return std::make_unique<ModelOf<Arch>>(name, d); };
  info.structure = ModelOf<Arch>(name, info.dims).structure();
  return info;
}

// Registers a preset; its constexpr dims are checked rule by rule at compile time. `Scored`:
// the preset as NAME+score (WithScoreHead).
template <class Preset, bool Scored = false>
ArchInfo preset_entry() {
  using Arch = std::conditional_t<Scored, WithScoreHead<typename Preset::Arch>, typename Preset::Arch>;
  const std::string name = std::string(Preset::name) + (Scored ? std::string(kScoreSuffix) : std::string());
  const std::string about = Scored ? std::string(Preset::name) + " with a score head: a reward or value model"
                                   : std::string(Preset::about);
  return arch_entry<Arch, Preset::dims>(name, about);
}

// Registers an encoder preset as NAME+classify (WithClassHead), two classes unless a recipe says.
template <class Preset>
ArchInfo classifier_entry() {
  return arch_entry<WithClassHead<typename Preset::Arch>, Preset::dims.with("n_labels", 2)>(
      std::string(Preset::name) + std::string(kClassifySuffix),
      std::string(Preset::name) + " with a classification head on [CLS] (BERT's pooler and a linear map): a sequence classifier");
}

}  // namespace llmtk
