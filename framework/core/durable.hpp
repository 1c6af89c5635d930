// Files that survive a crash, a kill or a full disk: what checkpoints, exports and run files are
// written through (docs/reliability.md).
//
// The promise is the one databases make, in the order POSIX needs for it: a file's bytes are
// written through a descriptor with every call checked, fsync'd, and only then renamed into
// place, and the directory that holds the new name is fsync'd too; a directory of files (a
// checkpoint) is built under NAME.tmp, each file and the directory fsync'd, then published by
// one rename (an atomic exchange with the old one when it is replaced). A reader therefore sees
// the old version or the new one, never a mixture, whether the writer was killed, the machine
// lost power or the disk filled up. A failed write is an error naming the file and the cause (no
// space left, the file size limit, an I/O error); the half-written temporary is removed.
//
// Plain POSIX (open/write/fsync/rename, flock, renameat2): the C++ streams report a full disk late
// or not at all (the last buffer is written by the destructor, which cannot fail) and have no fsync.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace llmtk::durable {

// A new file, written in full or not at all. Creates (truncates) `path`; write() checks every
// call; commit() fsyncs and closes, and is the only way the file counts as written. Destroyed
// without commit() (an exception on the way), the file is closed and removed.
class OutFile {
 public:
  OutFile(std::string path, std::string_view who);
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;
  ~OutFile();
  void write(const void* data, std::size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, who_;
  int fd_ = -1;
};

// `text` into `path` as one step: PATH.tmp written, fsync'd, renamed over PATH, the directory
// fsync'd. A reader sees the old file or the new one.
void write_file(const std::string& path, std::string_view text, std::string_view who);

// fsync a directory (after a rename in it, so that the new name itself survives a crash).
void sync_dir(const std::string& dir, std::string_view who);

// fsync every regular file in `dir` and then `dir` itself.
void sync_tree(const std::string& dir, std::string_view who);

// Publishes the finished directory `tmp` as `dest` in one atomic step: a rename, or, when `dest`
// exists, an exchange of the two (renameat2 RENAME_EXCHANGE) after which the old one, now at
// `tmp`, is removed. The parent is fsync'd. At no moment is `dest` absent or partial.
void publish_dir(const std::string& tmp, const std::string& dest, std::string_view who);

// An exclusive lock on a directory for as long as this lives: DIR/.lock held with flock, holding
// the owner's pid for the message. The kernel releases it when the process ends, however it ends,
// so a killed trainer never leaves a stale lock. A second holder is refused with an error naming
// the directory and the pid that holds it.
class DirLock {
 public:
  DirLock() = default;
  DirLock(const std::string& dir, std::string_view who, std::string_view what_for);
  DirLock(DirLock&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  DirLock& operator=(DirLock&& o) noexcept;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
  ~DirLock();

 private:
  int fd_ = -1;
};

// Why the last failed call failed, in words a user can act on ("no space left on the device").
std::string reason(int err);

}  // namespace llmtk::durable
