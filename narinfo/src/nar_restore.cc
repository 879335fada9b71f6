// NAR restore: materialises a NAR as a file-system tree, safe against hostile NARs.
//
// Invariant: every object is created with an *at() call relative to the fd of a directory this
// restore itself created (or, for the root, the destination's parent), with O_EXCL/O_NOFOLLOW
// semantics (mkdirat and symlinkat fail on existing names, files are opened O_CREAT|O_EXCL|
// O_NOFOLLOW, directories re-opened O_DIRECTORY|O_NOFOLLOW). No path with more than one
// component is ever resolved, so nothing outside `dest` can be created, followed or written,
// whatever the names and symlink targets in the NAR; the parser has already rejected names with
// '/', NUL, "." and "..", and duplicates.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
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

class Restorer final : public NarVisitor {
 public:
  Restorer(int parent_fd, std::string root_name, std::string display)
      : parent_fd_(parent_fd),
        root_name_(std::move(root_name)),
        display_(std::move(display)),
        fix_modes_((currentUmask() & 0755) != 0) {}

  ~Restorer() override {
    if (file_fd_ >= 0) ::close(file_fd_);
    for (int fd : dirs_) ::close(fd);
  }

  Status directory(std::string_view path) override {
    auto [dir_fd, name] = place(path);
    if (::mkdirat(dir_fd, name.c_str(), kDirMode) != 0) return fail(sysError("mkdir", path));
    int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return fail(sysError("open directory", path));
    dirs_.push_back(fd);
    if (fix_modes_ && ::fchmod(fd, kDirMode) != 0) return fail(sysError("chmod", path));
    return {};
  }

  Status directoryEnd(std::string_view path) override {
    int fd = dirs_.back();
    dirs_.pop_back();
    if (::close(fd) != 0) return fail(sysError("close", path));
    return {};
  }

  Status symlink(std::string_view path, std::string_view target) override {
    auto [dir_fd, name] = place(path);
    std::string t(target);
    if (::symlinkat(t.c_str(), dir_fd, name.c_str()) != 0) return fail(sysError("symlink", path));
    return {};
  }

  Status fileBegin(std::string_view path, bool executable, std::uint64_t, std::uint64_t) override {
    auto [dir_fd, name] = place(path);
    mode_t mode = executable ? kExecMode : kFileMode;
    file_fd_ =
        ::openat(dir_fd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (file_fd_ < 0) return fail(sysError("create", path));
    file_path_ = path;
    if (fix_modes_ && ::fchmod(file_fd_, mode) != 0) return fail(sysError("chmod", path));
    return {};
  }

  Status contents(Bytes chunk) override {
    while (!chunk.empty()) {
      ssize_t n = ::write(file_fd_, chunk.data(), chunk.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(sysError("write", file_path_));
      }
      chunk = chunk.subspan(static_cast<std::size_t>(n));
    }
    return {};
  }

  Status fileEnd() override {
    int fd = file_fd_;
    file_fd_ = -1;
    if (::close(fd) != 0) return fail(sysError("close", file_path_));
    return {};
  }

 private:
  // The directory fd and name under which `path` is created.
  std::pair<int, std::string> place(std::string_view path) {
    if (path.empty()) return {parent_fd_, root_name_};
    auto slash = path.rfind('/');
    std::string name(slash == std::string_view::npos ? path : path.substr(slash + 1));
    return {dirs_.back(), std::move(name)};
  }

  Error sysError(std::string_view what, std::string_view path) const {
    int err = errno;
    std::string where = display_;
    if (!path.empty()) {
      where += '/';
      where += path;
    }
    ErrorCode code = err == EEXIST                    ? ErrorCode::kAlreadyExists
                     : err == ENOSPC || err == EDQUOT ? ErrorCode::kResourceExhausted
                     : err == EACCES || err == EPERM  ? ErrorCode::kPermissionDenied
                                                      : ErrorCode::kIoError;
    return Error(code, "restore: " + std::string(what) + " '" + where + "': " + std::strerror(err));
  }

  int parent_fd_;  // not owned
  std::string root_name_;
  std::string display_;
  bool fix_modes_;
  std::vector<int> dirs_;  // open directories from the root down, owned
  int file_fd_ = -1;       // the file being written, owned
  std::string file_path_;
};

}  // namespace

Status restoreNar(Source& source, const std::filesystem::path& dest) {
  std::filesystem::path target = dest;
  if (!target.has_filename()) target = target.parent_path();  // "a/b/" names "a/b"
  std::string name = target.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return fail(ErrorCode::kInvalidArgument,
                "restore: '" + dest.string() + "' does not name a new directory entry");
  }
  std::filesystem::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  int parent_fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (parent_fd < 0) {
    int err = errno;
    return fail(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                "restore: cannot open '" + parent.string() + "': " + std::strerror(err));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{parent_fd};
  struct stat st;
  if (::fstatat(parent_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    return fail(ErrorCode::kAlreadyExists, "restore: '" + dest.string() + "' already exists");
  }
  Restorer restorer(parent_fd, name, target.string());
  auto size = parseNar(source, restorer);
  if (!size) return fail(size.error());
  return {};
}

}  // namespace narcache
