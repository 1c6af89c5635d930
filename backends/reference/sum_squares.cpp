// sum_squares: out[0] += Σ x², accumulated in fp64.
#include "reference.hpp"

namespace llmtk::reference {

void sum_squares(TensorRef out, TensorRef x) {
  double s = 0;
  for (std::int64_t i = 0, n = x.numel(); i < n; ++i) s += double(x.f32()[i]) * x.f32()[i];
  out.f32()[0] = static_cast<float>(out.f32()[0] + s);
}

}  // namespace llmtk::reference
