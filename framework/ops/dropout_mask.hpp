// Dropout's mask as a pure function of (seed, element index): a counter-based generator, so no
// mask is stored between forward and backward (backward asks again), and every backend — host
// loops, OpenMP threads in any order, CUDA threads — drops exactly the same elements. The mix is
// SplitMix64's finaliser (Steele, Lea and Flood 2014), a bijection with full avalanche, applied to
// the seed plus the index times the golden-ratio increment; the top 24 bits are the uniform.
// Shared by framework and kernels: no includes beyond <cstdint>; LLMTK_HD marks it for nvcc.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define LLMTK_HD __host__ __device__
#else
#define LLMTK_HD
#endif

namespace llmtk::dropout {

// Whether element `i` is kept at drop probability p (0 ≤ p < 1).
LLMTK_HD inline bool keep(std::uint64_t seed, std::int64_t i, float p) {
  std::uint64_t z = seed + (static_cast<std::uint64_t>(i) + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f) >= p;  // 24 bits: exact in a float
}
// The factor a kept element is multiplied by, 1 / (1 − p), rounded once to float so every backend
// multiplies by the same number.
LLMTK_HD inline float kept_scale(float p) { return static_cast<float>(1.0 / (1.0 - static_cast<double>(p))); }

}  // namespace llmtk::dropout
