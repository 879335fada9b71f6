// The GC collector: executes a plan in batches of short write transactions (see gc.h).

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <optional>

#include "narcache/gc/gc.h"

namespace narcache::gc {

Result<CollectReport> collect(narstore::Store& store, const Plan& plan,
                              const CollectOptions& options) {
  auto start = std::chrono::steady_clock::now();
  CollectReport report;
  const std::size_t total = plan.deletions.size();
  const std::size_t batch_size = std::max<std::size_t>(1, options.batch_size);
  auto last_progress = start;
  std::vector<narstore::GcCandidate> batch;
  // A batch that fails (a full disk: its commit gets ENOSPC) ends the deletions, but not the
  // run: the nar files already awaiting their unlink are still unlinked below, which frees the
  // space that the next commit needs. The run then reports the batch's error.
  std::optional<Error> failed;
  for (std::size_t done = 0; done < total;) {
    if (options.stop.stop_requested()) {
      report.stopped = true;
      break;
    }
    // Accesses recorded in this process reach the table first (the store also checks the
    // ones still pending, so this only keeps the in-memory map small).
    if (auto flushed = store.flushAccessTimes(); !flushed) {
      failed = flushed.error();
      break;
    }
    std::size_t end = std::min(total, done + batch_size);
    batch.assign(plan.deletions.begin() + static_cast<std::ptrdiff_t>(done),
                 plan.deletions.begin() + static_cast<std::ptrdiff_t>(end));
    auto r = store.deleteUnreachable(batch, plan.roots_generation);
    if (!r) {
      if (r.error().code() == ErrorCode::kConflict) {
        report.stale = true;
        break;
      }
      failed = r.error();
      break;
    }
    report.deleted_items += r->deleted.size();
    report.kept_on_recheck += r->kept.size();
    report.deleted_nar_size += r->nar_size;
    report.files_unreferenced += r->files_unreferenced;
    report.file_bytes += r->file_bytes;
    done = end;
    if (options.on_batch) options.on_batch(done, total);
    auto now = std::chrono::steady_clock::now();
    if (options.progress &&
        (now - last_progress > std::chrono::milliseconds(200) || done == total)) {
      last_progress = now;
      std::fprintf(stderr,
                   "\rgc: %zu/%zu items processed, %llu deleted, %s of nar files unused now", done,
                   total, static_cast<unsigned long long>(report.deleted_items),
                   formatBytes(report.file_bytes).c_str());
    }
  }
  if (options.progress && total != 0) std::fputs("\n", stderr);
  if (!report.stopped) {
    auto u = store.unlinkNarFiles(plan.policy.nar_grace_seconds,
                                  std::numeric_limits<std::size_t>::max());
    if (!u) return fail(failed ? *failed : u.error());
    if (failed) {
      return fail(failed->code(), failed->message() + " (deleted " +
                                      std::to_string(report.deleted_items) +
                                      " items before; still unlinked " + std::to_string(u->files) +
                                      " nar files awaiting it, " + formatBytes(u->bytes) + ")");
    }
    report.unlinked_files = u->files;
    report.unlinked_bytes = u->bytes;
    report.pending_files = u->pending;
    report.unlink_failures = u->failed;
    report.unlink_error = u->first_error;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace narcache::gc
