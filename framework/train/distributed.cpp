#include "distributed.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "../core/error.hpp"
#include "internals.hpp"  // layer_of

namespace llmtk::train {

int threads_per_rank(const Communicator& comm) {
  cpu_set_t set;
  CPU_ZERO(&set);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  const int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : int(online);
  const int share = std::max(1, int(online) / std::max(1, comm.local_size()));
  return std::max(1, std::min(mine, share));
}

DataParallel::DataParallel(Communicator& comm, Arena& grads, double bucket_mb, bool overlap)
    : comm_(comm), grads_(grads), overlap_(overlap && comm.size() > 1 && comm.calls_from_any_thread()) {
  LLMTK_CHECK(grads.allocated(), "data parallel", "the gradients are not allocated yet");
  LLMTK_CHECK(grads.device() == Device::host, "data parallel", "the gradients are in GPU memory; summing them across ranks "
              "needs the NCCL communicator, which is not built yet (docs/distributed.md)");
  const auto& entries = grads.entries();
  for (const auto& e : entries)
    LLMTK_CHECK(e.dtype == DType::f32, "data parallel", "gradient ", e.name, " is ", name_of(e.dtype), "; gradients are summed in f32");
  // Reverse planning order: the head and the last layer first (the first gradients backward
  // finishes), the embedding last. A bucket is whole parameters up to bucket_mb; the parameters
  // outside the stacks' layers ("embed", "norm_f", "head": the last a tied head shares with the
  // embedding is final only at the end) get buckets of their own, which start after the backward.
  const auto limit = std::max<std::int64_t>(1, std::int64_t(bucket_mb * 1e6 / double(sizeof(float))));
  auto in_stack = [](const std::string& layer) { return layer.find("blocks.") != std::string::npos; };
  for (int i = int(entries.size()); i-- > 0;) {
    const std::string layer = layer_of(entries[std::size_t(i)].name);
    const bool fresh = buckets_.empty() || buckets_.back().floats >= limit ||
                       in_stack(layer) != in_stack(*buckets_.back().layers.begin());
    if (fresh) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.entries.push_back(i);
    b.layers.insert(layer);
    b.floats += entries[std::size_t(i)].numel;
  }
  std::int64_t largest = 0;
  for (const auto& b : buckets_) largest = std::max(largest, b.floats);
  pack_.resize(std::size_t(largest));
  if (overlap_) thread_ = std::thread([this] { serve(); });
}

DataParallel::~DataParallel() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_.notify_all();
  thread_.join();
}

void DataParallel::arm(AnyModel& model) {
  done_.clear();
  for (auto& b : buckets_) b.launched = false;
  armed_ = true;
  if (overlap_) model.set_gradient_hook(this);
}

void DataParallel::layer_done(const std::string& name) {
  if (!armed_) return;
  done_.insert(name);
  // In bucket order: every rank launches the same buckets in the same order.
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& k = buckets_[b];
    if (k.launched) continue;
    bool ready = true;
    for (const auto& l : k.layers) ready = ready && done_.count(l);
    if (ready) launch(b);
  }
}

void DataParallel::launch(std::size_t b) {
  buckets_[b].launched = true;
  if (!overlap_) return sum_bucket(b);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(b);
  }
  work_.notify_one();
}

void DataParallel::finish(AnyModel& model) {
  model.set_gradient_hook(nullptr);
  armed_ = false;
  if (comm_.size() == 1) return;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t b = 0; b < buckets_.size(); ++b)
    if (!buckets_[b].launched) launch(b);
  if (overlap_) {
    std::unique_lock<std::mutex> lock(mutex_);
    idle_.wait(lock, [this] { return queue_.empty() && !busy_; });
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void DataParallel::sum_bucket(std::size_t b) {
  const Bucket& k = buckets_[b];
  float* p = pack_.data();
  for (int i : k.entries) {
    const TensorRef g = grads_[i];
    std::memcpy(p, g.data, g.bytes());
    p += g.numel();
  }
  comm_.all_reduce_sum(TensorRef(pack_.data(), DType::f32, {k.floats}),
                       "gradient bucket " + std::to_string(b + 1) + " of " + std::to_string(buckets_.size()));
  const float inv = 1.0f / float(comm_.size());
  p = pack_.data();
  for (int i : k.entries) {
    const TensorRef g = grads_[i];
    float* d = static_cast<float*>(g.data);
    for (std::int64_t j = 0; j < g.numel(); ++j) d[j] = p[j] * inv;
    p += g.numel();
  }
}

void DataParallel::serve() {
  for (;;) {
    std::size_t b = 0;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      work_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      b = queue_.front();
      queue_.pop_front();
      busy_ = true;
    }
    // After an error the rest of the step's buckets are skipped: the main thread rethrows it.
    std::exception_ptr failed;
    if (!error_) {
      try {
        sum_bucket(b);
      } catch (...) {
        failed = std::current_exception();
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (failed) error_ = failed;
      busy_ = false;
    }
    idle_.notify_all();
  }
}

void DataParallel::agree(double& loss, bool& finite, Metrics& metrics) {
  if (comm_.size() == 1) return;
  std::vector<double> v = {loss, finite ? 0.0 : 1.0};
  for (const auto& kv : metrics) v.push_back(kv.second);
  comm_.all_reduce_sum(v.data(), std::int64_t(v.size()), "the step's loss and metrics");
  const double n = double(comm_.size());
  loss = v[0] / n;
  finite = v[1] == 0 && std::isfinite(loss);
  for (std::size_t i = 0; i < metrics.size(); ++i) metrics[i].second = v[i + 2] / n;
}

}  // namespace llmtk::train
