// bf16 ↔ f32 on the CPU as loops the compiler vectorises (selects, no branches): one pass at
// memory speed. Rounding is to nearest even and NaN stays NaN, as llmtk::bf16 (core/dtype.hpp).
#pragma once
#include <cstdint>

namespace llmtk::cpu {

inline std::uint16_t bf16_bits(float f) {
  std::uint32_t b;
  __builtin_memcpy(&b, &f, 4);
  const std::uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  const bool nan = (b & 0x7fffffffu) > 0x7f800000u;
  return static_cast<std::uint16_t>(nan ? ((b >> 16) | 0x40u) : rounded);
}
inline float bf16_value(std::uint16_t h) {
  const std::uint32_t b = std::uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &b, 4);
  return f;
}

inline void to_bf16(std::uint16_t* out, const float* in, std::int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_bits(in[i]);
}
// The same on one thread (inside a parallel loop).
inline void to_bf16_serial(std::uint16_t* out, const float* in, std::int64_t n) {
#pragma omp simd
  for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_bits(in[i]);
}
inline void from_bf16(float* out, const std::uint16_t* in, std::int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (std::int64_t i = 0; i < n; ++i) out[i] = bf16_value(in[i]);
}

}  // namespace llmtk::cpu
