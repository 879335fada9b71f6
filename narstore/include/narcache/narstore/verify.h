#pragma once
// verifyStore: `narcache verify` — checks every invariant of a Store (see store.h) and, when
// asked, repairs what can be repaired without losing anything valid.
//
// Checked: every nar file used by a valid item exists, hashes to its name and FileHash, has
// FileSize bytes and decompresses to a NAR with NarHash and NarSize (files are checked in
// parallel on `threads` threads); every reference of a valid item is valid (closure); the refs /
// referrers indexes are exact inverses of the narinfos' References; the incomplete bookkeeping
// equals the deleted items in each closure; file refcounts and the stats counters are right; no
// tombstoned item is valid; every valid item has a listing; the compact GC table (gcmeta)
// mirrors the items; no file awaiting GC's unlink is used by an item. Orphans (files in tmp/, files
// in nar/ no valid item uses) are reported apart: a crash legitimately leaves them. Repair: marks
// items whose nar file is missing or corrupt deleted (by "verify", with the reason) and removes
// their corrupt file; removes orphans older than `orphan_grace_seconds` (or all of them with
// `all_orphans`); a nar file awaiting GC's unlink (pending_unlink) is no orphan: GC removes it.
// Runs against a live store (the server may keep serving and accepting uploads): the checks
// read one snapshot, and the store moves on meanwhile, so a repair re-checks, in the write
// transaction that makes it, that the item is still the one checked (same item id: not deleted
// and uploaded again since) and that its file is still the one judged (still missing, or the
// same inode with the same size and times); otherwise the problem is reported "changed
// meanwhile, left alone" and nothing is done. An orphan is removed in a write transaction that
// re-checks that no item uses it and that it does not await GC's unlink (a nar file uploaded
// meanwhile, whose narinfo may still come, does).
// Progress goes to stderr only when `progress` is set (the CLI sets it on a TTY).

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narstore/store.h"

namespace narcache::narstore {

struct VerifyOptions {
  bool repair = false;
  bool all_orphans = false;  // with repair: remove orphans whatever their age
  std::int64_t orphan_grace_seconds = 3600;
  unsigned threads = 0;  // 0: one per core
  bool progress = false;
  // Runs after the checks and before any repair (tests use it to change the store in between;
  // may be empty).
  std::function<void()> before_repair = nullptr;
};

struct VerifyProblem {
  std::string subject;  // a store path base name, "nar/<file>", "counter items", ...
  std::string message;
  bool repaired = false;
};

struct VerifyReport {
  std::uint64_t items = 0;
  std::uint64_t nar_files = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t awaiting_unlink = 0;    // unused nar files that GC unlinks after their nar grace
  std::vector<VerifyProblem> problems;  // broken invariants
  std::vector<std::string> orphans;     // "tmp/<f>" or "nar/<f>" still present after the run
  std::vector<std::string> removed_orphans;
  // True when no invariant is broken (orphans alone do not make a store inconsistent).
  bool consistent() const;
};

// InvalidArgument when `store` is not a store opened by Store::open/init.
Result<VerifyReport> verifyStore(Store& store, const VerifyOptions& options = {});

}  // namespace narcache::narstore
