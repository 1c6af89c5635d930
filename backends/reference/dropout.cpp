// dropout: y = x · keep(seed, i) / (1 − p), element by element (y may alias x).
#include "../../framework/ops/dropout_mask.hpp"
#include "reference.hpp"

namespace llmtk::reference {

void dropout(TensorRef y, TensorRef x, float p, std::uint64_t seed) {
  const double k = dropout::kept_scale(p);
  for (std::int64_t i = 0, n = x.numel(); i < n; ++i)
    y.f32()[i] = dropout::keep(seed, i, p) ? static_cast<float>(double(x.f32()[i]) * k) : 0.0f;
}

}  // namespace llmtk::reference
