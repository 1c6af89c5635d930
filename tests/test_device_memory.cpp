// Host code never touches device memory directly. On a GPU, a pointer into an arena is a device
// address: host code that reads or writes through it (instead of copying through DeviceMemory)
// reads garbage or crashes, and hands an op a host pointer it cannot use. These tests find such
// code without a GPU, with a "guarded" backend: the cpu backend's ops, on memory that host code
// cannot touch.
//
// The guarded backend's memory says it is Device::cuda, so the framework takes every path it takes
// for a GPU (ids and targets copied in, losses and logits copied out, checkpoints, exports and
// generation through host copies). The memory is mapped with mmap and kept PROT_NONE except while
// an op or a DeviceMemory call runs: a direct host access dies with SIGSEGV in the test that made
// it (or, for file I/O straight into device memory, fails the read or write). Every tensor handed
// to an op must be device memory, and every copy's tags must say where its memory is.
// Training, resuming, generating and exporting on it give bit for bit the cpu backend's results.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "models/registry.hpp"
#include "ops/ops.hpp"
#include "train/generate.hpp"
#include "train/hf.hpp"
#include "train/safetensors.hpp"
#include "train_fixtures.hpp"

using namespace train_fixtures;

namespace guarded {

struct Region {
  void* p;
  std::size_t bytes;
};
std::vector<Region>& regions() {
  static std::vector<Region> r;
  return r;
}
int open_depth = 0;  // > 0 while an op or a copy runs

void protect_all(int prot) {
  for (const Region& r : regions())
    if (mprotect(r.p, r.bytes, prot) != 0) {
      std::perror("mprotect");
      std::abort();
    }
}
// Device memory is readable and writable for this scope's lifetime (nested scopes are fine).
struct Open {
  Open() {
    if (open_depth++ == 0) protect_all(PROT_READ | PROT_WRITE);
  }
  ~Open() {
    if (--open_depth == 0) protect_all(PROT_NONE);
  }
  Open(const Open&) = delete;
  Open& operator=(const Open&) = delete;
};

bool in_device_memory(const void* p) {
  const auto* b = static_cast<const std::byte*>(p);
  for (const Region& r : regions())
    if (b >= static_cast<const std::byte*>(r.p) && b < static_cast<const std::byte*>(r.p) + r.bytes) return true;
  return false;
}

void* allocate(std::size_t bytes, const char* what) {
  const auto page = std::size_t(sysconf(_SC_PAGESIZE));
  const std::size_t n = (std::max<std::size_t>(bytes, 1) + page - 1) / page * page;
  void* p = mmap(nullptr, n, open_depth > 0 ? PROT_READ | PROT_WRITE : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  LLMTK_CHECK(p != MAP_FAILED, what, "mmap of ", n, " bytes failed");
  regions().push_back({p, n});
  return p;
}
void release(void* p) {
  auto& r = regions();
  for (auto it = r.begin(); it != r.end(); ++it)
    if (it->p == p) {
      munmap(it->p, it->bytes);
      r.erase(it);
      return;
    }
}
void zero(void* p, std::size_t bytes) {
  Open open;
  std::memset(p, 0, bytes);
}
void copy(void* dst, Device dst_device, const void* src, Device src_device, std::size_t bytes) {
  // Each side's tag must say where its memory is (a GPU copy picks its direction from them).
  LLMTK_CHECK(in_device_memory(dst) == (dst_device == Device::cuda) && in_device_memory(src) == (src_device == Device::cuda),
              "memory", "a copy's device tags do not match where its memory is");
  Open open;
  if (bytes) std::memcpy(dst, src, bytes);
}
void synchronize() {}
const DeviceMemory kMemory{Device::cuda, &allocate, &release, &zero, &copy, &synchronize};
const DeviceMemory& memory() { return kMemory; }

// An op's tensor argument as the cpu backend takes it: device memory, seen as host memory while
// the op runs. A host tensor is an error (a GPU op could not read it).

TensorRef on_host(const char* op, TensorRef t) {
  if (t.data == nullptr) return t;  // an absent optional tensor
  LLMTK_CHECK(t.device == Device::cuda && in_device_memory(t.data), op,
              "was handed a tensor in host memory (copy it to the device first)");
  t.device = Device::host;
  return t;
}
template <class T>
T on_host(const char*, T v) {
  return v;
}

template <class F>
struct Call {
  const char* op;
  F f;
  template <class... A>
  void operator()(A... a) const {
    Open open;
    f(on_host(op, a)...);
  }
};

const ops::OpTable& cpu() { return *ops::find_backend("cpu"); }

#define LLMTK_X(name, params, args) \
  void name params { Call<decltype(cpu().name)>{#name, cpu().name} args; }
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

std::string info() { return "cpu ops on guarded memory (tests)"; }

const ops::OpTable table = {
    "guarded",
    &info,
#define LLMTK_X(name, params, args) &guarded::name,
    LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};

const bool registered = [] {
  ops::add_backend(table, &memory);
  return true;
}();

}  // namespace guarded

namespace {

// Runs `f` in a child process; true when the child died of SIGSEGV.
template <class F>
bool dies_of_segfault(F f) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::signal(SIGSEGV, SIG_DFL);  // die of it, without the test framework's report
    f();
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

Recipe recipe_on(const fs::path& dir, const std::string& device, const std::string& extra = "") {
  Recipe r = read_recipe(write_recipe(dir, extra));
  r.train.device = device;
  return r;
}

}  // namespace

TEST_CASE("the guard catches host code touching device memory, and host tensors handed to ops", "[device]") {
  ops::ScopedBackend scope("guarded");
  Arena a("a");
  const int id = a.add("x", {4, 8});
  a.allocate();
  REQUIRE(a.device() == Device::cuda);
  // Through DeviceMemory: fine.
  std::vector<float> v(32, 1.5f), back(32);
  a.write(id, v.data());
  a.read(id, back.data());
  CHECK(back == v);
  // Directly: the process dies (in a child, so this test survives).
  CHECK(dies_of_segfault([&] { std::printf("%f\n", double(a[id].f32()[0])); }));
  CHECK(dies_of_segfault([&] { a[id].f32()[3] = 2.0f; }));
  // An op on device tensors runs; given a host tensor, it fails naming the op.
  ops::scale_forward(a[id], a[id], 2.0f);
  a.read(id, back.data());
  CHECK(back[0] == 3.0f);
  CHECK_THROWS_WITH(ops::scale_forward(a[id], TensorRef(v.data(), DType::f32, {4, 8}), 2.0f),
                    Catch::Contains("scale_forward") && Catch::Contains("host memory"));
}

TEST_CASE("training on device memory: the cpu backend's losses, checkpoints and resume, bit for bit", "[device]") {
  const auto d = tmp("device-train");
  // Gradient accumulation, recomputation, evaluation, checkpoints and a sample on the way.
  const std::string extra = "sample_prompt = \"And God\"\nsample_tokens = 4\n";
  auto cpu_recipe = recipe_on(d, "cpu", extra), dev_recipe = recipe_on(d, "guarded", extra);
  for (Recipe* r : {&cpu_recipe, &dev_recipe}) r->train.grad_accum = 2, r->train.recompute = "blocks";
  const auto a = train::train(cpu_recipe, quiet(d / "cpu"));
  const auto b = train::train(dev_recipe, quiet(d / "device"));
  REQUIRE(losses(a.run_dir).size() == 8);
  CHECK(losses(b.run_dir) == losses(a.run_dir));
  CHECK(b.val_loss == a.val_loss);
  const auto weights = file_bytes(fs::path(a.checkpoint) / "model.safetensors");
  REQUIRE(!weights.empty());
  CHECK(file_bytes(fs::path(b.checkpoint) / "model.safetensors") == weights);
  CHECK(file_bytes(fs::path(b.checkpoint) / "optimizer.v.safetensors") ==
        file_bytes(fs::path(a.checkpoint) / "optimizer.v.safetensors"));
  CHECK(file_bytes(fs::path(b.run_dir) / "samples.txt") == file_bytes(fs::path(a.run_dir) / "samples.txt"));

  // Stop halfway and resume, on the device: the straight run's losses and weights.
  const auto c = stop_and_resume(dev_recipe, d / "resumed", 4);
  CHECK(losses(c.run_dir) == losses(a.run_dir));
  CHECK(file_bytes(fs::path(c.checkpoint) / "model.safetensors") == weights);

  // Generation from the checkpoint, on each backend: the same tokens.
  auto generate_on = [&](const char* backend) {
    ops::ScopedBackend scope(backend);
    auto model = make_model("llama-tiny", cpu_recipe.model.dims);
    model->plan(1, 1);
    model->allocate();
    load_safetensors((fs::path(a.checkpoint) / "model.safetensors").string(), model->params());
    GenerateOptions g;
    g.max_tokens = 12, g.temperature = 0.9, g.seed = 4;
    return generate(*model, {1, 2, 3}, g);
  };
  CHECK(generate_on("guarded") == generate_on("cpu"));
}

TEST_CASE("Transformers export and import from device memory", "[device]") {
  for (const char* arch : {"gpt2-tiny", "llama-tiny"}) {
    INFO(arch);
    Dims dims = find_arch(arch).dims;
    dims.d_model = 16, dims.n_layers = 2, dims.n_heads = 4, dims.n_kv_heads = 2, dims.d_ff = 24, dims.vocab = 29;
    dims.max_seq = 8;
    if (std::string(arch) == "gpt2-tiny") dims.n_kv_heads = 4;
    const auto dir = tmp(std::string("device-hf-") + arch);
    auto export_from = [&](const char* backend) {
      ops::ScopedBackend scope(backend);
      auto m = make_model(arch, dims);
      m->plan(1, 8);
      m->init(7);
      export_hf(*m, (dir / backend).string(), nullptr);
      return file_bytes(dir / backend / "model.safetensors");
    };
    const auto exported = export_from("cpu");
    REQUIRE(!exported.empty());
    CHECK(export_from("guarded") == exported);
    ops::ScopedBackend scope("guarded");
    auto m = make_model(arch, dims);
    m->plan(1, 8);
    m->allocate();
    import_hf(*m, (dir / "cpu").string());
    export_hf(*m, (dir / "again").string(), nullptr);
    CHECK(file_bytes(dir / "again" / "model.safetensors") == file_bytes(dir / "cpu" / "model.safetensors"));
  }
}
