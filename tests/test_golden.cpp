// Golden test: tiny GPT-2-, Llama-, MoE- and hybrid (minGRU + attention) models, a BERT encoder (token
// types, padding, the MLM head) and a T5 encoder-decoder (relative position bias, cross-attention over a
// padded source, the scaled tied head) with fixed weights; logits, loss and every parameter gradient
// compared with PyTorch (tests/golden/gen_golden.py computed them in float64). Runs on the reference
// backend, and on the cpu backend as test_golden.cpu; tolerances in tests/golden_check.hpp.
#include "golden_check.hpp"

using llmtk::test::check_golden;

TEST_CASE("GPT-2 style model matches PyTorch", "[golden]") {
  check_golden("gpt2_tiny.json", "gpt2");
}

TEST_CASE("Llama style model matches PyTorch", "[golden]") {
  check_golden("llama_tiny.json", "llama-tiny");
}

// Mixture of experts: 4 SwiGLU experts, top-2 renormalised, the load-balancing and z-losses in
// the gradients (docs/moe.md).
TEST_CASE("MoE model matches PyTorch, auxiliary losses included", "[golden]") {
  check_golden("moe_tiny.json", "moe-tiny");
}

// Two minGRU layers and an attention layer (Pattern<...>): the recurrence step by step in PyTorch,
// a scan here.
TEST_CASE("hybrid recurrent/attention model matches PyTorch", "[golden]") {
  check_golden("hybrid_tiny.json", "hybrid-tiny");
}

// BertForMaskedLM's layout with the tanh GELU: token types A A A B..., row 0 padded after 5 tokens,
// the loss on 7 selected positions.
TEST_CASE("BERT encoder matches PyTorch, token types and padding included", "[golden]") {
  check_golden("bert_tiny.json", "bert-tiny");
}

// T5 v1.0 with llmtk's 1/sqrt(D) score scale: a source of 12 (row 0 padded after 9) reaching the
// encoder's logarithmic buckets, a decoder of 18 reaching the decoder's.
TEST_CASE("T5 encoder-decoder matches PyTorch, relative bias and a padded source included", "[golden]") {
  check_golden("t5_tiny.json", "t5-tiny");
}
