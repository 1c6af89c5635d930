// convert: y = x in y's dtype (f32 ↔ bf16; bf16 → f32 exact, f32 → bf16 round to nearest even).
#include "reference.hpp"

namespace llmtk::reference {

void convert(TensorRef y, TensorRef x) {
  const std::int64_t n = x.numel();
  auto get = [&](std::int64_t i) {
    return x.dtype == DType::f32 ? x.f32()[i] : float(static_cast<const bf16*>(x.data)[i]);
  };
  for (std::int64_t i = 0; i < n; ++i) {
    if (y.dtype == DType::f32) y.f32()[i] = get(i);
    else static_cast<bf16*>(y.data)[i] = bf16(get(i));
  }
}

}  // namespace llmtk::reference
