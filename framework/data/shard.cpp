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

void ShardWriter::put(TokenId t) {
  LLMTK_CHECK(t >= 0 && std::uint32_t(t) < header_.vocab_size, "shard", "token ", t,
              " is outside the tokenizer's vocabulary of ", header_.vocab_size);
  if (header_.token_bytes == 2) {
    const auto v = static_cast<std::uint16_t>(t);
    std::fwrite(&v, 2, 1, file_);
  } else {
    const auto v = static_cast<std::uint32_t>(t);
    std::fwrite(&v, 4, 1, file_);
  }
}

void ShardWriter::add_example(std::span<const TokenId> tokens, std::span<const std::uint8_t> mask) {
  LLMTK_CHECK(mask.size() == tokens.size(), "shard", "an example's mask has ", mask.size(), " entries for ",
              tokens.size(), " tokens");
  LLMTK_CHECK(header_.doc_count == 0 || (header_.flags & kHasLossMask), "shard", "'", path_,
              "' holds documents; examples with a loss mask go into a shard of their own");
  header_.flags |= kHasLossMask;
  header_.version = 2;
  put(TokenId(header_.eot));
  mask_.push_back(0);
  for (std::size_t i = 0; i < tokens.size(); ++i) put(tokens[i]), mask_.push_back(mask[i] ? 1 : 0);
  header_.token_count += tokens.size() + 1;
  header_.doc_count += 1;
  LLMTK_CHECK(!std::ferror(file_), "shard", "writing '", tmp_, "' failed (disk full?)");
}

void ShardWriter::add_document(std::span<const TokenId> tokens) {
  LLMTK_CHECK(!(header_.flags & kHasLossMask), "shard", "'", path_,
              "' holds examples with a loss mask; plain documents go into a shard of their own");
  put(TokenId(header_.eot));
  for (TokenId t : tokens) put(t);
  header_.token_count += tokens.size() + 1;
  header_.doc_count += 1;
  LLMTK_CHECK(!std::ferror(file_), "shard", "writing '", tmp_, "' failed (disk full?)");
}

void ShardWriter::close() {
  LLMTK_CHECK(file_ != nullptr, "shard", "'", path_, "' is already closed");
  const bool mask_ok = mask_.empty() || std::fwrite(mask_.data(), 1, mask_.size(), file_) == mask_.size();
  std::fseek(file_, 0, SEEK_SET);
  const bool ok = mask_ok && std::fwrite(&header_, sizeof header_, 1, file_) == 1 && std::fflush(file_) == 0;
  std::fclose(file_);
  file_ = nullptr;
  LLMTK_CHECK(ok, "shard", "writing '", tmp_, "' failed (disk full?)");
  LLMTK_CHECK(std::rename(tmp_.c_str(), path_.c_str()) == 0, "shard", "cannot rename '", tmp_,
              "' to '", path_, "'");
}

Shard::Shard(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  LLMTK_CHECK(fd >= 0, "shard", "cannot open '", path, "': ", std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  LLMTK_CHECK(::fstat(fd, &st) == 0, "shard", "cannot read '", path, "': ", std::strerror(errno));
  const auto size = static_cast<std::size_t>(st.st_size);
  LLMTK_CHECK(size >= sizeof(ShardHeader), "shard", "'", path, "' is ", size,
              " bytes, shorter than a shard header; not an llmtk shard");
  // The header is read and checked before the file is mapped: a constructor that throws runs no
  // destructor, so a mapping made first would leak with every rejected file.
  LLMTK_CHECK(::pread(fd, &header_, sizeof header_, 0) == ssize_t(sizeof header_), "shard", "cannot read '", path,
              "': ", std::strerror(errno));
  const ShardHeader fresh;
  LLMTK_CHECK(std::memcmp(header_.magic, fresh.magic, 8) == 0, "shard", "'", path,
              "' is not an llmtk token shard (bad magic)");
  LLMTK_CHECK(header_.version == 1 || header_.version == 2, "shard", "'", path, "' has format version ",
              header_.version, "; this llmtk reads versions 1 and 2");
  LLMTK_CHECK((header_.version == 2) == bool(header_.flags & kHasLossMask) && (header_.flags & ~kHasLossMask) == 0,
              "shard", "'", path, "' has flags ", header_.flags, " that do not fit its version ", header_.version,
              ": corrupt; re-run data prepare");
  LLMTK_CHECK(header_.token_bytes == 2 || header_.token_bytes == 4, "shard", "'", path,
              "' has token width ", header_.token_bytes, " bytes; expected 2 or 4");
  LLMTK_CHECK(header_.vocab_size >= 1 && header_.vocab_size <= 0x7FFFFFFF, "shard", "'", path, "' has a vocabulary of ",
              header_.vocab_size, " tokens; token ids are 31-bit: corrupt; re-run data prepare");
  LLMTK_CHECK(header_.eot < header_.vocab_size, "shard", "'", path, "' has end-of-text token ", header_.eot,
              " outside its vocabulary of ", header_.vocab_size, ": corrupt; re-run data prepare");
  LLMTK_CHECK(header_.token_count <= size, "shard", "'", path, "' promises ", header_.token_count,
              " tokens in ", size, " bytes: corrupt; re-run data prepare");
  const std::size_t want = sizeof header_ + header_.token_count * header_.token_bytes +
                           (header_.flags & kHasLossMask ? header_.token_count : 0);
  LLMTK_CHECK(size == want, "shard", "'", path, "' is ", size, " bytes but its header promises ",
              header_.token_count, " tokens (", want, " bytes): truncated or corrupt; re-run data prepare");
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  LLMTK_CHECK(map != MAP_FAILED, "shard", "cannot map '", path, "': ", std::strerror(errno));
  map_ = map, map_size_ = size;
  tokens_ = static_cast<const char*>(map_) + sizeof header_;
  if (header_.flags & kHasLossMask)
    mask_ = static_cast<const std::uint8_t*>(tokens_) + header_.token_count * header_.token_bytes;
}

Shard::Shard(Shard&& o) noexcept
    : path_(std::move(o.path_)), header_(o.header_), map_(o.map_), map_size_(o.map_size_), tokens_(o.tokens_),
      mask_(o.mask_) {
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
