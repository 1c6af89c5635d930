// The CUDA backend's context (one device, one stream, cuBLASLt handle and workspace), its scratch
// buffers, its DeviceMemory (one cudaMalloc per arena; copies on the stream) and the start-up
// check that names a missing GPU.
#include <array>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "core/available_memory.hpp"
#include "cuda.hpp"

namespace llmtk::cuda {

std::optional<bool> env_switch(const char* name, const char* on, const char* off, const char* unset) {
  const char* e = std::getenv(name);
  if (!e || !*e) return std::nullopt;
  const std::string_view v(e);
  LLMTK_CHECK(v == "0" || v == "1", name, "is '", v, "'; set it to 1 (", on, ") or 0 (", off, "), or unset it (",
              unset, ")");
  return v == "1";
}

bool sync_after_ops() {
  static const bool on = env_switch("LLMTK_CUDA_SYNC", "wait after every op and report a fault under its name",
                                    "ops run asynchronously", "the default: asynchronous")
                             .value_or(false);
  return on;
}

namespace {

std::string gib(std::size_t bytes) { return cat(static_cast<double>(bytes >> 20) / 1024.0, " GiB"); }

}  // namespace

void fail_call(const char* op, const char* call, const char* status, const char* file, int line) {
  std::string_view f(file);
  if (auto p = f.find("backends/"); p != std::string_view::npos) f.remove_prefix(p);
  fail(op, call, " failed: ", status, " (", f, ":", line, ")");
}

void check_launch(const char* op, const char* file, int line) {
  check_cuda(cudaGetLastError(), op, "kernel launch", file, line);
  if (sync_after_ops()) check_cuda(cudaStreamSynchronize(stream()), op, "running the kernel", file, line);
}

void check_cublas(cublasStatus_t s, const char* op, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) fail_call(op, call, cublasLtGetStatusName(s), file, line);
}

void finish_op(const char* op) {
  if (sync_after_ops()) LLMTK_CUDA_CHECK(op, cudaStreamSynchronize(stream()));
}

namespace {
int chosen_device = 0;
bool context_created = false;
}  // namespace

void use_device(int device) {
  LLMTK_CHECK(!context_created || context().device == device, "cuda", "this process runs on GPU ", context().device,
              " already and cannot move to GPU ", device, "; choose the device before the first op runs");
  chosen_device = device;
}

Context& context() {
  static Context* ctx = [] {
    const char* op = "cuda";
    auto* c = new Context;
    c->device = chosen_device;
    context_created = true;
    LLMTK_CUDA_CHECK(op, cudaSetDevice(c->device));
    LLMTK_CUDA_CHECK(op, cudaGetDeviceProperties(&c->prop, c->device));
    LLMTK_CUDA_CHECK(op, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    LLMTK_CUBLAS_CHECK(op, cublasLtCreate(&c->lt));
    c->workspace_bytes = std::size_t(32) << 20;  // cuBLASLt's recommendation for Hopper
    LLMTK_CUDA_CHECK(op, cudaMalloc(&c->workspace, c->workspace_bytes));
    return c;
  }();
  return *ctx;
}

void* scratch(Scratch slot, std::size_t bytes) {
  struct Buffer {
    void* p = nullptr;
    std::size_t bytes = 0;
  };
  static std::array<Buffer, std::size_t(Scratch::count)> buffers;
  Buffer& b = buffers[std::size_t(slot)];
  if (bytes > b.bytes) {
    // Grows (first step only): queued kernels may still read the old buffer.
    LLMTK_CUDA_CHECK("scratch", cudaStreamSynchronize(stream()));
    if (b.p) LLMTK_CUDA_CHECK("scratch", cudaFree(b.p));
    b.p = nullptr, b.bytes = 0;
    const std::size_t n = (bytes + 255) / 256 * 256;
    LLMTK_CUDA_CHECK("scratch", cudaMalloc(&b.p, n));
    b.bytes = n;
  }
  return b.p;
}

const float* alibi_slopes(std::int64_t H) {
  static std::int64_t cached = 0;
  auto* d = scratch_as<float>(Scratch::slopes, std::size_t(H));
  if (cached != H) {
    std::vector<float> h(static_cast<std::size_t>(H));
    for (std::int64_t i = 0; i < H; ++i) h[std::size_t(i)] = static_cast<float>(backend::alibi_slope(i, H));
    LLMTK_CUDA_CHECK("attention", cudaMemcpyAsync(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice, stream()));
    LLMTK_CUDA_CHECK("attention", cudaStreamSynchronize(stream()));
    cached = H;
  }
  return d;
}

// ---- DeviceMemory ---------------------------------------------------------------------------

namespace {

void* device_allocate(std::size_t bytes, const char* what) {
  context();
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls report their own
    if (e != cudaErrorMemoryAllocation) fail(what, "cannot allocate ", gib(bytes), " on the GPU: ", cudaGetErrorName(e));
    std::size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    fail(what, "out of GPU memory allocating ", gib(bytes), " (", gib(free), " free of ", gib(total),
         "); lower train.batch or train.seq, or set train.recompute = \"blocks\"");
  }
  return p;
}
void device_release(void* p) { cudaFree(p); }  // from destructors: errors are not reported
void device_zero(void* p, std::size_t bytes) { LLMTK_CUDA_CHECK("memory", cudaMemsetAsync(p, 0, bytes, stream())); }
void device_copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  if (bytes == 0) return;
  const cudaMemcpyKind kind = dst_device == Device::host   ? cudaMemcpyDeviceToHost
                              : src_device == Device::host ? cudaMemcpyHostToDevice
                                                           : cudaMemcpyDeviceToDevice;
  LLMTK_CUDA_CHECK("memory", cudaMemcpyAsync(dst, src, bytes, kind, stream()));
  // The host side may be read or reused as soon as this returns.
  if (kind != cudaMemcpyDeviceToDevice) LLMTK_CUDA_CHECK("memory", cudaStreamSynchronize(stream()));
}
void device_synchronize() { LLMTK_CUDA_CHECK("memory", cudaStreamSynchronize(stream())); }

const DeviceMemory kMemory{Device::cuda, &device_allocate, &device_release, &device_zero, &device_copy,
                           &device_synchronize};

// The trainer's pre-flight check (core/available_memory.hpp): the GPU's free bytes now.
std::size_t device_available() {
  context();
  std::size_t free = 0, total = 0;
  return cudaMemGetInfo(&free, &total) == cudaSuccess ? free : 0;
}

}  // namespace

const DeviceMemory& device_memory() {
  static const bool told = (set_available_memory_query(Device::cuda, &device_available), true);
  (void)told;
  return kMemory;
}

namespace {
// LLMTK_CUBLASLT_GELU as set, if set.
std::optional<bool> gelu_switch() {
  static const std::optional<bool> s =
      env_switch("LLMTK_CUBLASLT_GELU", "fuse GELU into cuBLASLt's matmul epilogues", "separate GELU kernels",
                 "the default: separate GELU kernels");
  return s;
}
}  // namespace

bool gelu_epilogue() {
  // Off unless asked for: on an H200 (cuBLASLt 13.1, GPT-2 124M, batch 16 x 1024) cuBLASLt ran
  // both epilogues as separate passes over the f32 output after the product, and the step was
  // 0.6 to 1.4% slower with them than with the GELU kernel (benchmarks/results/cuda.md).
  static const bool on = gelu_switch().value_or(false);
  return on;
}

std::string unavailable() {
  // The switches first: a bad value is reported even on a machine that cannot run the backend.
  (void)sync_after_ops(), (void)cudnn_enabled(), (void)gelu_switch();
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    if (e == cudaErrorInsufficientDriver) {
      int runtime = 0;
      cudaRuntimeGetVersion(&runtime);
      return cat("no CUDA device is usable: the NVIDIA driver is missing or too old for the CUDA ", runtime / 1000, ".",
                 (runtime % 1000) / 10, " runtime of this build (cudaGetDeviceCount: ", cudaGetErrorName(e),
                 "); install an NVIDIA driver for CUDA ", runtime / 1000, ".", (runtime % 1000) / 10, " or newer");
    }
    return cat("no CUDA device found (cudaGetDeviceCount: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e), ")");
  }
  if (n == 0) return "no CUDA device found (cudaGetDeviceCount: 0 devices)";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "cannot read the properties of CUDA device 0";
  if (p.major < 8)
    return cat("CUDA device 0 (", p.name, ") has compute capability ", p.major, ".", p.minor,
               "; the cuda backend needs 8.0 or newer (built for sm_80 and sm_90)");
  return {};
}

std::string info() {
  const Context& c = context();
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  const std::size_t lt = cublasLtGetVersion();
  return cat(c.prop.name, ", sm_", c.prop.major, c.prop.minor, ", ", c.prop.multiProcessorCount, " SMs, ",
             gib(c.prop.totalGlobalMem), "; CUDA runtime ", runtime / 1000, ".", (runtime % 1000) / 10, ", driver ",
             driver / 1000, ".", (driver % 1000) / 10, "; cuBLASLt ", lt / 10000, ".", (lt / 100) % 100, ".", lt % 100,
             "; cuDNN ", cudnn_version(), "; GELU in cuBLASLt epilogues ", gelu_epilogue() ? "on" : "off");
}

}  // namespace llmtk::cuda
