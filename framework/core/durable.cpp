#include "durable.hpp"

#include <fcntl.h>
#include <stdio.h>  // renameat2 (glibc 2.28)
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "error.hpp"
#include "faults.hpp"

namespace llmtk::durable {

namespace fs = std::filesystem;

std::string reason(int err) {
  switch (err) {
    case ENOSPC: return "no space left on the device";
    case EDQUOT: return "the disk quota is used up";
    case EFBIG: return "the file size limit was reached (ulimit -f)";
    case EROFS: return "the file system is read-only";
    case EACCES: case EPERM: return "permission denied";
    case EIO: return "an I/O error";
    default: return std::strerror(err);
  }
}

namespace {

// A kill test lands inside writes when every write first waits (LLMTK_FAULTS=slow_write=MS).
void maybe_slow() {
  static const double ms = faults::setting("slow_write");
  if (ms > 0) std::this_thread::sleep_for(std::chrono::microseconds(std::int64_t(ms * 1000)));
}

void fsync_path(const std::string& path, bool dir, std::string_view who) {
  const int fd = ::open(path.c_str(), (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  LLMTK_CHECK(fd >= 0, who, "cannot open '", path, "' to sync it: ", reason(errno));
  const int rc = ::fsync(fd), err = errno;
  ::close(fd);
  LLMTK_CHECK(rc == 0, who, "syncing '", path, "' to disk failed: ", reason(err));
}

std::string parent_of(const std::string& path) {
  const fs::path p = fs::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

}  // namespace

OutFile::OutFile(std::string path, std::string_view who) : path_(std::move(path)), who_(who) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  LLMTK_CHECK(fd_ >= 0, who_, "cannot write '", path_, "': ", reason(errno));
}

OutFile::~OutFile() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(path_.c_str());  // never committed: nothing half-written stays behind
}

void OutFile::write(const void* data, std::size_t n) {
  LLMTK_CHECK(fd_ >= 0, who_, "internal: '", path_, "' written after commit");
  maybe_slow();
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ::ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    LLMTK_CHECK(w > 0, who_, "writing '", path_, "' failed: ", reason(w < 0 ? errno : ENOSPC));
    p += w, n -= std::size_t(w);
  }
}

void OutFile::commit() {
  LLMTK_CHECK(fd_ >= 0, who_, "internal: '", path_, "' committed twice");
  maybe_slow();
  const int rc = ::fsync(fd_), err = errno;
  LLMTK_CHECK(rc == 0, who_, "writing '", path_, "' failed when syncing it to disk: ", reason(err));
  const int closed = ::close(fd_), cerr = errno;
  fd_ = -1;
  LLMTK_CHECK(closed == 0, who_, "writing '", path_, "' failed when closing it: ", reason(cerr));
}

void write_file(const std::string& path, std::string_view text, std::string_view who) {
  const std::string tmp = path + ".tmp";
  {
    OutFile out(tmp, who);
    out.write(text);
    out.commit();
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    fail(who, "cannot rename '", tmp, "' to '", path, "'");
  }
  sync_dir(parent_of(path), who);
}

void sync_dir(const std::string& dir, std::string_view who) { fsync_path(dir, true, who); }

void sync_tree(const std::string& dir, std::string_view who) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) fsync_path(e.path().string(), false, who);
    else if (e.is_directory()) fsync_path(e.path().string(), true, who);
  }
  fsync_path(dir, true, who);
}

void publish_dir(const std::string& tmp, const std::string& dest, std::string_view who) {
  maybe_slow();
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) {
    LLMTK_CHECK(errno == EEXIST, who, "cannot rename '", tmp, "' to '", dest, "': ", reason(errno));
    // dest exists: swap the two in one step; the old version is then at tmp.
    LLMTK_CHECK(::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_EXCHANGE) == 0, who,
                "cannot replace '", dest, "' with '", tmp, "': ", reason(errno));
    sync_dir(parent_of(dest), who);
    std::error_code ec;
    fs::remove_all(tmp, ec);  // a kill before this leaves a complete old copy named .tmp, which readers skip
    return;
  }
  sync_dir(parent_of(dest), who);
}

DirLock::DirLock(const std::string& dir, std::string_view who, std::string_view what_for) {
  const std::string path = (fs::path(dir) / ".lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  LLMTK_CHECK(fd_ >= 0, who, "cannot create the lock file '", path, "': ", reason(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ::ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    LLMTK_CHECK(err == EWOULDBLOCK, who, "cannot lock '", path, "': ", reason(err));
    std::string pid = n > 0 ? std::string(buf, std::size_t(n)) : std::string("?");
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    fail(who, "'", dir, "' is in use: another process (pid ", pid, ") is ", what_for, " there; wait for it to end, "
         "or choose another directory");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
    // The pid is only for the message a second process prints; the lock holds without it.
  }
}

DirLock& DirLock::operator=(DirLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_, o.fd_ = -1;
  }
  return *this;
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
}

}  // namespace llmtk::durable
