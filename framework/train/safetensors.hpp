// safetensors (Hugging Face's tensor file format, readable by every Python tool): an 8-byte
// little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, __metadata__},
// then the raw data. Written to a temporary name and renamed. Reading checks the header, sizes,
// offsets and every tensor's shape, and names the tensor that is wrong.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "../core/arena.hpp"

namespace llmtk::train {

// A safetensors file opened for reading tensors by name (the header is validated on open).
class SafetensorsFile {
 public:
  explicit SafetensorsFile(std::string path);
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;
  std::vector<std::int64_t> shape(const std::string& name) const;
  // Reads F32 tensor `name` into `dst`, which holds `shape`; fails naming the tensor otherwise.
  void read(const std::string& name, float* dst, const std::vector<std::int64_t>& shape) const;
  const std::map<std::string, std::string>& metadata() const { return meta_; }
  const std::string& path() const { return path_; }

 private:
  struct Info {
    std::string dtype;
    std::vector<std::int64_t> shape;
    std::uint64_t begin = 0, end = 0;
  };
  std::string path_;
  std::map<std::string, Info> tensors_;
  std::map<std::string, std::string> meta_;
  std::uint64_t data_start_ = 0, data_size_ = 0;
};

// Writes every tensor of `arena` under its name; `metadata` goes to __metadata__.
void save_safetensors(const std::string& path, const Arena& arena, const std::map<std::string, std::string>& metadata = {});
// Fills every tensor of `arena` from the file: each name must be present with the same shape and
// dtype F32; extra tensors in the file are an error unless allow_extra.
std::map<std::string, std::string> load_safetensors(const std::string& path, Arena& arena, bool allow_extra = false);

}  // namespace llmtk::train
