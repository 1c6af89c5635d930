#include "shard.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cstdio>
#include <cstring>

#include "../core/error.hpp"

namespace llmtk::data {

static_assert(std::endian::native == std::endian::little, "shards are little-endian; this host is not");

ShardWriter::ShardWriter(std::string path, const Tokenizer& tokenizer)
    : path_(std::move(path)), tmp_(path_ + ".tmp") {
  header_.token_bytes = tokenizer.vocab_size() <= 65536 ? 2 : 4;
  header_.tokenizer_hash = tokenizer.hash();
  header_.vocab_size = static_cast<std::uint32_t>(tokenizer.vocab_size());
  header_.eot = static_cast<std::uint32_t>(tokenizer.eot());
  file_ = std::fopen(tmp_.c_str(), "wb");
  LLMTK_CHECK(file_ != nullptr, "shard", "cannot create '", tmp_, "': ", std::strerror(errno));
  LLMTK_CHECK(std::fwrite(&header_, sizeof header_, 1, file_) == 1, "shard", "cannot write '", tmp_, "'");
}

ShardWriter::~ShardWriter() {
  if (file_) {  // not closed: an error happened; leave no partial file behind
    std::fclose(file_);
    std::remove(tmp_.c_str());
  }
}

void ShardWriter::add_document(std::span<const TokenId> tokens) {
  auto put = [&](TokenId t) {
    LLMTK_CHECK(t >= 0 && std::uint32_t(t) < header_.vocab_size, "shard", "token ", t,
                " is outside the tokenizer's vocabulary of ", header_.vocab_size);
    if (header_.token_bytes == 2) {
      const auto v = static_cast<std::uint16_t>(t);
      std::fwrite(&v, 2, 1, file_);
    } else {
      const auto v = static_cast<std::uint32_t>(t);
      std::fwrite(&v, 4, 1, file_);
    }
  };
  put(TokenId(header_.eot));
  for (TokenId t : tokens) put(t);
  header_.token_count += tokens.size() + 1;
  header_.doc_count += 1;
  LLMTK_CHECK(!std::ferror(file_), "shard", "writing '", tmp_, "' failed (disk full?)");
}

void ShardWriter::close() {
  LLMTK_CHECK(file_ != nullptr, "shard", "'", path_, "' is already closed");
  std::fseek(file_, 0, SEEK_SET);
  const bool ok = std::fwrite(&header_, sizeof header_, 1, file_) == 1 && std::fflush(file_) == 0;
  std::fclose(file_);
  file_ = nullptr;
  LLMTK_CHECK(ok, "shard", "writing '", tmp_, "' failed (disk full?)");
  LLMTK_CHECK(std::rename(tmp_.c_str(), path_.c_str()) == 0, "shard", "cannot rename '", tmp_,
              "' to '", path_, "'");
}

Shard::Shard(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  LLMTK_CHECK(fd >= 0, "shard", "cannot open '", path, "': ", std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  const auto size = static_cast<std::size_t>(st.st_size);
  if (size < sizeof(ShardHeader)) {
    ::close(fd);
    fail("shard", "'", path, "' is ", size, " bytes, shorter than a shard header; not an llmtk shard");
  }
  map_ = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  LLMTK_CHECK(map_ != MAP_FAILED, "shard", "cannot map '", path, "': ", std::strerror(errno));
  map_size_ = size;
  std::memcpy(&header_, map_, sizeof header_);
  const ShardHeader fresh;
  LLMTK_CHECK(std::memcmp(header_.magic, fresh.magic, 8) == 0, "shard", "'", path,
              "' is not an llmtk token shard (bad magic)");
  LLMTK_CHECK(header_.version == 1, "shard", "'", path, "' has format version ", header_.version,
              "; this llmtk reads version 1");
  LLMTK_CHECK(header_.token_bytes == 2 || header_.token_bytes == 4, "shard", "'", path,
              "' has token width ", header_.token_bytes, " bytes; expected 2 or 4");
  const std::size_t want = sizeof header_ + header_.token_count * header_.token_bytes;
  LLMTK_CHECK(size == want, "shard", "'", path, "' is ", size, " bytes but its header promises ",
              header_.token_count, " tokens (", want, " bytes): truncated or corrupt; re-run data prepare");
  tokens_ = static_cast<const char*>(map_) + sizeof header_;
}

Shard::Shard(Shard&& o) noexcept
    : path_(std::move(o.path_)), header_(o.header_), map_(o.map_), map_size_(o.map_size_), tokens_(o.tokens_) {
  o.map_ = nullptr;
}

Shard::~Shard() {
  if (map_) ::munmap(map_, map_size_);
}

void Shard::expect_tokenizer(std::uint64_t tokenizer_hash) const {
  LLMTK_CHECK(header_.tokenizer_hash == tokenizer_hash, "shard", "'", path_,
              "' was written by another tokenizer (hash ", header_.tokenizer_hash, ", this one is ",
              tokenizer_hash, "); re-run llmtk data prepare with this tokenizer, or use the one that wrote it");
}

}  // namespace llmtk::data
