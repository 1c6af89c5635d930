// Op dispatch: the active backend's table, and the list of backends built into this binary.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "ops/checks.hpp"
#include "ops/ops.hpp"

namespace llmtk {
namespace reference {
extern const ops::OpTable op_table;
}
namespace cuda {
extern const ops::OpTable op_table;
const DeviceMemory& device_memory();  // context.cpp, or stub.cpp without CUDA
std::string unavailable();            // "" when a device can be used
}
namespace cpu {
extern const ops::OpTable op_table;
}

namespace ops {

namespace {
std::string runs_anywhere() { return {}; }
// Each backend with the memory its ops compute on and its "can it run here?" check: the ones
// built in, then any added with add_backend.
struct Backend {
  const OpTable* table;
  const DeviceMemory& (*memory)();
  std::string (*unavailable)();
};
std::vector<Backend>& all_backends() {
  static std::vector<Backend> all = {{&reference::op_table, &host_memory, &runs_anywhere},
                                     {&cpu::op_table, &host_memory, &runs_anywhere},
                                     {&cuda::op_table, &cuda::device_memory, &cuda::unavailable}};
  return all;
}
const OpTable* current = &reference::op_table;

const Backend& backend_of(const OpTable* t) {
  for (const Backend& b : all_backends())
    if (b.table == t) return b;
  return all_backends()[0];
}
void activate(const OpTable* t) {
  current = t;
  set_current_memory(backend_of(t).memory());
}
}  // namespace

std::vector<std::string> backends() {
  std::vector<std::string> names;
  for (const Backend& b : all_backends()) names.emplace_back(b.table->backend);
  return names;
}

const OpTable* find_backend(std::string_view name) {
  for (const Backend& b : all_backends())
    if (name == b.table->backend) return b.table;
  return nullptr;
}

void add_backend(const OpTable& table, const DeviceMemory& (*memory)()) {
  LLMTK_CHECK(find_backend(table.backend) == nullptr, "backend", "a backend named '", table.backend,
              "' already exists");
  all_backends().push_back({&table, memory, &runs_anywhere});
}

void use_backend(std::string_view name) {
  const OpTable* t = find_backend(name);
  if (!t) {
    std::string known;
    for (const auto& n : backends()) known += (known.empty() ? "" : ", ") + n;
    fail("backend", "unknown backend '", name, "'; this build has: ", known);
  }
  activate(t);
}

void require_backend(std::string_view name) {
  const OpTable* t = find_backend(name);
  if (t) {
    const std::string why = backend_of(t).unavailable();
    LLMTK_CHECK(why.empty(), "backend", why,
                "; to run on the CPU instead use device = \"cpu\" (in a recipe, or --device cpu)");
  }
  use_backend(name);
}

std::string backend_unavailable(std::string_view name) {
  const OpTable* t = find_backend(name);
  if (!t) return cat("unknown backend '", name, "'");
  return backend_of(t).unavailable();
}

const OpTable& active() { return *current; }
std::string backend_info() { return current->info(); }

namespace {
DType matmul_dtype = DType::f32;
}
void set_matmul_precision(DType t) {
  LLMTK_CHECK(t == DType::f32 || t == DType::bf16, "precision", "matmuls compute in f32 or bf16, not ", name_of(t));
  matmul_dtype = t;
}
DType matmul_precision() { return matmul_dtype; }

ScopedBackend::ScopedBackend(std::string_view name) : previous_(current) { use_backend(name); }
ScopedBackend::~ScopedBackend() { activate(previous_); }

// LLMTK_PROFILE=1 in the environment: time every op (wall clock, by name) and print a table to
// stderr at exit, slowest first. Off, the check is one branch per op call. The device is waited
// for before and after each op, so an asynchronous backend's op is charged its own device time
// (plus one launch and one wait), not that of the work queued before it.
namespace {
struct Profile {
  bool on = [] {
    const char* e = std::getenv("LLMTK_PROFILE");
    return e && *e && std::string_view(e) != "0";
  }();
  double seconds[kOpCount] = {};
  long calls[kOpCount] = {};
  ~Profile() {
    if (!on) return;
    std::vector<int> order(kOpCount);
    for (int i = 0; i < kOpCount; ++i) order[std::size_t(i)] = i;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return seconds[a] > seconds[b]; });
    double total = 0;
    for (double s : seconds) total += s;
    std::fprintf(stderr, "\nop profile (LLMTK_PROFILE), backend %s: %.3f s in ops\n", current->backend, total);
    for (int i : order)
      if (calls[i])
        std::fprintf(stderr, "  %-24s %8.3f s  %5.1f%%  %8ld calls\n", std::string(kOpNames[i]).c_str(), seconds[i],
                     100.0 * seconds[i] / total, calls[i]);
  }
} profile;

struct OpTimer {
  int op;
  std::chrono::steady_clock::time_point t0;
  explicit OpTimer(int o) : op(o) {
    if (!profile.on) return;
    current_memory().synchronize();
    t0 = std::chrono::steady_clock::now();
  }
  ~OpTimer() {
    if (!profile.on) return;
    current_memory().synchronize();
    profile.seconds[op] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++profile.calls[op];
  }
};

}  // namespace

void profile_reset() {
  std::fill(std::begin(profile.seconds), std::end(profile.seconds), 0.0);
  std::fill(std::begin(profile.calls), std::end(profile.calls), 0L);
}

namespace {
enum OpIndex {
#define LLMTK_X(name, params, args) op_index_##name,
  LLMTK_OPS(LLMTK_X)
#undef LLMTK_X
};
}  // namespace

// Every op checks its arguments against its contract (checks.cpp), then forwards to the active
// table. The check runs before the timer starts: it is host work, not the op's.
#define LLMTK_X(name, params, args) \
  void name params {                \
    op_checks.name args;            \
    OpTimer timer(op_index_##name); \
    current->name args;             \
  }
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

}  // namespace ops
}  // namespace llmtk
