#pragma once
// The agent's local store: a store dir on disk, with no database. A path present there counts
// as valid, so what is not valid must never be left at a store path unmarked.
//
// Pending outputs: a build marks every output it may create before it creates it, as
// <physical store>/.narcache-pending/<base name>, a file it holds an exclusive flock(2) on, and
// clears the mark only once the output passed every check (it is valid) or was removed. So:
//   * a build that dies in between (SIGTERM's quick exit, SIGKILL, a crash, power loss) leaves
//     a mark whose lock nobody holds: the path beside it is a partial or unchecked output, and
//     whoever meets it next (localState) removes both;
//   * a mark whose lock is held means another build on this machine is making that output right
//     now: a second build of the same derivation fails (kUnavailable, worth a later retry)
//     instead of removing the first one's outputs, and a build that needs it as an input waits.
// Locks belong to open file descriptions (O_CLOEXEC: a builder never inherits one), so they go
// with the process that holds them however it ends. Safe across threads and processes.

#include <filesystem>
#include <string>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narinfo/io.h"

namespace narcache::agent {

// Removes a tree that builders may have left read-only. Best effort, like fs::remove_all with
// an error_code: nothing is reported.
void removeTree(const std::filesystem::path& path);

// Makes a path that just became valid look as Nix keeps store paths: read-only (files 0444, or
// 0555 when executable; directories 0555) and modified at time 1, so that nothing edits an input
// in place and builds do not see upload or download times. Symlinks keep their mode; their own
// mtime is set too. Errors: kIoError naming the entry.
Status canonicalise(const std::filesystem::path& path);

class PendingOutputs {
 public:
  // Marks `bases` (store path base names) pending in `physical_store`, holding their locks.
  // A stale mark (its build died) is taken over. Errors: kUnavailable when another build holds
  // one of them (nothing is marked then), kIoError when a mark cannot be created.
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

enum class LocalState {
  kAbsent,      // not there (or a dead build's output, just removed)
  kValid,       // there and not pending
  kBeingBuilt,  // another build on this machine is making it now
};

// The state of store path `base` in `physical_store`. Removes a dead build's output and mark
// (see above). Errors: kIoError when the mark cannot be read.
Result<LocalState> localState(const std::filesystem::path& physical_store, const std::string& base);

}  // namespace narcache::agent
