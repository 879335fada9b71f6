// NAR restore: materialises a NAR as a file-system tree, safe against hostile NARs. The safety
// rules live in RestoreTarget (nar_restore.h, where the invariant is written down); restoreNar
// is the sequential restorer built on it, creating each entry as the parser reaches it.

#include "narcache/narinfo/nar_restore.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "narcache/narinfo/nar.h"

namespace narcache {
namespace {

constexpr mode_t kDirMode = 0755;
constexpr mode_t kFileMode = 0644;
constexpr mode_t kExecMode = 0755;

// The process umask, read without changing it (umask(2) would race with other threads). When
// it cannot be read, every mode is set explicitly.
mode_t currentUmask() {
  FILE* f = std::fopen("/proc/self/status", "re");
  if (!f) return 0777;
  char line[256];
  mode_t mask = 0777;
  while (std::fgets(line, sizeof line, f)) {
    unsigned int value = 0;
    if (std::sscanf(line, "Umask: %o", &value) == 1) {
      mask = static_cast<mode_t>(value);
      break;
    }
  }
  std::fclose(f);
  return mask;
}

// strerror(3) without its static buffer (these run on several threads).
std::string errnoText(int err) {
  return std::generic_category().message(err);
}

}  // namespace

RestoreTarget::RestoreTarget(Fd parent, std::string root_name, std::string display, bool fix_modes)
    : parent_(std::move(parent)),
      root_name_(std::move(root_name)),
      display_(std::move(display)),
      fix_modes_(fix_modes) {}

Result<RestoreTarget> RestoreTarget::open(const std::filesystem::path& dest) {
  std::filesystem::path target = dest;
  if (!target.has_filename()) target = target.parent_path();  // "a/b/" names "a/b"
  std::string name = target.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return fail(ErrorCode::kInvalidArgument,
                "restore: '" + dest.string() + "' does not name a new directory entry");
  }
  std::filesystem::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  Fd parent_fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (parent_fd.get() < 0) {
    int err = errno;
    return fail(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                "restore: cannot open '" + parent.string() + "': " + errnoText(err));
  }
  struct stat st;
  if (::fstatat(parent_fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    return fail(ErrorCode::kAlreadyExists, "restore: '" + dest.string() + "' already exists");
  }
  return RestoreTarget(std::move(parent_fd), std::move(name), target.string(),
                       (currentUmask() & 0755) != 0);
}

std::string RestoreTarget::leafName(std::string_view path) const {
  if (path.empty()) return root_name_;
  auto slash = path.rfind('/');
  return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
}

Result<Fd> RestoreTarget::makeDirectory(int dir_fd, std::string_view path) const {
  std::string name = leafName(path);
  if (::mkdirat(dir_fd, name.c_str(), kDirMode) != 0) return fail(sysError(errno, "mkdir", path));
  Fd fd(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) return fail(sysError(errno, "open directory", path));
  if (fix_modes_ && ::fchmod(fd.get(), kDirMode) != 0) return fail(sysError(errno, "chmod", path));
  return fd;
}

Result<Fd> RestoreTarget::createFile(int dir_fd, std::string_view path, bool executable) const {
  std::string name = leafName(path);
  mode_t mode = executable ? kExecMode : kFileMode;
  Fd fd(::openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (fd.get() < 0) return fail(sysError(errno, "create", path));
  if (fix_modes_ && ::fchmod(fd.get(), mode) != 0) return fail(sysError(errno, "chmod", path));
  return fd;
}

Status RestoreTarget::makeSymlink(int dir_fd, std::string_view path,
                                  std::string_view target) const {
  std::string name = leafName(path);
  std::string t(target);
  if (::symlinkat(t.c_str(), dir_fd, name.c_str()) != 0) {
    return fail(sysError(errno, "symlink", path));
  }
  return {};
}

Status RestoreTarget::write(int fd, Bytes data, std::string_view path) const {
  if (int err = writeAll(fd, data); err != 0) return fail(sysError(err, "write", path));
  return {};
}

Status RestoreTarget::copy(int fd, const FileSpan& from, std::string_view path) const {
  SpanCopy done = copySpan(from, fd);
  if (done.error != 0) {
    return fail(sysError(done.error, done.reading ? "read the NAR for" : "write", path));
  }
  if (done.bytes < from.size) {
    return fail(sysError(EIO, "write", path,
                         "the NAR file ended early (did it shrink while being restored?)"));
  }
  return {};
}

Status RestoreTarget::close(Fd fd, std::string_view path) const {
  if (::close(fd.release()) != 0) return fail(sysError(errno, "close", path));
  return {};
}

Error RestoreTarget::sysError(int err, std::string_view what, std::string_view path,
                              std::string_view reason) const {
  std::string where = display_;
  if (!path.empty()) {
    where += '/';
    where += path;
  }
  ErrorCode code = err == EEXIST                    ? ErrorCode::kAlreadyExists
                   : err == ENOSPC || err == EDQUOT ? ErrorCode::kResourceExhausted
                   : err == EACCES || err == EPERM  ? ErrorCode::kPermissionDenied
                                                    : ErrorCode::kIoError;
  return Error(code, "restore: " + std::string(what) + " '" + where +
                         "': " + (reason.empty() ? errnoText(err) : std::string(reason)));
}

namespace {

// Creates each entry as the parser reaches it, holding the open directories from the root down
// and the file being written.
class Restorer final : public NarVisitor {
 public:
  explicit Restorer(const RestoreTarget& target) : target_(target) {}

  Status directory(std::string_view path) override {
    auto fd = target_.makeDirectory(dirFd(path), path);
    if (!fd) return fail(fd.error());
    dirs_.push_back(std::move(*fd));
    return {};
  }

  Status directoryEnd(std::string_view) override {
    dirs_.pop_back();  // read-only directory fd: nothing to report on close
    return {};
  }

  Status symlink(std::string_view path, std::string_view target) override {
    return target_.makeSymlink(dirFd(path), path, target);
  }

  Status fileBegin(std::string_view path, bool executable, std::uint64_t, std::uint64_t) override {
    auto fd = target_.createFile(dirFd(path), path, executable);
    if (!fd) return fail(fd.error());
    file_ = std::move(*fd);
    file_path_ = path;
    return {};
  }

  Status contents(Bytes chunk) override { return target_.write(file_.get(), chunk, file_path_); }

  Status fileEnd() override { return target_.close(std::move(file_), file_path_); }

 private:
  int dirFd(std::string_view path) const {
    return path.empty() ? target_.parentFd() : dirs_.back().get();
  }

  const RestoreTarget& target_;
  std::vector<Fd> dirs_;  // open directories from the root down
  Fd file_;               // the file being written
  std::string file_path_;
};

}  // namespace

Status restoreNar(Source& source, const std::filesystem::path& dest) {
  auto target = RestoreTarget::open(dest);
  if (!target) return fail(target.error());
  Restorer restorer(*target);
  auto size = parseNar(source, restorer);
  if (!size) return fail(size.error());
  return {};
}

}  // namespace narcache
