#include "hf.hpp"

#include <filesystem>
#include <cmath>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/json_number.hpp"
#include "safetensors.hpp"

namespace llmtk::train {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

// What each part the formats cannot hold is called in a recipe (its tag → the part).
std::string part_named(std::string_view tag) {
  static const std::pair<std::string_view, std::string_view> names[] = {
      {"alibi", "ALiBi"},          {"sinusoidal", "Sinusoidal positions"}, {"qk_norm", "QKNorm"},
      {"layernorm", "LayerNorm"},  {"rmsnorm", "RMSNorm"},                 {"gelu_mlp", "MLP<GELU>"},
      {"relu_mlp", "MLP<ReLU>"},   {"mlp", "MLP"},                         {"swiglu", "SwiGLU"},
      {"geglu", "GeGLU"},          {"postnorm", "PostNorm"},               {"sandwichnorm", "SandwichNorm"}, {"prenorm", "PreNorm"},
      {"parallel_block", "ParallelBlock"}, {"mqa", "MQA"},                 {"gqa", "GQA"}};
  for (const auto& [t, n] : names)
    if (t == tag) return std::string(n);
  return std::string(tag);
}

// Fails unless the model has every tag of `need` and none of `refuse`, naming the first part
// the target cannot hold and what it holds instead.
void require_parts(const char* command, const AnyModel& m, const char* target,
                   std::initializer_list<std::pair<std::string_view, const char*>> need,
                   std::initializer_list<std::pair<std::string_view, const char*>> refuse) {
  for (const auto& [tag, instead] : refuse)
    LLMTK_CHECK(!m.has_tag(tag), command, "model '", m.name(), "' has ", part_named(tag), ", which ", target,
                " cannot hold (it has ", instead, "); the exported model would compute something else, so nothing was written");
  for (const auto& [tag, what] : need)
    LLMTK_CHECK(m.has_tag(tag), command, "model '", m.name(), "' has no ", what, ", which ", target,
                " requires; the exported model would compute something else, so nothing was written");
}

}  // namespace

std::string hf_family(const AnyModel& m) {
  if (m.has_tag("encoder")) {  // BertForMaskedLM: post-norm blocks, learned positions, token types, GELU, biases
    const char* command = "export --hf";
    const bool classifier = m.has_tag("class_head");
    const char* bert = classifier ? "BertForSequenceClassification" : "BertForMaskedLM";
    require_parts(command, m, bert, {{"learned_positions", "learned positions"}, {"token_types", "token-type embedding (TokenTypes)"},
                                     {"mha", "multi-head attention (MHA)"}, {"layernorm", "LayerNorm"},
                                     {"gelu_mlp", "an MLP<GELU> feed-forward"}, {"postnorm", "PostNorm placement"},
                                     {"sequential_block", "sequential Block"},
                                     classifier ? std::pair<std::string_view, const char*>{"class_head", "ClassHead"}
                                                : std::pair<std::string_view, const char*>{"mlm_head", "MLMHead"}},
                  {{"prenorm", "post-norm blocks"}, {"sandwichnorm", "post-norm blocks"}, {"rope", "learned positions"},
                   {"alibi", "learned positions"}, {"qk_norm", "no query/key norm"}, {"rmsnorm", "LayerNorm"},
                   {"swiglu", "MLP<GELU>"}, {"geglu", "MLP<GELU>"}, {"parallel_block", "sequential blocks"}});
    LLMTK_CHECK(m.dims().bias, command, bert, " has biases in every linear map and LayerNorm; this model has "
                "model.bias = false, so nothing was written");
    LLMTK_CHECK(m.dims().window == 0, command, "model '", m.name(), "' uses a sliding window (model.window = ",
                m.dims().window, "), which ", bert, " does not have; nothing was written");
    return "bert";
  }
  if (m.has_tag("encoder_decoder")) {  // T5ForConditionalGeneration (v1.0): models/t5.hpp
    const char* command = "export --hf";
    const char* t5 = "T5ForConditionalGeneration";
    require_parts(command, m, t5, {{"relative_bias", "a relative position bias (RelativeBias<32, 128>)"},
                                   {"rmsnorm", "RMSNorm"}, {"relu_mlp", "an MLP<ReLU> feed-forward"}, {"prenorm", "PreNorm placement"},
                                   {"mha", "multi-head attention (MHA)"}, {"scaled_head", "a tied head scaled by d_model^-1/2 (LMHead<TiedScaled>)"}},
                  {{"postnorm", "pre-norm blocks"}, {"sandwichnorm", "pre-norm blocks"}, {"learned_positions", "no position embedding"},
                   {"sinusoidal", "no position embedding"}, {"rope", "a relative position bias"}, {"alibi", "a relative position bias"},
                   {"qk_norm", "no query/key norm"}, {"layernorm", "RMSNorm"}, {"swiglu", "MLP<ReLU>"}, {"geglu", "MLP<ReLU>"}});
    LLMTK_CHECK(!m.dims().bias, command, t5, " has no biases; this model has model.bias = true, so nothing was written");
    LLMTK_CHECK(m.dims().window == 0, command, "model '", m.name(), "' uses a sliding window (model.window = ",
                m.dims().window, "), which ", t5, " does not have; nothing was written");
    return "t5";
  }
  return model_family(m, "export --hf", "GPT2LMHeadModel", "LlamaForCausalLM");
}

std::string model_family(const AnyModel& m, const char* command, const char* gpt2, const char* llama) {
  LLMTK_CHECK(!m.has_tag("encoder"), command, "model '", m.name(), "' is an encoder (BERT-style), and ", gpt2, " and ", llama,
              " are decoders; export it to Transformers' BertForMaskedLM with --hf DIR; nothing was written");
  LLMTK_CHECK(!m.has_tag("encoder_decoder"), command, "model '", m.name(), "' is an encoder-decoder (T5-style), and ", gpt2,
              " and ", llama, " are decoders; its Transformers export (T5ForConditionalGeneration) is not written yet "
              "(docs/encoder-decoder.md), so nothing was written");
  LLMTK_CHECK(m.dims().window == 0, command, "model '", m.name(), "' uses a sliding window (model.window = ",
              m.dims().window, "), which ", gpt2, " and ", llama, " do not have; their outputs would differ");
  LLMTK_CHECK(!m.has_tag("recurrent"), command, "model '", m.name(), "' has recurrent (minGRU) layers, which ", gpt2,
              " and ", llama, " do not have; nothing was written");
  LLMTK_CHECK(!m.has_tag("local_attention"), command, "model '", m.name(), "' has local attention layers (a sliding "
              "window of model.local_window in some layers), which ", gpt2, " and ", llama,
              " do not have; their outputs would differ, so nothing was written");
  // The position scheme picks the family; then every other part must be one the family has.
  if (m.has_tag("learned_positions")) {
    require_parts(command, m, gpt2, {{"mha", "multi-head attention (MHA)"}, {"layernorm", "LayerNorm"},
                                         {"gelu_mlp", "an MLP<GELU> feed-forward"}, {"prenorm", "PreNorm placement"},
                                         {"sequential_block", "sequential Block"}},
                  {{"alibi", "learned positions"}, {"rope", "learned positions"}, {"qk_norm", "no query/key norm"},
                   {"parallel_block", "sequential blocks"}, {"rmsnorm", "LayerNorm"}, {"swiglu", "MLP<GELU>"},
                   {"geglu", "MLP<GELU>"}, {"postnorm", "PreNorm"}, {"sandwichnorm", "PreNorm"}});
    LLMTK_CHECK(m.dims().bias, command, gpt2, " has biases in every linear map and LayerNorm; this model has "
                "model.bias = false, so nothing was written");
    return "gpt2";
  }
  if (m.has_tag("rope")) {
    require_parts(command, m, llama, {{"rmsnorm", "RMSNorm"}, {"prenorm", "PreNorm placement"},
                                          {"sequential_block", "sequential Block"}},
                  {{"alibi", "RoPE only"}, {"learned_positions", "RoPE only"}, {"qk_norm", "no query/key norm"},
                   {"layernorm", "RMSNorm"}, {"gelu_mlp", "a gated feed-forward: SwiGLU, or GeGLU as hidden_act gelu_pytorch_tanh"},
                   {"relu_mlp", "a gated feed-forward: SwiGLU or GeGLU"}, {"mlp", "a gated feed-forward: SwiGLU or GeGLU"},
                   {"parallel_block", "sequential blocks"}, {"postnorm", "PreNorm"}, {"sandwichnorm", "PreNorm"}});
    LLMTK_CHECK(m.has_tag("swiglu") || m.has_tag("geglu"), command, "model '", m.name(),
                "' has no gated feed-forward (SwiGLU or GeGLU), which ", llama, " requires; nothing was written");
    LLMTK_CHECK(!m.dims().bias, command, "model '", m.name(), "' has biases (model.bias = true), which this export "
                "to ", llama, " does not write; nothing was written");
    if (m.has_tag("moe")) {
      // MixtralForCausalLM: Llama's attention, and an MoE of SwiGLU experts, top-k renormalised, dropless.
      const Dims& d = m.dims();
      LLMTK_CHECK(m.has_tag("topk_router") && m.has_tag("swiglu"), command, "model '", m.name(), "' routes ",
                  m.has_tag("switch_router") ? "with Switch's router (the top expert weighted by its probability)"
                                             : "to GeGLU experts",
                  "; Mixtral renormalises the top-k probabilities over SwiGLU experts, so nothing was written");
      LLMTK_CHECK(d.get("moe_shared") == 0 && d.get("moe_capacity") == 0, command, "model '", m.name(),
                  "' has shared experts or a capacity (model.moe_shared, model.moe_capacity), which Mixtral does not; "
                  "nothing was written");
      return "mixtral";
    }
    return "llama";
  }
  fail(command, "model '", m.name(), "' has ", m.has_tag("alibi") ? "ALiBi" : m.has_tag("sinusoidal") ? "Sinusoidal positions" : "a position scheme",
       " and Transformers interop covers GPT-2 (learned positions) and Llama (RoPE) only; nothing was written");
}

std::string hf_hidden_act(const AnyModel& m) {
  // LlamaMLP computes down(act(gate(x)) * up(x)): SwiGLU is act = silu, and GeGLU with llmtk's
  // tanh-approximated GELU is act = gelu_pytorch_tanh (Gemma's name for it).
  return m.has_tag("geglu") ? "gelu_pytorch_tanh" : "silu";
}

namespace {

// One tensor in the Transformers file: its name, shape, and how it maps to llmtk's parameters.
struct Mapping {
  std::string hf;
  std::vector<std::int64_t> shape;
  std::function<void(const Arena&, float*)> to_hf;  // llmtk params → HF tensor
  std::function<void(Arena&, const float*)> from_hf;
};

Mapping copy(const std::string& hf, const std::string& ours, const Arena& p) {
  const auto& e = p.entries()[std::size_t(p.find(ours))];
  const std::int64_t n = e.numel;
  return {hf, e.shape, [=](const Arena& a, float* dst) { std::copy_n(a[ours].f32(), n, dst); },
          [=](Arena& a, const float* src) { std::copy_n(src, n, a[ours].f32()); }};
}

// A tensor multiplied by `factor` on the way out (divided on the way in).
Mapping scaled(const std::string& hf, const std::string& ours, const Arena& p, float factor) {
  const auto& e = p.entries()[std::size_t(p.find(ours))];
  const std::int64_t n = e.numel;
  return {hf, e.shape,
          [=](const Arena& a, float* dst) {
            for (std::int64_t i = 0; i < n; ++i) dst[i] = a[ours].f32()[i] * factor;
          },
          [=](Arena& a, const float* src) {
            for (std::int64_t i = 0; i < n; ++i) a[ours].f32()[i] = src[i] / factor;
          }};
}

// Conv1D weights: HF [in, out] ← llmtk [out, in].
Mapping transposed(const std::string& hf, const std::string& ours, const Arena& p) {
  const auto& e = p.entries()[std::size_t(p.find(ours))];
  const std::int64_t O = e.shape[0], I = e.shape[1];
  return {hf, {I, O},
          [=](const Arena& a, float* dst) {
            const float* w = a[ours].f32();
            for (std::int64_t o = 0; o < O; ++o)
              for (std::int64_t i = 0; i < I; ++i) dst[i * O + o] = w[o * I + i];
          },
          [=](Arena& a, const float* src) {
            float* w = a[ours].f32();
            for (std::int64_t o = 0; o < O; ++o)
              for (std::int64_t i = 0; i < I; ++i) w[o * I + i] = src[i * O + o];
          }};
}

// GPT-2's c_attn: [C, 3C] = [wqᵀ | wkᵀ | wvᵀ]; its bias [3C] = [bq | bk | bv].
Mapping fused_qkv(const std::string& hf, const std::string& prefix, const Arena& p, bool bias) {
  const std::int64_t C = p.entries()[std::size_t(p.find(prefix + "wq"))].shape[1];
  const char* parts[] = {"q", "k", "v"};
  if (bias)
    return {hf, {3 * C},
            [=](const Arena& a, float* dst) {
              for (int k = 0; k < 3; ++k) std::copy_n(a[prefix + "b" + parts[k]].f32(), C, dst + k * C);
            },
            [=](Arena& a, const float* src) {
              for (int k = 0; k < 3; ++k) std::copy_n(src + k * C, C, a[prefix + "b" + parts[k]].f32());
            }};
  return {hf, {C, 3 * C},
          [=](const Arena& a, float* dst) {
            for (int k = 0; k < 3; ++k) {
              const float* w = a[prefix + "w" + parts[k]].f32();
              for (std::int64_t o = 0; o < C; ++o)
                for (std::int64_t i = 0; i < C; ++i) dst[i * 3 * C + k * C + o] = w[o * C + i];
            }
          },
          [=](Arena& a, const float* src) {
            for (int k = 0; k < 3; ++k) {
              float* w = a[prefix + "w" + parts[k]].f32();
              for (std::int64_t o = 0; o < C; ++o)
                for (std::int64_t i = 0; i < C; ++i) w[o * C + i] = src[i * 3 * C + k * C + o];
            }
          }};
}

std::vector<Mapping> mappings(const AnyModel& m) {
  const Arena& p = m.params();
  const std::string fam = hf_family(m);
  const Dims& d = m.dims();
  std::vector<Mapping> out;
  if (fam == "t5") {
    // T5ForConditionalGeneration: nn.Linear [out, in] everywhere, no biases. T5's attention does
    // not scale its scores; llmtk's does by 1/sqrt(head_dim), so q goes out scaled by it and the
    // scores agree. Each stack's relative bias lives in its block 0.
    const float qs = float(1.0 / std::sqrt(double(d.head_dim())));
    out.push_back(copy("shared.weight", "embed.tokens", p));
    for (const char* side : {"encoder", "decoder"}) {
      const bool dec = std::string_view(side) == "decoder";
      out.push_back(copy(std::string(side) + ".block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                         std::string(side) + ".relative_bias", p));
      for (int l = 0; l < d.n_layers; ++l) {
        const std::string h = std::string(side) + ".block." + std::to_string(l) + ".layer.",
                          b = std::string(side) + ".blocks." + std::to_string(l) + ".";
        auto attention = [&](const std::string& hf, const std::string& ours) {
          out.push_back(scaled(hf + ".q.weight", ours + ".wq", p, qs));
          out.push_back(copy(hf + ".k.weight", ours + ".wk", p));
          out.push_back(copy(hf + ".v.weight", ours + ".wv", p));
          out.push_back(copy(hf + ".o.weight", ours + ".wo", p));
        };
        attention(h + "0.SelfAttention", b + "attn");
        out.push_back(copy(h + "0.layer_norm.weight", b + "attn.norm.weight", p));
        const std::string ff = h + (dec ? "2" : "1");
        if (dec) {
          attention(h + "1.EncDecAttention", b + "cross");
          out.push_back(copy(h + "1.layer_norm.weight", b + "cross.norm.weight", p));
        }
        out.push_back(copy(ff + ".DenseReluDense.wi.weight", b + "mlp.w_fc", p));
        out.push_back(copy(ff + ".DenseReluDense.wo.weight", b + "mlp.w_proj", p));
        out.push_back(copy(ff + ".layer_norm.weight", b + "mlp.norm.weight", p));
      }
      out.push_back(copy(std::string(side) + ".final_layer_norm.weight", std::string(side) + ".final_norm.weight", p));
    }
  } else if (fam == "bert") {  // BertForMaskedLM: nn.Linear everywhere, [out, in] as llmtk stores them
    out.push_back(copy("bert.embeddings.word_embeddings.weight", "embed.tokens", p));
    out.push_back(copy("bert.embeddings.position_embeddings.weight", "embed.positions", p));
    out.push_back(copy("bert.embeddings.token_type_embeddings.weight", "embed.types", p));
    out.push_back(copy("bert.embeddings.LayerNorm.weight", "embed_norm.weight", p));
    out.push_back(copy("bert.embeddings.LayerNorm.bias", "embed_norm.bias", p));
    for (int l = 0; l < d.n_layers; ++l) {
      const std::string h = "bert.encoder.layer." + std::to_string(l) + ".", b = "blocks." + std::to_string(l) + ".";
      struct Site { const char *hf, *w, *b; };
      for (const Site& x : {Site{"attention.self.query", "attn.wq", "attn.bq"}, Site{"attention.self.key", "attn.wk", "attn.bk"},
                            Site{"attention.self.value", "attn.wv", "attn.bv"}, Site{"attention.output.dense", "attn.wo", "attn.bo"},
                            Site{"intermediate.dense", "mlp.w_fc", "mlp.b_fc"}, Site{"output.dense", "mlp.w_proj", "mlp.b_proj"}}) {
        out.push_back(copy(h + x.hf + ".weight", b + x.w, p));
        out.push_back(copy(h + x.hf + ".bias", b + x.b, p));
      }
      // Post-norm: the LayerNorm after each residual add is the sub-block's norm.
      out.push_back(copy(h + "attention.output.LayerNorm.weight", b + "attn.norm.weight", p));
      out.push_back(copy(h + "attention.output.LayerNorm.bias", b + "attn.norm.bias", p));
      out.push_back(copy(h + "output.LayerNorm.weight", b + "mlp.norm.weight", p));
      out.push_back(copy(h + "output.LayerNorm.bias", b + "mlp.norm.bias", p));
    }
    if (m.has_tag("class_head")) {  // BertForSequenceClassification: the pooler on [CLS], then the classifier
      out.push_back(copy("bert.pooler.dense.weight", "head.pool.weight", p));
      out.push_back(copy("bert.pooler.dense.bias", "head.pool.bias", p));
      out.push_back(copy("classifier.weight", "head.weight", p));
      out.push_back(copy("classifier.bias", "head.bias", p));
      return out;
    }
    out.push_back(copy("cls.predictions.transform.dense.weight", "head.transform.weight", p));
    out.push_back(copy("cls.predictions.transform.dense.bias", "head.transform.bias", p));
    out.push_back(copy("cls.predictions.transform.LayerNorm.weight", "head.norm.weight", p));
    out.push_back(copy("cls.predictions.transform.LayerNorm.bias", "head.norm.bias", p));
    // The decoder's bias is tied to cls.predictions.bias; its weight to the word embeddings unless untied.
    out.push_back(copy("cls.predictions.bias", "head.bias", p));
    if (p.find("head.weight") >= 0) out.push_back(copy("cls.predictions.decoder.weight", "head.weight", p));
  } else if (fam == "gpt2") {
    out.push_back(copy("transformer.wte.weight", "embed.tokens", p));
    out.push_back(copy("transformer.wpe.weight", "embed.positions", p));
    for (int l = 0; l < d.n_layers; ++l) {
      const std::string h = "transformer.h." + std::to_string(l) + ".", b = "blocks." + std::to_string(l) + ".";
      out.push_back(copy(h + "ln_1.weight", b + "attn.norm.weight", p));
      out.push_back(copy(h + "ln_1.bias", b + "attn.norm.bias", p));
      out.push_back(fused_qkv(h + "attn.c_attn.weight", b + "attn.", p, false));
      out.push_back(fused_qkv(h + "attn.c_attn.bias", b + "attn.", p, true));
      out.push_back(transposed(h + "attn.c_proj.weight", b + "attn.wo", p));
      out.push_back(copy(h + "attn.c_proj.bias", b + "attn.bo", p));
      out.push_back(copy(h + "ln_2.weight", b + "mlp.norm.weight", p));
      out.push_back(copy(h + "ln_2.bias", b + "mlp.norm.bias", p));
      out.push_back(transposed(h + "mlp.c_fc.weight", b + "mlp.w_fc", p));
      out.push_back(copy(h + "mlp.c_fc.bias", b + "mlp.b_fc", p));
      out.push_back(transposed(h + "mlp.c_proj.weight", b + "mlp.w_proj", p));
      out.push_back(copy(h + "mlp.c_proj.bias", b + "mlp.b_proj", p));
    }
    out.push_back(copy("transformer.ln_f.weight", "final_norm.weight", p));
    out.push_back(copy("transformer.ln_f.bias", "final_norm.bias", p));
  } else {
    out.push_back(copy("model.embed_tokens.weight", "embed.tokens", p));
    for (int l = 0; l < d.n_layers; ++l) {
      const std::string h = "model.layers." + std::to_string(l) + ".", b = "blocks." + std::to_string(l) + ".";
      out.push_back(copy(h + "input_layernorm.weight", b + "attn.norm.weight", p));
      out.push_back(copy(h + "self_attn.q_proj.weight", b + "attn.wq", p));
      out.push_back(copy(h + "self_attn.k_proj.weight", b + "attn.wk", p));
      out.push_back(copy(h + "self_attn.v_proj.weight", b + "attn.wv", p));
      out.push_back(copy(h + "self_attn.o_proj.weight", b + "attn.wo", p));
      out.push_back(copy(h + "post_attention_layernorm.weight", b + "mlp.norm.weight", p));
      if (fam == "mixtral") {  // MixtralSparseMoeBlock: gate (the router), experts.e.w1/w3/w2 (gate/up/down)
        out.push_back(copy(h + "block_sparse_moe.gate.weight", b + "mlp.w_router", p));
        for (int e = 0; e < d.get_int("moe_experts"); ++e) {
          const std::string he = h + "block_sparse_moe.experts." + std::to_string(e) + ".",
                            be = b + "mlp.experts." + std::to_string(e) + ".";
          out.push_back(copy(he + "w1.weight", be + "w_gate", p));
          out.push_back(copy(he + "w3.weight", be + "w_up", p));
          out.push_back(copy(he + "w2.weight", be + "w_down", p));
        }
        continue;
      }
      out.push_back(copy(h + "mlp.gate_proj.weight", b + "mlp.w_gate", p));
      out.push_back(copy(h + "mlp.up_proj.weight", b + "mlp.w_up", p));
      out.push_back(copy(h + "mlp.down_proj.weight", b + "mlp.w_down", p));
    }
    out.push_back(copy("model.norm.weight", "final_norm.weight", p));
    if (p.find("head.weight") >= 0) out.push_back(copy("lm_head.weight", "head.weight", p));
  }
  return out;
}

void write_json(const fs::path& path, const json& j) {
  std::ofstream out(path);
  LLMTK_CHECK(out.good(), "export --hf", "cannot write '", path.string(), "'");
  out << j.dump(2) << "\n";
}

// BERT reads [CLS] text [SEP] (and [CLS] a [SEP] b [SEP], the second segment type 1): the
// tokenizer's TemplateProcessing post-processor adds them, as bert-base-uncased's does, so that
// Transformers' tokenizer(text) gives the row llmtk's fill-mask reads.
void add_bert_template(const fs::path& file, const data::Tokenizer& tok) {
  const auto cls = tok.special("[CLS]"), sep = tok.special("[SEP]");
  if (!cls || !sep) return;  // mlm_tokens refuses such a tokenizer before training; nothing to add
  json j;
  {
    std::ifstream in(file);
    j = json::parse(in);
  }
  auto special = [](const char* id, int type) { return json{{"SpecialToken", {{"id", id}, {"type_id", type}}}}; };
  auto sequence = [](const char* id, int type) { return json{{"Sequence", {{"id", id}, {"type_id", type}}}}; };
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)}},
      {"pair", {special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0), sequence("B", 1), special("[SEP]", 1)}},
      {"special_tokens",
       {{"[CLS]", {{"id", "[CLS]"}, {"ids", {*cls}}, {"tokens", {"[CLS]"}}}},
        {"[SEP]", {{"id", "[SEP]"}, {"ids", {*sep}}, {"tokens", {"[SEP]"}}}}}}};
  std::ofstream out(file);
  LLMTK_CHECK(out.good(), "export --hf", "cannot write '", file.string(), "'");
  out << j.dump(-1, ' ', false, json::error_handler_t::strict) << "\n";
}

}  // namespace

void export_hf(const AnyModel& m, const std::string& out_dir, const data::Tokenizer* tok, const data::ChatTemplate* chat,
               const std::vector<std::string>* labels) {
  const std::string fam = hf_family(m);  // refuses, before anything is written, what the format cannot hold
  LLMTK_CHECK(m.prefix() == 0, "export --hf", "model '", m.name(), "' has prefix keys and values (prefix tuning), which a "
              "Transformers checkpoint has no place for; export them with --peft DIR (PEFT's prefix-tuning layout) and the "
              "base with --hf; nothing was written");
  LLMTK_CHECK(m.soft_prompt() == 0, "export --hf", "model '", m.name(), "' has a soft prompt (prompt tuning), which a "
              "Transformers checkpoint has no place for; export it with --peft DIR (PEFT's prompt-tuning layout) and the "
              "base with --hf; nothing was written");
  for (const auto& e : m.params().entries())
    LLMTK_CHECK(e.name.find("_adapter.") == std::string::npos, "export --hf", "model '", m.name(), "' carries adapters ('",
                e.name, "'), which a Transformers checkpoint has no place for; merge them first (export --merge); nothing was written");
  const Dims& d = m.dims();
  // Everything goes into DIR.tmp, renamed to DIR once complete: a failure leaves no partial export.
  const fs::path target = fs::path(out_dir).lexically_normal();
  const fs::path final_dir = target.filename().empty() ? target.parent_path() : target;
  LLMTK_CHECK(!fs::exists(final_dir) || fs::is_directory(final_dir), "export --hf", "'", out_dir, "' is a file, not a directory");
  const fs::path tmp = final_dir.string() + ".tmp";
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const std::string dir = tmp.string();
  const bool tied = m.params().find("head.weight") < 0;
  json cfg;
  const int eot = tok ? int(tok->eot()) : d.vocab - 1;
  if (fam == "bert") {
    // hidden_act gelu_new: llmtk's GELU is the tanh approximation (BERT's own checkpoints use "gelu", erf).
    const auto pad = tok ? tok->special("[PAD]") : std::nullopt;
    cfg = {{"architectures", {"BertForMaskedLM"}}, {"model_type", "bert"}, {"vocab_size", d.vocab},
           {"hidden_size", d.d_model}, {"num_hidden_layers", d.n_layers}, {"num_attention_heads", d.n_heads},
           {"intermediate_size", d.d_ff}, {"hidden_act", "gelu_new"}, {"hidden_dropout_prob", 0.0},
           {"attention_probs_dropout_prob", 0.0}, {"max_position_embeddings", d.max_seq},
           {"type_vocab_size", d.get_int("type_vocab")}, {"initializer_range", 0.02}, {"layer_norm_eps", d.norm_eps},
           {"position_embedding_type", "absolute"}, {"is_decoder", false}, {"tie_word_embeddings", tied},
           {"torch_dtype", "float32"}};
    if (pad) cfg["pad_token_id"] = *pad;
    if (m.has_tag("class_head")) {
      // The class names, by id, as Transformers keeps them (id2label's keys are strings in JSON).
      const std::int64_t K = m.outputs();
      LLMTK_CHECK(labels && std::int64_t(labels->size()) == K, "export --hf", "model '", m.name(), "' tells ", K,
                  " classes apart but ", labels ? labels->size() : 0, " class names were given; nothing was written");
      cfg["architectures"] = {"BertForSequenceClassification"};
      cfg["num_labels"] = K;
      cfg["problem_type"] = "single_label_classification";
      json id2label = json::object(), label2id = json::object();
      for (std::int64_t k = 0; k < K; ++k) id2label[std::to_string(k)] = (*labels)[std::size_t(k)], label2id[(*labels)[std::size_t(k)]] = k;
      cfg["id2label"] = id2label, cfg["label2id"] = label2id;
      cfg.erase("tie_word_embeddings");
    }
  } else if (fam == "t5") {
    // The decoder starts from [PAD], as T5's does; sources and targets end with end of text.
    int pad = 0;
    if (tok)
      if (const auto id = tok->special("[PAD]")) pad = int(*id);
    cfg = {{"architectures", {"T5ForConditionalGeneration"}}, {"model_type", "t5"}, {"vocab_size", d.vocab},
           {"d_model", d.d_model}, {"d_kv", d.head_dim()}, {"d_ff", d.d_ff}, {"num_layers", d.n_layers},
           {"num_decoder_layers", d.n_layers}, {"num_heads", d.n_heads}, {"relative_attention_num_buckets", 32},
           {"relative_attention_max_distance", 128}, {"dropout_rate", 0.0}, {"layer_norm_epsilon", d.norm_eps},
           {"initializer_factor", 1.0}, {"feed_forward_proj", "relu"}, {"is_encoder_decoder", true},
           {"tie_word_embeddings", true}, {"eos_token_id", eot}, {"pad_token_id", pad},
           {"decoder_start_token_id", pad}, {"torch_dtype", "float32"}};
  } else if (fam == "gpt2") {
    cfg = {{"architectures", {"GPT2LMHeadModel"}}, {"model_type", "gpt2"}, {"vocab_size", d.vocab},
           {"n_positions", d.max_seq}, {"n_ctx", d.max_seq}, {"n_embd", d.d_model}, {"n_layer", d.n_layers},
           {"n_head", d.n_heads}, {"n_inner", d.d_ff}, {"activation_function", "gelu_new"},
           {"layer_norm_epsilon", d.norm_eps}, {"resid_pdrop", 0.0}, {"embd_pdrop", 0.0}, {"attn_pdrop", 0.0},
           {"initializer_range", 0.02}, {"tie_word_embeddings", true}, {"bos_token_id", eot}, {"eos_token_id", eot},
           {"torch_dtype", "float32"}};
  } else if (fam == "mixtral") {
    cfg = {{"architectures", {"MixtralForCausalLM"}}, {"model_type", "mixtral"}, {"vocab_size", d.vocab},
           {"hidden_size", d.d_model}, {"intermediate_size", d.d_ff}, {"num_hidden_layers", d.n_layers},
           {"num_attention_heads", d.n_heads}, {"num_key_value_heads", d.n_kv_heads}, {"head_dim", d.head_dim()},
           {"max_position_embeddings", d.max_seq}, {"rms_norm_eps", d.norm_eps}, {"rope_theta", d.rope_base},
           {"hidden_act", "silu"}, {"num_local_experts", d.get_int("moe_experts")},
           {"num_experts_per_tok", d.get_int("moe_top_k")}, {"router_aux_loss_coef", d.get("moe_aux_coef")},
           {"output_router_logits", false}, {"sliding_window", nullptr}, {"tie_word_embeddings", tied},
           {"initializer_range", 0.02}, {"bos_token_id", eot}, {"eos_token_id", eot}, {"torch_dtype", "float32"}};
  } else {
    cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", d.vocab},
           {"hidden_size", d.d_model}, {"intermediate_size", d.d_ff}, {"num_hidden_layers", d.n_layers},
           {"num_attention_heads", d.n_heads}, {"num_key_value_heads", d.n_kv_heads}, {"head_dim", d.head_dim()},
           {"max_position_embeddings", d.max_seq}, {"rms_norm_eps", d.norm_eps}, {"rope_theta", d.rope_base},
           {"hidden_act", hf_hidden_act(m)}, {"attention_bias", false}, {"mlp_bias", false}, {"tie_word_embeddings", tied},
           {"initializer_range", 0.02}, {"bos_token_id", eot}, {"eos_token_id", eot}, {"torch_dtype", "float32"}};
  }
  write_json(fs::path(dir) / "config.json", cfg);
  Arena out("hf");
  const auto maps = mappings(m);
  for (const auto& mp : maps) out.add(mp.hf, mp.shape);
  out.allocate(host_memory());  // written here, on the host, then saved
  const Arena host = m.params().device() == Device::host ? Arena() : m.params().host_copy();  // GPU parameters
  const Arena& params = m.params().device() == Device::host ? m.params() : host;
  for (const auto& mp : maps) mp.to_hf(params, out[mp.hf].f32());
  save_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  if (tok) write_hf_tokenizer(dir, *tok, chat, d.max_seq);
  if (tok && fam == "bert") add_bert_template(fs::path(dir) / "tokenizer.json", *tok);
  if (!fs::exists(final_dir)) {
    if (final_dir.has_parent_path()) fs::create_directories(final_dir.parent_path());
    fs::rename(tmp, final_dir);  // the export appears whole or not at all
    return;
  }
  // DIR exists (an earlier export, or a folder of the user's): replace the export's files only.
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}) fs::remove(final_dir / f);
  for (const auto& e : fs::directory_iterator(tmp)) fs::rename(e.path(), final_dir / e.path().filename());
  fs::remove_all(tmp);
}

void write_hf_tokenizer(const std::string& dir, const data::Tokenizer& tok, const data::ChatTemplate* chat, int max_seq) {
  tok.save((fs::path(dir) / "tokenizer.json").string());
  const std::string eot_text = tok.specials().empty() ? "" : tok.specials().front().first;
  nlohmann::json tok_cfg = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false},
                            {"bos_token", eot_text}, {"eos_token", eot_text}, {"model_max_length", max_seq}};
  // A masked language model's tokens, under the names Transformers' pipelines look for (fill-mask
  // reads mask_token).
  for (const auto& [key, text] : {std::pair<const char*, const char*>{"pad_token", "[PAD]"}, {"cls_token", "[CLS]"},
                                  {"sep_token", "[SEP]"}, {"mask_token", "[MASK]"}})
    if (tok.special(text)) tok_cfg[key] = text;
  if (chat) {
    tok_cfg["chat_template"] = chat->jinja();
    tok_cfg["eos_token"] = tok.token_bytes(chat->end_of_turn(tok));
  }
  write_json(fs::path(dir) / "tokenizer_config.json", tok_cfg);
}

namespace {
Dims read_hf_dims(const std::string& dir, std::string& family) {
  const fs::path cfg_path = fs::path(dir) / "config.json";
  LLMTK_CHECK(fs::exists(cfg_path), "--init", "'", dir, "' has no config.json; expected a Transformers checkpoint directory");
  std::ifstream in(cfg_path);
  nlohmann::json c;
  try {
    c = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("--init", cfg_path.string(), " is not valid JSON: ", e.what());
  }
  family = c.value("model_type", "");
  Dims d;
  // Sizes: whole numbers in [1, 2^28], checked before conversion (a float such as 1e300 would
  // convert to int with undefined behaviour; the bound keeps products such as 4 · n_embd in range).
  auto need = [&](const char* key) {
    LLMTK_CHECK(c.contains(key) && c[key].is_number(), "--init", cfg_path.string(), " lacks the number '", key, "'");
    const int v = whole<int>(c[key], cat("--init: ", cfg_path.string(), ", ", key));
    LLMTK_CHECK(v >= 1 && v <= (1 << 28), "--init", cfg_path.string(), " has ", key, " = ", v, "; expected 1 to 2^28");
    return v;
  };
  auto opt = [&](const char* key, int fallback) { return c.contains(key) && !c[key].is_null() ? need(key) : fallback; };
  if (family == "gpt2") {
    d.d_model = need("n_embd"), d.n_layers = need("n_layer"), d.n_heads = need("n_head");
    d.n_kv_heads = d.n_heads, d.vocab = need("vocab_size"), d.max_seq = need("n_positions");
    d.d_ff = opt("n_inner", 4 * d.d_model);
    d.norm_eps = c.value("layer_norm_epsilon", 1e-5), d.bias = true;
  } else if (family == "llama" || family == "mixtral") {
    d.d_model = need("hidden_size"), d.n_layers = need("num_hidden_layers"), d.n_heads = need("num_attention_heads");
    d.n_kv_heads = opt("num_key_value_heads", d.n_heads), d.d_ff = need("intermediate_size");
    d.vocab = need("vocab_size"), d.max_seq = need("max_position_embeddings");
    d.norm_eps = c.value("rms_norm_eps", 1e-5), d.rope_base = c.value("rope_theta", 10000.0);
    LLMTK_CHECK(!c.contains("rope_scaling") || c["rope_scaling"].is_null(), "--init", cfg_path.string(),
                " uses rope_scaling, which llmtk's RoPE does not model");
    LLMTK_CHECK(!c.contains("head_dim") || c["head_dim"] == d.d_model / d.n_heads, "--init", cfg_path.string(),
                " has head_dim != hidden_size / num_attention_heads, which llmtk does not support");
  } else if (family == "bert") {
    // A classifier (BertForSequenceClassification) has its classes in id2label (or num_labels).
    if (c.contains("architectures") && c["architectures"].is_array() && !c["architectures"].empty() &&
        c["architectures"][0] == "BertForSequenceClassification") {
      const auto n = c.contains("id2label") && c["id2label"].is_object() ? c["id2label"].size() : std::size_t(opt("num_labels", 2));
      LLMTK_CHECK(n >= 2, "--init", cfg_path.string(), " describes a classifier of ", n, " classes; llmtk's needs 2 or more");
      d.set("n_labels", double(n));
    }
    d.d_model = need("hidden_size"), d.n_layers = need("num_hidden_layers"), d.n_heads = need("num_attention_heads");
    d.n_kv_heads = d.n_heads, d.d_ff = need("intermediate_size"), d.vocab = need("vocab_size");
    d.max_seq = need("max_position_embeddings"), d.norm_eps = c.value("layer_norm_eps", 1e-12), d.bias = true;
    d.set("type_vocab", opt("type_vocab_size", 2));
    const std::string act = c.value("hidden_act", "gelu");
    LLMTK_CHECK(act == "gelu_new" || act == "gelu_pytorch_tanh", "--init", cfg_path.string(), " has hidden_act = \"", act,
                "\"; llmtk's GELU is the tanh approximation (gelu_new), ",
                act == "gelu" ? "and BERT's exact erf GELU differs from it by up to 1e-3 per unit, so the model would compute something else"
                              : "and llmtk has no such activation");
    LLMTK_CHECK(c.value("position_embedding_type", "absolute") == "absolute", "--init", cfg_path.string(),
                " has position_embedding_type = \"", c.value("position_embedding_type", ""), "\"; llmtk's BERT has absolute (learned) positions");
    LLMTK_CHECK(!c.value("is_decoder", false) && !c.value("add_cross_attention", false), "--init", cfg_path.string(),
                " describes a BERT decoder (is_decoder / add_cross_attention), which llmtk does not model");
  } else if (family == "t5") {
    d.d_model = need("d_model"), d.n_layers = need("num_layers"), d.n_heads = need("num_heads");
    d.n_kv_heads = d.n_heads, d.d_ff = need("d_ff"), d.vocab = need("vocab_size");
    d.max_seq = 512, d.norm_eps = c.value("layer_norm_epsilon", 1e-6), d.bias = false;  // relative positions: no table to size
    LLMTK_CHECK(opt("num_decoder_layers", d.n_layers) == d.n_layers, "--init", cfg_path.string(), " has ",
                opt("num_decoder_layers", 0), " decoder layers and ", d.n_layers, " encoder layers; llmtk's T5 has as many of each");
    LLMTK_CHECK(std::int64_t(opt("d_kv", d.d_model / d.n_heads)) * d.n_heads == d.d_model, "--init", cfg_path.string(),
                " has d_kv · num_heads != d_model, which llmtk does not support");
    LLMTK_CHECK(c.value("feed_forward_proj", "relu") == "relu", "--init", cfg_path.string(), " has feed_forward_proj = \"",
                c.value("feed_forward_proj", ""), "\" (T5 v1.1); llmtk's T5 preset is v1.0's ReLU feed-forward");
    LLMTK_CHECK(c.value("tie_word_embeddings", true), "--init", cfg_path.string(), " has an untied head (T5 v1.1); llmtk's T5 "
                "preset ties it");
    LLMTK_CHECK(opt("relative_attention_num_buckets", 32) == 32 && opt("relative_attention_max_distance", 128) == 128,
                "--init", cfg_path.string(), " has a relative bias of other than 32 buckets up to 128, T5Positions' shape");
  } else {
    fail("--init", cfg_path.string(), " has model_type '", family, "'; supported: gpt2, llama, mixtral, bert, t5");
  }
  if (family == "mixtral") {
    d.set("moe_experts", need("num_local_experts")), d.set("moe_top_k", need("num_experts_per_tok"));
    d.set("moe_aux_coef", c.value("router_aux_loss_coef", 0.001));
    LLMTK_CHECK(!c.contains("sliding_window") || c["sliding_window"].is_null(), "--init", cfg_path.string(),
                " has a sliding_window, which llmtk's Mixtral does not model");
  }
  return d;
}
}  // namespace

Dims hf_dims(const std::string& dir, std::string& family) {
  return reading_file("--init", (fs::path(dir) / "config.json").string(), [&] { return read_hf_dims(dir, family); });
}

void import_hf(AnyModel& m, const std::string& dir) {
  std::string family;
  const Dims d = hf_dims(dir, family);
  LLMTK_CHECK(family == hf_family(m), "--init", "'", dir, "' holds a ", family, " checkpoint; the model is ", hf_family(m));
  if (family == "mixtral") {
    const Dims& ours = m.dims();
    LLMTK_CHECK(d.get("moe_experts") == ours.get("moe_experts") && d.get("moe_top_k") == ours.get("moe_top_k"), "--init",
                "'", dir, "/config.json' has ", d.get_int("moe_experts"), " experts, top-", d.get_int("moe_top_k"),
                ", but the model has ", ours.get_int("moe_experts"), ", top-", ours.get_int("moe_top_k"),
                "; make the recipe's model.moe_experts and model.moe_top_k match the checkpoint");
  }
  if (family == "llama") {
    std::ifstream in(fs::path(dir) / "config.json");
    const std::string act = nlohmann::json::parse(in).value("hidden_act", "silu");
    const bool tanh_gelu = act == "gelu_pytorch_tanh" || act == "gelu_new";
    LLMTK_CHECK(act == "silu" ? m.has_tag("swiglu") : tanh_gelu && m.has_tag("geglu"), "--init", "'", dir,
                "/config.json' has hidden_act = \"", act, "\" and the model's feed-forward is ",
                m.has_tag("swiglu") ? "SwiGLU (silu)" : m.has_tag("geglu") ? "GeGLU (gelu_pytorch_tanh)" : "not gated",
                act == "silu" || tanh_gelu ? "; use an architecture with the matching GLU" : "; llmtk has no such activation");
  }
  if (family == "bert") {
    LLMTK_CHECK(d.has("n_labels") == m.classifier(), "--init", "'", dir, "/config.json' is a ",
                d.has("n_labels") ? "classifier (BertForSequenceClassification)" : "masked language model (BertForMaskedLM)",
                " and the model is ", m.classifier() ? "a classifier" : "a masked language model", "; use a matching architecture",
                m.classifier() ? "" : " (NAME+classify)");
    if (m.classifier())
      LLMTK_CHECK(d.get("n_labels") == m.dims().get("n_labels", 2), "--init", "'", dir, "/config.json' has ", d.get_int("n_labels"),
                  " classes but the model has ", m.dims().get_int("n_labels", 2), "; the recipe's classify.labels must name as many");
    std::ifstream in(fs::path(dir) / "config.json");
    const bool tied = nlohmann::json::parse(in).value("tie_word_embeddings", true);  // BertConfig ties by default
    LLMTK_CHECK(m.classifier() || tied == (m.params().find("head.weight") < 0), "--init", "'", dir, "/config.json' has tie_word_embeddings = ",
                tied, " but the model's MLM head is ", tied ? "untied (MLMHead<Untied>)" : "tied (MLMHead<Tied>)",
                "; use an architecture whose head matches the checkpoint");
    LLMTK_CHECK(d.get("type_vocab") == m.dims().get("type_vocab"), "--init", "'", dir, "/config.json' has type_vocab_size = ",
                d.get_int("type_vocab"), " but the model has ", m.dims().get_int("type_vocab"), "; set model.type_vocab to match");
  }
  const Dims& ours = m.dims();
  auto same = [&](const char* key, long a, long b) {
    LLMTK_CHECK(a == b, "--init", "'", dir, "/config.json' has ", key, " = ", a, " but the model has ", b,
                "; make the recipe's [model] match the checkpoint");
  };
  same("d_model", d.d_model, ours.d_model), same("n_layers", d.n_layers, ours.n_layers);
  same("n_heads", d.n_heads, ours.n_heads), same("n_kv_heads", d.n_kv_heads, ours.n_kv_heads);
  same("d_ff", d.d_ff, ours.d_ff), same("vocab", d.vocab, ours.vocab);
  if (family == "bert") same("max_seq", d.max_seq, ours.max_seq);  // position_embeddings has max_seq rows
  const fs::path file = fs::path(dir) / "model.safetensors";
  LLMTK_CHECK(fs::exists(file), "--init", "'", dir, "' has no model.safetensors",
              fs::exists(fs::path(dir) / "model.safetensors.index.json") ? " (sharded checkpoints are not supported yet)" : "");
  SafetensorsFile f(file.string());
  // Older GPT-2 files name tensors without the "transformer." prefix.
  const bool bare = family == "gpt2" && !f.has("transformer.wte.weight") && f.has("wte.weight");
  std::vector<float> buf;
  Arena host = m.params().device() == Device::host ? Arena() : m.params().host_copy();  // GPU parameters
  Arena& params = m.params().device() == Device::host ? m.params() : host;
  for (const auto& mp : mappings(m)) {
    const std::string name = bare ? mp.hf.substr(std::string("transformer.").size()) : mp.hf;
    std::int64_t n = 1;
    for (auto e : mp.shape) n *= e;
    buf.resize(std::size_t(n));
    f.read(name, buf.data(), mp.shape);
    mp.from_hf(params, buf.data());
  }
  if (&params != &m.params()) m.params().copy_from(params);
}

}  // namespace llmtk::train
