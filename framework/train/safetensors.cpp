#include "safetensors.hpp"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/durable.hpp"
#include "../core/error.hpp"
#include "../core/json_number.hpp"

namespace llmtk::train {

namespace {
const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
  }
  return "?";
}
}  // namespace

void save_safetensors(const std::string& path, const Arena& arena, const std::map<std::string, std::string>& metadata) {
  if (arena.device() != Device::host) return save_safetensors(path, arena.host_copy(), metadata);  // GPU arenas
  nlohmann::ordered_json h;
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::size_t offset = 0;
  for (const auto& e : arena.entries()) {
    const std::size_t n = std::size_t(e.numel) * size_of(e.dtype);
    h[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // align the data to 8 bytes, as the format recommends
  // Written through durable::OutFile: every write checked (a full disk is an error naming the
  // file), synced, then renamed into place.
  const std::string tmp = path + ".tmp";
  {
    durable::OutFile out(tmp, "safetensors");
    const std::uint64_t len = header.size();
    out.write(&len, 8);
    out.write(header);
    for (int i = 0; i < int(arena.entries().size()); ++i) {
      const TensorRef t = arena[i];
      out.write(t.data, t.bytes());
    }
    out.commit();
  }
  std::filesystem::rename(tmp, path);
}

SafetensorsFile::SafetensorsFile(std::string path) : path_(std::move(path)) {
  std::ifstream in(path_, std::ios::binary | std::ios::ate);
  LLMTK_CHECK(in.good(), "safetensors", "cannot open '", path_, "'");
  const std::uint64_t size = std::uint64_t(in.tellg());
  in.seekg(0);
  std::uint64_t len = 0;
  LLMTK_CHECK(size >= 8 && in.read(reinterpret_cast<char*>(&len), 8), "safetensors", "'", path_,
              "' is too short to be a safetensors file");
  LLMTK_CHECK(len > 1 && len <= 100'000'000 && 8 + len <= size, "safetensors", "'", path_,
              "' has a bad header length (", len, " bytes in a ", size, "-byte file)");
  std::string header(len, '\0');
  in.read(header.data(), std::streamsize(len));
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors", "'", path_, "' has a header that is not valid JSON: ", e.what());
  }
  LLMTK_CHECK(h.is_object(), "safetensors", "'", path_, "' has a header that is not a JSON object");
  data_start_ = 8 + len, data_size_ = size - 8 - len;
  for (auto& [k, v] : h.items()) {
    if (k == "__metadata__") {
      for (auto& [mk, mv] : v.items()) meta_[mk] = mv.is_string() ? mv.get<std::string>() : mv.dump();
      continue;
    }
    Info info;
    try {
      info.dtype = v.at("dtype").get<std::string>();
      LLMTK_CHECK(v.at("shape").is_array() && v.at("data_offsets").is_array(), "safetensors", "tensor '", k, "' in '", path_,
                  "' needs \"shape\" and \"data_offsets\" as lists");
      const std::string what = cat("safetensors: tensor '", k, "' in '", path_, "'");
      for (const auto& e : v.at("shape")) info.shape.push_back(whole<std::int64_t>(e, what));
      std::vector<std::uint64_t> off;
      for (const auto& e : v.at("data_offsets")) off.push_back(whole<std::uint64_t>(e, what));
      LLMTK_CHECK(off.size() == 2 && off[1] >= off[0], "safetensors", "tensor '", k, "' in '", path_, "' has bad data offsets");
      info.begin = off[0], info.end = off[1];
    } catch (const nlohmann::json::exception& e) {
      fail("safetensors", "tensor '", k, "' in '", path_, "' has a malformed entry: ", e.what());
    }
    LLMTK_CHECK(info.end <= data_size_, "safetensors", "tensor '", k, "' in '", path_,
                "' lies past the end of the file: truncated?");
    tensors_.emplace(k, std::move(info));
  }
}

bool SafetensorsFile::has(const std::string& name) const { return tensors_.count(name) > 0; }

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : tensors_) out.push_back(k);
  return out;
}

std::vector<std::int64_t> SafetensorsFile::shape(const std::string& name) const {
  auto it = tensors_.find(name);
  LLMTK_CHECK(it != tensors_.end(), "safetensors", "'", path_, "' has no tensor '", name, "'");
  return it->second.shape;
}

void SafetensorsFile::read(const std::string& name, float* dst, const std::vector<std::int64_t>& shape) const {
  auto it = tensors_.find(name);
  LLMTK_CHECK(it != tensors_.end(), "safetensors", "'", path_, "' has no tensor '", name, "'");
  const Info& t = it->second;
  LLMTK_CHECK(t.dtype == "F32", "safetensors", "tensor '", name, "' in '", path_, "' is ", t.dtype,
              "; expected F32 (convert the checkpoint to float32)");
  LLMTK_CHECK(t.shape == shape, "safetensors", "tensor '", name, "' in '", path_, "' has shape ",
              nlohmann::json(t.shape).dump(), "; the model expects ", nlohmann::json(shape).dump());
  std::uint64_t n = 4;
  for (auto e : shape) n *= std::uint64_t(e);
  LLMTK_CHECK(t.end - t.begin == n, "safetensors", "tensor '", name, "' in '", path_,
              "' has data offsets that do not match its shape");
  std::ifstream in(path_, std::ios::binary);
  in.seekg(std::streamoff(data_start_ + t.begin));
  in.read(reinterpret_cast<char*>(dst), std::streamsize(n));
  LLMTK_CHECK(in.good(), "safetensors", "reading tensor '", name, "' from '", path_, "' failed");
}

std::map<std::string, std::string> load_safetensors(const std::string& path, Arena& arena, bool allow_extra) {
  if (arena.device() != Device::host) {  // a GPU arena: read into a host copy, then copy it over
    Arena host = arena.like(arena.name());
    host.allocate(host_memory());
    auto meta = load_safetensors(path, host, allow_extra);
    arena.copy_from(host);
    return meta;
  }
  SafetensorsFile f(path);
  for (const auto& e : arena.entries()) {
    LLMTK_CHECK(e.dtype == DType::f32, "safetensors", "only f32 tensors are read; '", e.name, "' is not");
    f.read(e.name, arena[e.name].f32(), e.shape);
  }
  if (!allow_extra)
    for (const auto& k : f.names())
      LLMTK_CHECK(arena.find(k) >= 0, "safetensors", "'", path, "' has a tensor '", k,
                  "' the model does not have: a checkpoint of another architecture?");
  return f.metadata();
}

}  // namespace llmtk::train
