#pragma once
// PeriodicCollector: runs plan + collect every `interval` (the first run after at most a
// minute) on its own std::jthread, for
// `narcache serve --gc-interval` (the server keeps serving and accepting uploads meanwhile; the
// collector's re-checks also see the server's not-yet-flushed access times, as both share the
// Store). Keeps counters for /metrics (renderMetrics(), Prometheus text).
// Ownership: holds a reference to the Store, which must outlive it; the destructor stops the
// thread (an in-progress run stops between batches). Thread-safe: renderMetrics() may be called
// from any thread.

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "narcache/gc/gc.h"
#include "narcache/narstore/store.h"

namespace narcache::gc {

class PeriodicCollector {
 public:
  PeriodicCollector(narstore::Store& store, Policy policy, std::chrono::seconds interval);
  ~PeriodicCollector();
  PeriodicCollector(const PeriodicCollector&) = delete;
  PeriodicCollector& operator=(const PeriodicCollector&) = delete;

  std::string renderMetrics() const;
  std::uint64_t runs() const { return runs_.load(); }

 private:
  void loop(std::stop_token stop);

  narstore::Store& store_;
  Policy policy_;
  std::chrono::seconds interval_;
  std::atomic<std::uint64_t> runs_{0};
  std::atomic<std::uint64_t> failures_{0};
  std::atomic<std::uint64_t> items_freed_{0};
  std::atomic<std::uint64_t> bytes_freed_{0};  // nar file bytes unlinked
  std::atomic<std::uint64_t> last_duration_ms_{0};
  std::atomic<std::int64_t> last_run_{0};
  std::jthread thread_;  // last: started after everything it uses
};

}  // namespace narcache::gc
