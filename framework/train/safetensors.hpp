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

// Writes every tensor of `arena` under its name; `metadata` goes to __metadata__.
void save_safetensors(const std::string& path, const Arena& arena, const std::map<std::string, std::string>& metadata = {});
// Fills every tensor of `arena` from the file: each name must be present with the same shape and
// dtype F32; extra tensors in the file are an error unless allow_extra.
std::map<std::string, std::string> load_safetensors(const std::string& path, Arena& arena, bool allow_extra = false);

}  // namespace llmtk::train
