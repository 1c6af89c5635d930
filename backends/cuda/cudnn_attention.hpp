// cuDNN's fused scaled-dot-product attention (flash attention) through the cuDNN backend
// (graph) C API, in its own translation unit: the only file that includes cudnn.h. bf16 q, k, v
// in the [B, T, heads, D] layout of the op contract; the softmax statistics (lse) stay f32.
// Causal masking only (attention.cpp routes other masks to the tiled kernel); k and v have H
// heads (grouped kv heads repeated by the caller). Forward only. Returns false,
// with the reason in `why`, when cuDNN cannot build or run the graph for these sizes; the caller
// then runs the tiled kernel.
#pragma once
#include <cstdint>
#include <string>

#include "kernels.hpp"

namespace llmtk::cuda {

bool cudnn_sdpa_forward(const kernels::AttentionDims& d, const std::uint16_t* q, const std::uint16_t* k,
                        const std::uint16_t* v, std::uint16_t* out, float* lse, std::string& why);
}  // namespace llmtk::cuda
