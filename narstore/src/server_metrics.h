#pragma once
// ServerMetrics: the counters behind `GET /metrics` (Prometheus text exposition format 0.0.4).
//
// Every counter is a relaxed std::atomic in fixed-size arrays indexed by route and status class,
// so recording costs a few atomic adds and rendering is O(1) in the number of requests (the
// output has a fixed number of lines). Thread-safe: record from any worker thread concurrently.

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "narcache/narstore/store.h"

namespace narcache::narstore {

enum class Route : std::uint8_t {
  kOther = 0,
  kCacheInfo,
  kNarInfo,
  kListing,
  kNar,
  kLog,
  kMetrics,
  kHealth,
  kPutNar,
  kPutNarInfo,
  kPutListing,
  kPutLog,
  kPutCacheInfo,
  kCount,
};
std::string_view routeName(Route route);

class ServerMetrics {
 public:
  // One finished request: its route, HTTP status, response body bytes and latency.
  void recordRequest(Route route, int status, double seconds);
  void addBytesServed(std::uint64_t bytes) {
    bytes_served_.fetch_add(bytes, std::memory_order_relaxed);
  }
  void addBytesReceived(std::uint64_t bytes) {
    bytes_received_.fetch_add(bytes, std::memory_order_relaxed);
  }
  void recordUploadFailure(Route route) { at(upload_failures_, route); }
  void recordNarInfoCache(bool hit) {
    (hit ? narinfo_cache_hits_ : narinfo_cache_misses_).fetch_add(1, std::memory_order_relaxed);
  }
  void addStaleReadersCleared(std::uint64_t n) {
    stale_readers_cleared_.fetch_add(n, std::memory_order_relaxed);
  }

  std::string render(const StoreStats& stats) const;

  // The status codes counted separately; anything else is counted as "other".
  static constexpr std::array<int, 18> kStatuses = {200, 204, 206, 301, 304, 400, 401, 403, 404,
                                                    405, 409, 411, 413, 416, 422, 500, 503, 507};
  // Upper bounds of the latency histogram buckets, in seconds.
  static constexpr std::array<double, 14> kBuckets = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0};

 private:
  using Counter = std::atomic<std::uint64_t>;
  static constexpr std::size_t kRoutes = static_cast<std::size_t>(Route::kCount);
  static constexpr std::size_t kStatusSlots = kStatuses.size() + 1;

  static void at(std::array<Counter, kRoutes>& counters, Route route) {
    counters[static_cast<std::size_t>(route)].fetch_add(1, std::memory_order_relaxed);
  }

  std::array<std::array<Counter, kStatusSlots>, kRoutes> requests_{};
  std::array<Counter, kBuckets.size() + 1> latency_buckets_{};  // last: +Inf
  Counter latency_count_{0};
  Counter latency_sum_micros_{0};
  Counter bytes_served_{0};
  Counter bytes_received_{0};
  std::array<Counter, kRoutes> upload_failures_{};
  Counter narinfo_cache_hits_{0};
  Counter narinfo_cache_misses_{0};
  Counter stale_readers_cleared_{0};
};

}  // namespace narcache::narstore
