// How much memory a new allocation can still get: what the trainer's pre-flight check compares
// a run's plan with before it allocates (docs/reliability.md). Its own small header, so that the
// widely included memory.hpp stays as it is.
#pragma once
#include <cstddef>

#include "tensor.hpp"  // Device

namespace llmtk {

// Bytes available on `d`: the host's MemAvailable (/proc/meminfo: free memory plus the caches the
// kernel can drop), or what the device's backend reports (CUDA: cudaMemGetInfo's free bytes).
// 0 when unknown (no /proc, a device whose backend has not said).
std::size_t available_memory(Device d);
// A backend with memory of its own says how to ask it (the CUDA backend, when first used).
void set_available_memory_query(Device d, std::size_t (*query)());

}  // namespace llmtk
