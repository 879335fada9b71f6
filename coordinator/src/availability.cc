// Availability: local (narstore::Store::available) and remote (POST <cache>/api/available).

#include "narcache/coordinator/availability.h"

#include "http_support.h"
#include "narcache/narinfo/store_path.h"
#include "narcache/narstore/http_cache.h"

namespace narcache::coordinator {
namespace {

class LocalAvailability final : public Availability {
 public:
  explicit LocalAvailability(const narstore::Store& store) : store_(store) {}

  Result<std::vector<narstore::ItemStatus>> check(const std::vector<std::string>& paths) override {
    std::vector<StorePath> parsed;
    parsed.reserve(paths.size());
    for (const std::string& path : paths) {
      auto p = StorePath::parse(path, store_.storeDir());
      if (!p) return fail(p.error().withContext(path));
      parsed.push_back(std::move(*p));
    }
    return store_.available(parsed);
  }

 private:
  const narstore::Store& store_;
};

class RemoteAvailability final : public Availability {
 public:
  explicit RemoteAvailability(RemoteAvailabilityOptions options) : options_(std::move(options)) {}

  // One HttpCache per call: checks may come from several threads. A path the store refuses
  // (another store dir) is InvalidArgument, the path's fault; anything else, the cache
  // unreachable or refusing the token included, is Unavailable.
  Result<std::vector<narstore::ItemStatus>> check(const std::vector<std::string>& paths) override {
    narstore::HttpCacheOptions o;
    o.url = options_.cache_url;
    o.token = options_.token;
    o.attempts = 1;  // the scheduler asks again on its own schedule
    o.timeout_seconds = options_.timeout_seconds;
    auto cache = narstore::HttpCache::open(std::move(o));
    if (!cache) return fail(cache.error());
    auto states = (*cache)->available(paths);
    if (!states && states.error().code() != ErrorCode::kInvalidArgument) {
      return fail(ErrorCode::kUnavailable, states.error().message());
    }
    return states;
  }

 private:
  RemoteAvailabilityOptions options_;
};

}  // namespace

std::unique_ptr<Availability> localAvailability(const narstore::Store& store) {
  return std::make_unique<LocalAvailability>(store);
}

Result<std::unique_ptr<Availability>> remoteAvailability(const RemoteAvailabilityOptions& options) {
  auto url = http::parseHttpUrl(options.cache_url, "cache URL");
  if (!url) return fail(url.error());
  return std::unique_ptr<Availability>(std::make_unique<RemoteAvailability>(options));
}

}  // namespace narcache::coordinator
