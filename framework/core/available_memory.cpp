#include "available_memory.hpp"

#include <fstream>
#include <string>

namespace llmtk {

namespace {
std::size_t (*g_query[2])() = {nullptr, nullptr};  // indexed by Device

// /proc/meminfo's "MemAvailable:   12345678 kB": the kernel's estimate of what can be allocated
// without swapping (free memory plus reclaimable caches), the figure `free -h` shows as available.
std::size_t host_available() {
  std::ifstream in("/proc/meminfo");
  std::string key, unit;
  unsigned long long kb = 0;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return std::size_t(kb) * 1024;
  return 0;
}
}  // namespace

std::size_t available_memory(Device d) {
  if (auto* q = g_query[static_cast<int>(d)]) return q();
  return d == Device::host ? host_available() : 0;
}

void set_available_memory_query(Device d, std::size_t (*query)()) { g_query[static_cast<int>(d)] = query; }

}  // namespace llmtk
