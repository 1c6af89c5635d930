#include "memory.hpp"

#include <cstdlib>
#include <cstring>

namespace llmtk {

namespace {
constexpr std::size_t kAlign = 64;  // a cache line; AVX-512 loads stay aligned

void* host_allocate(std::size_t bytes, const char* what) {
  const std::size_t n = (bytes == 0 ? kAlign : bytes + kAlign - 1) / kAlign * kAlign;
  void* p = std::aligned_alloc(kAlign, n);
  LLMTK_CHECK(p != nullptr, what, "out of memory allocating ", n, " bytes");
  return p;
}
void host_release(void* p) { std::free(p); }
void host_zero(void* p, std::size_t bytes) { std::memset(p, 0, bytes); }
void host_copy(void* dst, Device, const void* src, Device, std::size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}
void host_synchronize() {}

const DeviceMemory kHost{Device::host, &host_allocate, &host_release, &host_zero, &host_copy, &host_synchronize};
const DeviceMemory* g_current = &kHost;
const DeviceMemory* g_by_device[] = {&kHost, nullptr};  // indexed by Device
}  // namespace

const DeviceMemory& host_memory() { return kHost; }
const DeviceMemory& current_memory() { return *g_current; }

void set_current_memory(const DeviceMemory& m) {
  g_current = &m;
  g_by_device[static_cast<int>(m.device)] = &m;
}

const DeviceMemory& memory_of(Device d) {
  const DeviceMemory* m = g_by_device[static_cast<int>(d)];
  LLMTK_CHECK(m != nullptr, "memory", "no backend for this device has been used yet");
  return *m;
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  const Device d = dst_device != Device::host ? dst_device : src_device;
  memory_of(d).copy(dst, dst_device, src, src_device, bytes);
}

}  // namespace llmtk
