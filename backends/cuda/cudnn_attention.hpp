// cuDNN's fused scaled-dot-product attention (flash attention) through the cuDNN backend
// (graph) C API, in its own translation unit: the only file that includes cudnn.h. bf16 q, k, v
// in the [B, T, heads, D] layout of the op contract; the softmax statistics (lse) stay f32.
// Causal masking only (attention.cpp routes other masks to the tiled kernel); k and v have H
// heads (grouped kv heads repeated by the caller, which also sums dk and dv over each group).
// Both return false, with the reason in `why`, when cuDNN cannot build the graph for these sizes;
// the caller then runs the tiled kernel. A forward that fails to run also returns false; a
// backward that fails to run throws, naming attention_backward.
#pragma once
#include <cstdint>
#include <string>

#include "kernels.hpp"

namespace llmtk::cuda {

bool cudnn_sdpa_forward(const kernels::AttentionDims& d, const std::uint16_t* q, const std::uint16_t* k,
                        const std::uint16_t* v, std::uint16_t* out, float* lse, std::string& why);
// dq, dk, dv written (bf16, [B, T, H, D]) from dout, q, k, v, out and the forward's lse.
bool cudnn_sdpa_backward(const kernels::AttentionDims& d, const std::uint16_t* dout, const std::uint16_t* q,
                         const std::uint16_t* k, const std::uint16_t* v, const std::uint16_t* out, const float* lse,
                         std::uint16_t* dq, std::uint16_t* dk, std::uint16_t* dv, std::string& why);
}  // namespace llmtk::cuda
