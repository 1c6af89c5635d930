#include "safetensors.hpp"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../core/error.hpp"

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
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    LLMTK_CHECK(out.good(), "safetensors", "cannot write '", tmp, "'");
    const std::uint64_t len = header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header;
    for (int i = 0; i < int(arena.entries().size()); ++i) {
      const TensorRef t = arena[i];
      out.write(static_cast<const char*>(t.data), std::streamsize(t.bytes()));
    }
    LLMTK_CHECK(out.good(), "safetensors", "writing '", tmp, "' failed (disk full?)");
  }
  std::filesystem::rename(tmp, path);
}

std::map<std::string, std::string> load_safetensors(const std::string& path, Arena& arena, bool allow_extra) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  LLMTK_CHECK(in.good(), "safetensors", "cannot open '", path, "'");
  const std::uint64_t size = std::uint64_t(in.tellg());
  in.seekg(0);
  std::uint64_t len = 0;
  LLMTK_CHECK(size >= 8 && in.read(reinterpret_cast<char*>(&len), 8), "safetensors", "'", path, "' is too short to be a safetensors file");
  LLMTK_CHECK(len > 1 && len <= 100'000'000 && 8 + len <= size, "safetensors", "'", path,
              "' has a bad header length (", len, " bytes in a ", size, "-byte file)");
  std::string header(len, '\0');
  in.read(header.data(), std::streamsize(len));
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    fail("safetensors", "'", path, "' has a header that is not valid JSON: ", e.what());
  }
  LLMTK_CHECK(h.is_object(), "safetensors", "'", path, "' has a header that is not a JSON object");
  const std::uint64_t data_size = size - 8 - len;
  std::map<std::string, std::string> meta;
  if (h.contains("__metadata__"))
    for (auto& [k, v] : h["__metadata__"].items()) meta[k] = v.is_string() ? v.get<std::string>() : v.dump();
  for (const auto& e : arena.entries()) {
    LLMTK_CHECK(h.contains(e.name), "safetensors", "'", path, "' has no tensor '", e.name, "'");
    const auto& t = h[e.name];
    const auto dtype = t.value("dtype", "");
    LLMTK_CHECK(dtype == dtype_name(e.dtype), "safetensors", "tensor '", e.name, "' in '", path, "' is ", dtype,
                "; expected ", dtype_name(e.dtype));
    const auto shape = t.at("shape").get<std::vector<std::int64_t>>();
    LLMTK_CHECK(shape == e.shape, "safetensors", "tensor '", e.name, "' in '", path, "' has shape ",
                nlohmann::json(shape).dump(), "; the model expects ", nlohmann::json(e.shape).dump());
    const auto off = t.at("data_offsets").get<std::vector<std::uint64_t>>();
    const std::uint64_t n = std::uint64_t(e.numel) * size_of(e.dtype);
    LLMTK_CHECK(off.size() == 2 && off[1] >= off[0] && off[1] - off[0] == n, "safetensors", "tensor '", e.name,
                "' in '", path, "' has data offsets that do not match its shape");
    LLMTK_CHECK(off[1] <= data_size, "safetensors", "tensor '", e.name, "' in '", path,
                "' lies past the end of the file: truncated?");
    in.seekg(std::streamoff(8 + len + off[0]));
    in.read(static_cast<char*>(arena[e.name].data), std::streamsize(n));
    LLMTK_CHECK(in.good(), "safetensors", "reading tensor '", e.name, "' from '", path, "' failed");
  }
  if (!allow_extra)
    for (auto& [k, v] : h.items())
      LLMTK_CHECK(k == "__metadata__" || arena.find(k) >= 0, "safetensors", "'", path, "' has a tensor '", k,
                  "' the model does not have: a checkpoint of another architecture?");
  return meta;
}

}  // namespace llmtk::train
