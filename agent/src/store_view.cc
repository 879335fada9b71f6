#include "store_view.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <utility>

#include "errno_text.h"
#include "local_store.h"
#include "narcache/narinfo/io.h"

namespace narcache::agent {
namespace {

namespace fs = std::filesystem;

}  // namespace

Result<StoreView> StoreView::prepare(const fs::path& physical_store,
                                     const std::string& logical_store, const std::string& name,
                                     const std::vector<std::string>& inputs,
                                     const std::vector<std::string>& outputs) {
  StoreView view;
  view.physical_store_ = physical_store;
  view.logical_store_ = logical_store;
  view.outputs_ = outputs;
  // 0755: as a store dir looks to the builder.
  auto scratch = ScratchDir::create(physical_store, std::string(kDirPrefix) + name + "-", 0755);
  if (!scratch) return fail(scratch.error().withContext("cannot create the store view"));
  view.scratch_.emplace(std::move(*scratch));
  view.dir_ = view.scratch_->path();
  view.dir_str_ = view.dir_.string();
  for (const auto& base : inputs) {
    const fs::path source = physical_store / base;
    const fs::path target = view.dir_ / base;
    struct stat st {};
    if (::lstat(source.c_str(), &st) != 0) {
      return fail(ErrorCode::kIoError,
                  "input '" + source.string() + "' is not in the store: " + errnoText(errno));
    }
    int rc = 0;
    if (S_ISLNK(st.st_mode)) {
      std::error_code ec;
      const fs::path link = fs::read_symlink(source, ec);
      rc = ec ? -1 : ::symlink(link.c_str(), target.c_str());
      if (rc == 0) view.copied_symlinks_.push_back(target.string());
    } else {
      if (S_ISDIR(st.st_mode)) {
        rc = ::mkdir(target.c_str(), 0755);
      } else {
        int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
        rc = fd < 0 ? -1 : ::close(fd);
      }
      if (rc == 0) view.binds_.emplace_back(source.string(), target.string());
    }
    if (rc != 0) {
      return fail(ErrorCode::kIoError,
                  "cannot create '" + target.string() + "' in the store view: " + errnoText(errno));
    }
  }
  return view;
}

StoreView::StoreView(StoreView&& other) noexcept
    : physical_store_(std::move(other.physical_store_)),
      logical_store_(std::move(other.logical_store_)),
      dir_(std::exchange(other.dir_, {})),
      dir_str_(std::move(other.dir_str_)),
      scratch_(std::move(other.scratch_)),
      outputs_(std::move(other.outputs_)),
      binds_(std::move(other.binds_)),
      copied_symlinks_(std::move(other.copied_symlinks_)) {}

StoreView::~StoreView() {
  remove();
}

int StoreView::probe(const char** step) const {
  static const char* const kSteps[] = {"pipe", "fork", "unshare", "making the mounts private",
                                       "bind-mounting"};
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    *step = kSteps[0];
    return errno;
  }
  Fd read_end(fds[0]);
  Fd write_end(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) {
    *step = kSteps[1];
    return errno;
  }
  if (pid == 0) {
    // Child: system calls only; reports {step, errno} through the pipe.
    int report[2] = {0, 0};
    if (::unshare(CLONE_NEWNS) != 0) {
      report[0] = 2;
    } else if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      report[0] = 3;
    } else if (::mount(dir_str_.c_str(), dir_str_.c_str(), nullptr, MS_BIND, nullptr) != 0) {
      report[0] = 4;
    }
    if (report[0] != 0) {
      report[1] = errno;
      [[maybe_unused]] ssize_t n = ::write(write_end.get(), report, sizeof report);
      ::_exit(1);
    }
    ::_exit(0);
  }
  write_end.reset();
  int report[2] = {0, 0};
  ssize_t got = 0;
  do {
    got = ::read(read_end.get(), report, sizeof report);
  } while (got < 0 && errno == EINTR);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (got == static_cast<ssize_t>(sizeof report) && report[0] >= 2 && report[0] <= 4) {
    *step = kSteps[report[0]];
    return report[1];
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    *step = kSteps[1];
    return ECHILD;
  }
  return 0;
}

int StoreView::enterInChild(const char** step) const noexcept {
  *step = "unshare";
  if (::unshare(CLONE_NEWNS) != 0) return errno;
  *step = "making the mounts private";
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return errno;
  for (const auto& [source, target] : binds_) {
    *step = "bind-mounting an input";
    if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
      return errno;
    }
    *step = "making an input read-only";
    if (::mount(nullptr, target.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) != 0) {
      return errno;
    }
  }
  *step = "bind-mounting the view on the store dir";
  if (::mount(dir_str_.c_str(), logical_store_.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return errno;
  }
  return 0;
}

Status StoreView::collectOutputs() {
  for (const auto& base : outputs_) {
    const fs::path from = dir_ / base;
    const fs::path to = physical_store_ / base;
    struct stat st {};
    if (::lstat(from.c_str(), &st) != 0) continue;  // not produced: the caller reports it
    if (::lstat(to.c_str(), &st) == 0) {
      return fail(ErrorCode::kIoError, "cannot move output '" + base + "' into the store: '" +
                                           to.string() + "' appeared during the build");
    }
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return fail(ErrorCode::kIoError, "cannot move '" + from.string() + "' to '" + to.string() +
                                           "': " + errnoText(errno));
    }
  }
  return {};
}

void StoreView::remove() noexcept {
  if (dir_.empty()) return;
  // Mount points go with rmdir/unlink only: should one still be a mount (it never is in this
  // process's namespace), that fails instead of emptying the input behind it.
  for (const auto& [source, target] : binds_) {
    if (::rmdir(target.c_str()) != 0 && errno == ENOTDIR) ::unlink(target.c_str());
  }
  for (const auto& link : copied_symlinks_) ::unlink(link.c_str());
  std::error_code ec;
  std::vector<fs::path> left;
  for (auto it = fs::directory_iterator(dir_, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    left.push_back(it->path());
  }
  bool mounted = false;
  for (const auto& [source, target] : binds_) mounted = mounted || fs::exists(target, ec);
  if (!mounted) {
    for (const auto& p : left) removeTree(p);
  } else if (scratch_) {
    scratch_->keep();  // never removed recursively, not even by a later sweep
  }
  ::rmdir(dir_.c_str());
  scratch_.reset();
  dir_.clear();
}

}  // namespace narcache::agent
