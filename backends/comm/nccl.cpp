// The NCCL communicator (core/communicator.hpp): tensors in GPU memory, for the CUDA backend.
// Built in every CUDA build. It runs over a host communicator (MPI under a launcher, or the
// single process), which finds the ranks, hands NCCL's unique id from rank 0 to the others and
// carries what lives in host memory (losses, metrics, flags); NCCL carries device memory.
//
// - Each rank runs on GPU local_rank (cuda::use_device, before the backend's context exists):
//   NCCL takes one GPU per rank, so more ranks on a machine than GPUs is refused by name.
// - Collectives run on a stream of their own, after the work the backend's stream holds when the
//   call is made (an event), and are waited for by polling, so that a call which does not
//   complete within the timeout ends the job naming the rank and the call, and an error NCCL
//   reports asynchronously (a peer that died, a broken link) is reported the same way. The
//   communicator is non-blocking (ncclConfig_t::blocking = 0) so that even its start-up, which
//   waits for every rank, is bounded by the timeout.
// - Every rank receives the same bits: NCCL's algorithms reduce each element once and hand the
//   result to all (a ring is a reduce-scatter then an all-gather; a tree, a reduce then a
//   broadcast), and a fixed world size on fixed hardware picks the same algorithm every run.
// - Shards of unequal sizes (shard_range when n % ranks ≠ 0, ZeRO-2's packed buckets) go as a
//   group of one reduce (or broadcast) per rank, since ncclReduceScatter and ncclAllGather take
//   one count for every rank.
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/communicator.hpp"
#include "core/error.hpp"
#include "../cuda/cuda.hpp"

namespace llmtk {

namespace {

class Nccl final : public Communicator {
 public:
  // `host` outlives this object, or `owned` is it (a split's sub-communicator). `group` names a
  // sub-communicator in errors (" of the tensor-parallel group 1"); empty for the world.
  // `device`: the GPU of a split (its parent's: a rank's local rank in a group is not its GPU),
  // or −1 for the world's, chosen here from the local rank.
  Nccl(Communicator& host, std::unique_ptr<Communicator> owned, std::string group, int device = -1)
      : owned_(std::move(owned)), host_(owned_ ? *owned_ : host), group_(std::move(group)) {
    timeout_s_ = host_.timeout();
    if (device < 0) {
      int gpus = 0;
      check_cuda(cudaGetDeviceCount(&gpus), "cudaGetDeviceCount", "start-up");
      LLMTK_CHECK(host_.local_size() <= gpus, "nccl", host_.local_size(), " ranks run on this machine and it has ", gpus,
                  gpus == 1 ? " GPU" : " GPUs", "; NCCL takes one GPU per rank: launch at most ", gpus,
                  " processes per machine (mpirun -np ", gpus, ", or --map-by ppr:", gpus, ":node across machines)");
    }
    device_ = device < 0 ? host_.local_rank() : device;
    cuda::use_device(device_);
    (void)cuda::context();  // the backend's stream on this device, before anything waits on it
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", "start-up");
    check_cuda(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "cudaEventCreateWithFlags", "start-up");
    check_cuda(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreateWithFlags", "start-up");
    ncclUniqueId id{};
    if (host_.rank() == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId", "start-up");
    host_.broadcast(&id, sizeof id, Device::host, 0, "NCCL's unique id");
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    settle(ncclCommInitRankConfig(&comm_, host_.size(), id, host_.rank(), &config), "ncclCommInitRankConfig",
           "start-up (every rank joins)");
  }
  ~Nccl() override {
    if (comm_) {
      // Finalize (waits for what is queued), then destroy; after an error the communicator may be
      // stuck in a collective, and abort frees it without waiting.
      ncclResult_t state = broken_ ? ncclInternalError : ncclCommFinalize(comm_);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (state == ncclInProgress && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
        if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
      }
      if (state == ncclSuccess) ncclCommDestroy(comm_);
      else ncclCommAbort(comm_);
    }
    if (done_) cudaEventDestroy(done_);
    if (ready_) cudaEventDestroy(ready_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  Nccl(const Nccl&) = delete;
  Nccl& operator=(const Nccl&) = delete;

  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  int local_rank() const override { return host_.local_rank(); }
  int local_size() const override { return host_.local_size(); }
  std::string name() const override { return "nccl"; }
  // Any thread may call, one at a time: each call makes this rank's GPU current first.
  bool calls_from_any_thread() const override { return host_.calls_from_any_thread(); }

  void all_reduce_sum(TensorRef t, const std::string& what) override {
    if (t.device == Device::host) return host_.all_reduce_sum(t, what);
    f32(t, what);
    begin();
    settle(ncclAllReduce(t.data, t.data, std::size_t(t.numel()), ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce", what);
    wait("all_reduce", what);
  }
  void all_reduce_sum(double* values, std::int64_t n, const std::string& what) override { host_.all_reduce_sum(values, n, what); }

  void reduce_scatter_sum(TensorRef in, TensorRef out, const std::vector<std::int64_t>& counts, const std::string& what) override {
    if (in.device == Device::host && out.device == Device::host) return host_.reduce_scatter_sum(in, out, counts, what);
    on_device(in, what), on_device(out, what), f32(in, what);
    LLMTK_CHECK(counts.size() == std::size_t(size()), "nccl", what, ": reduce-scatter needs one count per rank (", counts.size(),
                " for ", size(), " ranks)");
    std::int64_t total = 0;
    bool even = true;
    for (std::int64_t c : counts) total += c, even = even && c == counts[0];
    LLMTK_CHECK(total == in.numel() && out.dtype == in.dtype && out.numel() >= counts[std::size_t(rank())], "nccl", what,
                ": reduce-scatter's counts add up to its input, and its output holds this rank's count");
    begin();
    if (even) {
      settle(ncclReduceScatter(in.data, out.data, std::size_t(counts[0]), ncclFloat32, ncclSum, comm_, stream_),
             "ncclReduceScatter", what);
    } else {
      // One reduce per rank, each to the rank whose shard it is.
      settle(ncclGroupStart(), "ncclGroupStart", what);
      std::int64_t at = 0;
      for (int r = 0; r < size(); ++r) {
        const auto n = std::size_t(counts[std::size_t(r)]);
        if (n) settle(ncclReduce(static_cast<const float*>(in.data) + at, out.data, n, ncclFloat32, ncclSum, r, comm_, stream_),
                      "ncclReduce", what);
        at += std::int64_t(n);
      }
      settle(ncclGroupEnd(), "ncclGroupEnd", what);
    }
    wait("reduce_scatter", what);
  }

  void all_gather(TensorRef in, TensorRef out, const std::string& what) override {
    if (in.device == Device::host && out.device == Device::host) return host_.all_gather(in, out, what);
    on_device(in, what), on_device(out, what);
    LLMTK_CHECK(out.dtype == in.dtype && in.numel() == shard_range(out.numel(), rank(), size()).size(), "nccl", what,
                ": all-gather's input is this rank's shard of the output");
    const std::size_t s = size_of(in.dtype);
    auto* base = static_cast<std::byte*>(out.data);
    begin();
    if (out.numel() % size() == 0) {
      // In place when this rank's shard already lies at its place in the output (NCCL allows it).
      settle(ncclAllGather(in.data, out.data, std::size_t(in.numel()) * s, ncclInt8, comm_, stream_), "ncclAllGather", what);
    } else {
      // One broadcast per rank, of its shard, to its place in every rank's output.
      settle(ncclGroupStart(), "ncclGroupStart", what);
      for (int r = 0; r < size(); ++r) {
        const ShardRange sh = shard_range(out.numel(), r, size());
        if (sh.size() == 0) continue;
        void* dst = base + std::size_t(sh.begin) * s;
        settle(ncclBroadcast(r == rank() ? in.data : dst, dst, std::size_t(sh.size()) * s, ncclInt8, r, comm_, stream_),
               "ncclBroadcast", what);
      }
      settle(ncclGroupEnd(), "ncclGroupEnd", what);
    }
    wait("all_gather", what);
  }

  void broadcast(void* data, std::size_t bytes, Device device, int root, const std::string& what) override {
    if (device == Device::host) return host_.broadcast(data, bytes, device, root, what);
    begin();
    settle(ncclBroadcast(data, data, bytes, ncclInt8, root, comm_, stream_), "ncclBroadcast", what);
    wait("broadcast", what);
  }

  void barrier(const std::string& what) override {
    // The work this rank queued on its GPU first: a barrier means this rank is done.
    check_cuda(cudaStreamSynchronize(cuda::stream()), "cudaStreamSynchronize", what);
    host_.barrier(what);
  }

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    std::unique_ptr<Communicator> sub = host_.split(color, key, name);
    Communicator& h = *sub;
    return std::make_unique<Nccl>(h, std::move(sub), " of the " + name, device_);
  }

  [[noreturn]] void abort(int exit_code) override {
    if (comm_) ncclCommAbort(comm_), comm_ = nullptr;
    host_.abort(exit_code);
    std::_Exit(exit_code);  // abort() does not return; this is for the compiler
  }

 private:
  void check(ncclResult_t r, const char* call, const std::string& what) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    broken_ = true;
    fail("nccl", "rank ", rank(), group_, ": ", call, " (", what, ") failed: ", ncclGetErrorString(r), " (",
         ncclGetLastError(comm_), ")");
  }
  void check_cuda(cudaError_t e, const char* call, const std::string& what) {
    if (e == cudaSuccess) return;
    broken_ = true;
    fail("nccl", "rank ", rank(), group_, ": ", call, " (", what, ") failed: ", cudaGetErrorName(e), ": ", cudaGetErrorString(e));
  }
  static void f32(const TensorRef& t, const std::string& what) {
    LLMTK_CHECK(t.dtype == DType::f32, "nccl", what, ": sums are over f32 tensors, not ", name_of(t.dtype));
  }
  static void on_device(const TensorRef& t, const std::string& what) {
    LLMTK_CHECK(t.device == Device::cuda, "nccl", what, ": one side of the call is in host memory and the other in GPU "
                "memory; pass both in the same memory");
  }

  // This rank's GPU current on the calling thread (data parallel's communication thread too),
  // and the collective ordered after the work the backend's stream holds now.
  void begin() {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice", "selecting this rank's GPU");
    check_cuda(cudaEventRecord(ready_, cuda::stream()), "cudaEventRecord", "ordering after the backend's stream");
    check_cuda(cudaStreamWaitEvent(stream_, ready_, 0), "cudaStreamWaitEvent", "ordering after the backend's stream");
  }
  // A call of the non-blocking communicator returns ncclInProgress while NCCL is still setting
  // it up: poll until it is done (or failed, or past the timeout).
  void settle(ncclResult_t r, const char* call, const std::string& what) {
    check(r, call, what);
    if (r != ncclInProgress) return;
    poll(call, what, [&] {
      ncclResult_t state = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError", what);
      check(state, call, what);
      return state == ncclSuccess;
    });
  }
  // Waits until the collective just enqueued has run.
  void wait(const char* call, const std::string& what) {
    check_cuda(cudaEventRecord(done_, stream_), "cudaEventRecord", what);
    poll(call, what, [&] {
      const cudaError_t e = cudaEventQuery(done_);
      if (e == cudaSuccess) return true;
      if (e != cudaErrorNotReady) check_cuda(e, "cudaEventQuery", what);
      ncclResult_t state = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError", what);
      check(state, call, what);
      return false;
    });
  }
  // Polls `done` (as MPI's communicator waits: spinning for the first millisecond, then with
  // short sleeps); past the timeout the communicator is aborted and the job ends naming the call.
  template <class Done>
  void poll(const char* call, const std::string& what, Done done) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    const auto deadline = start + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timeout_s_));
    for (long polls = 0;; ++polls) {
      if (done()) return;
      const auto now = clock::now();
      if (now > deadline) {
        broken_ = true;
        const std::string other = size() == 2 ? cat("rank ", 1 - rank()) : std::string("another rank");
        fail("distributed", "rank ", rank(), " of ", size(), group_, ": ", call, " of ", what, " did not complete within ",
             timeout_s_, " s on NCCL: ", other, " has stopped, hangs or died before reaching it (the launcher's messages "
             "name a rank that died). If the steps are just slow, raise distributed.timeout_s");
      }
      if (now - start > std::chrono::milliseconds(1)) std::this_thread::sleep_for(std::chrono::microseconds(polls % 64 == 0 ? 200 : 20));
    }
  }

  std::unique_ptr<Communicator> owned_;
  Communicator& host_;
  std::string group_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  ncclComm_t comm_ = nullptr;
  bool broken_ = false;  // a call failed or timed out: the destructor aborts instead of finalizing
};

}  // namespace

std::unique_ptr<Communicator> open_nccl(Communicator& host) { return std::make_unique<Nccl>(host, nullptr, std::string()); }

}  // namespace llmtk
