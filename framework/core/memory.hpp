// DeviceMemory: how arenas get memory on the device the active backend computes on, and how host
// code moves bytes in and out of it. Pure C++ (no vendor header): each backend provides one
// (host backends: malloc and memcpy; cuda: cudaMalloc and copies on its stream), and
// ops::use_backend makes the active backend's memory current.
#pragma once
#include <cstddef>

#include "tensor.hpp"  // Device

namespace llmtk {

struct DeviceMemory {
  Device device = Device::host;
  // At least 64-byte aligned; fails with a named error (`what` names the arena) when out of memory.
  void* (*allocate)(std::size_t bytes, const char* what) = nullptr;
  void (*release)(void* p) = nullptr;
  void (*zero)(void* p, std::size_t bytes) = nullptr;
  // Copies between this device's memory and the host, or within this device; each side is
  // named by its Device. Returns when the bytes are in place (a copy to the host waits for
  // the work queued before it).
  void (*copy)(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) = nullptr;
  // Waits for all queued work (host: returns at once). Timers call it before reading the clock.
  void (*synchronize)() = nullptr;
};

// Plain host memory: aligned_alloc, memset, memcpy.
const DeviceMemory& host_memory();
// The memory new arenas allocate from: the active backend's (host until a backend says otherwise).
const DeviceMemory& current_memory();
// Makes `m` current and remembers it as the memory of m.device (ops::use_backend calls this).
void set_current_memory(const DeviceMemory& m);
// The memory that was last made current for `d` (host_memory() for Device::host).
const DeviceMemory& memory_of(Device d);

// Copies bytes between any two places (host or a device), through the device's memory.
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes);

}  // namespace llmtk
