#include "server_metrics.h"

#include <cstdio>

namespace narcache::narstore {

std::string_view routeName(Route route) {
  switch (route) {
    case Route::kOther: return "other";
    case Route::kCacheInfo: return "nix-cache-info";
    case Route::kNarInfo: return "narinfo";
    case Route::kListing: return "ls";
    case Route::kNar: return "nar";
    case Route::kLog: return "log";
    case Route::kMetrics: return "metrics";
    case Route::kHealth: return "healthz";
    case Route::kPutNar: return "put_nar";
    case Route::kPutNarInfo: return "put_narinfo";
    case Route::kPutListing: return "put_ls";
    case Route::kPutLog: return "put_log";
    case Route::kPutCacheInfo: return "put_nix-cache-info";
    case Route::kCount: break;
  }
  return "other";
}

void ServerMetrics::recordRequest(Route route, int status, double seconds) {
  std::size_t slot = kStatuses.size();
  for (std::size_t i = 0; i < kStatuses.size(); ++i) {
    if (kStatuses[i] == status) {
      slot = i;
      break;
    }
  }
  requests_[static_cast<std::size_t>(route)][slot].fetch_add(1, std::memory_order_relaxed);
  if (seconds < 0) return;
  std::size_t bucket = kBuckets.size();
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      bucket = i;
      break;
    }
  }
  latency_buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
  latency_count_.fetch_add(1, std::memory_order_relaxed);
  latency_sum_micros_.fetch_add(static_cast<std::uint64_t>(seconds * 1e6),
                                std::memory_order_relaxed);
}

namespace {

void line(std::string& out, const char* fmt, auto... args) {
  char buf[512];
  int n = std::snprintf(buf, sizeof buf, fmt, args...);
  if (n > 0) out.append(buf, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf - 1));
}

std::uint64_t load(const std::atomic<std::uint64_t>& c) {
  return c.load(std::memory_order_relaxed);
}

}  // namespace

std::string ServerMetrics::render(const StoreStats& stats) const {
  std::string out;
  out.reserve(8192);
  out +=
      "# HELP narcache_http_requests_total HTTP requests by route and status code.\n"
      "# TYPE narcache_http_requests_total counter\n";
  for (std::size_t r = 0; r < kRoutes; ++r) {
    std::string_view route = routeName(static_cast<Route>(r));
    for (std::size_t s = 0; s < kStatusSlots; ++s) {
      std::uint64_t n = load(requests_[r][s]);
      if (n == 0) continue;  // bounded: at most kRoutes x kStatusSlots lines
      if (s < kStatuses.size()) {
        line(out, "narcache_http_requests_total{route=\"%.*s\",code=\"%d\"} %llu\n",
             static_cast<int>(route.size()), route.data(), kStatuses[s],
             static_cast<unsigned long long>(n));
      } else {
        line(out, "narcache_http_requests_total{route=\"%.*s\",code=\"other\"} %llu\n",
             static_cast<int>(route.size()), route.data(), static_cast<unsigned long long>(n));
      }
    }
  }
  out +=
      "# HELP narcache_http_request_duration_seconds Time from request headers to response "
      "written.\n"
      "# TYPE narcache_http_request_duration_seconds histogram\n";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kBuckets.size(); ++i) {
    cumulative += load(latency_buckets_[i]);
    line(out, "narcache_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n", kBuckets[i],
         static_cast<unsigned long long>(cumulative));
  }
  cumulative += load(latency_buckets_[kBuckets.size()]);
  line(out, "narcache_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
       static_cast<unsigned long long>(cumulative));
  line(out, "narcache_http_request_duration_seconds_sum %.6f\n",
       static_cast<double>(load(latency_sum_micros_)) / 1e6);
  line(out, "narcache_http_request_duration_seconds_count %llu\n",
       static_cast<unsigned long long>(load(latency_count_)));

  auto counter = [&](const char* name, const char* help, std::uint64_t value) {
    line(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
         static_cast<unsigned long long>(value));
  };
  auto gauge = [&](const char* name, const char* help, std::uint64_t value) {
    line(out, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
         static_cast<unsigned long long>(value));
  };
  counter("narcache_http_response_bytes_total", "Response body bytes sent.", load(bytes_served_));
  counter("narcache_http_upload_bytes_total", "Request body bytes received by uploads.",
          load(bytes_received_));
  counter("narcache_narinfo_sign_cache_hits_total",
          "Narinfo lookups served from the signed-text cache.", load(narinfo_cache_hits_));
  counter("narcache_narinfo_sign_cache_misses_total", "Narinfo lookups that had to sign.",
          load(narinfo_cache_misses_));
  counter("narcache_store_stale_readers_cleared_total",
          "Database reader slots of dead processes freed by the server.",
          load(stale_readers_cleared_));
  out +=
      "# HELP narcache_upload_failures_total Uploads refused or failed, by route.\n"
      "# TYPE narcache_upload_failures_total counter\n";
  for (Route r : {Route::kPutNar, Route::kPutNarInfo, Route::kPutListing, Route::kPutLog,
                  Route::kPutCacheInfo, Route::kOther}) {
    std::string_view name = routeName(r);
    line(out, "narcache_upload_failures_total{route=\"%.*s\"} %llu\n",
         static_cast<int>(name.size()), name.data(),
         static_cast<unsigned long long>(load(upload_failures_[static_cast<std::size_t>(r)])));
  }
  gauge("narcache_store_items", "Valid items in the store (available or incomplete).", stats.items);
  gauge("narcache_store_tombstones", "Items marked deleted.", stats.tombstones);
  gauge("narcache_store_nar_files", "Nar files stored.", stats.nar_files);
  gauge("narcache_store_nar_file_bytes", "Bytes of stored nar files (compressed).",
        stats.nar_bytes);
  gauge("narcache_store_nar_size_bytes", "Sum of NarSize of valid items (uncompressed).",
        stats.nar_size);
  return out;
}

}  // namespace narcache::narstore
