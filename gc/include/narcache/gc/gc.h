#pragma once
// Garbage collection of a narcache store: policies, the planner and the collector.
//
// The live set is the reference closure of: unexpired roots; items accessed within the TTL
// (last access, or creation when never accessed); items created within the grace period (a
// closure being uploaded is never cut). Everything else is deleted. Then, with a size budget,
// the least recently used kept items that no kept item references are evicted, repeatedly,
// until the nar files of the kept items fit — never anything in the closure of a root or of an
// item within its grace period.
//
// planCollection() reads the graph in one read transaction (Store::scanGraph) and marks in
// memory (Boost.Graph, private to gc/src); it changes nothing. collect() executes a plan in
// batches, each one short write transaction (Store::deleteUnreachable) that re-checks every
// decision against the current state, so uploads, accesses and new roots that happen after
// planning win (invariant 3). Nar files are unlinked after the nar grace period. A kill at any
// instant leaves a consistent store (each batch commits or not).
//
// Thread-safety: these are free functions over a Store (itself thread-safe); a Plan is a
// value. Errors: those of the Store (Conflict never escapes collect(): a stale plan ends the
// run early with CollectReport::stale set).

#include <cstdint>
#include <functional>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narstore/store.h"

namespace narcache::gc {

struct Policy {
  std::optional<std::int64_t> ttl_seconds;  // absent: no age limit
  std::int64_t grace_seconds = 3600;
  std::int64_t nar_grace_seconds = 3600;        // narinfo gone -> nar file unlinked
  std::optional<std::uint64_t> max_size_bytes;  // absent: no budget (nar file bytes)
};

// "30d", "12h", "90m", "45s", "2w", or plain seconds. InvalidArgument otherwise.
Result<std::int64_t> parseDuration(std::string_view text);
// "10G", "500M", "64K", "1T" (binary units, optional trailing "B"/"iB"), or plain bytes.
Result<std::uint64_t> parseSize(std::string_view text);
std::string formatBytes(std::uint64_t bytes);      // "1.5 GiB"
std::string formatDuration(std::int64_t seconds);  // "1d2h", "90s"

struct PlanSummary {
  std::uint64_t items = 0;  // valid items scanned
  std::uint64_t bytes = 0;  // their nar files' bytes (a shared file once)
  std::uint64_t delete_items = 0;
  std::uint64_t delete_bytes = 0;     // bytes of nar files no kept item uses
  std::uint64_t delete_nar_size = 0;  // NarSize of the deleted items
  std::uint64_t delete_ttl = 0;       // deleted because not live (ttl, no root, no grace)
  std::uint64_t delete_budget = 0;    // deleted by the size budget (LRU)
  std::uint64_t keep_items = 0;
  std::uint64_t keep_bytes = 0;
  // Why each kept item stays (each counted once, first matching reason in this order).
  std::uint64_t kept_root = 0;        // in the closure of an unexpired root
  std::uint64_t kept_grace = 0;       // created within the grace period
  std::uint64_t kept_recent = 0;      // accessed (or created) within the TTL
  std::uint64_t kept_referenced = 0;  // only needed by another kept item
  std::uint64_t roots = 0;
  std::uint64_t roots_expired = 0;
  std::uint64_t root_paths_missing = 0;  // root paths that are not valid items (ignored)
  std::uint64_t root_bytes = 0;          // bytes of the roots' closures
  bool over_budget = false;              // the budget could not be reached
  bool roots_exceed_budget = false;      // ...because the roots' closures alone exceed it
};

struct Plan {
  Policy policy;
  PlanSummary summary;
  std::int64_t planned_at = 0;
  std::uint64_t roots_generation = 0;
  // What to delete, every referrer before what it references (the collector's batches depend
  // on this order).
  std::vector<narstore::GcCandidate> deletions;
  double scan_seconds = 0;
  double mark_seconds = 0;
};

// Scans the store's graph and plans. Changes nothing (this is `gc --dry-run`).
Result<Plan> planCollection(const narstore::Store& store, const Policy& policy);
// The marking alone, on a graph already scanned (tests, benchmarks).
Plan planFromGraph(const narstore::StoreGraph& graph, const Policy& policy);

struct CollectOptions {
  std::size_t batch_size = 500;  // items per write transaction
  bool progress = false;         // "\r" progress lines on stderr (set on a TTY)
  std::stop_token stop;          // stops between batches
  // Called after each batch (tests use it to interleave; may be empty).
  std::function<void(std::size_t done, std::size_t total)> on_batch;
};

struct CollectReport {
  std::uint64_t deleted_items = 0;
  std::uint64_t deleted_nar_size = 0;
  std::uint64_t kept_on_recheck = 0;     // planned, but the re-check kept them
  std::uint64_t files_unreferenced = 0;  // nar files that lost their last user in this run
  std::uint64_t file_bytes = 0;
  std::uint64_t unlinked_files = 0;  // nar files unlinked (their nar grace had passed)
  std::uint64_t unlinked_bytes = 0;
  std::uint64_t pending_files = 0;  // nar files still within their nar grace
  // Nar files whose unlink failed (left pending for the next run), and the first error.
  std::uint64_t unlink_failures = 0;
  std::string unlink_error;
  bool stale = false;    // roots were added after planning: stopped early, plan again
  bool stopped = false;  // the stop token fired
  double seconds = 0;
};

// Executes `plan` (see the header comment), then unlinks nar files whose nar grace passed.
// A batch that fails (e.g. its commit gets ENOSPC on a full disk) ends the deletions, but the
// unlink step still runs, so files already awaiting it free their space (which the next commit
// may need); then the batch's error comes back, saying how much the unlink step freed.
Result<CollectReport> collect(narstore::Store& store, const Plan& plan,
                              const CollectOptions& options = {});

}  // namespace narcache::gc
