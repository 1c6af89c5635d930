// Arena: one allocation holding a table of named tensors. Parameters, their gradients, optimizer
// state and activations each live in one arena, planned once and allocated once, so a training
// step allocates nothing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "memory.hpp"
#include "tensor.hpp"

namespace llmtk {

// What a parameter is, for initialisation and weight decay (activations use `none`).
enum class ParamKind : std::uint8_t {
  none,
  matrix,           // a linear map's weight: normal(0, 0.02)
  residual_matrix,  // a map into the residual stream: normal(0, 0.02 / sqrt(2 n_layers))
  embedding,        // token or position table: normal(0, 0.02)
  norm,             // a norm's gain: ones
  bias,             // zeros
  lora_a,           // LoRA's down-projection A [r, in]: uniform(±1/sqrt(in)), Kaiming-uniform as PEFT
  lora_b,           // LoRA's up-projection B [out, r]: zeros, so training starts from the base exactly
};

class Arena {
 public:
  struct Entry {
    std::string name;
    std::vector<std::int64_t> shape;
    DType dtype = DType::f32;
    std::size_t offset = 0;  // bytes from the start of the arena; final once allocated
    std::int64_t numel = 0;
    ParamKind kind = ParamKind::none;
    bool frozen = false;  // a parameter without gradient or optimizer state
    int grad = -1;        // its index in trainable_like()'s arena; -1 when frozen
  };

  explicit Arena(std::string name = "arena") : name_(std::move(name)) {}

  // Every entry starts at a multiple of kAlign bytes (a cache line; AVX-512 loads stay aligned):
  // an entry of n bytes takes round_up(n) of the arena.
  static constexpr std::size_t kAlign = 64;
  static constexpr std::size_t round_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

  // Plans a tensor; returns its index. Names are unique within an arena.
  int add(std::string name, std::vector<std::int64_t> shape, DType dtype = DType::f32,
          ParamKind kind = ParamKind::none, bool frozen = false);
  // Index of `name`, or -1.
  int find(std::string_view name) const;
  // A new, unallocated arena with the same table (gradients and optimizer moments mirror params).
  Arena like(std::string name) const;
  // The same, without frozen entries: gradients and optimizer moments. Frozen tensors lie last in
  // memory, so the trainable tensors have the same offsets here as in this arena.
  Arena trainable_like(std::string name) const;
  std::int64_t trainable_numel() const;
  // One zero-filled, 64-byte-aligned allocation for every planned tensor, from `memory` (by
  // default the active backend's: host, or the GPU for device = "cuda"). Adding after this fails.
  // Parameters are grouped by weight-decay treatment (matrices, embeddings, norms and biases),
  // so each group is contiguous; other tensors lie in planning order.
  void allocate(const DeviceMemory& memory = current_memory());
  void zero();
  void release();
  // Allocates anew with entries at offsets the caller chose, where entries may share memory:
  // ZeRO-2 keeps the layers' gradients in a ring of two buffers that the backward reuses as it
  // moves down the model (train/distributed.cpp). Each offset is a multiple of 64 bytes and each
  // entry lies inside `bytes`; the old contents are released, the new start zeroed. like() and
  // trainable_like() copy the table with the usual layout.
  void allocate_overlapping(const std::vector<std::size_t>& offsets, std::size_t bytes,
                            const DeviceMemory& memory = current_memory());

  bool allocated() const { return base_ != nullptr; }
  // Where the memory is (host until allocated); every TensorRef from operator[] carries it.
  Device device() const { return base_ ? base_.get_deleter().memory->device : Device::host; }
  // Copies every byte of `src`, which must have the same table, across devices if need be.
  void copy_from(const Arena& src);
  // A host arena with the same table and contents (checkpoints and exports read device arenas
  // through it).
  Arena host_copy() const;
  // Entry `id` from or to host memory holding its elements (initialisation, tests).
  void write(int id, const void* src);
  void read(int id, void* dst) const;
  TensorRef operator[](int id) const;
  TensorRef operator[](std::string_view name) const;
  const std::vector<Entry>& entries() const { return entries_; }
  std::size_t bytes() const { return bytes_; }
  std::int64_t numel() const;  // elements over all entries
  const std::string& name() const { return name_; }
  void* data() const { return base_.get(); }

 private:
  void lay_out();  // assigns every entry's offset
  struct Free {
    const DeviceMemory* memory;  // set whenever the pointer is
    void operator()(std::byte* p) const;
  };
  std::string name_;
  std::vector<Entry> entries_;
  std::unordered_map<std::string, int> index_;  // name → entry, so planning stays linear
  std::size_t bytes_ = 0;
  int trainable_ = 0;  // entries that are not frozen
  bool overlapping_ = false;  // allocate_overlapping() chose the offsets
  std::unique_ptr<std::byte, Free> base_;
};

}  // namespace llmtk
