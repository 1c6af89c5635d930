// TensorRef: a non-owning view of a dense, row-major tensor (pointer, dtype, up to 4 run-time
// extents, device). Ops take TensorRefs; arenas own the memory.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "dtype.hpp"
#include "error.hpp"

namespace llmtk {

enum class Device : std::uint8_t { host, cuda };

struct TensorRef {
  static constexpr int kMaxRank = 4;

  void* data = nullptr;
  DType dtype = DType::f32;
  Device device = Device::host;
  int rank = 0;
  std::array<std::int64_t, kMaxRank> ext{};

  TensorRef() = default;
  TensorRef(void* p, DType t, std::initializer_list<std::int64_t> shape, Device dev = Device::host)
      : data(p), dtype(t), device(dev), rank(static_cast<int>(shape.size())) {
    LLMTK_CHECK(shape.size() <= kMaxRank, "TensorRef", "at most ", kMaxRank, " axes");
    int i = 0;
    for (auto e : shape) ext[i++] = e;
  }

  explicit operator bool() const { return data != nullptr; }
  // Extent of axis i; negative i counts from the end (-1 is the innermost, contiguous axis).
  std::int64_t size(int i) const { return ext[i < 0 ? rank + i : i]; }
  std::int64_t numel() const {
    std::int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= ext[i];
    return n;
  }
  // Rows when viewed as a matrix [rows, size(-1)].
  std::int64_t rows() const { return rank == 0 ? 1 : numel() / ext[rank - 1]; }
  std::size_t bytes() const { return static_cast<std::size_t>(numel()) * size_of(dtype); }

  float* f32() const { return static_cast<float*>(data); }
  std::int32_t* i32() const { return static_cast<std::int32_t*>(data); }

  // The same memory with other extents (same element count).
  TensorRef view(std::initializer_list<std::int64_t> shape) const {
    TensorRef t(data, dtype, shape, device);
    LLMTK_CHECK(t.numel() == numel(), "TensorRef::view", "cannot view ", numel(),
                " elements as ", t.numel());
    return t;
  }

  // Elements [offset, offset + count) of the tensor's memory, as a flat tensor: a row block of a
  // batch, a prefix's rows (the same memory; nothing is copied).
  TensorRef span(std::int64_t offset, std::int64_t count) const {
    LLMTK_CHECK(offset >= 0 && count >= 0 && offset + count <= numel(), "TensorRef::span", "elements [", offset, ", ",
                offset + count, ") are outside the tensor's ", numel());
    return TensorRef(static_cast<std::byte*>(data) + offset * std::int64_t(size_of(dtype)), dtype, {count}, device);
  }

  // Rows [begin, begin + count) of the tensor seen as a matrix [rows(), size(-1)]: [count, size(-1)].
  TensorRef row_range(std::int64_t begin, std::int64_t count) const {
    const std::int64_t C = rank == 0 ? 1 : ext[rank - 1];
    TensorRef t = span(begin * C, count * C);
    t.rank = 2, t.ext[0] = count, t.ext[1] = C;
    return t;
  }

  std::string shape_str() const {
    std::string s = "[";
    for (int i = 0; i < rank; ++i) s += (i ? ", " : "") + std::to_string(ext[i]);
    return s + "]";
  }
};

}  // namespace llmtk
