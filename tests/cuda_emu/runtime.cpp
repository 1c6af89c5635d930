// The CUDA runtime calls the backend makes, on the host, for the emulated build: "device" memory
// is host memory, the stream runs everything at once, and there is one emulated device. The
// declarations are the toolkit's own (cuda_runtime.h), so the backend's host code compiles
// exactly as for a GPU.
#include <cuda_runtime.h>
#include <sys/mman.h>

#include <mutex>
#include <vector>

#include "scheduler.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {
struct Region {
  void* p;
  std::size_t bytes;      // mapped
  std::size_t requested;  // asked for by cudaMalloc
};
std::vector<Region> regions;
int access_depth = 0;
// One thread at a time touches device memory or the list of it: data parallel's communication
// thread (NCCL's collectives) waits while the main thread's kernel runs, and the other way round.
std::recursive_mutex& access_mutex() {
  static std::recursive_mutex m;
  return m;
}

void protect_all(int prot) {
  for (const Region& r : regions)
    if (mprotect(r.p, r.bytes, prot) != 0) {
      std::perror("cuda_emu: mprotect");
      std::abort();
    }
}

thread_local cudaError_t last_error = cudaSuccess;  // per thread, as the runtime keeps it
cudaError_t fail(cudaError_t e) { return last_error = e; }
CUstream_st* const kStream = reinterpret_cast<CUstream_st*>(std::uintptr_t(0x5157));
}  // namespace

// CUDA_EMU_DEVICES=N shows N devices (default 1), all the same emulated one: the distributed
// tests start two ranks on one machine, which NCCL would give a GPU each.
int device_count() {
  static const int n = [] {
    const char* e = std::getenv("CUDA_EMU_DEVICES");
    return e && std::atoi(e) > 0 ? std::atoi(e) : 1;
  }();
  return n;
}
cudaError_t cudaGetDeviceCount(int* count) {
  *count = device_count();
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  return device >= 0 && device < device_count() ? cudaSuccess : fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device < 0 || device >= device_count()) return fail(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "cuda_emu (CUDA kernels emulated on the CPU)");
  p->major = 9, p->minor = 0, p->multiProcessorCount = 1, p->totalGlobalMem = std::size_t(1) << 34;
  p->warpSize = 32, p->maxThreadsPerBlock = 1024, p->sharedMemPerBlock = 48 * 1024;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(std::size_t* free_bytes, std::size_t* total_bytes) {
  *free_bytes = *total_bytes = std::size_t(1) << 34;
  return cudaSuccess;
}
// Device memory: page-aligned mappings, PROT_NONE while no DeviceAccess is held.
cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  std::lock_guard<std::recursive_mutex> lock(access_mutex());
  const std::size_t n = (bytes + 4095) / 4096 * 4096 + 4096;
  void* m = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return fail(cudaErrorMemoryAllocation);
  std::memset(m, 0xff, n);  // NaN floats: memory read before it is written shows
  if (access_depth == 0 && mprotect(m, n, PROT_NONE) != 0) std::abort();
  regions.push_back({m, n, bytes});
  *p = m;
  return cudaSuccess;
}
// The bytes from p to the end of the cudaMalloc allocation holding it, 0 outside device memory:
// the emulated libraries check that what they read and write lies inside (a real one would read
// past the end silently).
std::size_t cuda_emu_bytes_after(const void* p) {
  std::lock_guard<std::recursive_mutex> lock(access_mutex());
  const auto* a = static_cast<const char*>(p);
  for (const Region& r : regions) {
    const auto* begin = static_cast<const char*>(r.p);
    if (a >= begin && a < begin + r.requested) return std::size_t(begin + r.requested - a);
  }
  return 0;
}
cudaError_t cudaFree(void* p) {
  std::lock_guard<std::recursive_mutex> lock(access_mutex());
  for (auto it = regions.begin(); it != regions.end(); ++it)
    if (it->p == p) {
      munmap(it->p, it->bytes);
      regions.erase(it);
      return cudaSuccess;
    }
  return p ? fail(cudaErrorInvalidValue) : cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind, cudaStream_t stream) {
  if (stream != kStream) return fail(cudaErrorInvalidResourceHandle);
  cuda_emu::DeviceAccess access;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t stream) {
  if (stream != kStream) return fail(cudaErrorInvalidResourceHandle);
  cuda_emu::DeviceAccess access;
  std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) {
  *stream = kStream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  return stream == kStream ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  return stream == kStream ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
// Events (comm/nccl.cpp orders its stream after the backend's with them): the one stream runs
// everything at once, so every event has happened when it is recorded.
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned) {
  *event = reinterpret_cast<cudaEvent_t>(new char(0));
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete reinterpret_cast<char*>(event);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  return event && stream == kStream ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventQuery(cudaEvent_t event) { return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle); }
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned) {
  return event && stream == kStream ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    default: return "cudaError (emulated)";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

cuda_emu::DeviceAccess::DeviceAccess() {
  access_mutex().lock();
  if (access_depth++ == 0) protect_all(PROT_READ | PROT_WRITE);
}
cuda_emu::DeviceAccess::~DeviceAccess() {
  if (--access_depth == 0) protect_all(PROT_NONE);
  access_mutex().unlock();
}
