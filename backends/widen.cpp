// Scratch for the bf16 fallback's widened copies (widen.hpp): one grow-only buffer per slot and
// device, from that device's memory.
#include "widen.hpp"

#include <array>

namespace llmtk::backend {

float* widen_scratch(Device device, int slot, std::int64_t count) {
  struct Buffer {
    void* p = nullptr;
    std::size_t bytes = 0;
  };
  static std::array<std::array<Buffer, Widening<nullptr>::kMaxCopies>, 2> buffers;
  Buffer& b = buffers[device == Device::host ? 0 : 1][std::size_t(slot)];
  const std::size_t bytes = std::size_t(count) * sizeof(float);
  if (b.bytes < bytes) {
    const DeviceMemory& m = memory_of(device);
    if (b.p) m.release(b.p);
    b.p = m.allocate(bytes, "bf16 fallback scratch");
    b.bytes = bytes;
  }
  return static_cast<float*>(b.p);
}

}  // namespace llmtk::backend
