// Communicator: the collectives that ranks of a distributed run call, on tensors of the active
// device. One interface, three implementations in backends/ (docs/distributed.md): a single
// process (every call a copy or nothing), MPI (host memory: the CPU backend) and NCCL (device
// memory: the CUDA backend). No MPI or NCCL header is included here.
//
// The rules every implementation keeps:
// - Every rank calls the same collectives in the same order with the same sizes.
// - Every rank receives the same bits: a sum is reduced once, by one rank per element, and then
//   handed to all (reduce-scatter, then all-gather), never summed on each rank in its own order.
//   So the weights of data-parallel ranks stay identical without being compared, and a run is
//   reproducible for a given world size.
// - A call that does not complete within the timeout ends the job with an error naming this
//   rank, the call and what it carried; a rank that dies ends the job through the launcher.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tensor.hpp"

namespace llmtk {

// The elements [begin, end) of n that rank `rank` of `world` holds when n is split into shards:
// as even as possible, the first n % world ranks one element more. Reduce-scatter and all-gather
// split their tensors this way.
struct ShardRange {
  std::int64_t begin = 0, end = 0;
  std::int64_t size() const { return end - begin; }
};
inline ShardRange shard_range(std::int64_t n, int rank, int world) {
  const std::int64_t q = n / world, r = n % world, k = rank;
  const std::int64_t begin = k * q + (k < r ? k : r);
  return {begin, begin + q + (k < r ? 1 : 0)};
}

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Ranks on this machine, and this rank among them (threads per rank, one GPU per rank).
  virtual int local_rank() const = 0;
  virtual int local_size() const = 0;
  // "single", "mpi" or "nccl": what carries the calls.
  virtual std::string name() const = 0;
  // Whether another thread may make the calls (one thread at a time): data parallel's
  // communication thread needs it.
  virtual bool calls_from_any_thread() const { return true; }

  // `t` (f32) summed over the ranks, in place; every rank gets the same bits. `what` names the
  // call's payload in errors ("gradient bucket 3 of 5").
  virtual void all_reduce_sum(TensorRef t, const std::string& what) = 0;
  // The same for n doubles in host memory (losses, metrics, flags).
  virtual void all_reduce_sum(double* values, std::int64_t n, const std::string& what) = 0;
  // `in` (n f32 elements) summed over the ranks; this rank receives its shard_range(n) into `out`.
  void reduce_scatter_sum(TensorRef in, TensorRef out, const std::string& what) {
    std::vector<std::int64_t> counts(static_cast<std::size_t>(size()), 0);
    for (int r = 0; r < size(); ++r) counts[std::size_t(r)] = shard_range(in.numel(), r, size()).size();
    reduce_scatter_sum(in, out, counts, what);
  }
  // The same with shards of any sizes: rank r receives counts[r] elements, those after the
  // counts of the ranks before it (ZeRO-2 packs each bucket by the rank that owns each piece).
  virtual void reduce_scatter_sum(TensorRef in, TensorRef out, const std::vector<std::int64_t>& counts,
                                  const std::string& what) = 0;
  // Every rank's shard (`in`, shard_range(n) of this rank) into `out` (n elements) on every rank.
  virtual void all_gather(TensorRef in, TensorRef out, const std::string& what) = 0;
  // `bytes` bytes at `data` from rank `root` to every rank.
  virtual void broadcast(void* data, std::size_t bytes, Device device, int root, const std::string& what) = 0;
  void broadcast(TensorRef t, int root, const std::string& what) { broadcast(t.data, t.bytes(), t.device, root, what); }
  virtual void barrier(const std::string& what) = 0;
  // A collective: the ranks that pass the same `color` form a new communicator, ranked by `key`
  // (then by this one's rank). Tensor parallel's 2-D layout makes one of each kind: the ranks
  // that split a model's layers, and the ranks across which such groups are data-parallel.
  // `name` goes into the new one's errors ("tensor-parallel group 1").
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;
  // Ends every rank of the job now (after this rank printed why): an error on one rank must not
  // leave the others waiting in a collective.
  [[noreturn]] virtual void abort(int exit_code) = 0;

  // Seconds a collective may take before the job is ended (distributed.timeout_s).
  void set_timeout(double seconds) { timeout_s_ = seconds; }
  double timeout() const { return timeout_s_; }

 protected:
  double timeout_s_ = 300;
};

struct CommOptions {
  double timeout_s = 300;  // a collective that takes longer ends the job
};

// The communicator of this process, opened at the first call: MPI when a launcher started it
// (mpirun or mpiexec of Open MPI or MPICH, or Slurm's srun: their environment variables say so),
// else a single process. Later calls return the same object; `options` applies from the call
// that passes it on.
Communicator& world(const CommOptions& options = {});
// The communicator for tensors in GPU memory (the CUDA backend): NCCL over `host` (world(), or a
// split of it), which finds the ranks, hands NCCL's unique id around and still carries whatever
// lies in host memory. Each rank runs on GPU local_rank(). A collective: every rank of `host`
// calls it. Fails naming the fix in a build without the CUDA backend.
std::unique_ptr<Communicator> open_nccl(Communicator& host);
// Whether world() has been opened with more than one rank (errors then end the whole job).
bool distributed();
// Whether this process was started by a launcher for several processes (before world() opens).
bool launched_by_mpi();

// Little helpers over host values, for the trainer's scalars and flags.
double all_reduce_sum(Communicator& c, double value, const std::string& what);
double all_reduce_max(Communicator& c, double value, const std::string& what);

}  // namespace llmtk
