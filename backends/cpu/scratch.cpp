// The CPU backend's reusable scratch memory and thread count.
#include <omp.h>

#include <vector>

#include "cpu.hpp"

namespace llmtk::cpu {

float* scratch(std::size_t n) {
  static std::vector<float> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

int max_threads() { return omp_get_max_threads(); }

}  // namespace llmtk::cpu
