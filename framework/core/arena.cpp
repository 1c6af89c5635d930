#include "arena.hpp"


namespace llmtk {

namespace {
constexpr std::size_t kAlign = Arena::kAlign;
constexpr std::size_t round_up(std::size_t n) { return Arena::round_up(n); }
}  // namespace

void Arena::Free::operator()(std::byte* p) const { memory->release(p); }

int Arena::add(std::string name, std::vector<std::int64_t> shape, DType dtype, ParamKind kind, bool frozen) {
  LLMTK_CHECK(!allocated(), name_, "cannot add '", name, "' after the arena is allocated");
  LLMTK_CHECK(find(name) < 0, name_, "'", name, "' is planned twice");
  LLMTK_CHECK(!shape.empty() && shape.size() <= TensorRef::kMaxRank, name_, "'", name,
              "' must have 1 to 4 axes");
  std::int64_t n = 1;
  for (auto e : shape) {
    LLMTK_CHECK(e > 0, name_, "'", name, "' has a non-positive extent");
    LLMTK_CHECK(!__builtin_mul_overflow(n, e, &n), name_, "'", name, "' has more elements than fit in 64 bits");
  }
  std::size_t end = 0;
  LLMTK_CHECK(n < (std::int64_t(1) << 56) &&
                  !__builtin_add_overflow(bytes_, round_up(std::size_t(n) * size_of(dtype)), &end),
              name_, "'", name, "' makes the arena larger than 2^56 bytes; are the sizes right?");
  Entry e{std::move(name), std::move(shape), dtype, bytes_, n, kind, frozen, -1};
  if (!frozen) e.grad = trainable_++;
  bytes_ = end;
  index_.emplace(e.name, static_cast<int>(entries_.size()));
  entries_.push_back(std::move(e));
  return static_cast<int>(entries_.size()) - 1;
}

int Arena::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? -1 : it->second;
}

Arena Arena::like(std::string name) const {
  Arena a(std::move(name));
  a.entries_ = entries_;
  a.index_ = index_;
  a.bytes_ = 0;
  for (const auto& e : entries_) a.bytes_ += round_up(std::size_t(e.numel) * size_of(e.dtype));
  a.trainable_ = trainable_;
  return a;
}

Arena Arena::trainable_like(std::string name) const {
  Arena a(std::move(name));
  for (const auto& e : entries_)
    if (!e.frozen) a.add(e.name, e.shape, e.dtype, e.kind);
  return a;
}

std::int64_t Arena::trainable_numel() const {
  std::int64_t n = 0;
  for (const auto& e : entries_) n += e.frozen ? 0 : e.numel;
  return n;
}

// Parameters lie in memory by how the optimizer treats them: matrices (always decayed), then
// embeddings (decayed when the recipe asks), then norms and biases (never decayed). Whichever way
// the embeddings go, each weight-decay group is one contiguous range, so the optimizer updates
// every parameter with one op per group (train/optimizer.cpp). Within a group, and in arenas
// without parameter kinds (activations), tensors keep their planning order. The layout is a
// function of the table alone, so arenas made with like() lay out identically. Frozen parameters
// come last, so the arenas of trainable_like() (gradients, moments) match the trainable prefix.
namespace {
int layout_group(ParamKind k, bool frozen) {
  if (frozen) return 3;
  switch (k) {
    case ParamKind::none:
    case ParamKind::matrix:
    case ParamKind::residual_matrix:
    case ParamKind::lora_a:
    case ParamKind::lora_b: return 0;
    case ParamKind::embedding: return 1;
    case ParamKind::norm:
    case ParamKind::bias: return 2;
  }
  return 2;
}
}  // namespace

void Arena::lay_out() {
  std::size_t offset = 0;
  for (int group = 0; group < 4; ++group)
    for (auto& e : entries_)
      if (layout_group(e.kind, e.frozen) == group) {
        e.offset = offset;
        offset += round_up(std::size_t(e.numel) * size_of(e.dtype));
      }
}

void Arena::allocate(const DeviceMemory& memory) {
  if (allocated()) return;
  if (!overlapping_) lay_out();
  std::size_t n = bytes_ == 0 ? kAlign : bytes_;
  auto* p = static_cast<std::byte*>(memory.allocate(n, name_.c_str()));
  base_ = std::unique_ptr<std::byte, Free>(p, Free{&memory});
  zero();
}

void Arena::zero() {
  if (allocated()) base_.get_deleter().memory->zero(base_.get(), bytes_);
}

void Arena::copy_from(const Arena& src) {
  LLMTK_CHECK(allocated() && src.allocated(), name_, "copy_from needs both arenas allocated");
  LLMTK_CHECK(src.bytes_ == bytes_ && src.entries_.size() == entries_.size(), name_, "cannot copy from '", src.name_,
              "': the tables differ");
  for (std::size_t i = 0; i < entries_.size(); ++i)  // one table laid out alike (frozen entries move)
    LLMTK_CHECK(src.entries_[i].name == entries_[i].name && src.entries_[i].offset == entries_[i].offset, name_,
                "cannot copy from '", src.name_, "': '", entries_[i].name, "' lies elsewhere there");
  copy_bytes(base_.get(), device(), src.base_.get(), src.device(), bytes_);
}

Arena Arena::host_copy() const {
  Arena a = like(name_);
  a.allocate(host_memory());
  if (allocated()) a.copy_from(*this);
  return a;
}

void Arena::write(int id, const void* src) {
  const TensorRef t = (*this)[id];
  copy_bytes(t.data, t.device, src, Device::host, t.bytes());
}

void Arena::read(int id, void* dst) const {
  const TensorRef t = (*this)[id];
  copy_bytes(dst, Device::host, t.data, t.device, t.bytes());
}

void Arena::release() { base_.reset(); }

void Arena::allocate_overlapping(const std::vector<std::size_t>& offsets, std::size_t bytes, const DeviceMemory& memory) {
  LLMTK_CHECK(offsets.size() == entries_.size(), name_, "allocate_overlapping: ", offsets.size(), " offsets for ",
              entries_.size(), " entries");
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    const Entry& e = entries_[i];
    LLMTK_CHECK(offsets[i] % kAlign == 0 && offsets[i] + std::size_t(e.numel) * size_of(e.dtype) <= bytes, name_,
                "allocate_overlapping: '", e.name, "' at byte ", offsets[i], " is unaligned or ends past ", bytes);
  }
  release();
  for (std::size_t i = 0; i < entries_.size(); ++i) entries_[i].offset = offsets[i];
  bytes_ = bytes;
  overlapping_ = true;
  allocate(memory);
}

TensorRef Arena::operator[](int id) const {
  if (id < 0) return {};  // an absent optional tensor (a bias the model does not have)
  LLMTK_CHECK(allocated(), name_, "'", entries_[id].name, "' read before allocate()");
  const Entry& e = entries_[id];
  TensorRef t;
  t.data = base_.get() + e.offset;
  t.dtype = e.dtype;
  t.device = device();
  t.rank = static_cast<int>(e.shape.size());
  for (int i = 0; i < t.rank; ++i) t.ext[i] = e.shape[i];
  return t;
}

TensorRef Arena::operator[](std::string_view name) const {
  int id = find(name);
  LLMTK_CHECK(id >= 0, name_, "no tensor named '", name, "'");
  return (*this)[id];
}

std::int64_t Arena::numel() const {
  std::int64_t n = 0;
  for (const auto& e : entries_) n += e.numel;
  return n;
}

}  // namespace llmtk
