// world(): the communicator of this process (core/communicator.hpp). A single process unless a
// launcher started several; then MPI (backends/comm/mpi.cpp), when this build has it. NCCL
// (comm/nccl.cpp, in builds with the CUDA backend) runs over it.
#include "core/communicator.hpp"

#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "core/error.hpp"
#include "core/memory.hpp"

namespace llmtk {

#ifdef LLMTK_HAVE_MPI
std::unique_ptr<Communicator> open_mpi(const CommOptions& options);  // comm/mpi.cpp
#endif

namespace {

// One process: every collective is the identity (a copy where input and output differ).
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  std::string name() const override { return "single"; }
  void all_reduce_sum(TensorRef, const std::string&) override {}
  void all_reduce_sum(double*, std::int64_t, const std::string&) override {}
  void reduce_scatter_sum(TensorRef in, TensorRef out, const std::vector<std::int64_t>& counts, const std::string& what) override {
    LLMTK_CHECK(counts.size() == 1 && counts[0] == in.numel(), "communicator", what, ": one rank's count is the whole input");
    copy(in, out.numel() == in.numel() ? out : out.span(0, in.numel()), what);
  }
  void all_gather(TensorRef in, TensorRef out, const std::string& what) override { copy(in, out, what); }
  void broadcast(void*, std::size_t, Device, int, const std::string&) override {}
  void barrier(const std::string&) override {}
  std::unique_ptr<Communicator> split(int, int, const std::string&) override { return std::make_unique<SingleProcess>(); }
  [[noreturn]] void abort(int exit_code) override { std::_Exit(exit_code); }

 private:
  static void copy(TensorRef in, TensorRef out, const std::string& what) {
    LLMTK_CHECK(in.numel() == out.numel() && in.dtype == out.dtype, "communicator", what, ": one rank's shard is the whole tensor");
    if (in.data != out.data) copy_bytes(out.data, out.device, in.data, in.device, in.bytes());
  }
};

std::unique_ptr<Communicator>& the_world() {
  static std::unique_ptr<Communicator> w;
  return w;
}

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v && *v;
}

}  // namespace

bool launched_by_mpi() {
  // Open MPI's mpirun; MPICH's and Intel MPI's Hydra (PMI_RANK); PMIx launchers (Open MPI 5,
  // srun --mpi=pmix); Slurm's srun with several tasks.
  if (env_set("OMPI_COMM_WORLD_SIZE") || env_set("PMI_RANK") || env_set("PMIX_RANK")) return true;
  const char* tasks = std::getenv("SLURM_NTASKS");
  return env_set("SLURM_STEP_ID") && tasks && std::atoi(tasks) > 1;
}

Communicator& world(const CommOptions& options) {
  auto& w = the_world();
  if (!w) {
    if (launched_by_mpi()) {
#ifdef LLMTK_HAVE_MPI
      w = open_mpi(options);
#else
      fail("distributed", "this process was started by an MPI launcher (mpirun, mpiexec or srun) but this build of llmtk has no "
           "MPI; install Open MPI (apt install openmpi-bin libopenmpi-dev, which ./setup.sh does) and build again, or run "
           "llmtk without the launcher");
#endif
    } else {
      w = std::make_unique<SingleProcess>();
    }
  }
  w->set_timeout(options.timeout_s);
  return *w;
}

#ifndef LLMTK_HAVE_NCCL
// With the CUDA backend this is comm/nccl.cpp's.
std::unique_ptr<Communicator> open_nccl(Communicator&) {
  fail("distributed", "NCCL carries GPU memory between ranks, and this build of llmtk has no CUDA backend (it was configured "
       "without the CUDA toolkit, or with -DLLMTK_CUDA=OFF); build it with the toolkit, or train on the CPU");
}
#endif

bool distributed() { return the_world() && the_world()->size() > 1; }

double all_reduce_sum(Communicator& c, double value, const std::string& what) {
  c.all_reduce_sum(&value, 1, what);
  return value;
}

double all_reduce_max(Communicator& c, double value, const std::string& what) {
  // Every rank's value to every rank, then the largest: a handful of doubles.
  std::vector<double> mine(std::size_t(c.size()), 0.0);
  mine[std::size_t(c.rank())] = value;
  c.all_reduce_sum(mine.data(), std::int64_t(mine.size()), what);
  double m = mine[0];
  for (double v : mine) m = v > m ? v : m;
  return m;
}

}  // namespace llmtk
