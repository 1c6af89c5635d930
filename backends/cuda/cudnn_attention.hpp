// cuDNN's fused scaled-dot-product attention (flash attention) through the cuDNN backend
// (graph) C API, in its own translation unit: the only file that includes cudnn.h. bf16 q, k, v
// in the [B, T, heads, D] layout of the op contract; the softmax statistics (lse) stay f32.
// Causal masking only (attention.cpp routes other masks to the tiled kernel); k and v have H
// heads (grouped kv heads repeated by the caller, which also sums dk and dv over each group).
// Both return false, with the reason in `why`, when cuDNN cannot build the graph for these sizes
// or a built plan fails to run (the failure is remembered); the caller then runs the tiled
// kernel. cudnn_sdpa_usable says beforehand whether the graph for these sizes was built (building
// it on first use), so a caller converts its inputs to bf16 only when cuDNN will use them.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "kernels.hpp"

namespace llmtk::cuda {

bool cudnn_sdpa_usable(bool backward, const kernels::AttentionDims& d, std::string& why);
bool cudnn_sdpa_forward(const kernels::AttentionDims& d, const std::uint16_t* q, const std::uint16_t* k,
                        const std::uint16_t* v, std::uint16_t* out, float* lse, std::string& why);
// dq, dk, dv written (bf16, [B, T, H, D]) from dout, q, k, v, out and the forward's lse.
bool cudnn_sdpa_backward(const kernels::AttentionDims& d, const std::uint16_t* dout, const std::uint16_t* q,
                         const std::uint16_t* k, const std::uint16_t* v, const std::uint16_t* out, const float* lse,
                         std::uint16_t* dq, std::uint16_t* dk, std::uint16_t* dv, std::string& why);

// Builds the forward or backward plan for (B, H, T, D) for the GPU that `device_json` describes
// (cuDNN's device-properties JSON, cuDNN 9.8+) instead of the one present, so whether cuDNN has
// engines for these graphs on an H100 can be checked without one: its heuristics pick engine
// configurations and finalizing compiles their kernels; only loading the compiled kernels needs
// the GPU's driver. (tests/test_cudnn_plans.cpp)
struct OfflinePlan {
  bool finalized = false;               // a plan finalized (possible only with a driver for the device)
  std::int64_t offered = 0;             // engine configurations cuDNN's heuristics offered
  std::map<std::string, int> failures;  // status → how many of them failed to finalize with it
  std::string why;                      // why no plan finalized
};
OfflinePlan cudnn_sdpa_plan_offline(const std::string& device_json, bool backward, std::int64_t B, std::int64_t H,
                                    std::int64_t T, std::int64_t D);
}  // namespace llmtk::cuda
