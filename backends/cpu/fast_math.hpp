// exp and tanh in plain float arithmetic, so that loops using them vectorise (glibc's expf and
// tanhf are scalar calls here: libmvec needs -ffast-math, which would also break NaN checks).
// exp: round x/ln2 to n, reduce r = x − n·ln2 (two-part ln2), a degree-6 Taylor polynomial on
// |r| ≤ ln2/2 (relative error < 2e-7), scale by 2^n through the exponent bits. NaN stays NaN,
// large x gives inf, very negative x gives 0.
#pragma once
#include <bit>
#include <cstdint>

namespace llmtk::cpu {

inline float fast_exp(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = (xc * 1.44269504f + 12582912.0f) - 12582912.0f;  // round to nearest (1.5·2^23 trick)
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;      // x − n·ln2, ln2 split in two
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<std::int32_t>(n) + 127) << 23);
  // Selects, not branches, so that loops calling this vectorise.
  float y = p * scale;
  y = x > 88.0f ? std::bit_cast<float>(0x7f800000) : y;  // +inf
  y = x < -87.0f ? 0.0f : y;
  return x != x ? x : y;  // NaN stays NaN
}

// tanh(u) = 1 − 2/(exp(2u) + 1): exact limits ±1, NaN stays NaN.
inline float fast_tanh(float u) { return 1.0f - 2.0f / (fast_exp(2.0f * u) + 1.0f); }

}  // namespace llmtk::cpu
