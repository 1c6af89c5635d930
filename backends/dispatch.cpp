// Op dispatch: the active backend's table, and the list of backends built into this binary.
#include <algorithm>

#include "ops/ops.hpp"

namespace llmtk {
namespace reference {
extern const ops::OpTable op_table;
}
namespace cuda {
extern const ops::OpTable op_table;
}
namespace cpu {
extern const ops::OpTable op_table;
}

namespace ops {

namespace {
const OpTable* tables[] = {&reference::op_table, &cpu::op_table, &cuda::op_table};
const OpTable* current = &reference::op_table;
}  // namespace

std::vector<std::string> backends() {
  std::vector<std::string> names;
  for (const OpTable* t : tables) names.emplace_back(t->backend);
  return names;
}

const OpTable* find_backend(std::string_view name) {
  for (const OpTable* t : tables)
    if (name == t->backend) return t;
  return nullptr;
}

void use_backend(std::string_view name) {
  const OpTable* t = find_backend(name);
  if (!t) {
    std::string known;
    for (const auto& n : backends()) known += (known.empty() ? "" : ", ") + n;
    fail("backend", "unknown backend '", name, "'; this build has: ", known);
  }
  current = t;
}

const OpTable& active() { return *current; }

ScopedBackend::ScopedBackend(std::string_view name) : previous_(current) { use_backend(name); }
ScopedBackend::~ScopedBackend() { current = previous_; }

// Every op forwards to the active table.
#define LLMTK_X(name, params, args) \
  void name params { current->name args; }
LLMTK_OPS(LLMTK_X)
#undef LLMTK_X

}  // namespace ops
}  // namespace llmtk
