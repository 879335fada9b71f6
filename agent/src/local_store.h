#pragma once
// The agent's local store: a store dir on disk, with no database. A path present there counts
// as valid, so what is not valid must never be left at a store path unmarked.
//
// Pending outputs: whoever creates a store path here (a build its outputs, a substitution its
// input) marks it first, as <physical store>/.narcache-pending/<base name>, a file it holds an
// exclusive flock(2) on, and clears the mark only once the path passed every check (it is
// valid) or was removed. So:
//   * a build that dies in between (SIGTERM's quick exit, SIGKILL, a crash, power loss) leaves
//     a mark whose lock nobody holds: the path beside it is a partial or unchecked output, and
//     whoever meets it next (localState) removes both;
//   * a mark whose lock is held means another build on this machine is making that path right
//     now: a second build of the same derivation, or a build that needs the path as an input,
//     fails (kUnavailable, worth a later retry) instead of removing or racing the first one.
// Locks belong to open file descriptions (O_CLOEXEC: a builder never inherits one), so they go
// with the process that holds them however it ends. Safe across threads and processes.

#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"

namespace narcache::agent {

// Removes a tree that builders may have left read-only. Best effort, like fs::remove_all with
// an error_code: nothing is reported.
void removeTree(const std::filesystem::path& path);

// Makes a path that just became valid look as Nix keeps store paths: owned by this process's
// user (with `build_uid`, every entry must be the build user's and is taken over; without, this
// user's; any other owner is an error: kInvalidArgument "invalid ownership"), read-only (files
// 0444, or 0555 when executable; directories 0555: no setuid bits) and modified at time 1, so that
// nothing edits an input in place and builds do not see upload or download times. Symlinks keep
// their mode; their own mtime is set too. Errors: kIoError naming the entry.
Status canonicalise(const std::filesystem::path& path,
                    std::optional<uid_t> build_uid = std::nullopt);

class PendingOutputs {
 public:
  // Marks `bases` (store path base names) pending in `physical_store`, holding their locks.
  // A stale mark (its build died) is taken over, and what that build left at its path removed:
  // once marked, a path present is valid (it became so before the mark) and one absent is this
  // caller's to make. Errors: kUnavailable when another build holds one of them (nothing is
  // marked then), kIoError when a mark cannot be created or a leftover removed.
  static Result<PendingOutputs> mark(const std::filesystem::path& physical_store,
                                     const std::vector<std::string>& bases);

  PendingOutputs(PendingOutputs&&) noexcept = default;
  PendingOutputs& operator=(PendingOutputs&&) noexcept = default;
  PendingOutputs(const PendingOutputs&) = delete;
  PendingOutputs& operator=(const PendingOutputs&) = delete;
  // Clears the marks and releases the locks: the outputs must be valid or gone by then.
  ~PendingOutputs();

 private:
  PendingOutputs() = default;
  struct Mark {
    std::filesystem::path file;
    Fd fd;
    bool created = false;  // made by mark(), not taken over from a dead build
  };
  std::vector<Mark> marks_;
};

// A build's scratch directory (its work dir, its store view, a substitution in progress),
// made as <parent>/<prefix><random> beside an owner file <dir>.owner that the making process
// holds an exclusive flock on for the object's life. The owner file appears already locked (made
// under a temporary name, locked, then linked) before the directory is created, so a directory
// with an unlocked owner file belongs to a process that died (SIGKILL, a crash, power loss):
// removeAbandonedDirs() removes both. The destructor removes the directory (removeTree), then
// the owner file; keep() gives the directory up to the user instead (its owner file goes now, and
// a directory without one is never removed by anyone).
class ScratchDir {
 public:
  // Errors: kIoError naming `parent` when the owner file or the directory cannot be made.
  static Result<ScratchDir> create(const std::filesystem::path& parent, const std::string& prefix,
                                   mode_t mode = 0700);
  // The same, but nothing is created at path(): the caller makes it (a file or directory).
  static Result<ScratchDir> reserve(const std::filesystem::path& parent, const std::string& prefix);

  ScratchDir(ScratchDir&& other) noexcept;
  ScratchDir& operator=(ScratchDir&&) noexcept = delete;
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir();

  const std::filesystem::path& path() const { return path_; }
  void keep();

 private:
  ScratchDir() = default;
  static Result<ScratchDir> make(const std::filesystem::path& parent, const std::string& prefix,
                                 std::optional<mode_t> mode);
  std::filesystem::path path_;  // empty once moved from or kept
  Fd owner_;
};

// Removes from `parent` every directory whose name starts with one of `prefixes` and whose owner
// file (see ScratchDir) no live process holds, and its owner file. Best effort: what cannot be
// removed stays for the next call. Returns how many directories went.
std::size_t removeAbandonedDirs(const std::filesystem::path& parent,
                                const std::vector<std::string>& prefixes);

// A build user: one uid of a range, held (exclusive flock on
// <physical store>/.narcache-uids/<uid>) for the life of the object, so that concurrent builds on
// this machine never share one. The uid need not exist in /etc/passwd; its gid is the same
// number. Errors: kUnavailable when every uid of the range is in use, kIoError when a lock file
// cannot be made.
class BuildUser {
 public:
  static Result<BuildUser> acquire(const std::filesystem::path& physical_store, uid_t first,
                                   uid_t last);
  uid_t uid() const { return uid_; }

 private:
  BuildUser() = default;
  uid_t uid_ = 0;
  Fd lock_;
};

enum class LocalState {
  kAbsent,      // not there (or a dead build's output, just removed)
  kValid,       // there and not pending
  kBeingBuilt,  // another build on this machine is making it now
};

// The state of store path `base` in `physical_store`. Removes a dead build's output and mark
// (see above). Errors: kIoError when the mark cannot be read.
Result<LocalState> localState(const std::filesystem::path& physical_store, const std::string& base);

}  // namespace narcache::agent
