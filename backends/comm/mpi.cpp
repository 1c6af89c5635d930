// The MPI communicator (core/communicator.hpp): host memory, for the CPU backend. Built when
// LLMTK_MPI is on (Open MPI from Debian; any MPI-3 library works).
//
// Every collective is non-blocking (MPI_I*) and waited for by polling, so that a call which does
// not complete within the timeout can end the job with an error naming the call, instead of
// hanging in MPI's blocking wait forever. A sum is a reduce-scatter followed by an all-gather:
// each element is reduced once, by the rank that owns its shard, and the result handed to all,
// so every rank holds the same bits (MPI_Allreduce does not promise that across ranks).
#include <mpi.h>

#include <chrono>
#include <climits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/communicator.hpp"
#include "core/error.hpp"

namespace llmtk {

namespace {

std::string mpi_error(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, std::size_t(len));
}

int count_of(std::int64_t n, const std::string& what) {
  LLMTK_CHECK(n <= INT_MAX, "mpi", what, ": ", n, " elements in one call is more than MPI's int counts hold; lower "
              "distributed.bucket_mb");
  return int(n);
}

class Mpi final : public Communicator {
 public:
  explicit Mpi(const CommOptions& options) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // SERIALIZED: data parallel's communication thread and the main thread both call MPI, one at
      // a time (OpenMP's workers never do).
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread", "start-up");
      owns_ = true;
    }
    int level = 0;
    MPI_Query_thread(&level);
    any_thread_ = level >= MPI_THREAD_SERIALIZED;
    check(MPI_Comm_dup(MPI_COMM_WORLD, &comm_), "MPI_Comm_dup", "start-up");
    find_ranks();
    timeout_s_ = options.timeout_s;
  }
  // A sub-communicator (split): MPI is running already and `comm` is this object's to free.
  Mpi(MPI_Comm comm, double timeout_s, bool any_thread, std::string group) : comm_(comm), any_thread_(any_thread), group_(std::move(group)) {
    find_ranks();
    timeout_s_ = timeout_s;
  }
  ~Mpi() override {
    MPI_Comm_free(&comm_);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }
  Mpi(const Mpi&) = delete;
  Mpi& operator=(const Mpi&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_rank() const override { return local_rank_; }
  int local_size() const override { return local_size_; }
  std::string name() const override { return "mpi"; }
  bool calls_from_any_thread() const override { return any_thread_; }

  void all_reduce_sum(TensorRef t, const std::string& what) override {
    host(t.device, what);
    f32(t, what);
    sum(t.data, t.numel(), MPI_FLOAT, sizeof(float), what);
  }
  void all_reduce_sum(double* values, std::int64_t n, const std::string& what) override {
    sum(values, n, MPI_DOUBLE, sizeof(double), what);
  }

  void reduce_scatter_sum(TensorRef in, TensorRef out, const std::vector<std::int64_t>& counts, const std::string& what) override {
    host(in.device, what), host(out.device, what);
    f32(in, what);
    LLMTK_CHECK(counts.size() == std::size_t(size_), "mpi", what, ": reduce-scatter needs one count per rank (", counts.size(),
                " for ", size_, " ranks)");
    std::int64_t total = 0;
    std::vector<int> c(counts.size());
    for (std::size_t r = 0; r < counts.size(); ++r) total += counts[r], c[r] = count_of(counts[r], what);
    LLMTK_CHECK(total == in.numel() && out.dtype == in.dtype && out.numel() >= counts[std::size_t(rank_)], "mpi", what,
                ": reduce-scatter's counts add up to its input, and its output holds this rank's count");
    MPI_Request req;
    check(MPI_Ireduce_scatter(in.data, out.data, c.data(), MPI_FLOAT, MPI_SUM, comm_, &req), "MPI_Ireduce_scatter", what);
    wait(req, "reduce_scatter", what);
  }

  void all_gather(TensorRef in, TensorRef out, const std::string& what) override {
    host(in.device, what), host(out.device, what);
    LLMTK_CHECK(out.dtype == in.dtype && in.numel() == shard_range(out.numel(), rank_, size_).size(), "mpi", what,
                ": all-gather's input is this rank's shard of the output");
    const auto [counts, displs] = layout(out.numel(), what);
    // As bytes: any dtype.
    const int s = int(size_of(in.dtype));
    std::vector<int> bc(counts.size()), bd(displs.size());
    for (std::size_t i = 0; i < counts.size(); ++i) bc[i] = count_of(std::int64_t(counts[i]) * s, what), bd[i] = count_of(std::int64_t(displs[i]) * s, what);
    // This rank's shard already in place in the output (ZeRO's weights): MPI_IN_PLACE, since MPI
    // forbids a send buffer inside the receive buffer.
    const bool in_place = in.data == static_cast<std::byte*>(out.data) + bd[std::size_t(rank_)];
    MPI_Request req;
    check(MPI_Iallgatherv(in_place ? MPI_IN_PLACE : in.data, bc[std::size_t(rank_)], MPI_BYTE, out.data, bc.data(), bd.data(),
                          MPI_BYTE, comm_, &req),
          "MPI_Iallgatherv", what);
    wait(req, "all_gather", what);
  }

  void broadcast(void* data, std::size_t bytes, Device device, int root, const std::string& what) override {
    host(device, what);
    MPI_Request req;
    check(MPI_Ibcast(data, count_of(std::int64_t(bytes), what), MPI_BYTE, root, comm_, &req), "MPI_Ibcast", what);
    wait(req, "broadcast", what);
  }

  void barrier(const std::string& what) override {
    MPI_Request req;
    check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier", what);
    wait(req, "barrier", what);
  }

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    MPI_Comm sub = MPI_COMM_NULL;
    check(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split", name);
    return std::make_unique<Mpi>(sub, timeout_s_, any_thread_, " of the " + name);
  }

  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);  // MPI_Abort does not return; this is for the compiler
  }

 private:
  // comm_'s errors as codes (checked by check()), this rank and size, and those on this machine.
  void find_ranks() {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    MPI_Comm local;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local), "MPI_Comm_split_type", "start-up");
    MPI_Comm_rank(local, &local_rank_);
    MPI_Comm_size(local, &local_size_);
    MPI_Comm_free(&local);
  }
  void check(int code, const char* call, const std::string& what) const {
    LLMTK_CHECK(code == MPI_SUCCESS, "mpi", "rank ", rank_, group_, ": ", call, " (", what, ") failed: ", mpi_error(code));
  }
  void host(Device d, const std::string& what) const {
    LLMTK_CHECK(d == Device::host, "mpi", what, ": the MPI communicator carries host memory; distributed training on "
                "device = \"cuda\" sums GPU memory over the NCCL communicator (open_nccl), not this one");
  }
  static void f32(const TensorRef& t, const std::string& what) {
    LLMTK_CHECK(t.dtype == DType::f32, "mpi", what, ": sums are over f32 tensors, not ", name_of(t.dtype));
  }
  // n elements at `data` summed in place: reduce-scatter into this rank's shard, then all-gather.
  void sum(void* data, std::int64_t n, MPI_Datatype type, std::size_t size, const std::string& what) const {
    const ShardRange mine = shard_range(n, rank_, size_);
    std::vector<std::byte> part(std::size_t(mine.size()) * size);
    const auto [counts, displs] = layout(n, what);
    MPI_Request req;
    check(MPI_Ireduce_scatter(data, part.data(), counts.data(), type, MPI_SUM, comm_, &req), "MPI_Ireduce_scatter", what);
    wait(req, "all_reduce (reduce-scatter)", what);
    check(MPI_Iallgatherv(part.data(), counts[std::size_t(rank_)], type, data, counts.data(), displs.data(), type, comm_, &req),
          "MPI_Iallgatherv", what);
    wait(req, "all_reduce (all-gather)", what);
  }
  // Each rank's shard of n elements: counts and displacements as MPI's int arrays.
  std::pair<std::vector<int>, std::vector<int>> layout(std::int64_t n, const std::string& what) const {
    const auto n_ranks = static_cast<std::size_t>(size_);
    std::vector<int> counts(n_ranks), displs(n_ranks);
    for (int r = 0; r < size_; ++r) {
      const ShardRange s = shard_range(n, r, size_);
      counts[std::size_t(r)] = count_of(s.size(), what), displs[std::size_t(r)] = count_of(s.begin, what);
    }
    return {counts, displs};
  }
  // Polls until the request completes: spinning for the first millisecond (a collective between
  // ranks that are in step finishes in microseconds), then with short sleeps, which leave the core
  // to a rank's other threads. Past the timeout the job ends: another rank stopped or died.
  void wait(MPI_Request& req, const char* call, const std::string& what) const {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto deadline = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timeout_s_));
    for (long polls = 0;; ++polls) {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test", what);
      if (done) return;
      const auto now = clock::now();
      if (now > deadline) {
        // Which rank is missing is not known here (a collective does not say who has arrived);
        // with two ranks it can only be the other one.
        const std::string other = size_ == 2 ? cat("rank ", 1 - rank_) : std::string("another rank");
        fail("distributed", "rank ", rank_, " of ", size_, group_, ": ", call, " of ", what, " did not complete within ", timeout_s_,
             " s: ", other, " has stopped, hangs or died before reaching it (the launcher's messages name a rank that died). "
             "If the steps are just slow, raise distributed.timeout_s");
      }
      if (now - start > std::chrono::milliseconds(1)) std::this_thread::sleep_for(std::chrono::microseconds(polls % 64 == 0 ? 200 : 20));
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
  bool owns_ = false, any_thread_ = false;
  std::string group_;  // a sub-communicator's " of the tensor-parallel group 1" in errors; empty for the world
};

}  // namespace

std::unique_ptr<Communicator> open_mpi(const CommOptions& options) { return std::make_unique<Mpi>(options); }

}  // namespace llmtk
