// Data parallel (docs/distributed.md): every rank holds the whole model and reads its part of each
// global batch (the loader splits the batch's rows by rank); after the backward, the gradients
// are summed across ranks and divided by their number, so that every rank takes the same step
// with the gradient of the whole batch, and the weights stay identical without being sent.
//
// The gradients are summed in buckets of whole parameters, in reverse order of the model (the
// head and the last layer first, the embedding last), each packed into one buffer for one
// collective. With overlap, a communication thread sums a bucket as soon as the backward of
// every layer it holds is done (GradientHook), while the main thread runs backward through the
// layers below; without, the buckets are summed one after another once the backward is over.
// Either way each bucket's sum is the same, so the two give bit-identical results.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../core/arena.hpp"
#include "../core/communicator.hpp"
#include "../models/model.hpp"
#include "../protocol/probe.hpp"
#include "objective.hpp"

namespace llmtk::train {

// Host threads for each of this machine's ranks when train.threads leaves it open: the cores this
// process may run on, shared with the other ranks on this machine (a launcher that binds each rank
// to its cores has already divided them).
int threads_per_rank(const Communicator& comm);

class DataParallel final : public GradientHook {
 public:
  // `grads`: the model's gradient arena (allocated, f32; in host memory, or in GPU memory with a
  // communicator that carries it, NCCL); buckets of about bucket_mb megabytes. `overlap`: sum
  // buckets during the backward on a communication thread.
  // `gradient_shard` (ZeRO-2): this rank's floats of the trainable prefix (the optimizer's
  // shard); each bucket is then reduce-scattered, this rank keeping the summed gradient of its
  // shard only (gradient_shard()), and `grads` is laid out anew so that the layers' gradients
  // share a ring of two buckets' memory (docs/distributed.md).
  DataParallel(Communicator& comm, Arena& grads, double bucket_mb, bool overlap, const ShardRange* gradient_shard = nullptr);
  ~DataParallel() override;
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // At the start of a step (ZeRO-2: the gradient shard starts at zero).
  void start_step();
  // Whether every micro-batch's backward is summed (ZeRO-2), or only the step's last one.
  bool every_micro_batch() const { return zero2_; }
  // Before a backward whose gradients are summed: with overlap (always with ZeRO-2), `model`
  // tells this object as its layers finish, and their buckets start.
  void arm(AnyModel& model);
  // After that backward: sums what has not been summed and waits for all of it. Data parallel
  // leaves every gradient the mean over the ranks; ZeRO-2 adds the mean of this rank's shard to
  // gradient_shard(). Rethrows an error of the communication thread.
  void finish(AnyModel& model);
  void layer_done(const std::string& name) override;

  // After a micro-batch's forward, from the weight of what this rank's loss is a mean over
  // (Objective::weight): the factor for its loss and gradient, ranks × weight / Σ weights, so that
  // the ranks' mean is the mean over the whole batch (1 when every rank counts the same, or the
  // objective's loss is no such mean). A collective: every rank calls it for every micro-batch.
  double loss_share(double weight);
  // After the step's gradient norm: the loss and `means` become their means over the ranks (each
  // measured its rows), `sums` and `weight` (weighted metrics, TrainStep) their sums, and `finite`
  // true only if it is on every rank, so that all ranks skip a step or none does. One collective.
  void agree(double& loss, bool& finite, Metrics& sums, double& weight, Metrics& means);

  // ZeRO-2: this rank's summed gradients, as the optimizer's shard of the trainable prefix (a
  // null TensorRef otherwise). The norm of the whole averaged gradient (every strategy; a
  // collective), and per gradient entry the sum of its squares (every strategy, from the shards
  // as the norm; a collective; ZeRO-2's training internals, and tensor parallel's norm, which
  // counts the whole parameters once).
  bool shards_gradients() const { return zero2_; }
  TensorRef gradient_shard() const { return zero2_ ? shard_grads_[0] : TensorRef{}; }
  double gradient_norm();
  std::vector<double> gradient_squares();
  // Bytes of gradient memory per rank: the working arena (ZeRO-2: the ring and the parameters
  // outside the stacks) and the shard.
  std::size_t gradient_bytes() const { return grads_.bytes() + (zero2_ ? shard_grads_.bytes() : 0); }
  // The same, computed from a gradient table alone, for rank `rank` of `ranks` (arch show --ranks).
  static std::size_t gradient_bytes(const Arena& grads, double bucket_mb, bool zero2, int ranks, int rank);

  Communicator& comm() { return comm_; }
  std::size_t buckets() const { return buckets_.size(); }
  bool overlaps() const { return overlap_; }
  // Seconds the main thread waited for gradient sums since the start (with overlap, only what
  // the backward did not hide).
  double comm_seconds() const { return seconds_; }

 private:
  struct Piece {                       // ZeRO-2: part of an entry owned by one rank
    int entry = 0;
    std::int64_t begin = 0, size = 0;  // floats within the entry
    int owner = 0;
  };
  struct Bucket {
    std::vector<int> entries;          // gradient arena entries, packed in this order
    std::set<std::string> layers;      // the layers whose backward must be done first
    std::int64_t floats = 0;
    bool launched = false, finished = false;
    // ZeRO-2
    std::vector<Piece> pieces;         // packed by owner: rank 0's pieces first
    std::vector<std::int64_t> counts;  // floats per owner
    int ring = -1;                     // its place among the buckets sharing the ring, or -1
  };
  static std::vector<Bucket> make_buckets(const Arena& grads, double bucket_mb, bool zero2);
  struct RingLayout {                  // ZeRO-2's working gradient arena
    std::vector<std::size_t> offsets;  // each entry's
    std::vector<std::size_t> ring;     // the ring's buckets, in order
    std::size_t base = 0, slot_bytes = 0, bytes = 0;
  };
  static RingLayout ring_layout(const Arena& grads, const std::vector<Bucket>& buckets);
  void launch(std::size_t b);          // hands bucket b to the communication thread (or sums it now)
  void sum_bucket(std::size_t b);      // pack, sum across ranks, unpack divided by the ranks
  void scatter_bucket(std::size_t b);  // ZeRO-2: pack by owner, reduce-scatter, add to the shard
  void scatter_in_place(std::size_t b);  // ZeRO-2 in GPU memory: reduce-scatter where the bucket lies
  void serve();                        // the communication thread
  void wait_finished(std::size_t b);   // until bucket b is summed
  void rethrow_error();                // the communication thread's error, if any (the mutex held)
  void lay_out_ring();                 // ZeRO-2: the working gradient arena's ring

  Communicator& comm_;
  Arena& grads_;
  std::vector<Bucket> buckets_;
  std::vector<float> pack_;            // one bucket at a time (host memory)
  bool device_ = false;                // the gradients are in GPU memory: summed in place, scaled in finish()
  bool overlap_ = false;
  bool armed_ = false;
  std::set<std::string> done_;         // layers whose backward is done in this step
  double seconds_ = 0;
  // ZeRO-2
  bool zero2_ = false;
  ShardRange shard_;
  std::vector<std::int64_t> flat_;     // each entry's first float in the optimizer's layout
  std::int64_t prefix_ = 0;            // the floats of that layout (the trainable prefix)
  Arena shard_grads_{"gradient shard"};
  Arena shard_recv_{"gradient shard (received)"};  // GPU memory, with gradient accumulation: a later micro-batch's sums
  bool first_ = true;                  // the step's first micro-batch is being summed
  std::vector<float> recv_;
  std::vector<std::size_t> ring_;      // the ring's buckets, in order
  std::size_t ring_launched_ = 0;
  std::size_t slot_bytes_ = 0, ring_base_ = 0;

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable work_, idle_;
  std::deque<std::size_t> queue_;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
};

}  // namespace llmtk::train
