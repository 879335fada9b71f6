// The agent's local store: see local_store.h.

#include "local_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace narcache::agent {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPendingDir = ".narcache-pending";

std::string errnoText(int err) {
  return std::error_code(err, std::generic_category()).message();
}

struct Lock {
  Fd fd;              // the locked mark; -1 when there is none or `held`
  bool held = false;  // another open file description holds the lock
};

// Opens (with `create`, creates) the mark and takes its lock without waiting. A mark cleared
// between open and lock (unlinked by its holder) is not the mark any more: then try again.
Result<Lock> lockMark(const fs::path& file, bool create) {
  for (;;) {
    Fd fd(::open(file.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600));
    if (fd.get() < 0) {
      if (!create && errno == ENOENT) return Lock{};
      return fail(ErrorCode::kIoError,
                  "cannot open the pending mark '" + file.string() + "': " + errnoText(errno));
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) return Lock{Fd(), true};
      if (errno == EINTR) continue;
      return fail(ErrorCode::kIoError,
                  "cannot lock the pending mark '" + file.string() + "': " + errnoText(errno));
    }
    struct stat locked {};
    struct stat named {};
    if (::fstat(fd.get(), &locked) != 0) {
      return fail(ErrorCode::kIoError,
                  "cannot stat the pending mark '" + file.string() + "': " + errnoText(errno));
    }
    const bool named_ok = ::stat(file.c_str(), &named) == 0;
    if (named_ok && locked.st_dev == named.st_dev && locked.st_ino == named.st_ino) {
      return Lock{std::move(fd), false};
    }
    if (!named_ok && !create) return Lock{};
  }
}

}  // namespace

void removeTree(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(fs::symlink_status(path, ec))) {
    ::chmod(path.c_str(), 0700);
    for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
    }
  }
  fs::remove_all(path, ec);
}

Result<PendingOutputs> PendingOutputs::mark(const fs::path& physical_store,
                                            const std::vector<std::string>& bases) {
  const fs::path dir = physical_store / kPendingDir;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(ErrorCode::kIoError, "cannot create '" + dir.string() + "': " + errnoText(errno));
  }
  PendingOutputs pending;
  auto giveUp = [&pending] {
    // Release without clearing: a mark taken over from a dead build still flags its output.
    for (auto& m : pending.marks_) m.fd.reset();
    pending.marks_.clear();
  };
  for (const auto& base : bases) {
    const fs::path file = dir / base;
    auto lock = lockMark(file, true);
    if (!lock) {
      giveUp();
      return fail(lock.error());
    }
    if (lock->held) {
      giveUp();
      return fail(ErrorCode::kUnavailable, "output '" + base +
                                               "' is being built by another build on this "
                                               "machine; try again when it is over");
    }
    pending.marks_.push_back(Mark{file, std::move(lock->fd)});
  }
  return pending;
}

PendingOutputs::~PendingOutputs() {
  // Unlink while holding the lock, so nobody takes a cleared mark for a dead build's.
  for (auto& m : marks_) {
    if (m.fd.get() >= 0) ::unlink(m.file.c_str());
  }
}

Result<LocalState> localState(const fs::path& physical_store, const std::string& base) {
  const fs::path path = physical_store / base;
  std::error_code ec;
  // The path first, then its mark: a build marks before it creates, so a path seen before an
  // absent mark was there before any build of it began.
  const bool present = fs::exists(fs::symlink_status(path, ec));
  const fs::path file = physical_store / kPendingDir / base;
  auto lock = lockMark(file, false);
  if (!lock) return fail(lock.error());
  if (lock->held) return LocalState::kBeingBuilt;
  if (lock->fd.get() < 0) return present ? LocalState::kValid : LocalState::kAbsent;
  // A dead build's mark: what it left at the path is partial or unchecked.
  removeTree(path);
  if (fs::exists(fs::symlink_status(path, ec))) {
    return fail(ErrorCode::kIoError, "cannot remove '" + path.string() +
                                         "', left behind by a build that did not finish");
  }
  ::unlink(file.c_str());
  return LocalState::kAbsent;
}

}  // namespace narcache::agent
