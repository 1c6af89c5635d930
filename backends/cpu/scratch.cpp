// The CPU backend's reusable scratch memory and thread count.
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <string>

#include <vector>

#include "cpu.hpp"

namespace llmtk::cpu {

float* scratch(std::size_t n) {
  static std::vector<float> buffer;
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

int max_threads() { return omp_get_max_threads(); }

// The instruction set oneDNN dispatches to on this CPU, for logs and benchmark tables.
std::string info() {
  using isa = dnnl::cpu_isa;
  const char* name = "unknown";
  switch (dnnl::get_effective_cpu_isa()) {
    case isa::sse41: name = "sse41"; break;
    case isa::avx: name = "avx"; break;
    case isa::avx2: name = "avx2"; break;
    case isa::avx2_vnni: name = "avx2_vnni"; break;
    case isa::avx512_core: name = "avx512_core"; break;
    case isa::avx512_core_vnni: name = "avx512_core_vnni"; break;
    case isa::avx512_core_bf16: name = "avx512_core_bf16"; break;
    case isa::avx512_core_amx: name = "avx512_core_amx"; break;
    default: break;
  }
  const auto* v = dnnl_version();
  return cat("oneDNN ", v->major, ".", v->minor, ".", v->patch, ", ISA ", name, ", ", omp_get_max_threads(), " OpenMP threads");
}

}  // namespace llmtk::cpu
