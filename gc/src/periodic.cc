// PeriodicCollector: see periodic.h.

#include "narcache/gc/periodic.h"

#include <condition_variable>
#include <cstdio>
#include <mutex>

namespace narcache::gc {

PeriodicCollector::PeriodicCollector(narstore::Store& store, Policy policy,
                                     std::chrono::seconds interval)
    : store_(store),
      policy_(policy),
      interval_(interval),
      thread_([this](std::stop_token stop) { loop(stop); }) {}

PeriodicCollector::~PeriodicCollector() {
  thread_.request_stop();
}

void PeriodicCollector::loop(std::stop_token stop) {
  // The first run comes within a minute of the start, not a whole interval later: a server
  // restarted more often than its interval (deployments) would otherwise never collect.
  constexpr std::chrono::seconds kFirstRunDelay{60};
  std::mutex mutex;
  std::condition_variable_any wake;
  for (auto wait = std::min(interval_, kFirstRunDelay); !stop.stop_requested(); wait = interval_) {
    {
      std::unique_lock lock(mutex);
      wake.wait_for(lock, stop, wait, [] { return false; });
    }
    if (stop.stop_requested()) break;
    auto start = std::chrono::steady_clock::now();
    try {  // thread entry point
      // A root added while the plan is carried out makes the rest of it stale (the new root
      // may pin some of it): plan again at once, a few times, rather than an interval later,
      // so that a build farm adding a root per build does not keep every run from finishing.
      constexpr int kPlans = 4;
      Result<CollectReport> report = fail(ErrorCode::kInternal, "no plan");
      CollectReport total;
      for (int attempt = 0; attempt < kPlans && !stop.stop_requested(); ++attempt) {
        auto plan = planCollection(store_, policy_);
        if (!plan) {
          report = fail(plan.error());
          break;
        }
        CollectOptions options;
        options.stop = stop;
        report = collect(store_, *plan, options);
        if (!report) break;
        total.deleted_items += report->deleted_items;
        total.unlinked_files += report->unlinked_files;
        total.unlinked_bytes += report->unlinked_bytes;
        total.unlink_failures += report->unlink_failures;
        if (total.unlink_error.empty()) total.unlink_error = report->unlink_error;
        total.stopped = report->stopped;
        total.stale = report->stale;
        if (!report->stale) break;
      }
      if (report) report = total;
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count();
      last_duration_ms_ = static_cast<std::uint64_t>(ms);
      last_run_ = narstore::systemClock();
      ++runs_;
      if (!report) {
        ++failures_;
        std::fprintf(stderr, "narcache: gc: %s\n", report.error().message().c_str());
        continue;
      }
      items_freed_ += report->deleted_items;
      bytes_freed_ += report->unlinked_bytes;
      if (report->unlink_failures != 0) {
        std::fprintf(stderr, "narcache: gc: %llu nar files could not be unlinked (first: %s)\n",
                     static_cast<unsigned long long>(report->unlink_failures),
                     report->unlink_error.c_str());
      }
      if (report->deleted_items != 0 || report->unlinked_files != 0 || report->stale ||
          report->stopped) {
        const char* how = report->stopped ? " (stopped: the server is shutting down)"
                          : report->stale ? " (roots kept being added: the rest waits for the "
                                            "next run)"
                                          : "";
        std::fprintf(
            stderr, "narcache: gc: deleted %llu items, unlinked %llu nar files (%s) in %lld ms%s\n",
            static_cast<unsigned long long>(report->deleted_items),
            static_cast<unsigned long long>(report->unlinked_files),
            formatBytes(report->unlinked_bytes).c_str(), static_cast<long long>(ms), how);
      }
    } catch (const std::exception& e) {
      ++failures_;
      std::fprintf(stderr, "narcache: gc: %s\n", e.what());
    }
  }
}

std::string PeriodicCollector::renderMetrics() const {
  auto line = [](const char* name, const char* type, const char* help, auto value) {
    return std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + " " + std::to_string(value) + "\n";
  };
  return line("narcache_gc_runs_total", "counter", "Garbage collection runs.", runs_.load()) +
         line("narcache_gc_failures_total", "counter", "Garbage collection runs that failed.",
              failures_.load()) +
         line("narcache_gc_items_freed_total", "counter", "Items deleted by garbage collection.",
              items_freed_.load()) +
         line("narcache_gc_bytes_freed_total", "counter",
              "Nar file bytes unlinked by garbage collection.", bytes_freed_.load()) +
         line("narcache_gc_last_run_duration_seconds", "gauge",
              "Duration of the last garbage collection run.",
              static_cast<double>(last_duration_ms_.load()) / 1000.0) +
         line("narcache_gc_last_run_timestamp_seconds", "gauge",
              "When the last garbage collection run ended.", last_run_.load());
}

}  // namespace narcache::gc
