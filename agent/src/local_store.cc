// The agent's local store: see local_store.h.

#include "local_store.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <optional>
#include <random>
#include <string_view>
#include <system_error>
#include <utility>

#include "errno_text.h"

namespace narcache::agent {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPendingDir = ".narcache-pending";

struct Lock {
  Fd fd;                 // the locked mark; -1 when there is none or `held`
  bool held = false;     // another open file description holds the lock
  bool created = false;  // this call made the mark (it was not a dead build's)
};

std::atomic<unsigned> g_tmp_counter{0};

// Creates `file` already locked: made under a temporary name, locked, then linked into place,
// so that nobody can take it for a dead process's in between. An invalid Fd when `file` exists.
// `what` names the file in errors.
Result<Fd> createLocked(const fs::path& file, const std::string& what) {
  const fs::path tmp =
      file.string() + ".new-" + std::to_string(::getpid()) + "-" + std::to_string(g_tmp_counter++);
  Fd fresh(::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (fresh.get() < 0 || ::flock(fresh.get(), LOCK_EX) != 0) {
    const int err = errno;  // before unlink() changes it
    ::unlink(tmp.c_str());
    return fail(ErrorCode::kIoError,
                "cannot create " + what + " '" + file.string() + "': " + errnoText(err));
  }
  const int linked = ::link(tmp.c_str(), file.c_str());
  const int err = errno;
  ::unlink(tmp.c_str());
  if (linked == 0) return fresh;
  if (err != EEXIST) {
    return fail(ErrorCode::kIoError,
                "cannot create " + what + " '" + file.string() + "': " + errnoText(err));
  }
  return Fd();
}

// Opens (with `create`, creates) the mark and takes its lock without waiting. A new mark
// appears already locked (createLocked). A mark cleared between open and lock (unlinked by its
// holder) is not the mark any more: then try again.
Result<Lock> lockMark(const fs::path& file, bool create) {
  for (;;) {
    if (create) {
      auto fresh = createLocked(file, "the pending mark");
      if (!fresh) return fail(fresh.error());
      if (fresh->get() >= 0) return Lock{std::move(*fresh), false, true};
    }
    Fd fd(::open(file.c_str(), O_RDWR | O_CLOEXEC));
    if (fd.get() < 0) {
      if (errno == ENOENT) {
        if (create) continue;  // cleared meanwhile: make ours
        return Lock{};
      }
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

namespace {

// Makes the directory at `path` writable by its owner, never through a symlink put there
// meanwhile (as root, chmod would follow one anywhere): through an O_NOFOLLOW descriptor, or,
// when it cannot be opened (a mode without read, as a non-root owner), by path.
void makeWritable(const fs::path& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() >= 0) {
    ::fchmod(fd.get(), 0700);
  } else if (errno == EACCES && ::geteuid() != 0) {
    ::chmod(path.c_str(), 0700);
  }
}

}  // namespace

void removeTree(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(fs::symlink_status(path, ec))) {
    makeWritable(path);
    for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::end(it);
         it.increment(ec)) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) makeWritable(it->path());
    }
  }
  fs::remove_all(path, ec);
}

Status canonicalise(const fs::path& path, std::optional<uid_t> build_uid) {
  // Children before their directory: a directory is made read-only once it is done with.
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return fail(ErrorCode::kIoError, "cannot stat '" + path.string() + "': " + errnoText(errno));
  }
  // Built by a build user, every entry must be the build user's (as in Nix): anything else is
  // a file the builder linked in from elsewhere, whose owner and mode are not ours to change.
  // Otherwise every entry must be this process's user's.
  const uid_t expected = build_uid ? *build_uid : ::geteuid();
  if (st.st_uid != expected) {
    return fail(ErrorCode::kInvalidArgument, "invalid ownership on file '" + path.string() +
                                                 "' (uid " + std::to_string(st.st_uid) + ")");
  }
  if (st.st_uid != ::geteuid()) {
    if (::lchown(path.c_str(), ::geteuid(), ::getegid()) != 0) {
      return fail(ErrorCode::kIoError,
                  "cannot take over '" + path.string() + "': " + errnoText(errno));
    }
  }
  if (S_ISDIR(st.st_mode)) {
    std::error_code ec;
    for (auto it = fs::directory_iterator(path, ec); !ec && it != fs::directory_iterator();
         it.increment(ec)) {
      NARCACHE_TRY(canonicalise(it->path(), build_uid));
    }
    if (ec)
      return fail(ErrorCode::kIoError, "cannot list '" + path.string() + "': " + ec.message());
  }
  const struct timespec times[2] = {{0, UTIME_OMIT}, {1, 0}};
  if (!S_ISLNK(st.st_mode)) {
    const mode_t mode = S_ISDIR(st.st_mode) || (st.st_mode & S_IXUSR) ? 0555 : 0444;
    if ((st.st_mode & 07777) != mode && ::chmod(path.c_str(), mode) != 0) {
      return fail(ErrorCode::kIoError,
                  "cannot make '" + path.string() + "' read-only: " + errnoText(errno));
    }
  }
  if (::utimensat(AT_FDCWD, path.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    return fail(ErrorCode::kIoError,
                "cannot set the mtime of '" + path.string() + "': " + errnoText(errno));
  }
  return {};
}

Result<PendingOutputs> PendingOutputs::mark(const fs::path& physical_store,
                                            const std::vector<std::string>& bases) {
  const fs::path dir = physical_store / kPendingDir;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(ErrorCode::kIoError, "cannot create '" + dir.string() + "': " + errnoText(errno));
  }
  PendingOutputs pending;
  auto giveUp = [&pending] {
    // Marks this call made go (while locked: nobody takes them for a dead build's, which would
    // remove a valid path); one taken over from a dead build stays, still flagging its output.
    for (auto& m : pending.marks_) {
      if (m.created) ::unlink(m.file.c_str());
      m.fd.reset();
    }
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
    pending.marks_.push_back(Mark{file, std::move(lock->fd), lock->created});
    if (!lock->created) {
      // A dead build's mark, taken over: what it left at the path is partial or unchecked.
      const fs::path path = physical_store / base;
      removeTree(path);
      std::error_code ec;
      if (fs::exists(fs::symlink_status(path, ec))) {
        giveUp();
        return fail(ErrorCode::kIoError, "cannot remove '" + path.string() +
                                             "', left behind by a build that did not finish");
      }
    }
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
  if (lock->fd.get() < 0) {
    // And the path again: another thread may have just removed a dead build's leftover there
    // (and cleared its mark) after we saw it.
    return present && fs::exists(fs::symlink_status(path, ec)) ? LocalState::kValid
                                                               : LocalState::kAbsent;
  }
  // A dead build's mark: what it left at the path is partial or unchecked.
  removeTree(path);
  if (fs::exists(fs::symlink_status(path, ec))) {
    return fail(ErrorCode::kIoError, "cannot remove '" + path.string() +
                                         "', left behind by a build that did not finish");
  }
  ::unlink(file.c_str());
  return LocalState::kAbsent;
}

namespace {

constexpr std::string_view kOwnerSuffix = ".owner";

fs::path ownerFile(const fs::path& dir) {
  return dir.string() + std::string(kOwnerSuffix);
}

std::string randomSuffix() {
  static constexpr char kChars[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  static thread_local std::mt19937 gen{std::random_device{}()};
  std::uniform_int_distribution<std::size_t> pick(0, sizeof kChars - 2);
  std::string s(8, '0');
  for (char& c : s) c = kChars[pick(gen)];
  return s;
}

}  // namespace

Result<ScratchDir> ScratchDir::create(const fs::path& parent, const std::string& prefix,
                                      mode_t mode) {
  return make(parent, prefix, mode);
}

Result<ScratchDir> ScratchDir::reserve(const fs::path& parent, const std::string& prefix) {
  return make(parent, prefix, std::nullopt);
}

Result<ScratchDir> ScratchDir::make(const fs::path& parent, const std::string& prefix,
                                    std::optional<mode_t> mode) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const fs::path dir = parent / (prefix + randomSuffix());
    auto owner = createLocked(ownerFile(dir), "the owner file");
    if (!owner) return fail(owner.error());
    if (owner->get() < 0) continue;  // the name is taken: another one
    struct stat st {};
    const int rc = mode ? ::mkdir(dir.c_str(), *mode) : (::lstat(dir.c_str(), &st) == 0 ? -1 : 0);
    if (rc != 0) {
      const int err = mode ? errno : EEXIST;
      ::unlink(ownerFile(dir).c_str());  // while locked
      if (err == EEXIST) continue;       // something someone kept: another name
      return fail(ErrorCode::kIoError,
                  "cannot create a directory in '" + parent.string() + "': " + errnoText(err));
    }
    if (mode) ::chmod(dir.c_str(), *mode);  // whatever the umask
    ScratchDir made;
    made.path_ = dir;
    made.owner_ = std::move(*owner);
    return made;
  }
  return fail(ErrorCode::kIoError,
              "cannot find a free name for a directory in '" + parent.string() + "'");
}

ScratchDir::ScratchDir(ScratchDir&& other) noexcept
    : path_(std::exchange(other.path_, {})), owner_(std::move(other.owner_)) {}

ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  // The directory first, the owner file (still locked) last: should this process die in
  // between, the directory still has an unlocked owner file and a later sweep removes it.
  removeTree(path_);
  ::unlink(ownerFile(path_).c_str());
}

void ScratchDir::keep() {
  if (path_.empty()) return;
  ::unlink(ownerFile(path_).c_str());
  owner_.reset();
  path_.clear();
}

std::size_t removeAbandonedDirs(const fs::path& parent, const std::vector<std::string>& prefixes) {
  std::size_t removed = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator(parent, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.ends_with(kOwnerSuffix)) continue;
    bool ours = false;
    for (const auto& prefix : prefixes) ours = ours || name.starts_with(prefix);
    if (!ours) continue;
    // Only what this user made: in a directory others can write to ($TMPDIR), anyone could
    // plant an owner file beside a tree of theirs.
    const fs::path dir = parent / name.substr(0, name.size() - kOwnerSuffix.size());
    struct stat owner_st {};
    struct stat dir_st {};
    if (::lstat(it->path().c_str(), &owner_st) != 0 || owner_st.st_uid != ::geteuid() ||
        (::lstat(dir.c_str(), &dir_st) == 0 && dir_st.st_uid != ::geteuid())) {
      continue;
    }
    auto lock = lockMark(it->path(), false);
    if (!lock || lock->held || lock->fd.get() < 0) continue;  // alive, gone, or unreadable
    std::error_code exists_ec;
    const bool had_dir = fs::exists(fs::symlink_status(dir, exists_ec));
    removeTree(dir);
    if (fs::exists(fs::symlink_status(dir, exists_ec))) continue;  // next time
    ::unlink(it->path().c_str());
    if (had_dir) ++removed;
  }
  return removed;
}

namespace {

// Kills whatever still runs as `uid` (a builder that escaped its build), as Nix does before it
// hands a build user out: kill(-1) from a child that became that uid reaches exactly its
// processes. Root only; best effort.
void killProcessesOf(uid_t uid) {
  if (::geteuid() != 0) return;
  pid_t pid = ::fork();
  if (pid < 0) return;
  if (pid == 0) {
    if (::setgid(uid) == 0 && ::setuid(uid) == 0) ::kill(-1, SIGKILL);
    ::_exit(0);
  }
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

Result<BuildUser> BuildUser::acquire(const fs::path& physical_store, uid_t first, uid_t last) {
  const fs::path dir = physical_store / ".narcache-uids";
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return fail(ErrorCode::kIoError, "cannot create '" + dir.string() + "': " + errnoText(errno));
  }
  for (uid_t uid = first; uid <= last && uid >= first; ++uid) {
    auto lock = lockMark(dir / std::to_string(uid), true);
    if (!lock) return fail(lock.error());
    if (lock->held) continue;  // another build's
    BuildUser user;
    user.uid_ = uid;
    user.lock_ = std::move(lock->fd);
    killProcessesOf(uid);
    return user;
  }
  return fail(ErrorCode::kUnavailable, "all build users (uids " + std::to_string(first) + "-" +
                                           std::to_string(last) + ") are busy");
}

}  // namespace narcache::agent
