// convert: y = x in y's dtype (f32 ↔ bf16), the working copy of the weights and the bf16
// fallback's widening (backends/widen.hpp).
#include <cstring>

#include "bf16.hpp"
#include "cpu.hpp"

namespace llmtk::cpu {

void convert(TensorRef y, TensorRef x) {
  const std::int64_t n = x.numel();
  if (x.dtype == y.dtype) {
    if (x.data != y.data) std::memmove(y.data, x.data, x.bytes());
  } else if (y.dtype == DType::bf16) {
    to_bf16(static_cast<std::uint16_t*>(y.data), x.f32(), n);
  } else {
    from_bf16(y.f32(), static_cast<const std::uint16_t*>(x.data), n);
  }
}

}  // namespace llmtk::cpu
