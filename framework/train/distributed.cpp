#include "distributed.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <climits>
#include <cstdint>
#include <cstring>

#include "../core/error.hpp"
#include "../core/memory.hpp"
#include "../ops/ops.hpp"
#include "internals.hpp"  // layer_of

namespace llmtk::train {

namespace {
// Whether a layer lies in one of the model's stacks (Repeat's "blocks.N"): ZeRO-2's ring holds those.
bool in_stack(const std::string& layer) { return layer.find("blocks.") != std::string::npos; }
// The bytes an entry of n floats takes in an arena.
std::size_t bytes_of(std::int64_t floats) { return Arena::round_up(std::size_t(floats) * sizeof(float)); }
}  // namespace

int threads_per_rank(const Communicator& comm) {
  cpu_set_t set;
  CPU_ZERO(&set);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  const int mine = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : int(online);
  const int share = std::max(1, int(online) / std::max(1, comm.local_size()));
  return std::max(1, std::min(mine, share));
}

std::vector<DataParallel::Bucket> DataParallel::make_buckets(const Arena& grads, double bucket_mb, bool zero2) {
  const auto& entries = grads.entries();
  const auto limit = std::max<std::int64_t>(1, std::int64_t(bucket_mb * 1e6 / double(sizeof(float))));
  std::vector<Bucket> buckets;
  std::string last;
  for (int i = int(entries.size()); i-- > 0;) {
    const std::string layer = layer_of(entries[std::size_t(i)].name);
    const bool full = !buckets.empty() && buckets.back().floats >= limit && (!zero2 || layer != last);
    const bool fresh = buckets.empty() || full || in_stack(layer) != in_stack(*buckets.back().layers.begin());
    if (fresh) buckets.emplace_back();
    Bucket& b = buckets.back();
    b.entries.push_back(i);
    b.layers.insert(layer);
    b.floats += entries[std::size_t(i)].numel;
    last = layer;
  }
  if (!zero2) return buckets;
  // The ring (lay_out_ring): the stacks' buckets, when no layer is split between two of them.
  std::set<std::string> seen;
  bool layers_apart = false;
  for (const auto& b : buckets) {
    if (!in_stack(*b.layers.begin())) continue;
    for (const auto& l : b.layers) layers_apart |= !seen.insert(l).second;
  }
  int ring = 0;
  for (auto& b : buckets)
    if (!layers_apart && in_stack(*b.layers.begin())) b.ring = ring++;
  return buckets;
}

// ZeRO-2's working gradients: the parameters outside the stacks keep their own memory (the tied
// embedding's gradient is written at both ends of the backward); the stacks' buckets take turns
// in a ring of two slots, each as large as the largest bucket. Every entry's offset, and the
// arena's size; shared by the layout itself and by arch show's estimate.
DataParallel::RingLayout DataParallel::ring_layout(const Arena& grads, const std::vector<Bucket>& buckets) {
  const auto& entries = grads.entries();
  RingLayout l;
  l.offsets.assign(entries.size(), 0);
  std::vector<bool> in_ring(entries.size(), false);
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    if (buckets[b].ring < 0) continue;
    l.ring.push_back(b);
    std::size_t at = 0;
    for (int i : buckets[b].entries) in_ring[std::size_t(i)] = true, at += bytes_of(entries[std::size_t(i)].numel);
    l.slot_bytes = std::max(l.slot_bytes, at);
  }
  std::size_t at = 0;
  for (std::size_t i = 0; i < entries.size(); ++i)
    if (!in_ring[i]) l.offsets[i] = at, at += bytes_of(entries[i].numel);
  l.base = at;
  // Within its slot a bucket's entries lie in the parameters' order (the bucket lists them
  // backwards), as in the optimizer's layout: on GPUs each bucket is then one reduce-scatter where
  // it lies (scatter_in_place).
  for (std::size_t b : l.ring) {
    std::size_t in = l.base + std::size_t(buckets[b].ring % 2) * l.slot_bytes;
    const auto& es = buckets[b].entries;
    for (auto i = es.rbegin(); i != es.rend(); ++i) l.offsets[std::size_t(*i)] = in, in += bytes_of(entries[std::size_t(*i)].numel);
  }
  l.bytes = std::max<std::size_t>(Arena::kAlign, l.base + std::min<std::size_t>(2, l.ring.size()) * l.slot_bytes);
  return l;
}

std::size_t DataParallel::gradient_bytes(const Arena& grads, double bucket_mb, bool zero2, int ranks, int rank) {
  if (!zero2 || ranks < 2) return grads.bytes();
  const std::int64_t floats = std::int64_t(grads.bytes() / sizeof(float));
  return ring_layout(grads, make_buckets(grads, bucket_mb, true)).bytes +
         bytes_of(std::max<std::int64_t>(1, shard_range(floats, rank, ranks).size()));
}

DataParallel::DataParallel(Communicator& comm, Arena& grads, double bucket_mb, bool overlap, const ShardRange* gradient_shard)
    : comm_(comm), grads_(grads), zero2_(gradient_shard && comm.size() > 1) {
  // ZeRO-2 sums each bucket as its layers finish whatever `overlap` says (its ring needs it):
  // without overlap on the main thread, before the backward goes on.
  overlap_ = overlap && comm.size() > 1 && comm.calls_from_any_thread();
  LLMTK_CHECK(grads.allocated(), "data parallel", "the gradients are not allocated yet");
  device_ = grads.device() != Device::host;
  const auto& entries = grads.entries();
  for (const auto& e : entries)
    LLMTK_CHECK(e.dtype == DType::f32, "data parallel", "gradient ", e.name, " is ", name_of(e.dtype), "; gradients are summed in f32");
  // Reverse planning order: the head and the last layer first (the first gradients backward
  // finishes), the embedding last. A bucket is whole parameters up to bucket_mb (ZeRO-2: whole
  // layers, so that a layer's gradients lie in one place of the ring); the parameters outside the
  // stacks' layers ("embed", "norm_f", "head": the last a tied head shares with the embedding is
  // final only at the end) get buckets of their own, which start after the backward.
  buckets_ = make_buckets(grads, bucket_mb, zero2_);
  std::int64_t largest = 0;
  for (const auto& b : buckets_) largest = std::max(largest, b.floats);
  if (!device_) pack_.resize(std::size_t(largest));
  // The optimizer's layout: the trainable prefix of floats (the gradient arena mirrors it until
  // ZeRO-2's lay_out_ring() moves the entries), split into shards as the optimizer splits it.
  // Every strategy measures the gradient's norm over these shards (gradient_norm()).
  for (const auto& e : entries) {
    flat_.push_back(std::int64_t(e.offset / sizeof(float)));
    prefix_ = std::max(prefix_, flat_.back() + e.numel);
  }
  const std::int64_t prefix = prefix_;
  shard_ = shard_range(prefix, comm.rank(), comm.size());
  if (zero2_) {
    LLMTK_CHECK(gradient_shard->begin == shard_.begin && gradient_shard->end == shard_.end, "ZeRO-2", "the optimizer's shard [",
                gradient_shard->begin, ", ", gradient_shard->end, ") is not this rank's part [", shard_.begin, ", ", shard_.end,
                ") of the gradients");
    std::int64_t mine = 1;
    for (auto& b : buckets_) {
      b.counts.assign(std::size_t(comm.size()), 0);
      for (int r = 0; r < comm.size(); ++r) {
        const ShardRange own = shard_range(prefix, r, comm.size());
        for (int i : b.entries) {
          const std::int64_t lo = std::max(flat_[std::size_t(i)], own.begin);
          const std::int64_t hi = std::min(flat_[std::size_t(i)] + entries[std::size_t(i)].numel, own.end);
          if (hi <= lo) continue;
          b.pieces.push_back({i, lo - flat_[std::size_t(i)], hi - lo, r});
          b.counts[std::size_t(r)] += hi - lo;
        }
      }
      mine = std::max(mine, b.counts[std::size_t(comm.rank())]);
    }
    if (!device_) recv_.resize(std::size_t(mine));
    shard_grads_.add("shard", {std::max<std::int64_t>(1, shard_.size())});
    shard_grads_.allocate(memory_of(grads.device()));
    lay_out_ring();
  }
  if (overlap_) thread_ = std::thread([this] { serve(); });
}

// The ring (ring_layout) allocated: bucket k is written while bucket k − 1 is summed; before
// bucket k + 1 starts in the slot bucket k − 1 used, layer_done waits for that sum and clears the
// slot. A layer whose parameters do not lie together in one bucket (no model here has one) leaves
// every gradient its own memory, as data parallel does.
void DataParallel::lay_out_ring() {
  const RingLayout l = ring_layout(grads_, buckets_);
  ring_ = l.ring, slot_bytes_ = l.slot_bytes, ring_base_ = l.base;
  grads_.allocate_overlapping(l.offsets, l.bytes, memory_of(grads_.device()));
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

void DataParallel::start_step() {
  if (zero2_) shard_grads_.zero();
  first_ = true;
}

void DataParallel::arm(AnyModel& model) {
  done_.clear();
  for (auto& b : buckets_) b.launched = b.finished = false;
  ring_launched_ = 0;
  armed_ = true;
  if (zero2_) grads_.zero();  // every micro-batch's gradients are summed by themselves
  if (overlap_ || zero2_) model.set_gradient_hook(this);
}

void DataParallel::layer_done(const std::string& name) {
  if (!armed_) return;
  done_.insert(name);
  // In bucket order: every rank launches the same buckets in the same order.
  const std::size_t ring_before = ring_launched_;
  for (std::size_t b = 0; b < buckets_.size(); ++b) {
    Bucket& k = buckets_[b];
    if (k.launched) continue;
    bool ready = true;
    for (const auto& l : k.layers) ready = ready && done_.count(l);
    if (!ready) continue;
    launch(b);
    if (k.ring >= 0) ++ring_launched_;
  }
  // ZeRO-2: the next bucket's slot, free once the bucket before the one just launched is summed.
  if (ring_launched_ == ring_before || ring_launched_ >= ring_.size()) return;
  const std::size_t next = ring_launched_;
  if (next >= 2) {
    const auto t0 = std::chrono::steady_clock::now();
    wait_finished(ring_[next - 2]);
    seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // (In GPU memory on the backend's stream, after which the backward writes the slot; the
    // sum that read it has run by now: the communicator's calls return when they have.)
    memory_of(grads_.device()).zero(static_cast<std::byte*>(grads_.data()) + ring_base_ + (next % 2) * slot_bytes_, slot_bytes_);
  }
}

void DataParallel::launch(std::size_t b) {
  buckets_[b].launched = true;
  if (!overlap_) {
    if (zero2_) scatter_bucket(b);
    else sum_bucket(b);
    buckets_[b].finished = true;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(b);
  }
  work_.notify_one();
}

void DataParallel::wait_finished(std::size_t b) {
  if (!overlap_) return;
  std::unique_lock<std::mutex> lock(mutex_);
  idle_.wait(lock, [&] { return buckets_[b].finished || error_; });
  rethrow_error();
}

void DataParallel::rethrow_error() {
  if (!error_) return;
  std::exception_ptr e = error_;
  error_ = nullptr;
  std::rethrow_exception(e);
}

void DataParallel::finish(AnyModel& model) {
  model.set_gradient_hook(nullptr);
  armed_ = false;
  if (comm_.size() == 1) return;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t b : ring_)
    LLMTK_CHECK(buckets_[b].launched, "ZeRO-2", "the backward of ", *buckets_[b].layers.begin(), " did not report that it was done "
                "(GradientHook), so its gradients may have been overwritten; its stack must call Ctx::gradient_hook "
                "(dsl/repeat.hpp does), or train this model with strategy = \"zero1\"");
  for (std::size_t b = 0; b < buckets_.size(); ++b)
    if (!buckets_[b].launched) launch(b);
  if (overlap_) {
    std::unique_lock<std::mutex> lock(mutex_);
    idle_.wait(lock, [this] { return queue_.empty() && !busy_; });
    rethrow_error();
  }
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (device_) {
    // The sums into means, on the backend's stream (the host path scales each bucket as it
    // unpacks it; the same product, s · x in f32, and for ZeRO-2 the same sum d + s · x).
    const float inv = 1.0f / float(comm_.size());
    if (!zero2_) {
      for (int i = 0; i < int(grads_.entries().size()); ++i) ops::scale_forward(grads_[i], grads_[i], inv);
    } else if (first_) {
      ops::scale_forward(shard_grads_[0], shard_grads_[0], inv);  // the step's first sums went to the shard itself
    } else {
      ops::scale_forward(shard_recv_[0], shard_recv_[0], inv);
      ops::add_forward(shard_grads_[0], shard_recv_[0], shard_grads_[0]);
    }
  }
  first_ = false;
}

void DataParallel::sum_bucket(std::size_t b) {
  const Bucket& k = buckets_[b];
  const std::string what = "gradient bucket " + std::to_string(b + 1) + " of " + std::to_string(buckets_.size());
  if (device_) {
    // In GPU memory the bucket is summed where it lies: its entries follow one another in the
    // arena (the planner lays them out in order; the alignment padding between them is zero), so
    // one call carries them, else one call each.
    const auto& entries = grads_.entries();
    std::size_t lo = SIZE_MAX, hi = 0, packed = 0;
    for (int i : k.entries) {
      const auto& e = entries[std::size_t(i)];
      lo = std::min(lo, e.offset), hi = std::max(hi, e.offset + bytes_of(e.numel)), packed += bytes_of(e.numel);
    }
    if (hi - lo == packed) {
      comm_.all_reduce_sum(TensorRef(static_cast<std::byte*>(grads_.data()) + lo, DType::f32, {std::int64_t((hi - lo) / sizeof(float))},
                                     Device::cuda),
                           what);
    } else {
      for (int i : k.entries) comm_.all_reduce_sum(grads_[i], what);
    }
    return;
  }
  float* p = pack_.data();
  for (int i : k.entries) {
    const TensorRef g = grads_[i];
    std::memcpy(p, g.data, g.bytes());
    p += g.numel();
  }
  comm_.all_reduce_sum(TensorRef(pack_.data(), DType::f32, {k.floats}), what);
  const float inv = 1.0f / float(comm_.size());
  p = pack_.data();
  for (int i : k.entries) {
    const TensorRef g = grads_[i];
    float* d = static_cast<float*>(g.data);
    for (std::int64_t j = 0; j < g.numel(); ++j) d[j] = p[j] * inv;
    p += g.numel();
  }
}

void DataParallel::scatter_bucket(std::size_t b) {
  if (device_) return scatter_in_place(b);
  const Bucket& k = buckets_[b];
  float* p = pack_.data();
  for (const Piece& c : k.pieces) {
    std::memcpy(p, static_cast<const float*>(grads_[c.entry].data) + c.begin, std::size_t(c.size) * sizeof(float));
    p += c.size;
  }
  const int me = comm_.rank();
  comm_.reduce_scatter_sum(TensorRef(pack_.data(), DType::f32, {k.floats}), TensorRef(recv_.data(), DType::f32, {std::int64_t(recv_.size())}),
                           k.counts, "gradient bucket " + std::to_string(b + 1) + " of " + std::to_string(buckets_.size()) + " (ZeRO-2)");
  const float inv = 1.0f / float(comm_.size());
  float* shard = static_cast<float*>(shard_grads_.data());
  const float* q = recv_.data();
  for (const Piece& c : k.pieces) {
    if (c.owner != me) continue;
    float* d = shard + (flat_[std::size_t(c.entry)] + c.begin - shard_.begin);
    for (std::int64_t j = 0; j < c.size; ++j) d[j] += q[j] * inv;
    q += c.size;
  }
}

// ZeRO-2 in GPU memory: no packing. The optimizer's shards are ranges of the parameters' layout
// and a bucket holds consecutive parameters, laid out in that order (ring_layout), so a bucket is
// one range of it: summed where it lies by one reduce-scatter whose counts are the bucket's overlap
// with each rank's shard, this rank receiving its overlap straight into its place in the shard
// (the step's first micro-batch; later ones into shard_recv_, added in finish()). The alignment
// padding between parameters travels too (zeros). Parameters that do not lie so (none in the
// models here) go in runs of those that do, one call each.
void DataParallel::scatter_in_place(std::size_t b) {
  const Bucket& k = buckets_[b];
  const auto& entries = grads_.entries();
  const std::vector<int> order(k.entries.rbegin(), k.entries.rend());  // the parameters' order
  Arena& into = first_ ? shard_grads_ : shard_recv_;
  if (!first_ && !shard_recv_.allocated()) {
    shard_recv_.add("received", {std::max<std::int64_t>(1, shard_.size())});
    shard_recv_.allocate(memory_of(grads_.device()));  // zero-filled: padding never received stays 0
  }
  const std::string what = "gradient bucket " + std::to_string(b + 1) + " of " + std::to_string(buckets_.size()) + " (ZeRO-2)";
  for (std::size_t first = 0, last = 0; first < order.size(); first = last + 1) {
    const auto at = [&](std::size_t j) { return entries[std::size_t(order[j])]; };
    last = first;
    while (last + 1 < order.size() && order[last + 1] == order[last] + 1 &&
           at(last + 1).offset - at(first).offset == std::size_t(flat_[std::size_t(order[last + 1])] - flat_[std::size_t(order[first])]) * sizeof(float))
      ++last;
    // The floats [lo, hi) of the parameters' layout: whole parameters with the padding between them.
    const std::int64_t lo = flat_[std::size_t(order[first])], hi = flat_[std::size_t(order[last])] + at(last).numel;
    std::vector<std::int64_t> counts(std::size_t(comm_.size()), 0);
    for (int r = 0; r < comm_.size(); ++r) {
      const ShardRange own = shard_range(prefix_, r, comm_.size());
      counts[std::size_t(r)] = std::max<std::int64_t>(0, std::min(hi, own.end) - std::max(lo, own.begin));
    }
    const std::int64_t mine = counts[std::size_t(comm_.rank())];
    const std::int64_t place = mine ? std::max(lo, shard_.begin) - shard_.begin : 0;
    comm_.reduce_scatter_sum(TensorRef(static_cast<std::byte*>(grads_.data()) + at(first).offset, DType::f32, {hi - lo}, grads_.device()),
                             TensorRef(static_cast<float*>(into.data()) + place, DType::f32, {mine}, grads_.device()), counts, what);
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
        if (zero2_) scatter_bucket(b);
        else sum_bucket(b);
      } catch (...) {
        failed = std::current_exception();
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (failed) error_ = failed;
      buckets_[b].finished = true;
      busy_ = false;
    }
    idle_.notify_all();
  }
}

// Each rank sums the squares of its shard's floats (alignment padding included: zeros) in order,
// in double, and the ranks' sums are summed: the same bits whether the rank holds the whole
// averaged gradient (data parallel, ZeRO-1) or its shard only (ZeRO-2), so gradient clipping
// scales by the same factor under every strategy and they train identically.
double DataParallel::gradient_norm() {
  const float* g = zero2_ ? static_cast<const float*>(shard_grads_.data()) : static_cast<const float*>(grads_.data()) + shard_.begin;
  std::vector<float> staged;
  if (device_) {
    // The shard comes to the host to be summed in double, in order, as on the CPU: one copy of
    // 1/ranks of the gradients per step.
    staged.resize(std::size_t(shard_.size()));
    copy_bytes(staged.data(), Device::host, g, grads_.device(), staged.size() * sizeof(float));
    g = staged.data();
  }
  double sum = 0;
  for (std::int64_t i = 0; i < shard_.size(); ++i) sum += double(g[i]) * double(g[i]);
  comm_.all_reduce_sum(&sum, 1, "the gradient's norm (ZeRO-2)");
  return std::sqrt(sum);
}

std::vector<double> DataParallel::gradient_squares() {
  const auto& entries = grads_.entries();
  const float* g = zero2_ ? static_cast<const float*>(shard_grads_.data()) : static_cast<const float*>(grads_.data()) + shard_.begin;
  std::vector<float> staged;
  if (device_) {
    staged.resize(std::size_t(shard_.size()));
    copy_bytes(staged.data(), Device::host, g, grads_.device(), staged.size() * sizeof(float));
    g = staged.data();
  }
  std::vector<double> out(entries.size(), 0.0);
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const std::int64_t lo = std::max(flat_[i], shard_.begin), hi = std::min(flat_[i] + entries[i].numel, shard_.end);
    for (std::int64_t j = lo; j < hi; ++j) out[i] += double(g[j - shard_.begin]) * double(g[j - shard_.begin]);
  }
  comm_.all_reduce_sum(out.data(), std::int64_t(out.size()), "each gradient's sum of squares");
  return out;
}

double DataParallel::loss_share(double weight) {
  if (comm_.size() == 1) return 1.0;
  double total = weight;
  comm_.all_reduce_sum(&total, 1, "the loss's weight (targets counted)");
  return total > 0 ? double(comm_.size()) * weight / total : 1.0;
}

void DataParallel::agree(double& loss, bool& finite, Metrics& sums, double& weight, Metrics& means) {
  if (comm_.size() == 1) return;
  std::vector<double> v = {loss, finite ? 0.0 : 1.0, weight};
  for (const auto& kv : sums) v.push_back(kv.second);
  for (const auto& kv : means) v.push_back(kv.second);
  comm_.all_reduce_sum(v.data(), std::int64_t(v.size()), "the step's loss and metrics");
  const double n = double(comm_.size());
  loss = v[0] / n;
  finite = v[1] == 0 && std::isfinite(loss);
  weight = v[2];
  for (std::size_t i = 0; i < sums.size(); ++i) sums[i].second = v[3 + i];
  for (std::size_t i = 0; i < means.size(); ++i) means[i].second = v[3 + sums.size() + i] / n;
}

}  // namespace llmtk::train
