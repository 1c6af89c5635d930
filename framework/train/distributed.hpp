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
  // `grads`: the model's gradient arena (allocated, f32, host memory); buckets of about bucket_mb
  // megabytes. `overlap`: sum buckets during the backward on a communication thread.
  DataParallel(Communicator& comm, Arena& grads, double bucket_mb, bool overlap);
  ~DataParallel() override;
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Before the backward of a step's last micro-batch: with overlap, `model` tells this object as
  // its layers finish, and their buckets start.
  void arm(AnyModel& model);
  // After that backward: sums what has not been summed, waits for all of it, and leaves every
  // gradient the mean over the ranks. Rethrows an error of the communication thread.
  void finish(AnyModel& model);
  void layer_done(const std::string& name) override;

  // After the step's gradient norm: the loss and metrics become their means over the ranks (each
  // measured its rows), and `finite` true only if it is on every rank, so that all ranks skip a
  // step or none does. One collective.
  void agree(double& loss, bool& finite, Metrics& metrics);

  Communicator& comm() { return comm_; }
  std::size_t buckets() const { return buckets_.size(); }
  bool overlaps() const { return overlap_; }
  // Seconds the main thread waited for gradient sums since the start (with overlap, only what
  // the backward did not hide).
  double comm_seconds() const { return seconds_; }

 private:
  struct Bucket {
    std::vector<int> entries;          // gradient arena entries, packed in this order
    std::set<std::string> layers;      // the layers whose backward must be done first
    std::int64_t floats = 0;
    bool launched = false;
  };
  void launch(std::size_t b);          // hands bucket b to the communication thread (or sums it now)
  void sum_bucket(std::size_t b);      // pack, sum across ranks, unpack divided by the ranks
  void serve();                        // the communication thread

  Communicator& comm_;
  Arena& grads_;
  std::vector<Bucket> buckets_;
  std::vector<float> pack_;            // one bucket at a time
  bool overlap_ = false;
  bool armed_ = false;
  std::set<std::string> done_;         // layers whose backward is done in this step
  double seconds_ = 0;

  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable work_, idle_;
  std::deque<std::size_t> queue_;
  bool busy_ = false, stop_ = false;
  std::exception_ptr error_;
};

}  // namespace llmtk::train
