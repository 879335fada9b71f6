#pragma once
// Availability: the coordinator's question to the store — which of these store paths are
// *really* available (a live, closure-complete item, narstore's `available` query), not "a build
// once succeeded". Two implementations: the local store opened on the same machine, and a remote
// `narcache serve` asked over HTTP (POST <cache>/api/available, Bearer token).
//
// Ownership: localAvailability() keeps a reference to the Store, which must outlive it.
// Thread-safety: both implementations are safe for concurrent use.
// Errors: Unavailable when the remote cache cannot be reached or answers with an error,
// InvalidArgument for a path that is not a store path of the store's store dir.

#include <memory>
#include <string>
#include <vector>

#include "narcache/narinfo/error.h"
#include "narcache/narstore/store.h"

namespace narcache::coordinator {

class Availability {
 public:
  virtual ~Availability() = default;
  // One status per path, in order (full store paths): its state, and a deleted one's tombstone
  // (when, why, by whom). InvalidArgument when the store refuses a path (not one of its store
  // paths); Unavailable when it cannot be asked.
  virtual Result<std::vector<narstore::ItemStatus>> check(
      const std::vector<std::string>& paths) = 0;
};

std::unique_ptr<Availability> localAvailability(const narstore::Store& store);

struct RemoteAvailabilityOptions {
  std::string cache_url;  // http(s)://host[:port][/prefix] of a `narcache serve`
  std::string token;      // its upload token (the API is behind it); may be empty
  int timeout_seconds = 10;
};
// InvalidArgument for a cache_url that is not an http(s) URL.
Result<std::unique_ptr<Availability>> remoteAvailability(const RemoteAvailabilityOptions& options);

}  // namespace narcache::coordinator
